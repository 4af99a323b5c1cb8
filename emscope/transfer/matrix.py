"""`transfer_matrix`: every directed (donor, receiver) pair of a set of models, with donor and receiver scores.

    result = transfer_matrix(["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"], "runs/transfer")
    result.scores["auroc_mapped"]["donor"]        # row means with 95% bootstrap intervals

For each model: its pooled activations at one layer on the neutral transcripts and on the corpus
(`emscope.transfer.paired.capture_side`, resumable under ``OUT/acts/``) and its native direction. For
each directed pair: a map (``OUT/maps/DONOR__RECEIVER``), the donor's native direction mapped into the
receiver, its geometry and detection beside controls (`emscope.transfer.pair`) and, optionally, its
steering behaviour beside native, random, orthogonal and mapped-random controls
(`emscope.transfer.behaviour`, resumable under ``OUT/behaviour/RECEIVER/``). Models are loaded one at
a time. The matrices, scores and asymmetries with bootstrap intervals (`emscope.transfer.bootstrap`)
are saved as a ``transfer_matrix`` result (``config.json`` + ``cells.csv``) with heatmaps.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emscope.artifacts import atomic_write_bytes, read_config, write_config
from emscope.data.transcripts import Transcript
from emscope.directions.contrast import ContrastPair
from emscope.directions.direction import Direction
from emscope.errors import ArtifactError, ConfigError
from emscope.models.loading import LoadedModel, load_model
from emscope.records import write_csv
from emscope.transfer import behaviour as bh
from emscope.transfer.bootstrap import bootstrap_scores
from emscope.transfer.config import TransferConfig, behaviour_prompts, slug, study_data
from emscope.transfer.mapped import map_direction, mapped_random_directions
from emscope.transfer.maps import ActivationMap, fit_map
from emscope.transfer.pair import PairReport, analyse_pair
from emscope.transfer.paired import ModelSide, capture_side, default_layer

log = logging.getLogger(__name__)
KIND = "transfer_matrix"
CELLS_NAME = "cells.csv"
SUMMARY_NAME = "summary.md"
CELL_COLUMNS = [
    "donor",
    "receiver",
    "map_kind",
    "map_r2_heldout",
    "cosine",
    "cosine_z_vs_mapped_random",
    "cosine_mapped_random_mean",
    "auroc_mapped",
    "auroc_native",
    "auroc_mapped_random_mean",
    "behaviour_effect_mapped",
    "behaviour_effect_native",
    "behaviour_z",
    "behaviour_specific",
]
Loader = Callable[[str], LoadedModel]


@dataclass
class TransferMatrix:
    """The matrix study: models, per-pair cells, metric matrices with donor/receiver scores, behaviour."""

    models: list[str]
    layers: list[int]
    cells: list[dict[str, Any]]
    scores: dict[str, Any]  # metric -> {matrix, donor, receiver, asymmetry, pair_asymmetry}: {value, ci_low, ci_high}
    behaviour: dict[str, Any] = field(default_factory=dict)  # receiver -> behaviour_summary
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        out = Path(directory)
        write_csv(out / CELLS_NAME, [_flat(c) for c in self.cells], CELL_COLUMNS)
        write_config(
            out,
            KIND,
            {
                "models": self.models,
                "layers": self.layers,
                "cells": self.cells,
                "scores": self.scores,
                "behaviour": self.behaviour,
                "study": self.config,
                "meta": self.meta,
                "csv_file": CELLS_NAME,
            },
        )
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TransferMatrix:
        c = read_config(directory, KIND, required=("models", "layers", "cells", "scores"))
        return cls(
            c["models"],
            c["layers"],
            c["cells"],
            c["scores"],
            c.get("behaviour", {}),
            c.get("study", {}),
            c.get("meta", {}),
        )

    def cell(self, donor: str, receiver: str) -> dict[str, Any]:
        for c in self.cells:
            if c["donor"] == donor and c["receiver"] == receiver:
                return c
        raise ArtifactError(f"no cell {donor} -> {receiver}; models: {', '.join(self.models)}")


def _flat(cell: dict[str, Any]) -> dict[str, Any]:
    g, d, b = cell["geometry"], cell["detection"], cell.get("behaviour") or {}
    return {
        "donor": cell["donor"],
        "receiver": cell["receiver"],
        "map_kind": cell["map_kind"],
        "map_r2_heldout": cell["map_r2_heldout"],
        "cosine": g["cosine"],
        "cosine_z_vs_mapped_random": g["vs_mapped_random"]["z"],
        "cosine_mapped_random_mean": g["mapped_random"]["mean"],
        "auroc_mapped": d["auroc_mapped"],
        "auroc_native": d["auroc_native"],
        "auroc_mapped_random_mean": d["auroc_mapped_random"]["mean"],
        "behaviour_effect_mapped": (b.get("effect") or {}).get("value"),
        "behaviour_effect_native": b.get("native_effect"),
        "behaviour_z": b.get("z"),
        "behaviour_specific": b.get("specific"),
    }


def _layer(config: TransferConfig, lm: LoadedModel, spec: str) -> int:
    return config.layers[spec] if spec in config.layers else default_layer(lm, config.depth)


def transfer_matrix(
    models: Sequence[str],
    out: str | os.PathLike[str],
    config: TransferConfig | None = None,
    *,
    loader: Loader = load_model,
    progress: bool = False,
) -> TransferMatrix:
    """Run the whole study over `models` (specs, loaded one at a time by `loader`) into `out`; resumable."""
    config = config or TransferConfig()
    if len(models) < 2 or len(set(models)) != len(models):
        raise ConfigError(f"a transfer matrix needs at least 2 distinct models, got {list(models)}")
    unknown = sorted(set(config.layers) - set(models))
    if unknown:
        raise ConfigError(f"layers given for model(s) not in the study: {unknown}; models: {list(models)}")
    root = Path(out)
    neutral, pairs = study_data(config)
    names: list[str] = []
    for spec in models:
        names.append(slug(spec, names))
    sides = [
        _capture(loader(spec), spec, root / "acts" / name, neutral, pairs, config, progress)
        for spec, name in zip(models, names, strict=True)
    ]
    natives = [s.native_direction(config.test_frac, config.seed) for s in sides]
    for d, name in zip(natives, names, strict=True):
        d.save(root / "directions" / name)
    maps, reports = _fit_and_analyse(sides, natives, names, root, config)
    scores = bootstrap_scores(sides, maps, test_frac=config.test_frac, seed=config.seed, n_boot=config.n_boot)
    summaries: dict[str, Any] = {}
    if config.behaviour:
        for j, spec in enumerate(models):
            if config.behaviour_receivers is None or spec in config.behaviour_receivers:
                behaviour_dir = root / "behaviour" / names[j]
                summaries[spec] = _receiver_behaviour(
                    loader(spec), j, models, sides, natives, maps, config, behaviour_dir
                )
    result = TransferMatrix(
        models=list(models),
        layers=[s.endpoint.layer for s in sides],
        cells=json_safe(_cells(models, reports, summaries)),
        scores=json_safe(scores),
        behaviour=summaries,
        config=config.record(),
        meta={
            "slugs": names,
            "widths": [s.endpoint.width for s in sides],
            "lineages": [s.endpoint.lineage.to_dict() for s in sides],
            "native_auroc": [n.metrics.get("auroc") for n in natives],
            "n_neutral": len(neutral),
            "n_corpus_pairs": len(pairs),
            "neutral_fingerprint": sides[0].neutral_fingerprint,
            "corpus_fingerprint": sides[0].corpus_fingerprint,
        },
    )
    result.save(root)
    from emscope.transfer.heatmaps import plot_all
    from emscope.transfer.report import markdown

    plot_all(result, root)
    atomic_write_bytes(root / SUMMARY_NAME, (markdown(result) + "\n").encode())
    return result


def _capture(
    lm: LoadedModel,
    spec: str,
    out: Path,
    neutral: Sequence[Transcript],
    pairs: Sequence[ContrastPair],
    config: TransferConfig,
    progress: bool,
) -> ModelSide:
    layer = _layer(config, lm, spec)
    log.info("capturing %s at layer %d", spec, layer)
    return capture_side(
        lm, layer, neutral, pairs, out, max_length=config.max_length, batch_size=config.batch_size, progress=progress
    )


def _fit_and_analyse(
    sides: Sequence[ModelSide], natives: Sequence[Direction], names: Sequence[str], root: Path, config: TransferConfig
) -> tuple[dict[tuple[int, int], ActivationMap], dict[tuple[int, int], PairReport]]:
    """A map for every directed pair (saved under ``maps/``), and the geometry and detection of its mapped direction."""
    maps: dict[tuple[int, int], ActivationMap] = {}
    reports: dict[tuple[int, int], PairReport] = {}
    for i, donor in enumerate(sides):
        for j, receiver in enumerate(sides):
            if i == j:
                continue
            m = fit_map(
                donor.neutral, receiver.neutral, donor.endpoint, receiver.endpoint, config.map_kind,
                test_frac=config.map_test_frac, seed=config.seed, dataset_fingerprint=donor.neutral_fingerprint,
            )  # fmt: skip
            m.save(root / "maps" / f"{names[i]}__{names[j]}")
            maps[(i, j)] = m
            reports[(i, j)] = analyse_pair(
                m,
                natives[i],
                receiver,
                natives[j],
                n_random=config.n_random,
                test_frac=config.test_frac,
                seed=config.seed,
            )
    return maps, reports


def _cells(
    models: Sequence[str], reports: Mapping[tuple[int, int], PairReport], summaries: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One record per directed pair: its report, and its behaviour where the receiver was steered."""
    cells = []
    for (i, j), report in reports.items():
        cell = report.to_dict()
        cell["donor"], cell["receiver"] = models[i], models[j]
        summary = summaries.get(models[j])
        if summary is not None and models[i] in summary["mapped"]:
            b = summary["mapped"][models[i]]
            cell["behaviour"] = {
                "effect": b["effect"],
                "native_effect": summary["native"]["effect"]["value"],
                "specific": b["specific"],
                "z": (b["comparison"] or {}).get("z"),
                "native_z": (summary["native"]["comparison"] or {}).get("z"),
                "verdict": b["verdict"],
                "measure": bh.MEASURE,
            }
        cells.append(cell)
    return cells


def _receiver_behaviour(
    lm: LoadedModel,
    j: int,
    models: Sequence[str],
    sides: Sequence[ModelSide],
    natives: Sequence[Direction],
    maps: Mapping[tuple[int, int], ActivationMap],
    config: TransferConfig,
    out: Path,
) -> dict[str, Any]:
    """Steer receiver `j` with its native direction, every donor's mapped one, and all their controls."""
    native = natives[j]
    alpha = bh.default_alpha(sides[j].neutral, config.alpha_scale)
    directions = bh.receiver_directions(native, config.n_controls, config.seed)
    donors = []
    for i in range(len(models)):
        if i == j:
            continue
        mapped = map_direction(maps[(i, j)], natives[i])
        mapped_random = mapped_random_directions(maps[(i, j)], natives[i], config.n_controls, config.seed + 1)
        directions.update(bh.donor_directions(mapped, mapped_random, models[i], config.n_controls, config.seed))
        donors.append(models[i])
    prompts = behaviour_prompts(config.n_prompts)
    runs = bh.run_directions(
        lm, directions, prompts, native, alpha, bh.runs_path(out), config.max_new_tokens, config.batch_size
    )
    summary = bh.behaviour_summary(runs, donors)
    summary["alpha"] = alpha
    summary["alpha_scale"] = config.alpha_scale
    summary["n_prompts"] = len(prompts)
    return json_safe(summary)


def json_safe(x: Any) -> Any:
    """NaN/inf floats as None, so the JSON record is plain JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x
