"""Layer sweep: fit a direction at every layer, measure it held-out, pick the best layer.

Best-layer rule (stated once, stored with every result): highest held-out AUROC; ties
broken by higher held-out accuracy, then larger held-out Cohen's d, then the earliest
layer. Scores are compared after rounding to 6 decimals so float noise is not a tiebreak.

A sweep result is a directory: ``config.json`` (kind ``layer_sweep``), ``sweep.csv`` (one
row per layer), ``directions.safetensors`` (the vector fitted at every layer) and, when
asked, ``sweep.png``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, overload

import torch

from emscope.artifacts import DAMAGED, load_artifact, save_artifact
from emscope.data.transcripts import Transcript, fingerprint
from emscope.directions.cross_domain import CrossDomainResult, check_protocol, sweep_cross_domain
from emscope.directions.direction import LAYER_CONVENTION, Direction, direction_provenance
from emscope.directions.extract import extract_direction, get_method
from emscope.errors import ArtifactError, DataFormatError, lookup
from emscope.models.architecture import LayerSpec
from emscope.models.loading import LoadedModel
from emscope.records import write_csv

log = logging.getLogger(__name__)
KIND = "layer_sweep"
BEST_LAYER_RULE = (
    "highest held-out AUROC; ties -> higher held-out accuracy -> larger held-out Cohen's d -> earliest layer "
    "(compared at 6 decimals)"
)
CSV_COLUMNS = (
    "layer",
    "accuracy",
    "accuracy_lo",
    "accuracy_hi",
    "auroc",
    "auroc_lo",
    "auroc_hi",
    "cohens_d",
    "cohens_d_lo",
    "cohens_d_hi",
    "train_accuracy",
    "threshold",
    "norm",
)


@dataclass(frozen=True)
class SweepResult:
    """Per-layer held-out metrics, the fitted directions and the chosen layer."""

    directions: dict[int, Direction]
    best_layer: int
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    rule: str = BEST_LAYER_RULE

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    @property
    def best(self) -> Direction:
        return self.directions[self.best_layer]

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per layer, with the columns of ``sweep.csv``."""
        out = []
        for layer in self.layers:
            m = self.directions[layer].metrics
            row: dict[str, Any] = {"layer": layer, "norm": float(self.directions[layer].vector.norm())}
            for key in ("accuracy", "auroc", "cohens_d"):
                lo, hi = m.get(f"{key}_ci", [float("nan"), float("nan")])
                row.update({key: m[key], f"{key}_lo": lo, f"{key}_hi": hi})
            row.update(train_accuracy=m["train_accuracy"], threshold=m["threshold"])
            out.append(row)
        return out

    def save(self, directory: str | os.PathLike[str], plot: bool = True) -> Path:
        """Write ``config.json``, ``sweep.csv``, ``directions.safetensors`` (and ``sweep.png``)."""
        directory = Path(directory)
        best = self.best
        fields = {
            **self.config,
            "method": self.method,
            "best_layer": self.best_layer,
            "best_layer_rule": self.rule,
            "layers": self.layers,
            "layer_convention": LAYER_CONVENTION,
            "rows": self.rows(),
            "direction_fields": {k: v for k, v in best.fields().items() if k not in ("layer", "metrics")},
            "metrics": {str(layer): d.metrics for layer, d in self.directions.items()},
        }
        tensors = {f"layer_{layer}": d.vector for layer, d in self.directions.items()}
        save_artifact(directory, KIND, fields, tensors, tensors_name="directions.safetensors")
        write_csv(directory / "sweep.csv", self.rows(), CSV_COLUMNS)
        if plot:
            plot_sweep(self, directory / "sweep.png")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SweepResult:
        required = ("method", "best_layer", "best_layer_rule", "direction_fields", "metrics")
        config, tensors = load_artifact(directory, KIND, required)
        base = config["direction_fields"]
        names = set(Direction.__dataclass_fields__) - {"vector", "layer", "metrics"}
        try:
            directions = {
                int(layer): Direction(
                    vector=tensors[f"layer_{layer}"],
                    layer=int(layer),
                    metrics=metrics,
                    **{k: v for k, v in base.items() if k in names},
                )
                for layer, metrics in config["metrics"].items()
            }
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ArtifactError(
                f"{directory}: the sweep's layers do not match its tensors ({e!r}); {DAMAGED}"
            ) from None
        skip = {
            "method",
            "best_layer",
            "best_layer_rule",
            "layers",
            "rows",
            "direction_fields",
            "metrics",
            "tensors_file",
            "layer_convention",
            "kind",
            "format_version",
            "emscope_version",
        }
        return cls(
            directions,
            int(config["best_layer"]),
            config["method"],
            {k: v for k, v in config.items() if k not in skip},
            config["best_layer_rule"],
        )


def pick_best_layer(directions: Mapping[int, Direction]) -> int:
    """Apply `BEST_LAYER_RULE` to the held-out metrics."""

    def key(layer: int) -> tuple[float, float, float, int]:
        m = directions[layer].metrics
        return (round(m["auroc"], 6), round(m["accuracy"], 6), round(m["cohens_d"], 6), -layer)

    return max(directions, key=key)


def layer_sweep(
    pos: Mapping[int, torch.Tensor],
    neg: Mapping[int, torch.Tensor],
    method: str = "diff_in_means",
    test_frac: float = 0.3,
    seed: int = 0,
    n_boot: int = 1000,
    **direction_fields: Any,
) -> SweepResult:
    """Fit and measure a direction at every layer present in both ``pos`` and ``neg`` ({layer: [N, D]}).

    The same train/held-out split (from `seed`) is used at every layer, so layers are
    compared on the same held-out rows. Extra keyword arguments (``model``,
    ``dataset_fingerprint`` ...) are passed to `emscope.directions.extract.extract_direction`.
    """
    layers = sorted(set(pos) & set(neg))
    if not layers:
        raise DataFormatError(f"no layer is present in both sets (pos has {sorted(pos)}, neg has {sorted(neg)})")
    directions = {
        layer: extract_direction(
            pos[layer],
            neg[layer],
            layer,
            method=method,
            test_frac=test_frac,
            seed=seed,
            n_boot=n_boot,
            **direction_fields,
        )
        for layer in layers
    }
    best = pick_best_layer(directions)
    log.info("layer sweep (%s): best layer %d, held-out AUROC %.3f", method, best, directions[best].metrics["auroc"])
    config = {"test_frac": test_frac, "seed": seed, "n_boot": n_boot}
    return SweepResult(directions, best, method, config)


def plot_sweep(result: SweepResult, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Held-out accuracy and AUROC against layer, with 95% bootstrap bands; the best layer marked."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    rows = result.rows()
    xs = [r["layer"] for r in rows]
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for key, colour in (("accuracy", "tab:blue"), ("auroc", "tab:orange")):
        ax.plot(xs, [r[key] for r in rows], marker="o", ms=3, color=colour, label=f"held-out {key}")
        ax.fill_between(xs, [r[f"{key}_lo"] for r in rows], [r[f"{key}_hi"] for r in rows], color=colour, alpha=0.2)
    ax.axvline(result.best_layer, color="grey", ls="--", lw=1, label=f"best layer {result.best_layer}")
    ax.axhline(0.5, color="black", lw=0.6, alpha=0.5)
    ax.set_xlabel("layer (output of decoder block i)")
    ax.set_ylabel("held-out score")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(title or f"{result.best.model}: {result.method} layer sweep (95% bootstrap bands)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


@overload
def sweep_model(
    lm: LoadedModel,
    pos: Sequence[Transcript],
    neg: Sequence[Transcript],
    layers: LayerSpec = ...,
    method: str = ...,
    pool: str = ...,
    test_frac: float = ...,
    seed: int = ...,
    n_boot: int = ...,
    batch_size: int = ...,
    labels: tuple[str, str] = ...,
    progress: bool = ...,
    max_length: int | None = ...,
    *,
    protocol: Literal["random_split"] = ...,
) -> SweepResult: ...


@overload
def sweep_model(
    lm: LoadedModel,
    pos: Sequence[Transcript],
    neg: Sequence[Transcript],
    layers: LayerSpec = ...,
    method: str = ...,
    pool: str = ...,
    test_frac: float = ...,
    seed: int = ...,
    n_boot: int = ...,
    batch_size: int = ...,
    labels: tuple[str, str] = ...,
    progress: bool = ...,
    max_length: int | None = ...,
    *,
    protocol: Literal["cross_domain"],
    domains: Sequence[str],
    styles: Sequence[str] | None = ...,
    methods: Sequence[str] | None = ...,
    pools: Sequence[str] | None = ...,
    cache_dir: str | os.PathLike[str] | None = ...,
) -> CrossDomainResult: ...


def sweep_model(
    lm: LoadedModel,
    pos: Sequence[Transcript],
    neg: Sequence[Transcript],
    layers: LayerSpec = "all",
    method: str = "diff_in_means",
    pool: str = "mean",
    test_frac: float = 0.3,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 8,
    labels: tuple[str, str] = ("misaligned", "aligned"),
    progress: bool = True,
    max_length: int | None = None,
    *,
    protocol: str = "random_split",
    domains: Sequence[str] | None = None,
    styles: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    pools: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> SweepResult | CrossDomainResult:
    """Capture ``pos`` and ``neg`` transcripts on `lm` and run `layer_sweep` with full provenance.

    When both lists have the same length, row i of each is taken to answer the same
    question, and pairs are kept together on one side of the train/held-out split. A transcript longer than
    the model's context is refused unless `max_length` cuts it (the count is logged).

    ``protocol="cross_domain"`` (with a domain per pair in `domains`, and optionally `styles`) instead
    leaves one domain out at a time and chooses the layer, method and pooling by the mean held-out-domain
    AUROC (`emscope.directions.cross_domain`): it compares `methods` (default: `method` alone) and `pools`
    (default: `pool` alone) and caches the capture in `cache_dir`.
    """
    from emscope.activations.capture import POOLERS, capture_activations

    check_protocol(protocol, domains)
    if protocol == "cross_domain" and domains is not None:  # check_protocol refused it without domains
        return sweep_cross_domain(
            lm,
            pos,
            neg,
            domains,
            styles,
            layers=layers,
            methods=methods or (method,),
            pools=pools or (pool,),
            test_frac=test_frac,
            seed=seed,
            n_boot=n_boot,
            batch_size=batch_size,
            labels=labels,
            progress=progress,
            max_length=max_length,
            cache_dir=cache_dir,
        )

    get_method(method)  # fail before the (slow) capture
    lookup(POOLERS, pool, "pool for a direction")  # one vector per transcript: not "tokens"
    if not pos or not neg:
        raise DataFormatError(f"need transcripts on both sides, got {len(pos)} pos and {len(neg)} neg")
    data = [replace(t, label=labels[0]) for t in pos] + [replace(t, label=labels[1]) for t in neg]
    acts = capture_activations(
        lm, data, layers=layers, pool=pool, batch_size=batch_size, progress=progress, max_length=max_length
    )
    n = len(pos)
    pos_acts = {layer: x[:n] for layer, x in acts.pooled.items()}
    neg_acts = {layer: x[n:] for layer, x in acts.pooled.items()}
    data_fingerprint = fingerprint(data)
    result = layer_sweep(
        pos_acts,
        neg_acts,
        method=method,
        test_frac=test_frac,
        seed=seed,
        n_boot=n_boot,
        dataset_fingerprint=data_fingerprint,
        token_selection=f"response_{pool}",
        labels=labels,
        **direction_provenance(lm),
    )
    config = {
        **result.config,
        **lm.provenance(),
        "pool": pool,
        "dataset_fingerprint": data_fingerprint,
        "n_pos": len(pos),
        "n_neg": len(neg),
        "labels": list(labels),
    }
    return replace(result, config=config)
