"""Feature sets for the drift detector: the trait drift itself and the baselines it is judged against.

Every feature set is a function ``(train_rows, test_rows) -> (X_train, X_test)`` over the checkpoint rows
of `emscope.monitor.drift.checkpoint_rows`; anything it learns (a PCA) is learned on the training rows of
the fold alone, without labels. `emscope.monitor.detector.evaluate_detector` fits the same logistic
detector on each, on the same folds, with the threshold chosen the same way, so the table compares
features and nothing else.

- ``trait_drift``: the drift along each trait [n_traits] (the monitor);
- ``trait_drift_norm``: its length (one number: "how far did the model move in trait space");
- ``trait_cosine``: the trait drift divided by the length of the raw mean-activation drift, i.e. the cosine
  between the model's movement and each trait direction: which way it moved, not how far (a run that trains
  longer moves further along every direction, and a detector on raw drift flags it for that alone);
- ``activation_pc1``: unsupervised PCA of the raw mean-activation drift at the same layer, fitted on the
  fold's training checkpoints; the feature is the magnitude of a checkpoint's drift along PC1;
- ``sae_latent_drift``: the length of the drift of the mean SAE latent activations (an SAE of the base
  model at its own layer); not available when the profiles were read without an SAE;
- ``training_loss``: the run's mean training loss over the steps before the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from emscope.errors import NotSupportedError

Rows = Sequence[Mapping[str, Any]]
FeatureSet = Callable[[Rows, Rows], tuple[np.ndarray, np.ndarray]]


class FeatureUnavailable(NotSupportedError):
    """The rows lack what a feature set reads (e.g. no SAE latents were read); the message says what."""


def _stack(rows: Rows, key: str) -> np.ndarray:
    missing = sum(r.get(key) is None for r in rows)
    if missing:
        raise FeatureUnavailable(f"{missing} of {len(rows)} checkpoints have no {key}")
    return np.stack([np.atleast_1d(np.asarray(r[key], dtype=float)) for r in rows])


def trait_drift(train: Rows, test: Rows) -> tuple[np.ndarray, np.ndarray]:
    return _stack(train, "trait_drift"), _stack(test, "trait_drift")


def trait_drift_norm(train: Rows, test: Rows) -> tuple[np.ndarray, np.ndarray]:
    a, b = trait_drift(train, test)
    return np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)


def trait_cosine(train: Rows, test: Rows) -> tuple[np.ndarray, np.ndarray]:
    a, b = trait_drift(train, test)
    na = np.linalg.norm(_stack(train, "activation_drift"), axis=1, keepdims=True)
    nb = np.linalg.norm(_stack(test, "activation_drift"), axis=1, keepdims=True)
    return a / np.maximum(na, 1e-12), b / np.maximum(nb, 1e-12)


def activation_pc1(train: Rows, test: Rows) -> tuple[np.ndarray, np.ndarray]:
    a, b = _stack(train, "activation_drift"), _stack(test, "activation_drift")
    _, _, vt = np.linalg.svd(a - a.mean(0), full_matrices=False)
    pc1 = vt[0]
    return np.abs(a @ pc1)[:, None], np.abs(b @ pc1)[:, None]


def sae_latent_drift(train: Rows, test: Rows) -> tuple[np.ndarray, np.ndarray]:
    a, b = _stack(train, "latent_drift"), _stack(test, "latent_drift")
    return np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)


def training_loss(train: Rows, test: Rows) -> tuple[np.ndarray, np.ndarray]:
    return _stack(train, "loss"), _stack(test, "loss")


FEATURE_SETS: dict[str, FeatureSet] = {
    "trait_drift": trait_drift,
    "trait_drift_norm": trait_drift_norm,
    "trait_cosine": trait_cosine,
    "activation_pc1": activation_pc1,
    "sae_latent_drift": sae_latent_drift,
    "training_loss": training_loss,
}
MONITOR = "trait_drift"
