"""Side by side at equal token-steps on the same rows: emscope's path (eai-sparsify) vs sae-lens's SAETrainer."""
import json, resource, subprocess, time, torch
torch.set_num_threads(1)
from safetensors.torch import save_file
from emscope.sae.model import load_sae
from emscope.sae.quality import heldout_rows, reconstruction_metrics
from emscope.sae.train import SaeTrainConfig, train_sae
ref = load_sae("runs/A/sae-topk")
train = heldout_rows("runs/A/acts-train", 15).float()
held = heldout_rows("runs/A/acts-heldout", 15).float()
train = train[train.norm(dim=1) <= ref.max_norm]
held = held[held.norm(dim=1) <= ref.max_norm]
train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))]
save_file({"train": train.contiguous(), "heldout": held.contiguous()}, "/tmp/A_rows.safetensors")
out = {"rows": len(train), "heldout_rows": len(held)}
for epochs in (1,):
    cfg = SaeTrainConfig(expansion_factor=4, k=32, epochs=epochs, batch_size=512, dead_after_tokens=20_000, max_norm_factor=None)
    train_sae(torch.randn(64, 576), 0, SaeTrainConfig(expansion_factor=1, k=1, batch_size=32), model="warm", progress=False)
    t = time.perf_counter()
    sae = train_sae(train, 15, cfg, model="smollm2-135m-instruct", progress=False)
    s = time.perf_counter() - t
    q = reconstruction_metrics(sae, held)
    out[f"emscope_sparsify_{epochs}ep"] = {"seconds": s, "token_steps": sae.training["tokens_seen"], "tokens_per_second": sae.training["tokens_seen"] / s, **q.to_dict()}
    print(out, flush=True)
    p = subprocess.run(["/work/venvs/saelens/bin/python", "benchmarks/_sae_lens_peer.py", "/tmp/A_rows.safetensors", f"runs/A/saelens_{epochs}ep.json",
                        "--k", "32", "--latents", "2304", "--epochs", str(epochs), "--batch", "512", "--lr", "5e-4"], capture_output=True, text=True,
                       env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled"})
    print(p.stdout[-2000:], p.stderr[-3000:], flush=True)
    out[f"saelens_{epochs}ep"] = json.load(open(f"runs/A/saelens_{epochs}ep.json"))
out["cpu_seconds_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_utime
out["cpu_seconds_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
json.dump(out, open("docs/results/sae/side_by_side.json", "w"), indent=1)
print(json.dumps(out, indent=1))
