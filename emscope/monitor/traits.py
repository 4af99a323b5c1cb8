"""`TraitSet`: one reading-route direction per trait, at one layer, measured on topics it never saw.

A trait (malice, deception, sycophancy ...) is a contrast set we wrote, ``resources/traits/TRAIT.jsonl``:
the same question answered once without and once with the trait. `load_trait_pairs` reads it as
`emscope.directions.contrast.ContrastPair` (``with`` -> misaligned, ``without`` -> aligned, the topic as
``topic``, the style as ``misaligned_kind``), so everything that reads contrast pairs reads traits.

`fit_traits` reads every pair once (`emscope.directions.pooled_cache.capture_pooled`, answer tokens,
mean pooling) and runs the leave-one-topic-out protocol of `emscope.directions.cross_domain` per trait
(difference in means, fitted on every topic but one, scored on the topic left out). Layer rule
(`LAYER_RULE`): the highest mean over traits of the held-out-topic AUROC. At that layer each trait's
direction is the difference in means over every pair, stored as a unit row; beside its held-out AUROC
sits a lexical baseline (TF-IDF on the answers, `emscope.directions.lexical`) on the same folds, and
the cosine matrix between traits.

A trait set is a directory (kind ``trait_set``): ``config.json`` (model provenance and lineage, layer,
per-trait metrics, the layer table), ``directions.safetensors``, ``traits.csv``, ``layers.csv``,
``cosines.csv`` and ``cosines.png``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.artifacts import DAMAGED, load_artifact, save_artifact
from emscope.data.transcripts import fingerprint
from emscope.directions.contrast import ContrastPair, reading_route_transcripts
from emscope.directions.direction import LAYER_CONVENTION, Direction
from emscope.directions.lexical import lexical_auroc
from emscope.errors import ArtifactError, ConfigError, DataFormatError, ModelMismatchError, lookup
from emscope.models.architecture import LayerSpec
from emscope.models.lineage import COMPATIBILITY, Compatibility, Lineage, lineage_of_spec
from emscope.records import iter_jsonl, require_text_fields, write_csv
from emscope.runtime import RESOURCES

log = logging.getLogger(__name__)
KIND = "trait_set"
TRAIT_SET_FORMAT = 1
TRAITS_DIR = RESOURCES / "traits"
PROBE_SET = "probe_set"  # the file of probes beside the traits, not a trait
BUILTIN_TRAITS = (
    "malice",
    "deception",
    "sycophancy",
    "fabrication",
    "power_seeking",
    "callousness",
    "rudeness",
    "formality",
)
CONTROL_TRAITS = ("formality",)  # not about alignment: formal against casual register, both helpful
METHOD = "diff_in_means"
LAYER_RULE = (
    "highest mean over traits of the held-out-topic AUROC (difference in means fitted on every topic but one, "
    "scored on the topic left out, topics weighted equally); ties -> earliest layer; fixed before any result is seen"
)
_FIELDS = ("id", "trait", "topic", "question", "without", "with")
TRAIT_COLUMNS = (
    "trait",
    "control",
    "heldout_auroc",
    "heldout_auroc_lo",
    "heldout_auroc_hi",
    "worst_topic",
    "worst_topic_auroc",
    "within_split_auroc",
    "lexical_auroc",
    "shift",
    "n_pairs",
    "n_topics",
)


def trait_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    return Path(directory) if directory is not None else TRAITS_DIR


def available_traits(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """The traits of a directory (one ``TRAIT.jsonl`` each, the probe set left out); default: the built-in ones."""
    return sorted(p.stem for p in trait_dir(directory).glob("*.jsonl") if p.stem != PROBE_SET)


def load_trait_pairs(trait: str, directory: str | os.PathLike[str] | None = None) -> list[ContrastPair]:
    """The pairs of one trait (``with`` -> misaligned, ``without`` -> aligned; topic and style kept)."""
    root = trait_dir(directory)
    known = available_traits(root)
    if not known:
        raise DataFormatError(f"{root} holds no trait files (TRAIT.jsonl); pass the directory that holds them")
    lookup(known, trait, f"trait (files in {root})")
    pairs = []
    for where, obj in iter_jsonl(str(root / f"{trait}.jsonl")):
        require_text_fields(where, obj, _FIELDS)
        if obj["trait"] != trait:
            raise DataFormatError(f"{where}: the line is tagged trait {obj['trait']!r} but lies in {trait}.jsonl")
        pairs.append(
            ContrastPair(obj["id"], obj["question"], obj["without"], obj["with"], obj["topic"], obj.get("style", ""))
        )
    if not pairs:
        raise DataFormatError(f"{root / f'{trait}.jsonl'} holds no pairs")
    return pairs


@dataclass(frozen=True, eq=False)
class TraitSet:
    """One unit direction per trait at one layer (rows of `directions`), with held-out metrics and provenance."""

    names: tuple[str, ...]
    layer: int
    directions: torch.Tensor  # [n_traits, width], unit rows, pointing from without to with the trait
    model: str
    model_revision: str | None = None
    lineage: Lineage | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # per trait: the columns of traits.csv
    layer_rows: list[dict[str, Any]] = field(default_factory=list)  # per layer: mean and per-trait held-out AUROC
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.lineage, dict):
            object.__setattr__(self, "lineage", Lineage.from_dict(self.lineage))
        object.__setattr__(self, "names", tuple(self.names))
        if self.directions.ndim != 2 or self.directions.shape[0] != len(self.names):
            raise DataFormatError(
                f"a trait set needs one direction row per trait: {len(self.names)} names, "
                f"directions of shape {list(self.directions.shape)}"
            )
        if len(set(self.names)) != len(self.names):
            raise DataFormatError(f"trait names repeat: {list(self.names)}")

    @property
    def width(self) -> int:
        return int(self.directions.shape[1])

    @property
    def model_lineage(self) -> Lineage:
        return self.lineage if self.lineage is not None else lineage_of_spec(self.model)

    @property
    def cosines(self) -> torch.Tensor:
        """[n_traits, n_traits] cosine similarity between the trait directions."""
        unit = self.directions.double()
        unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (unit @ unit.T).float()

    def index(self, name: str) -> int:
        return self.names.index(lookup(self.names, name, "trait"))

    def direction(self, name: str) -> Direction:
        """One trait as a unit `Direction` (to steer or ablate with it)."""
        i = self.index(name)
        return Direction(
            vector=self.directions[i].clone(),
            layer=self.layer,
            model=self.model,
            method=METHOD,
            normalisation="unit",
            model_revision=self.model_revision,
            lineage=self.lineage,
            metrics=dict(self.metrics.get(name, {})),
            meta={"trait": name, "sign": "points from without the trait to with it"},
        )

    def check_compatible(self, lm: Any, compatibility: Compatibility = "same_base") -> None:
        """Refuse a model of another width, depth or base (one-line `ModelMismatchError`).

        ``"same_base"`` (default) accepts the base model and its fine-tunes (a run's checkpoints).
        """
        lookup(COMPATIBILITY, compatibility, "compatibility")
        if self.width != lm.width or not 0 <= self.layer < lm.n_layers:
            raise ModelMismatchError(
                f"trait set from {self.model!r} (width {self.width}, layer {self.layer}) does not fit {lm.spec!r} "
                f"(width {lm.width}, {lm.n_layers} layers); fix: fit a trait set on this model "
                f"(emscope traits fit --model {lm.spec} --out DIR)"
            )
        mine = self.model_lineage
        theirs = lm.lineage if hasattr(lm, "lineage") else Lineage(base=lm.spec)
        if compatibility == "any" or mine.fits(theirs, compatibility):
            return
        raise ModelMismatchError(
            f"trait set from {self.model!r} [{mine.describe()}] does not fit {lm.spec!r} [{theirs.describe()}] "
            f"under compatibility={compatibility!r}; fix: fit a trait set on this model "
            f"(emscope traits fit --model {lm.spec}), or pass compatibility='any' to read it across models on purpose"
        )

    def rows(self) -> list[dict[str, Any]]:
        return [{"trait": n, "control": n in CONTROL_TRAITS, **self.metrics.get(n, {})} for n in self.names]

    def save(self, directory: str | os.PathLike[str], plot: bool = True) -> Path:
        """Write ``config.json``, ``directions.safetensors`` and the CSVs (and ``cosines.png``)."""
        directory = Path(directory)
        fields = {
            "trait_set_format": TRAIT_SET_FORMAT,
            "names": list(self.names),
            "layer": self.layer,
            "layer_convention": LAYER_CONVENTION,
            "width": self.width,
            "model": self.model,
            "model_revision": self.model_revision,
            "lineage": self.lineage.to_dict() if self.lineage is not None else None,
            "metrics": self.metrics,
            "layer_rows": self.layer_rows,
            "meta": self.meta,
        }
        save_artifact(directory, KIND, fields, {"directions": self.directions.float()}, "directions.safetensors")
        write_csv(directory / "traits.csv", self.rows(), TRAIT_COLUMNS)
        write_csv(directory / "layers.csv", self.layer_rows)
        cos = self.cosines.tolist()
        write_csv(
            directory / "cosines.csv",
            [{"trait": a, **dict(zip(self.names, r, strict=True))} for a, r in zip(self.names, cos, strict=True)],
        )
        if plot:
            plot_cosines(self, directory / "cosines.png")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TraitSet:
        config, tensors = load_artifact(directory, KIND, ("names", "layer", "model"), ("directions",))
        if config.get("trait_set_format", 1) > TRAIT_SET_FORMAT:
            raise ArtifactError(
                f"{directory} holds a trait set of format {config['trait_set_format']}; this emscope reads up to "
                f"{TRAIT_SET_FORMAT}: upgrade emscope"
            )
        try:
            return cls(
                names=tuple(config["names"]),
                layer=int(config["layer"]),
                directions=tensors["directions"],
                model=config["model"],
                model_revision=config.get("model_revision"),
                lineage=config.get("lineage"),
                metrics=config.get("metrics", {}),
                layer_rows=config.get("layer_rows", []),
                meta=config.get("meta", {}),
            )
        except (DataFormatError, TypeError, ValueError) as e:
            raise ArtifactError(f"{directory}: the trait names do not match the directions ({e}); {DAMAGED}") from None


def choose_layer(per_trait: Mapping[str, Mapping[int, float]]) -> tuple[int, list[dict[str, Any]]]:
    """Apply `LAYER_RULE` to ``{trait: {layer: held-out AUROC}}``; (layer, one row per layer)."""
    layers = sorted(set.intersection(*(set(v) for v in per_trait.values())))
    rows = [
        {"layer": layer, "mean_heldout_auroc": float(np.mean([v[layer] for v in per_trait.values()]))}
        | {t: v[layer] for t, v in per_trait.items()}
        for layer in layers
    ]
    best = max(rows, key=lambda r: (round(r["mean_heldout_auroc"], 6), -r["layer"]))
    return int(best["layer"]), rows


def lexical_heldout_auroc(pairs: Sequence[ContrastPair]) -> float:
    """Mean over topics of the lexical baseline's AUROC on the topic left out (the folds of the directions)."""
    topics = np.asarray([p.topic for p in pairs], dtype=object)
    scores = []
    for topic in dict.fromkeys(topics.tolist()):
        train = [p for p, t in zip(pairs, topics, strict=True) if t != topic]
        test = [p for p, t in zip(pairs, topics, strict=True) if t == topic]
        scores.append(
            lexical_auroc(
                [p.misaligned for p in train],
                [p.aligned for p in train],
                [p.misaligned for p in test],
                [p.aligned for p in test],
            )
        )
    return float(np.mean(scores))


def fit_traits(
    lm: Any,
    traits: Sequence[str] = BUILTIN_TRAITS,
    *,
    layer: int | None = None,
    layers: LayerSpec = "all",
    directory: str | os.PathLike[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TraitSet:
    """Fit one direction per trait on `lm` (reading route, difference in means) and choose the layer.

    `layer` fixes the layer; otherwise every layer of `layers` is read and `LAYER_RULE` chooses.
    `directory` holds the trait files (default: the built-in ones); `cache_dir` keeps the capture
    (a rerun reads it back). Held-out numbers come from leave-one-topic-out folds.
    """
    from emscope.directions.cross_domain import cross_domain_sweep
    from emscope.directions.pooled_cache import capture_pooled

    traits = list(dict.fromkeys(traits))
    if not traits:
        raise ConfigError("fit_traits needs at least one trait")
    pairs = {t: load_trait_pairs(t, directory) for t in traits}  # an unknown trait fails before the capture
    for t, ps in pairs.items():
        if len({p.topic for p in ps}) < 2:
            raise DataFormatError(f"trait {t!r} has pairs on one topic only; held-out topics need at least 2")
    wanted: LayerSpec = [layer] if layer is not None else layers
    aligned, misaligned = [], []
    for t in traits:
        a, m = reading_route_transcripts(pairs[t])
        aligned += a
        misaligned += m
    data = misaligned + aligned
    acts = capture_pooled(
        lm,
        data,
        wanted,
        pools=("mean",),
        cache_dir=cache_dir,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
    )["mean"]
    n = len(misaligned)
    per_trait, sweeps, start = {}, {}, 0
    for t in traits:
        rows = slice(start, start + len(pairs[t]))
        start += len(pairs[t])
        pos = {layer_: x[:n][rows] for layer_, x in acts.items()}
        neg = {layer_: x[n:][rows] for layer_, x in acts.items()}
        sweeps[t] = cross_domain_sweep(
            {"mean": pos}, {"mean": neg}, [p.topic for p in pairs[t]], methods=(METHOD,), seed=seed, n_boot=n_boot
        )
        per_trait[t] = {int(r["layer"]): float(r["heldout_domain_auroc"]) for r in sweeps[t].rows}
        log.info("trait %s: best own layer %d", t, sweeps[t].best_layer)
    chosen, layer_rows = choose_layer(per_trait)
    vectors, metrics = [], {}
    for t in traits:
        vector = sweeps[t].directions[chosen].vector.float()  # difference in means over every pair
        unit = vector / vector.norm().clamp_min(1e-12)
        row = next(r for r in sweeps[t].rows if r["layer"] == chosen)
        vectors.append(unit)
        metrics[t] = {
            "heldout_auroc": row["heldout_domain_auroc"],
            "heldout_auroc_lo": row["heldout_domain_auroc_lo"],
            "heldout_auroc_hi": row["heldout_domain_auroc_hi"],
            "worst_topic": row["worst_domain"],
            "worst_topic_auroc": row["worst_domain_auroc"],
            "within_split_auroc": row["within_split_auroc"],
            "lexical_auroc": lexical_heldout_auroc(pairs[t]),
            "shift": float(vector.norm()),  # projected mean difference with - without, on the unit row
            "n_pairs": len(pairs[t]),
            "n_topics": len({p.topic for p in pairs[t]}),
            "best_own_layer": sweeps[t].best_layer,
        }
    meta = {
        "method": METHOD,
        "pool": "mean",
        "token_selection": "response_mean",
        "layer_rule": LAYER_RULE if layer is None else f"fixed by the caller ({layer})",
        "protocol": "leave one topic out",
        "dataset_fingerprint": fingerprint(data),
        "trait_files": str(trait_dir(directory)),
        "control_traits": [t for t in traits if t in CONTROL_TRAITS],
        "n_boot": n_boot,
        "seed": seed,
        "model_width": lm.width,
        "model_n_layers": lm.n_layers,
        "model_source": lm.source,
        "note": "per-trait held-out AUROCs are read at the layer chosen on the mean over all traits (slightly optimistic)",
    }
    return TraitSet(
        names=tuple(traits),
        layer=chosen,
        directions=torch.stack(vectors),
        model=lm.spec,
        model_revision=lm.revision,
        lineage=lm.lineage,
        metrics=metrics,
        layer_rows=layer_rows,
        meta=meta,
    )


def plot_cosines(traits: TraitSet, path: str | os.PathLike[str]) -> Path:
    """Heatmap of the cosine matrix between trait directions."""
    from matplotlib.figure import Figure

    cos = traits.cosines.numpy()
    n = len(traits.names)
    fig = Figure(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(cos, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(n), traits.names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), traits.names, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cos[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title(f"{traits.model}: cosine between trait directions (layer {traits.layer})", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
