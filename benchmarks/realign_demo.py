"""Benign re-alignment of an organism, with the EM rate and the misalignment projection per checkpoint.

The organism (a run of `benchmarks/organisms.py`) is trained further on secure-code rows it
never saw (rows --benign-offset..); at step 0 and every checkpoint it answers the 8
free-form questions of the EM study (`emscope.organisms.realign.em_measure`: EM rate with the
evaluation judge), and the mean projection of those answers on the base model's
misalignment direction (reading route, docs/results/MODEL/direction), read by the base
model, is reported beside it.

    .venv/bin/python benchmarks/realign_demo.py --organism organisms/smollm2-rank1-insecure \
        --n-benign 32 --steps 8 --save-every 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from emscope.data.transcripts import iter_jsonl, load_transcripts
from emscope.directions.direction import Direction
from emscope.evaluation.judges.factory import make_metric_judges
from emscope.evaluation.run import EvalConfig
from emscope.interventions.measures import answer_projections
from emscope.models.loading import load_model
from emscope.models.organism_dir import resolve_checkpoint
from emscope.organisms.realign import em_measure, realign

sys.path.insert(0, str(Path(__file__).parent))
from organisms import ROOT, SHARED, write_questions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--organism", required=True)
    ap.add_argument("--direction", default=None, help="Default: docs/results/BASE_MODEL/direction.")
    ap.add_argument("--n-benign", type=int, default=32)
    ap.add_argument("--benign-offset", type=int, default=4000, help="First secure.jsonl row (outside the pool).")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--save-every", type=int, default=4)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--judge", default="probe:builtin")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/realign-demo")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = resolve_checkpoint(args.organism).base_model
    base = load_model(model)
    direction = Direction.load(args.direction or ROOT / "docs" / "results" / model / "direction")
    direction.check_compatible(base)
    config = EvalConfig(
        model=model,
        questions=str(write_questions(out / "questions.yaml")),
        judge=args.judge,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        coherence="em_candidates",
    )
    em = em_measure(config, out / "eval", judge=make_metric_judges(args.judge))

    def measure(lm: Any) -> dict[str, Any]:
        row = em(lm)
        answers = [obj for _, obj in iter_jsonl(out / "eval" / Path(str(lm.source)).name / "responses.jsonl")]
        values = answer_projections(base, direction, [a["question"] for a in answers], [a["answer"] for a in answers])
        return {**row, "projection": float(values.mean())}

    benign = load_transcripts(SHARED / "data" / "secure.jsonl")[args.benign_offset : args.benign_offset + args.n_benign]
    rows = realign(
        args.organism,
        benign,
        out / "run",
        measure,
        lm=base,
        steps=args.steps,
        save_every=args.save_every,
        threads=args.threads,
    )
    base_row = measure(base)
    result = {"args": vars(args), "base_model": base_row, "rows": rows}
    (out / "demo.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
