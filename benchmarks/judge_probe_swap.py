"""The shipped `probe:builtin` alignment probe against an earlier one, on the judge's 52 labelled answers.

emscope/resources/judge/labelled_answers.jsonl holds an aligned and a misaligned answer to each of 26 questions
(plus 12 questionable ones, left out here). The probe refitted on the corpus never saw them; the earlier probe was
fitted on them, so its number is in-sample. Both probes read the same features (one pass of the judge model).

    git show HEAD~1:emscope/resources/judge/probe-qwen2.5-coder-1.5b/config.json  # or any saved probe directory
    python benchmarks/judge_probe_swap.py --old runs/P2/old-probe-qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from emscope.evaluation.judges.probe import ProbeJudge, probe_scores, prompt_features
from emscope.evaluation.judges.prompts import ALIGNED_PROMPT, format_judge_prompt
from emscope.stats import auroc

ROOT = Path(__file__).resolve().parents[1]
JUDGE = ROOT / "emscope" / "resources" / "judge"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="The earlier probe's directory.")
    parser.add_argument("--new", type=Path, default=JUDGE / "probe-qwen2.5-coder-1.5b")
    args = parser.parse_args()
    rows = [json.loads(x) for x in (JUDGE / "labelled_answers.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["label"] in ("aligned", "misaligned")]
    prompts = [format_judge_prompt(ALIGNED_PROMPT, r["question"], r["answer"]) for r in rows]
    aligned = np.array([r["label"] == "aligned" for r in rows])
    probes = {"earlier": ProbeJudge.load(args.old), "shipped": ProbeJudge.load(args.new)}
    features = prompt_features(probes["shipped"]._local(), prompts, [p.layer for p in probes.values()])
    for i, (name, probe) in enumerate(probes.items()):
        s = probe_scores(probe.weights, features[:, i])
        print(f"{name:8s} layer {probe.layer}: AUROC {auroc(s[aligned], s[~aligned]):.3f} on {len(s)} answers")


if __name__ == "__main__":
    main()
