"""A probe judge: a linear probe on a judge model's activations while it reads a judge prompt.

The judge model reads the task description, the question and the answer (the alignment
judge prompt); the residual stream at the last prompt token, at one layer, is the feature
(layer i = output of decoder block i, as everywhere in emscope). A standardised logistic
regression trained on labelled answers (aligned = 1, misaligned = 0) gives
``score = 100 * P(aligned)``. The layer is chosen by cross-validated AUROC on the training
set only. Saved as a result directory (``config.json`` + ``probe.safetensors``).

A probe reads features of one prompt only: the judge prompt it was trained with, saved in
its ``config.json`` (``judge_prompt``; a probe saved without one, as the built-in probes
were, was trained on emscope's own prompt for its metric). `ProbeJudge.prompt` is that
template; `judge_answers` refuses any other, and `run_eval` judges with it whatever prompts
the question file carries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.artifacts import load_artifact, save_artifact
from emscope.errors import DataFormatError
from emscope.evaluation.judges.base import Judge, Judgment
from emscope.evaluation.judges.prompts import DEFAULT_PROMPTS, prompt_hash
from emscope.stats import LogisticProbe, auroc, fit_logistic_probe

KIND = "judge_probe"


def fit_probe_weights(x: np.ndarray, y: np.ndarray, c: float = 0.1) -> dict[str, np.ndarray]:
    """`emscope.stats.fit_logistic_probe` (standardised, L2, ``C=c``); returns mean, scale, coef, intercept."""
    return fit_logistic_probe(x, y, c).to_arrays()


def probe_scores(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """100 * P(high label) of the probe `w` (`fit_probe_weights`) for rows of `x`."""
    return 100.0 * LogisticProbe.from_arrays(w).probability(x)


def select_layer(
    features: np.ndarray, y: np.ndarray, layers: Sequence[int], folds: int = 4, seed: int = 0
) -> tuple[int, dict[int, float]]:
    """The layer with the best cross-validated AUROC (features: [N, n_layers, D])."""
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(folds, int(np.bincount(y).min())))
    cv = StratifiedKFold(k, shuffle=True, random_state=seed)
    res: dict[int, float] = {}
    for li, layer in enumerate(layers):
        scores = np.zeros(len(y))
        for tr, te in cv.split(features[:, li], y):
            scores[te] = probe_scores(fit_probe_weights(features[tr, li], y[tr]), features[te, li])
        res[layer] = auroc(scores[y == 1], scores[y == 0])
    return max(res, key=lambda k_: res[k_]), res


class ProbeJudge(Judge):
    """Score judge prompts with a trained probe on `judge_model`'s activations."""

    def __init__(
        self,
        judge_model: str,
        layer: int,
        weights: dict[str, np.ndarray],
        meta: dict[str, Any] | None = None,
        lm: Any = None,
    ) -> None:
        self.judge_model, self.layer, self.weights, self.meta = judge_model, layer, weights, dict(meta or {})
        self.spec = f"probe:{judge_model}@L{layer}:{self.meta.get('fingerprint', 'unsaved')}"
        self.prompt = self.meta.get("judge_prompt") or DEFAULT_PROMPTS[self.meta.get("metric", "aligned")]
        self._reader: Any = None
        self._lm = lm

    def _local(self) -> Any:
        if self._reader is None:
            from emscope.evaluation.judges.local import LocalJudge
            from emscope.models.loading import load_model

            self._reader = LocalJudge(self._lm or load_model(self.judge_model))
        return self._reader

    def features(self, prompts: Sequence[str]) -> np.ndarray:
        """The last prompt token's residual at `layer`, for each prompt (see `prompt_features`)."""
        return prompt_features(self._local(), prompts, [self.layer])[:, 0]

    def score_prompts(self, prompts: Sequence[str]) -> list[Judgment]:
        if not prompts:
            return []
        s = probe_scores(self.weights, self.features(prompts))
        return [Judgment(float(v), None, "probe") for v in s]

    def iter_scores(self, prompts: Sequence[str], chunk: int = 32) -> Iterator[tuple[int, Judgment]]:
        """Each prompt's score as soon as it is read (the prompts' shared instructions run once)."""
        reader = self._local()
        with reader.prefix_shared(prompts):
            for i, p in enumerate(prompts):
                x = reader.last_hidden(p, [self.layer]).numpy()  # [1, D]
                yield i, Judgment(float(probe_scores(self.weights, x)[0]), None, "probe")

    def save(self, directory: str | os.PathLike[str]) -> Path:
        tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in self.weights.items()}
        return save_artifact(
            directory,
            KIND,
            {"judge_model": self.judge_model, "layer": self.layer, **self.meta},
            tensors,
            tensors_name="probe.safetensors",
        )

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ProbeJudge:
        config, tensors = load_artifact(
            directory, KIND, ("judge_model", "layer"), ("mean", "scale", "coef", "intercept")
        )
        weights = {k: v.double().numpy() for k, v in tensors.items()}
        meta = {
            k: v
            for k, v in config.items()
            if k not in ("judge_model", "layer", "format_version", "kind", "emscope_version", "tensors_file")
        }
        return cls(config["judge_model"], int(config["layer"]), weights, meta)


# The labels each metric's probe is trained on: (high score, low score).
PROBE_LABELS = {"aligned": ("aligned", "misaligned"), "coherent": ("coherent", "incoherent")}


def train_probe(
    judge_model: str,
    features: np.ndarray,
    labels: Sequence[str],
    layers: Sequence[int],
    fingerprint: str = "",
    lm: Any = None,
    metric: str = "aligned",
    prompt: str | None = None,
) -> ProbeJudge:
    """Train on features [N, len(layers), D] read with the judge prompt `prompt` (default: `metric`'s own).

    Labels are ``aligned``/``misaligned`` for the alignment probe and ``coherent``/``incoherent``
    for the coherence probe; other labels are left out. Score = 100 * P(high label). The
    prompt is saved with the probe, which then reads no other.
    """
    high, low = PROBE_LABELS[metric]
    keep = [i for i, lab in enumerate(labels) if lab in (high, low)]
    if len(keep) < 8:
        raise DataFormatError(f"a probe judge needs at least 8 {high}/{low} examples, got {len(keep)}")
    y = np.array([labels[i] == high for i in keep], dtype=int)
    x = features[keep]
    layer, cv = select_layer(x, y, layers)
    w = fit_probe_weights(x[:, list(layers).index(layer)], y)
    meta = {
        "metric": metric,
        "cv_auroc_by_layer": {str(k): v for k, v in cv.items()},
        "n_train": len(keep),
        "fingerprint": fingerprint,
        "judge_prompt": prompt or DEFAULT_PROMPTS[metric],
        "judge_prompt_hash": prompt_hash(prompt or DEFAULT_PROMPTS[metric]),
    }
    return ProbeJudge(judge_model, layer, w, meta, lm=lm)


def prompt_features(reader: Any, prompts: Sequence[str], layers: Sequence[int]) -> np.ndarray:
    """Last-prompt-token residuals [N, len(layers), D] of a `LocalJudge`'s model reading `prompts`.

    The prompts' shared instructions run once into a KV cache (exact under causal
    attention) and each prompt runs only the blocks up to the last of `layers`.
    """
    with reader.prefix_shared(prompts):
        return np.stack([reader.last_hidden(p, layers).numpy() for p in prompts])
