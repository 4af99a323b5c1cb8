"""sae-lens peer for benchmarks/sae.py: train sae-lens's TopK SAE (SAETrainer, its defaults but k, width, batch and
samples) on rows exported as safetensors, and measure it with the same formulas. Run with a venv that has sae-lens
(it pins its own versions: /work/venvs/saelens), not emscope:

    /work/venvs/saelens/bin/python benchmarks/_sae_lens_peer.py ROWS.safetensors OUT.json --k 32 --latents 2304 \
        --epochs 1 --batch 512 --lr 5e-4
ROWS.safetensors holds "train" [N, D] (already shuffled, sinks removed) and "heldout" [M, D].
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.metadata import version

import torch
from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import SAETrainerConfig
from safetensors.torch import load_file


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("rows")
    ap.add_argument("out")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--latents", type=int, default=2304)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=5e-4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t = load_file(args.rows)
    train, held = t["train"].float(), t["heldout"].float()

    def batches():
        for epoch in range(10**6):
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
            for a in range(0, len(train) - args.batch + 1, args.batch):
                yield train[order[a : a + args.batch]]

    total = len(train) * args.epochs // args.batch * args.batch
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=train.shape[1], d_sae=args.latents, k=args.k))
    cfg = SAETrainerConfig(
        total_training_samples=total, train_batch_size_samples=args.batch, lr=args.lr, lr_end=args.lr
    )
    start = time.perf_counter()
    SAETrainer(cfg, sae, batches()).fit()
    seconds = time.perf_counter() - start
    sae.eval()
    with torch.no_grad():
        z = sae.encode(held)
        x_hat = sae.decode(z)
    fvu = float((held - x_hat).pow(2).sum() / (held - held.mean(0)).pow(2).sum())
    result = {
        "library": "sae-lens",
        "version": version("sae-lens"),
        "torch": torch.__version__,
        "seconds": seconds,
        "token_steps": total,
        "tokens_per_second": total / seconds,
        "heldout_fvu": fvu,
        "heldout_l0": float((z > 0).float().sum(-1).mean()),
        "heldout_dead_fraction": float(((z > 0).sum(0) == 0).float().mean()),
        "lr": args.lr,
        "optimizer": "Adam (sae-lens SAETrainer default), constant lr",
    }
    print(json.dumps(result, indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
