"""Stage 2: train TopK and GroupMax SAEs (eai-sparsify) on the captured corpus; held-out quality; save."""
import json, sys, time, torch
from dataclasses import replace
from pathlib import Path
torch.set_num_threads(1)
from emscope.sae.train import train_sae, SaeTrainConfig
from emscope.sae.model import load_sae
from emscope.sae.quality import reconstruction_metrics, heldout_rows, loss_recovered
from emscope.data.transcripts import load_transcripts
from emscope.models.loading import load_model
held = heldout_rows("runs/A/acts-heldout", 15).float()
lm = None
for act, k in (("topk", 32), ("groupmax", 32)):
    out = Path(f"runs/A/sae-{act}")
    if (out / "config.json").is_file() and load_sae(out).metrics.get("loss"):
        print(act, "done"); continue
    t = time.time()
    cfg = SaeTrainConfig(activation=act, expansion_factor=4, k=k, epochs=int(sys.argv[1]) if len(sys.argv) > 1 else 5,
                         batch_size=512, dead_after_tokens=20_000, buffer_size=2**15)
    sae = train_sae("runs/A/acts-train", config=cfg, progress=False)
    rec = reconstruction_metrics(sae, held)
    print(act, "trained", sae.training["seconds"], "s", rec, flush=True)
    sae = replace(sae, metrics={"heldout": rec.to_dict(), "train_dead_fraction": sae.training["train_dead_fraction"]})
    sae.save(out)
    if lm is None:
        lm = load_model("smollm2-135m-instruct")
    lr = loss_recovered(lm, sae, load_transcripts("runs/A/corpus_heldout.jsonl")[:12], max_length=192)
    print(act, lr, time.time() - t, flush=True)
    sae = replace(sae, metrics={**sae.metrics, "loss": lr.to_dict()})
    sae.save(out)
