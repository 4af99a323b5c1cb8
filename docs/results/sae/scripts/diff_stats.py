"""Summary statistics of latent diffs against the misalignment direction (the numbers in docs/sae.md's diff tables).

usage: diff_stats.py SAE_DIR DIRECTION_DIR DIFF_DIR [DIFF_DIR ...]   -> prints one JSON line per diff

Per diff: latents whose change has a 95% CI excluding 0; the top-10 mean |cos| of the decoder rows with the unit
direction and its p against 10,000 random draws of 10 latents; of the top 20, how many lie above the null's 95th
percentile of |cos| and how many of those move towards "misaligned" (sign of change = sign of cosine); the
decoder-weighted change sum_i change_i (W_dec_i . unit direction) over all latents.
"""

import csv
import json
import sys

import torch

from emscope.directions.direction import Direction
from emscope.sae.model import load_sae

sae = load_sae(sys.argv[1])
d = Direction.load(sys.argv[2])
u = d.vector.float() / d.vector.float().norm()
dec = sae.W_dec.detach().float()
cos = (dec / dec.norm(dim=1, keepdim=True)) @ u
bar = float(torch.quantile(cos.abs(), 0.95))
gen = torch.Generator().manual_seed(0)
null = torch.stack([cos.abs()[torch.randperm(len(cos), generator=gen)[:10]].mean() for _ in range(10000)])
for path in sys.argv[3:]:
    rows = list(csv.DictReader(open(f"{path}/latents.csv")))
    change = torch.zeros(len(cos))
    for r in rows:
        change[int(r["latent"])] = float(r["diff"])
    top = [int(r["latent"]) for r in rows[:20]]
    top10 = float(cos.abs()[top[:10]].mean())
    above = [i for i in top if abs(float(cos[i])) > bar]
    towards = [i for i in above if float(change[i]) * float(cos[i]) > 0]
    sys.stdout.write(
        json.dumps(
            {
                "diff": path,
                "n_excluding_zero": sum(r["excludes_zero"] == "True" for r in rows),
                "top10_mean_abs_cos": round(top10, 3),
                "top10_p": float((null >= top10).float().mean()),
                "null_mean_abs_cos": round(float(cos.abs().mean()), 3),
                "null_pct95": round(bar, 3),
                "top20_above_null95": len(above),
                "top20_above_towards_misaligned": len(towards),
                "top20_towards_misaligned": sum(float(change[i]) * float(cos[i]) > 0 for i in top),
                "decoder_weighted": round(float(change @ (dec @ u)), 3),
            }
        )
        + "\n"
    )
