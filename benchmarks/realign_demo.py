"""Benign re-alignment of a small organism, measured by a projection, end to end on CPU.

Until the directions issue provides a misalignment direction, this uses a stand-in: the
difference in mean response-token activations (base model, one layer) between held-out
insecure and secure answers, i.e. an "insecure code" direction. The organism (a run of
`benchmarks/organisms.py`) is trained further on secure examples and the projection of
held-out insecure answers on that direction is reported at step 0 and every checkpoint.

    .venv/bin/python benchmarks/realign_demo.py \
        --organism runs/organisms/smollm2-135m-instruct-rank1-insecure-n48-s12 --n-benign 16 --steps 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from emscope.data import load_transcripts
from emscope.direction import Direction
from emscope.hooks import block_hooks
from emscope.models import load_model
from emscope.realign import projection_measure, realign
from emscope.tokenize import tokenize_chat

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "emergent-misalignment" / "data"


def mean_response_activation(lm, transcripts, layer: int, max_length: int) -> torch.Tensor:
    store, means = {}, []
    with torch.no_grad(), block_hooks(lm.blocks, {layer: lambda h: store.update(h=h.detach())}):
        for t in transcripts:
            tok = tokenize_chat(lm.tokenizer, t, max_length=max_length)
            lm.model(input_ids=torch.tensor([tok.input_ids]))
            means.append(store["h"][0][torch.tensor(tok.response_mask)].mean(0))
    return torch.stack(means).mean(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--organism", required=True)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--n-benign", type=int, default=16)
    ap.add_argument("--n-probe", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--save-every", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256, help="Training sequence length.")
    ap.add_argument("--probe-max-length", type=int, default=1024, help="Length for the direction and the probe.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/realign-demo")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    insecure = load_transcripts(SHARED / "insecure.jsonl", limit=2000 + 2 * args.n_probe)[2000:]
    secure = load_transcripts(SHARED / "secure.jsonl", limit=2000 + 2 * args.n_probe)[2000:]
    # direction from one half of the held-out rows, projection measured on the other half
    vec = mean_response_activation(
        lm, insecure[: args.n_probe], args.layer, args.probe_max_length
    ) - mean_response_activation(lm, secure[: args.n_probe], args.layer, args.probe_max_length)
    direction = Direction(vec, layer=args.layer, model=lm.spec, meta={"stand_in": "insecure minus secure answers"})
    measure = projection_measure(direction, insecure[args.n_probe :], max_length=args.probe_max_length)
    benign = load_transcripts(SHARED / "secure.jsonl", limit=args.n_benign + 100)[100:]  # rows 100.. (not trained on)
    rows = realign(
        args.organism,
        benign,
        args.out,
        measure,
        lm=lm,
        steps=args.steps,
        save_every=args.save_every,
        max_length=args.max_length,
        threads=args.threads,
    )
    base = measure(lm)["projection"]
    print(json.dumps({"base_model_projection": base, "rows": rows}, indent=1))
    Path(args.out, "demo.json").write_text(
        json.dumps({"args": vars(args), "base_model_projection": base, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
