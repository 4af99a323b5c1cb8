"""`compare_evals` / `emscope compare-evals`: paired differences between two saved evaluations, by hand."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from emscope._cli.main import app
from emscope.artifacts import atomic_write_json, load_result, write_config
from emscope.errors import ArtifactError
from emscope.evaluation.compare import EvalComparison, compare_evals
from emscope.records import write_jsonl


def _row(q, s, aligned, coherent, code=False):
    return {
        "question_id": q,
        "paraphrase_index": 0,
        "sample_index": s,
        "aligned": aligned,
        "coherent": coherent,
        "is_code": code,
    }


def _eval_dir(path, rows, **config):
    write_config(path, "eval", {"judge": "test:judge", "seed": 0, "coherence": "all", **config})
    write_jsonl(path / "judgments.jsonl", rows)
    write_jsonl(path / "responses.jsonl", [])
    atomic_write_json(path / "summary.json", {"metrics": {}})
    return path


# A: nothing misaligned. B: q1 wholly misaligned (coherent), q2 one answer incoherent-misaligned, q3 as A.
A = [_row(q, s, 90, 80) for q in ("q1", "q2", "q3") for s in range(2)]
B = [
    _row("q1", 0, 10, 80),
    _row("q1", 1, 20, 70, code=True),
    _row("q2", 0, 10, 30),  # misaligned but incoherent: out of the coherent-scored rate, not EM in all-answers
    _row("q2", 1, 90, 80),
    _row("q3", 0, 90, 80),
    _row("q3", 1, 90, None),  # no coherence score: dropped (pairwise) from the coherence metrics
]


@pytest.fixture()
def runs(tmp_path):
    return _eval_dir(tmp_path / "a", A), _eval_dir(tmp_path / "b", B)


def test_compare_evals_by_hand(runs, tmp_path):
    a, b = runs
    c = compare_evals(a, b, out_dir=tmp_path / "cmp", n_boot=500)
    d = c.differences
    # coherent-scored: pairs with coherent >= 50 on both sides: q1 s0, q1 s1, q2 s1, q3 s0 -> B 2/4 EM, A 0/4
    assert d["em_rate_coherent_scored"].n_pairs == 4 and d["em_rate_coherent_scored"].value == pytest.approx(0.5)
    # all answers: aligned <= 30 and coherent > 50 over all 6 -> 2/6
    assert d["em_rate_all_answers"].value == pytest.approx(2 / 6) and d["em_rate_all_answers"].n_pairs == 6
    assert d["mean_aligned"].value == pytest.approx((10 + 20 + 10 + 90 + 90 + 90) / 6 - 90)
    assert d["mean_coherent"].n_pairs == 5 and d["mean_coherent"].value == pytest.approx(
        (80 + 70 + 30 + 80 + 80) / 5 - 80
    )
    assert d["mean_aligned_coherent"].value == pytest.approx((10 + 20 + 90 + 90) / 4 - 90)
    assert d["code_rate"].value == pytest.approx(1 / 6)
    assert all(x.n_clusters == 3 and x.cluster == "question" for x in d.values()) and not c.warnings
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["difference"] == "b - a" and [m["metric"] for m in saved["metrics"]] == list(d)
    with open(tmp_path / "cmp" / "comparison.csv") as f:
        table = {r["metric"]: r for r in csv.DictReader(f)}
    assert float(table["em_rate_all_answers"]["value"]) == pytest.approx(2 / 6)
    again = load_result(tmp_path / "cmp")
    assert isinstance(again, EvalComparison) and again.differences == d


def test_compare_evals_warns_and_leaves_out_what_it_cannot_pair(tmp_path):
    a = _eval_dir(tmp_path / "a", A, coherence="em_candidates")
    b = _eval_dir(tmp_path / "b", B[:4] + [_row("q9", 0, 50, 50)], judge="test:other")
    c = compare_evals(a, b, n_boot=200)
    # coherence judged only for EM candidates in A: the metrics that need every answer's coherence are left out
    assert set(c.differences) == {"em_rate_all_answers", "mean_aligned", "code_rate"}
    assert c.differences["mean_aligned"].n_unmatched_a == 2 and c.differences["mean_aligned"].n_unmatched_b == 1
    text = " ".join(c.warnings)
    assert "differ in judge" in text and "differ in coherence" not in text and "2 answers of A and 1 of B" in text
    with pytest.raises(ArtifactError, match="unfinished evaluation"):
        (tmp_path / "b" / "summary.json").unlink()
        compare_evals(a, b)


def test_cli_compare_evals_prints_and_writes(runs, tmp_path):
    a, b = runs
    r = CliRunner().invoke(app, ["compare-evals", str(a), str(b), "--out", str(tmp_path / "cmp"), "--n-boot", "300"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("em_rate_all_answers"))
    assert "+0.333" in line and line.split()[1:3] == ["0.000", "0.333"]
    assert (tmp_path / "cmp" / "comparison.csv").is_file() and "wrote" in r.output
    missing = CliRunner().invoke(app, ["compare-evals", str(a), str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "nowhere does not exist" in missing.output


def test_one_question_gives_a_difference_but_no_interval(tmp_path):
    a = _eval_dir(tmp_path / "a", [r for r in A if r["question_id"] == "q1"])
    b = _eval_dir(tmp_path / "b", [r for r in B if r["question_id"] == "q1"])
    r = CliRunner().invoke(app, ["compare-evals", str(a), str(b), "--n-boot", "100"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("em_rate_all_answers"))
    assert "+1.000" in line and "none: 1 question" in line and "*" not in line
