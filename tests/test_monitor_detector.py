"""The drift axis (PCA against its null) and the detector judged leave-one-perturbation-type-out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import emscope.monitor.baselines as baselines
from emscope.errors import ArtifactError, ConfigError, DataFormatError
from emscope.monitor.axis import DriftAxis, drift_axis
from emscope.monitor.detector import DriftDetector, evaluate_detector, fit_detector, youden_threshold

NAMES = ("a", "b", "c", "d", "e")
TYPES = {"insecure": "harmful", "steered": "harmful", "jailbroken": "harmful",
         "secure": "benign", "plain": "benign", "arithmetic": "benign"}  # fmt: skip


def rows(seed=0, width=32, signal=1.0, runs_per_type=3):
    """Checkpoint rows whose trait drift moves along trait 0: up for harmful runs, down for benign ones."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((len(NAMES), width))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    out = []
    for kind, label in TYPES.items():
        for s in range(runs_per_type):
            for step in (5, 10, 15):
                act = rng.standard_normal(width) * 0.1 + (1 if label == "harmful" else -1) * signal * step / 5 * u[0]
                out.append({"run": f"{kind}-{s}", "perturbation": kind, "label": label, "step": step,
                            "loss": float(rng.random()), "names": NAMES, "trait_drift": u @ act,
                            "activation_drift": act, "latent_drift": None})  # fmt: skip
    return out, u


def test_planted_separable_drift_is_detected_on_types_never_seen():
    ev = evaluate_detector(rows()[0], n_boot=100)
    r = ev.row("trait_drift")
    assert r["auroc"] == 1.0 and r["fnr"] <= 0.1 and r["fpr"] <= 0.1 and r["n_folds"] == len(TYPES)
    assert r["auroc_lo"] <= r["auroc"] <= r["auroc_hi"] and r["n_runs"] == 3 * len(TYPES)
    assert ev.detector is not None and ev.detector.names == NAMES
    assert ev.row("sae_latent_drift")["available"] is False and "latent_drift" in ev.row("sae_latent_drift")["note"]
    assert {f["held_out"] for f in ev.folds if f["features"] == "trait_drift"} == set(TYPES)


def test_shuffled_labels_give_chance():
    data, _ = rows()
    runs = sorted({r["run"] for r in data})
    aucs = []
    for k in range(12):
        rng = np.random.default_rng(100 + k)
        flip = dict(zip(runs, rng.permutation([TYPES[r.rsplit("-", 1)[0]] for r in runs]), strict=True))
        shuffled = [dict(r, label=flip[r["run"]]) for r in data]
        aucs.append(evaluate_detector(shuffled, ["trait_drift"], n_boot=0).row("trait_drift")["auroc"])
    assert 0.35 < float(np.mean(aucs)) < 0.65


def test_trait_cosine_reads_the_direction_of_drift_not_its_length():
    """A held-out type that moves the benign way but 20x further: drift length flags it, the cosines do not."""
    data, u = rows()
    far = [dict(r, run="far-" + r["run"], perturbation="far", trait_drift=20 * r["trait_drift"],
                activation_drift=20 * r["activation_drift"]) for r in data if r["perturbation"] == "plain"]  # fmt: skip
    x, _ = baselines.trait_cosine(data, data)
    act = np.stack([r["activation_drift"] for r in data])
    assert np.allclose(x, act @ u.T / np.linalg.norm(act, axis=1, keepdims=True))  # cosines with unit traits
    ev = evaluate_detector(data + far, ["trait_cosine", "trait_drift_norm"], n_boot=0)
    fold = {(f["features"], f["held_out"]): f for f in ev.folds}
    assert fold["trait_cosine", "far"]["fpr"] == 0.0
    assert fold["trait_drift_norm", "far"]["fpr"] == 1.0


def test_leave_one_type_out_never_trains_on_the_held_out_type(monkeypatch):
    seen = []

    def spy(train, test):
        seen.append(({r["perturbation"] for r in train}, {r["perturbation"] for r in test}))
        return baselines.trait_drift(train, test)

    monkeypatch.setitem(baselines.FEATURE_SETS, "trait_drift", spy)
    ev = evaluate_detector(rows()[0], ["trait_drift"], n_boot=0)
    assert len(seen) == len(TYPES)
    for train_types, test_types in seen:
        assert len(test_types) == 1 and not (train_types & test_types)
    for fold in ev.folds:
        assert fold["held_out"] not in fold["trained_on"].split()


def test_bad_detector_inputs_say_what_is_missing():
    data, _ = rows()
    with pytest.raises(DataFormatError, match="at least 2 perturbation types"):
        evaluate_detector([r for r in data if r["perturbation"] == "insecure"])
    with pytest.raises(DataFormatError, match="one label only"):
        evaluate_detector([r for r in data if r["label"] == "harmful"])
    with pytest.raises(ConfigError, match="unknown feature set 'trait'"):
        evaluate_detector(data, ["trait"])
    with pytest.raises(DataFormatError, match="both classes"):
        fit_detector(np.ones((4, 2)), np.ones(4), ("a", "b"))


def test_the_detector_scores_one_vector_or_rows_and_round_trips(tmp_path):
    data, _ = rows()
    x = np.stack([r["trait_drift"] for r in data])
    y = np.array([r["label"] == "harmful" for r in data], dtype=int)
    det = fit_detector(x, y, NAMES)
    one = det.score(torch.as_tensor(x[0]))
    many = det.score(torch.as_tensor(x))
    assert isinstance(one, float) and isinstance(many, torch.Tensor) and many.shape == (len(x),)
    assert one == pytest.approx(float(many[0]), abs=1e-6) and det.flag(x[0]) == (one >= det.threshold)
    with pytest.raises(DataFormatError, match="reads 5 features"):
        det.score(torch.zeros(3))
    back = DriftDetector.load(det.save(tmp_path / "det"))
    assert torch.allclose(back.score(torch.as_tensor(x)), many) and back.threshold == det.threshold
    (tmp_path / "det" / "tensors.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        DriftDetector.load(tmp_path / "det")


def test_youden_threshold_separates_when_it_can():
    s, y = np.array([0.1, 0.2, 0.6, 0.9]), np.array([0, 0, 1, 1])
    assert youden_threshold(s, y) == pytest.approx(0.4)  # halfway between the classes
    s, y = np.array([0.1, 0.5, 0.3, 0.9]), np.array([0, 0, 1, 1])
    t = youden_threshold(s, y)  # best J = 0.5 (flag 0.9 only, or 0.3 and up): the higher is kept
    assert 0.5 < t < 0.9 and ((s >= t) == np.array([0, 0, 0, 1], bool)).all()


def test_pc1_of_planted_one_axis_drift_is_high_and_the_null_lower(tmp_path):
    rng = np.random.default_rng(0)
    width = 32
    u = rng.standard_normal((len(NAMES), width))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    q, _ = np.linalg.qr(u.T)
    outside = np.eye(width) - q @ q.T  # raw drift the traits cannot see: high-dimensional
    axis = u[0] + 0.5 * u[1]
    planted = []
    for r in range(8):
        for step in (5, 10, 15):
            act = (r + 1) * step / 5 * axis + outside @ rng.standard_normal(width) * 3
            planted.append({"run": f"r{r}", "label": "harmful" if r % 2 else "benign", "names": NAMES,
                            "trait_drift": u @ act, "activation_drift": act})  # fmt: skip
    a = drift_axis(planted, u, n_boot=200, n_null=50)
    assert a.pc1_share > 0.9 and a.null["q95"] < a.pc1_share and a.null["p_value"] < 0.05
    assert a.pc1_share_ci[0] <= a.pc1_share <= a.pc1_share_ci[1] + 1e-9
    assert a.null["check_unrotated"] == pytest.approx(a.pc1_share, abs=1e-9)
    loadings = np.asarray(a.loadings)
    expected = u @ axis / np.linalg.norm(u @ axis)
    assert abs(loadings @ expected) > 0.99 and loadings @ expected > 0  # oriented: harmful rows score higher
    iso = [dict(r, activation_drift=(v := rng.standard_normal(width)), trait_drift=u @ v) for r in planted]
    assert drift_axis(iso, u, n_boot=0, n_null=20).pc1_share < 0.6
    back = DriftAxis.load(a.save(tmp_path / "axis"))
    assert back.pc1_share == a.pc1_share and back.loadings == a.loadings and back.names == NAMES
