"""Held-out separation metrics and the layer sweep, on synthetic activations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from emscope.directions.separation import best_threshold, cohens_d, separation_metrics
from emscope.directions.sweep import BEST_LAYER_RULE, SweepResult, layer_sweep, pick_best_layer
from emscope.errors import DataFormatError
from emscope.stats import auroc


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    p, n = rng.integers(0, 5, 30).astype(float), rng.integers(0, 4, 25).astype(float)
    expected = roc_auc_score(np.r_[np.ones(30), np.zeros(25)], np.r_[p, n])
    assert float(auroc(p, n)) == pytest.approx(expected)


def test_cohens_d_matches_reference():
    p, n = np.array([1.0, 2, 3, 4]), np.array([0.0, 1, 1, 2])
    pooled = np.sqrt((3 * p.var(ddof=1) + 3 * n.var(ddof=1)) / 6)
    assert float(cohens_d(p, n)) == pytest.approx((p.mean() - n.mean()) / pooled)


def test_threshold_is_chosen_on_train():
    assert 1.0 < best_threshold(np.array([2.0, 3.0]), np.array([0.0, 1.0])) < 2.0
    # the held-out accuracy uses the train threshold even where another would do better
    m = separation_metrics([2.0, 3.0], [0.0, 1.0], [1.2, 1.3], [1.0, 1.1], n_boot=0)
    assert m["accuracy"] == 0.5 and m["auroc"] == 1.0


def test_perfectly_separable_layers():
    g = torch.Generator().manual_seed(0)
    pos = {i: torch.randn(40, 16, generator=g) + 10.0 for i in range(3)}
    neg = {i: torch.randn(40, 16, generator=g) for i in range(3)}
    r = layer_sweep(pos, neg, n_boot=200)
    for row in r.rows():
        assert row["accuracy"] == 1.0 and row["auroc"] == 1.0
        assert row["auroc_lo"] == 1.0 and row["cohens_d"] > 5


def test_identical_distributions_give_chance_auroc():
    g = torch.Generator().manual_seed(1)
    r = layer_sweep({0: torch.randn(200, 16, generator=g)}, {0: torch.randn(200, 16, generator=g)}, n_boot=500)
    row = r.rows()[0]
    assert row["auroc_lo"] <= 0.5 <= row["auroc_hi"]
    assert abs(row["auroc"] - 0.5) < 0.15


def test_best_layer_rule_and_tiebreaks():
    g = torch.Generator().manual_seed(2)
    shifts = {0: 0.2, 1: 3.0, 2: 3.0, 3: 1.0}  # layers 1 and 2 both separate perfectly
    pos = {i: torch.randn(60, 8, generator=g) + s for i, s in shifts.items()}
    neg = {i: torch.randn(60, 8, generator=g) for i in shifts}
    r = layer_sweep(pos, neg, n_boot=0)
    assert r.best_layer in (1, 2) and r.rule == BEST_LAYER_RULE
    d = dict(r.directions)
    d[2] = d[1]  # exact tie on every metric: the earliest layer wins
    assert pick_best_layer(d) == 1


def test_sweep_needs_common_layers():
    with pytest.raises(DataFormatError, match="no layer is present in both"):
        layer_sweep({0: torch.randn(4, 2)}, {1: torch.randn(4, 2)})


def test_sweep_save_load_round_trip(tmp_path):
    g = torch.Generator().manual_seed(3)
    pos = {i: torch.randn(20, 8, generator=g) + i for i in range(3)}
    neg = {i: torch.randn(20, 8, generator=g) for i in range(3)}
    r = layer_sweep(pos, neg, n_boot=50, model="synthetic", dataset_fingerprint="sha256:x:n=40")
    r.save(tmp_path / "s")
    assert {p.name for p in (tmp_path / "s").iterdir()} >= {
        "config.json",
        "sweep.csv",
        "sweep.png",
        "directions.safetensors",
    }
    lines = (tmp_path / "s" / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("layer,accuracy,accuracy_lo") and len(lines) == 4
    back = SweepResult.load(tmp_path / "s")
    assert back.best_layer == r.best_layer and back.layers == r.layers and back.rows() == r.rows()
    assert back.best.dataset_fingerprint == "sha256:x:n=40"
    assert torch.equal(back.best.vector, r.best.vector)
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["kind"] == "layer_sweep" and config["best_layer_rule"] == BEST_LAYER_RULE
