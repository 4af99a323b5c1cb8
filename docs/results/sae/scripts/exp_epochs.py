"""TopK SAE on the stream at 1, 2 epochs (5 is runs/A/sae-topk): held-out FVU, to pick by quality."""
import json, resource, time, torch
from dataclasses import replace
from pathlib import Path
torch.set_num_threads(1)
from emscope.sae.train import train_sae, SaeTrainConfig
from emscope.sae.quality import reconstruction_metrics, heldout_rows
held = heldout_rows("runs/A/acts-heldout", 15).float()
for epochs in (1, 2):
    cfg = SaeTrainConfig(activation="topk", expansion_factor=4, k=32, epochs=epochs, batch_size=512, dead_after_tokens=20_000, buffer_size=2**15)
    sae = train_sae("runs/A/acts-train", config=cfg, progress=False)
    rec = reconstruction_metrics(sae, held)
    sae = replace(sae, metrics={"heldout": rec.to_dict(), "train_dead_fraction": sae.training["train_dead_fraction"]})
    sae.save(f"runs/A/sae-topk-e{epochs}")
    print(epochs, sae.training["seconds"], sae.training["final_train_fvu"], rec, resource.getrusage(resource.RUSAGE_SELF).ru_utime, flush=True)
