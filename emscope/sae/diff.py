"""Model diffing through one SAE: which latents change between a base model and its fine-tune.

The SAE is trained on the base model; the base and the fine-tune read the same transcripts
(teacher forcing), and each transcript gives, per latent, its mean activation and its
firing rate over the selected tokens (by default the assistant's response). The change is
fine-tune minus base, paired by transcript, with 95% percentile-bootstrap intervals that
resample transcripts; latents are ranked by the size of the mean change.

`encode_transcripts` is the same reading for one model (mean, max or firing rate per
transcript), e.g. the features of an SAE max-pool probe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.activations.forward import DEFAULT_BATCH_TOKENS, run_capture
from emscope.activations.inputs import prepare_inputs
from emscope.activations.pooling import TOKENS
from emscope.artifacts import load_artifact, save_artifact
from emscope.data.transcripts import Transcript, as_transcripts, fingerprint
from emscope.directions.direction import Direction
from emscope.errors import ConfigError, DataFormatError, lookup
from emscope.models.loading import LoadedModel
from emscope.records import write_csv
from emscope.sae.model import SparseAutoencoder

KIND = "latent_diff"
STATS = ("mean", "max", "rate")
_TENSORS = ("mean_base", "mean_model", "rate_base", "rate_model", "diff", "diff_ci", "rate_diff", "rate_diff_ci")


def token_rows(
    lm: LoadedModel,
    transcripts: Sequence[Transcript],
    layer: int,
    token_selection: str = "response",
    max_length: int | None = 512,
    batch_size: int = 8,
) -> tuple[list[torch.Tensor], list[list[int]], list[list[int]]]:
    """Per transcript: activation rows [T, width] at `layer` of the selected tokens, their token ids and positions."""
    inputs = prepare_inputs(lm, transcripts, token_selection, max_length)
    _, tokens = run_capture(lm, inputs, [layer], TOKENS, torch.float32, batch_size, DEFAULT_BATCH_TOKENS)
    positions = [[i for i, m in enumerate(x.mask) if m] for x in inputs]
    ids = [list(x.input_ids) for x in inputs]
    return tokens[layer], ids, positions


@torch.inference_mode()
def transcript_stats(sae: SparseAutoencoder, rows: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """{"mean", "max", "rate"}: [N, n_latents] per transcript over its rows within the SAE's norm range."""
    out = {s: torch.zeros(len(rows), sae.n_latents) for s in STATS}
    for i, r in enumerate(rows):
        r = r[sae.in_domain(r)]
        if len(r) == 0:
            continue
        z = sae.encode(r.to(sae.device)).float().cpu()
        out["mean"][i], out["max"][i], out["rate"][i] = z.mean(0), z.amax(0), (z > 0).float().mean(0)
    return out


def encode_transcripts(
    sae: SparseAutoencoder,
    lm: LoadedModel,
    data: str | os.PathLike[str] | Sequence[Transcript | dict[str, Any]],
    pool: str = "max",
    token_selection: str = "response",
    max_length: int | None = 512,
) -> torch.Tensor:
    """[N, n_latents]: each transcript's latent activations pooled over its tokens ("mean", "max" or "rate")."""
    lookup(STATS, pool, "SAE pooling")
    sae.check_compatible(lm)
    rows, _, _ = token_rows(lm, as_transcripts(data), sae.layer, token_selection, max_length)
    return transcript_stats(sae, rows)[pool]


def _paired_ci(d: torch.Tensor, n_boot: int, seed: int) -> torch.Tensor:
    """[2, n_latents] 95% percentile-bootstrap interval of the mean over rows of `d` [N, n_latents]."""
    n = len(d)
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]) / n
    boot = torch.from_numpy(weights).float() @ d.float()
    return torch.quantile(boot, torch.tensor([0.025, 0.975]), dim=0)


@dataclass(frozen=True, eq=False)
class LatentDiff:
    """Per-latent change (model - base) of mean activation and firing rate, with 95% CIs over transcripts."""

    mean_base: torch.Tensor  # [n_latents]
    mean_model: torch.Tensor
    rate_base: torch.Tensor
    rate_model: torch.Tensor
    diff: torch.Tensor  # mean_model - mean_base
    diff_ci: torch.Tensor  # [2, n_latents]
    rate_diff: torch.Tensor
    rate_diff_ci: torch.Tensor
    base: str
    model: str
    sae: dict[str, Any] = field(default_factory=dict)  # what identifies the SAE (model, layer, site, n_latents, ...)
    n_transcripts: int = 0
    token_selection: str = "response"
    dataset_fingerprint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ranking(self) -> list[int]:
        """Latents by decreasing absolute mean change."""
        return [int(i) for i in torch.argsort(self.diff.abs(), descending=True)]

    def rows(self, top: int | None = 20) -> list[dict[str, Any]]:
        """One row per latent, ranked (the `top` first; None: all)."""
        out = []
        for rank, i in enumerate(self.ranking[:top] if top is not None else self.ranking):
            lo, hi = float(self.diff_ci[0, i]), float(self.diff_ci[1, i])
            out.append(
                {
                    "rank": rank + 1,
                    "latent": i,
                    "mean_base": float(self.mean_base[i]),
                    "mean_model": float(self.mean_model[i]),
                    "diff": float(self.diff[i]),
                    "diff_ci_low": lo,
                    "diff_ci_high": hi,
                    "excludes_zero": lo > 0 or hi < 0,
                    "rate_base": float(self.rate_base[i]),
                    "rate_model": float(self.rate_model[i]),
                    "rate_diff": float(self.rate_diff[i]),
                    "rate_diff_ci_low": float(self.rate_diff_ci[0, i]),
                    "rate_diff_ci_high": float(self.rate_diff_ci[1, i]),
                }
            )
        return out

    def save(self, directory: str | os.PathLike[str]) -> Path:
        fields = {k: v for k, v in self.__dict__.items() if k not in _TENSORS}
        path = save_artifact(directory, KIND, fields, {k: getattr(self, k).float() for k in _TENSORS})
        write_csv(Path(directory) / "latents.csv", self.rows(None))
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> LatentDiff:
        config, tensors = load_artifact(directory, KIND, required=("base", "model"), tensors=_TENSORS)
        names = set(cls.__dataclass_fields__) - set(_TENSORS)
        kwargs: dict[str, Any] = {**tensors, **{k: v for k, v in config.items() if k in names}}
        return cls(**kwargs)


def model_stats(
    sae: SparseAutoencoder,
    lm: LoadedModel,
    transcripts: Sequence[Transcript],
    token_selection: str = "response",
    max_length: int | None = 512,
) -> dict[str, torch.Tensor]:
    """`transcript_stats` of `lm` reading `transcripts` (lineage checked against the SAE's base)."""
    sae.check_compatible(lm)
    rows, _, _ = token_rows(lm, transcripts, sae.layer, token_selection, max_length)
    return transcript_stats(sae, rows)


def compare_stats(
    sae: SparseAutoencoder,
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    base: LoadedModel,
    finetuned: LoadedModel,
    transcripts: Sequence[Transcript],
    token_selection: str = "response",
    max_length: int | None = 512,
    n_boot: int = 1000,
    seed: int = 0,
) -> LatentDiff:
    """The `LatentDiff` of two models' `model_stats` on the same transcripts (b - a, paired by transcript)."""
    if n_boot < 100:
        raise ConfigError(f"n_boot must be at least 100, got {n_boot}")
    d, r = b["mean"] - a["mean"], b["rate"] - a["rate"]
    return LatentDiff(
        mean_base=a["mean"].mean(0),
        mean_model=b["mean"].mean(0),
        rate_base=a["rate"].mean(0),
        rate_model=b["rate"].mean(0),
        diff=d.mean(0),
        diff_ci=_paired_ci(d, n_boot, seed),
        rate_diff=r.mean(0),
        rate_diff_ci=_paired_ci(r, n_boot, seed),
        base=base.spec,
        model=finetuned.spec,
        sae=sae_identity(sae),
        n_transcripts=len(transcripts),
        token_selection=token_selection,
        dataset_fingerprint=fingerprint(transcripts),
        meta={"n_boot": n_boot, "seed": seed, "max_length": max_length, "model_lineage": finetuned.lineage.to_dict()},
    )


def latent_diff(
    sae: SparseAutoencoder,
    base: LoadedModel,
    finetuned: LoadedModel,
    transcripts: str | os.PathLike[str] | Sequence[Transcript | dict[str, Any]],
    token_selection: str = "response",
    max_length: int | None = 512,
    n_boot: int = 1000,
    seed: int = 0,
) -> LatentDiff:
    """Per-latent change of mean activation and firing rate from `base` to `finetuned` on `transcripts`.

    Both models must share the SAE's base (lineage check); the intervals resample transcripts
    (the pairs stay paired). Rank with `LatentDiff.ranking` / `.rows()`. To compare several
    models on the same transcripts, compute `model_stats` once per model and `compare_stats`.
    """
    for lm in (base, finetuned):
        sae.check_compatible(lm)
    data = as_transcripts(transcripts)
    if len(data) < 2:
        raise DataFormatError(f"latent_diff needs at least 2 transcripts for its intervals, got {len(data)}")
    if n_boot < 100:
        raise ConfigError(f"n_boot must be at least 100, got {n_boot}")
    a = model_stats(sae, base, data, token_selection, max_length)
    b = model_stats(sae, finetuned, data, token_selection, max_length)
    return compare_stats(sae, a, b, base, finetuned, data, token_selection, max_length, n_boot, seed)


def sae_identity(sae: SparseAutoencoder) -> dict[str, Any]:
    """What names an SAE in results that used it."""
    return {
        "model": sae.model,
        "layer": sae.layer,
        "site": sae.site,
        "n_latents": sae.n_latents,
        "k": sae.k,
        "activation": sae.activation,
        "library": sae.library,
        "library_version": sae.library_version,
        "dataset_fingerprint": sae.training.get("dataset_fingerprint"),
    }


# -- reading a latent ------------------------------------------------------------------------------------


def max_activating(
    sae: SparseAutoencoder,
    lm: LoadedModel,
    transcripts: Sequence[Transcript],
    latents: Sequence[int],
    n: int = 5,
    window: int = 8,
    token_selection: str = "all",
    max_length: int | None = 512,
) -> dict[int, list[dict[str, Any]]]:
    """The `n` tokens of `transcripts` on which each latent fires most, with `window` tokens of context before.

    Each context: its activation, transcript index, token position, the token, and the text
    before it (``…before[token]``).
    """
    rows, ids, positions = token_rows(lm, transcripts, sae.layer, token_selection, max_length)
    best: dict[int, list[tuple[float, int, int]]] = {latent: [] for latent in latents}
    idx = torch.tensor(list(latents))
    for t, r in enumerate(rows):
        keep = sae.in_domain(r)
        z = sae.encode(r.to(sae.device)).float().cpu()[:, idx]
        z[~keep] = 0
        for j, latent in enumerate(latents):
            values, where = z[:, j].topk(min(n, len(z)))
            best[latent] += [(float(v), t, positions[t][int(w)]) for v, w in zip(values, where, strict=True) if v > 0]
    tok = lm.tokenizer
    out: dict[int, list[dict[str, Any]]] = {}
    for latent, found in best.items():
        out[latent] = []
        for value, t, pos in sorted(found, reverse=True)[:n]:
            before = tok.decode(ids[t][max(0, pos - window) : pos])
            token = tok.decode(ids[t][pos : pos + 1])
            out[latent].append(
                {"activation": value, "transcript": t, "position": pos, "token": token, "context": f"{before}[{token}]"}
            )
    return out


@dataclass(frozen=True)
class CosineWithDirection:
    """A latent's decoder row against a direction, read against every other latent of the SAE (the null)."""

    latent: int
    cosine: float
    null_abs_mean: float  # mean |cosine| of all latents
    null_abs_q95: float  # 95th percentile of |cosine| over all latents
    percentile: float  # % of latents with a smaller |cosine|
    n_latents: int


def cosine_with_direction(
    sae: SparseAutoencoder, direction: Direction | torch.Tensor, latents: Sequence[int]
) -> list[CosineWithDirection]:
    """Cosine of each latent's decoder row with `direction` (same layer expected), against the random-latent null."""
    if isinstance(direction, Direction) and (direction.layer != sae.layer or direction.width != sae.width):
        raise ConfigError(
            f"direction is at layer {direction.layer} (width {direction.width}) but the SAE reads layer {sae.layer} "
            f"(width {sae.width}): use a direction from the SAE's layer"
        )
    v = direction.vector if isinstance(direction, Direction) else direction
    v = v.float().cpu()
    w = sae.W_dec.float().cpu()
    cos = (w @ v) / (w.norm(dim=1).clamp_min(1e-12) * v.norm().clamp_min(1e-12))
    null = cos.abs()
    return [
        CosineWithDirection(
            latent=int(i),
            cosine=float(cos[i]),
            null_abs_mean=float(null.mean()),
            null_abs_q95=float(torch.quantile(null, 0.95)),
            percentile=100.0 * float((null < null[i]).float().mean()),
            n_latents=sae.n_latents,
        )
        for i in latents
    ]
