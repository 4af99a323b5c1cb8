"""The full monitor registry (judge arms), `run_monitors` and `emscope monitors`, on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from emscope.directions.contrast import load_corpus
from emscope.errors import ConfigError
from emscope.evaluation.monitors import ALL_MONITORS, JudgeReading, run_monitors
from emscope.probes import MONITORS, MonitorContext, corpus_items, get_monitor, subsample_pairs


@pytest.fixture(scope="module")
def items():
    return corpus_items(subsample_pairs(load_corpus(domains=("law", "money", "education")), 1, seed=0))


@pytest.fixture(scope="module")
def lm():
    from emscope.testing import tiny_model

    return tiny_model("qwen2", n_layers=3, width=32)


@pytest.fixture(autouse=True)
def _one_thread():
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_judge(lm):
    """A probe judge on the tiny model with random weights (what `probe:DIR` loads, without the 1.5B)."""
    from emscope.evaluation.judges.probe import ProbeJudge

    rng = np.random.default_rng(0)
    w = {"mean": np.zeros(32), "scale": np.ones(32), "coef": rng.normal(size=32), "intercept": np.zeros(1)}
    return ProbeJudge("tiny", 1, w, {"metric": "aligned", "fingerprint": "tiny-judge"}, lm=lm)


def test_all_monitors_adds_the_judge_arms_to_the_probes():
    assert set(ALL_MONITORS) == set(MONITORS) | {"judge-probe", "judge-refit"}
    assert {s.arm for s in ALL_MONITORS.values()} == {"raw", "prompted", "sae", "zero-shot", "judge"}


def test_judge_arms_need_a_probe_judge():
    with pytest.raises(ConfigError, match="probe:builtin or probe:DIR"):
        JudgeReading("local:qwen2.5-coder-1.5b-instruct")


def test_judge_probe_scores_misalignment_as_100_minus_its_score(tiny_judge, items):
    from emscope.evaluation.judges.prompts import format_judge_prompt

    ctx = MonitorContext(extra={"judge": tiny_judge})
    m = get_monitor("judge-probe", ctx, ALL_MONITORS).fit(items)
    prompts = [format_judge_prompt(tiny_judge.prompt, it.user, it.answer) for it in items[:4]]
    expected = [100.0 - j.score for j in tiny_judge.score_prompts(prompts)]
    np.testing.assert_allclose(m.score(items[:4]), expected, rtol=1e-4, atol=1e-3)
    refit = get_monitor("judge-refit", ctx, ALL_MONITORS).fit(items)
    assert refit.head is not None and refit.chosen_layer == 1
    assert refit.cost is not None and refit.cost.forward_tokens > 0


def test_run_monitors_writes_tables_and_plot(lm, items, tmp_path):
    result = run_monitors(
        ["raw-mean-dim", "prompted-logistic", "zero-shot"],
        lm,
        items,
        out=tmp_path / "out",
        features=tmp_path / "features",
        sizes=[4, "all"],
        repeats=2,
    )
    names = [r["monitor"] for r in result["table"]]
    assert names == ["raw-mean-dim", "prompted-logistic", "zero-shot"]
    for r in result["table"]:
        assert 0.0 <= r["auroc_all"] <= 1.0 and r["seconds_per_item"] > 0 and r["forward_tokens_per_item"] > 0
    saved = json.loads((tmp_path / "out" / "monitors.json").read_text())
    assert saved["kind"] == "monitors" and saved["n_items"] == len(items)
    for f in ("table.csv", "curves.csv", "curves.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    # the prompted probe and zero-shot share one prompted pass, cached beside the raw one
    assert len([p for p in (tmp_path / "features").iterdir() if p.is_dir()]) == 2


def test_cli_lists_and_checks_monitor_names():
    from emscope._cli.main import app

    runner = CliRunner()
    listed = runner.invoke(app, ["monitors", "--list"])
    assert listed.exit_code == 0 and "judge-probe" in listed.output and "sae-max-logistic" in listed.output
    bad = runner.invoke(app, ["monitors", "--monitors", "zero-shoot", "--out", "unused"])
    assert bad.exit_code == 2 and "did you mean 'zero-shot'" in bad.output


def test_sae_arm_reads_an_emscope_sae(lm, items):
    """helper A's SparseAutoencoder plugs into the SAE max-pool monitor as it is."""
    from emscope.sae import SparseAutoencoder

    g = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder(
        W_enc=torch.randn(64, 32, generator=g),
        b_enc=torch.zeros(64),
        W_dec=torch.randn(64, 32, generator=g),
        b_dec=torch.zeros(32),
        k=8,
        layer=1,
        model="tiny:qwen2",
    )
    m = get_monitor("sae-max-logistic", MonitorContext(lm=lm, sae=sae)).fit(items)
    x = m.features(items)
    assert x.shape == (len(items), 1, 64)
    assert ((x > 0).sum(-1) >= 8).all()  # max over tokens of k-sparse codes: at least k latents fire somewhere
    assert np.isfinite(m.score(items)).all() and m.chosen_layer == 1
