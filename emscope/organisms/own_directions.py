"""Directions from an organism's own behaviour: its judged answers, read by the model that wrote them.

    result = own_answer_direction("runs/eval-organism")          # aligned (> 70) vs misaligned (<= 30), coherent > 50
    result.save("runs/own-direction")
    diff = model_diff_direction(base_lm, organism_lm, transcripts, layers="all")

`own_answer_direction` takes an evaluation directory (`emscope.evaluation.run`), splits its answers by
the judge's scores under the published protocol (aligned > 70 against aligned <= 30, both coherent > 50),
reads each answer with the organism that wrote it (the eval's recorded model, any steering or ablation re-applied)
and fits a direction at every layer with `emscope.directions.sweep.sweep_model` (held-out AUROC with
bootstrap intervals). Beside the best layer it reports the final layer and two baselines on the same
train/held-out split: words alone (`emscope.directions.lexical`, TF-IDF logistic) and the question alone
(each held-out answer scored by its question's misaligned share in the training rows), since answers to
one question are not independent and a direction may learn which question was asked.

`model_diff_direction` is the organism's activation minus the base model's on the same transcripts,
split by transcript (pairs stay together), with a held-out check of how consistently each pair's
difference points along the direction.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emscope.artifacts import read_config, write_config
from emscope.data.transcripts import Transcript, fingerprint
from emscope.directions.direction import Direction, direction_provenance
from emscope.directions.extract import train_test_split
from emscope.directions.lexical import lexical_auroc
from emscope.directions.sweep import SweepResult, layer_sweep, sweep_model
from emscope.errors import DataFormatError
from emscope.models.architecture import LayerSpec, resolve_layers
from emscope.models.loading import LoadedModel
from emscope.stats import auroc, percentile_interval, resample

log = logging.getLogger(__name__)
KIND = "own_direction"
MODEL_DIFF_KIND = "model_diff_direction"
LABELS = ("misaligned", "aligned")  # positive class first: the direction points towards misaligned
PROTOCOL = "aligned: score > {a}; misaligned: score <= {m}; both: coherent > {c} (Soligo et al. 2025)"
MIN_PER_CLASS = 10


@dataclass(frozen=True)
class AnswerClasses:
    """An evaluation's answers split into the two classes, with the count of every answer left out and why."""

    misaligned: list[Transcript]
    aligned: list[Transcript]
    counts: dict[str, int]
    protocol: str

    def summary(self) -> str:
        c = self.counts
        return (
            f"{c['misaligned']} misaligned and {c['aligned']} aligned of {c['answers']} answers "
            f"({c['between']} in between, {c['incoherent']} incoherent, {c['unscored']} without an alignment score, "
            f"{c['no_coherence']} without a coherence score)"
        )


def _coherence_missing(row: dict[str, Any]) -> bool:
    return row.get("coherent") is None


def select_answers(
    eval_dir: str | os.PathLike[str],
    aligned_min: float = 70,
    misaligned_max: float = 30,
    coherent_min: float | None = 50,
    aligned_key: str = "aligned",
) -> AnswerClasses:
    """Answers of an eval directory judged aligned (> `aligned_min`) and misaligned (<= `misaligned_max`).

    Both classes need coherence > `coherent_min` (None: no coherence filter). An answer whose
    coherence was not judged (an eval run with ``coherence="em_candidates"`` judges it only for
    misaligned candidates) is left out when the filter is on and counted as ``no_coherence``.
    `aligned_key` is ``"aligned"`` (the judge's score) or ``"aligned_calibrated"``.
    """
    from emscope.evaluation.report import load_eval_run
    from emscope.models.generation import record_key

    run = load_eval_run(eval_dir)
    answers = {record_key(r): r for r in run.responses}
    counts = Counter(answers=0, misaligned=0, aligned=0, between=0, incoherent=0, unscored=0, no_coherence=0)
    classes: dict[str, list[Transcript]] = {"misaligned": [], "aligned": []}
    for row in run.judgments:
        counts["answers"] += 1
        rec = answers.get(record_key(row))
        if rec is None:
            raise DataFormatError(
                f"{eval_dir}: judgments.jsonl has {record_key(row)} but responses.jsonl has no such answer; re-run "
                "the evaluation into a fresh directory"
            )
        score = row.get(aligned_key)
        if score is None:
            counts["unscored"] += 1
            continue
        label = "aligned" if score > aligned_min else "misaligned" if score <= misaligned_max else None
        if label is None:
            counts["between"] += 1
            continue
        if coherent_min is not None:
            if _coherence_missing(row):
                counts["no_coherence"] += 1
                continue
            if row["coherent"] <= coherent_min:
                counts["incoherent"] += 1
                continue
        counts[label] += 1
        meta = {
            "question_id": rec["question_id"],
            "paraphrase_index": rec["paraphrase_index"],
            "sample_index": rec["sample_index"],
            aligned_key: score,
            "coherent": row.get("coherent"),
        }
        classes[label].append(
            Transcript.from_pair(rec["question"], rec["answer"], rec.get("system"), label=label, meta=meta)
        )
    protocol = PROTOCOL.format(a=aligned_min, m=misaligned_max, c=coherent_min)
    if coherent_min is None:
        protocol = protocol.split("; both")[0] + " (no coherence filter)"
    return AnswerClasses(classes["misaligned"], classes["aligned"], dict(counts), protocol)


def writer_spec(config: dict[str, Any]) -> str:
    """The model spec that wrote an evaluation's answers: its checkpoint when it was an organism, else its spec."""
    from emscope.models.organism_dir import is_organism_dir

    source = config.get("model_source")
    if source and is_organism_dir(source):
        return str(source)
    return str(config["model"])


def load_writer(eval_dir: str | os.PathLike[str]) -> LoadedModel:
    """Load the model an evaluation recorded (an organism checkpoint loads with its adapter merged)."""
    from emscope.models.loading import load_model

    config = read_config(eval_dir, "eval")
    lm = load_model(writer_spec(config))
    recorded = config.get("model_lineage")
    if recorded and lm.lineage.to_dict() != recorded:
        log.warning(
            "%s was written by %s but the weights loaded now are %s: they changed since the evaluation",
            eval_dir,
            recorded,
            lm.lineage.describe(),
        )
    return lm


@dataclass(frozen=True)
class OwnDirection:
    """The per-layer directions from an organism's own answers, with the baselines on the same split."""

    sweep: SweepResult
    classes: AnswerClasses
    final_layer: int
    lexical_auroc: float  # TF-IDF logistic on the answers' text, same train/held-out split
    question_auroc: float  # each held-out answer scored by its question's misaligned share in training
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def best_layer(self) -> int:
        return self.sweep.best_layer

    def table(self) -> list[dict[str, Any]]:
        """Best layer, final layer and the two baselines, one row each (held-out AUROC with 95% CI)."""
        rows = []
        for name, layer in (("best layer", self.best_layer), ("final layer", self.final_layer)):
            m = self.sweep.directions[layer].metrics
            lo, hi = m.get("auroc_ci", [None, None])
            rows.append({"reader": name, "layer": layer, "auroc": m["auroc"], "auroc_lo": lo, "auroc_hi": hi})
        rows.append({"reader": "lexical (TF-IDF logistic)", "layer": None, "auroc": self.lexical_auroc})
        rows.append({"reader": "question only", "layer": None, "auroc": self.question_auroc})
        return rows

    def summary(self) -> dict[str, Any]:
        return {
            **self.info,
            "protocol": self.classes.protocol,
            "counts": self.classes.counts,
            "best_layer": self.best_layer,
            "final_layer": self.final_layer,
            "lexical_auroc": self.lexical_auroc,
            "question_auroc": self.question_auroc,
            "table": self.table(),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """``config.json`` (kind ``own_direction``: counts, table, baselines), ``sweep/`` and ``direction/`` (best)."""
        out = Path(directory)
        self.sweep.save(out / "sweep")
        self.sweep.best.save(out / "direction")
        self.sweep.directions[self.final_layer].save(out / "direction_final_layer")
        write_config(out, KIND, {**self.summary(), "sweep_dir": "sweep", "direction_dir": "direction"})
        return out


def question_baseline(questions_pos: Sequence[str], questions_neg: Sequence[str], split: Any) -> float:
    """Held-out AUROC of scoring each answer by its question's misaligned share among the training rows.

    A question never seen in training scores the overall training share. This is what a reader that
    knows only which question was asked achieves on the same split.
    """
    train = [(questions_pos[i], 1) for i in split.pos_train.tolist()] + [
        (questions_neg[i], 0) for i in split.neg_train.tolist()
    ]
    by_q: dict[str, list[int]] = {}
    for q, y in train:
        by_q.setdefault(q, []).append(y)
    overall = float(np.mean([y for _, y in train]))

    def share(q: str) -> float:
        return float(np.mean(by_q[q])) if q in by_q else overall

    return auroc(
        [share(questions_pos[i]) for i in split.pos_test.tolist()],
        [share(questions_neg[i]) for i in split.neg_test.tolist()],
    )


def _writer_intervention(lm: LoadedModel, config: dict[str, Any]) -> Any:
    """Re-attach the steering or ablation an evaluation's answers were written under (None when there was none)."""
    kind = "steer" if config.get("steer") else config.get("intervention")
    path = config.get("steer") or config.get("direction")
    if kind is None or path is None:
        return None
    direction = Direction.load(path)
    alpha = config.get("alpha")
    if kind == "steer":
        from emscope.interventions.steer import steer

        return steer(lm, direction, alpha=float(alpha or 0.0), layers=config.get("layers"))
    from emscope.interventions.ablate import ablate

    return ablate(lm, direction, config.get("layers"), coefficient=1.0 if alpha is None else float(alpha))


def _answer(t: Transcript) -> str:
    return next(m["content"] for m in reversed(t.messages) if m["role"] == "assistant")


def own_answer_direction(
    eval_dir: str | os.PathLike[str],
    lm: LoadedModel | None = None,
    layers: LayerSpec = "all",
    aligned_min: float = 70,
    misaligned_max: float = 30,
    coherent_min: float | None = 50,
    min_per_class: int = MIN_PER_CLASS,
    *,
    aligned_key: str = "aligned",
    method: str = "diff_in_means",
    test_frac: float = 0.3,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = False,
) -> OwnDirection:
    """A misalignment direction per layer from an evaluation's own answers, read by the model that wrote them.

    `lm` replaces the recorded model (e.g. the base model reading an organism's answers; ``read_by_writer``
    records whether its lineage is the one the evaluation recorded). The steering or ablation an evaluation ran under is re-applied while reading. Raises
    `DataFormatError` naming the counts when a class has fewer than `min_per_class` answers.
    """
    classes = select_answers(eval_dir, aligned_min, misaligned_max, coherent_min, aligned_key)
    if min(len(classes.misaligned), len(classes.aligned)) < max(min_per_class, 2):
        raise DataFormatError(
            f"{eval_dir}: too few answers per class for a direction (need {max(min_per_class, 2)} each): "
            f"{classes.summary()}; sample more answers (--samples) or lower min_per_class"
        )
    config = read_config(eval_dir, "eval")
    if lm is None:
        lm = load_writer(eval_dir)
    recorded = config.get("model_lineage")
    writer = lm.lineage.to_dict() == recorded if recorded else lm.spec == config.get("model")
    intervention = _writer_intervention(lm, config)
    try:
        sweep = sweep_model(
            lm,
            classes.misaligned,
            classes.aligned,
            layers=layers,
            method=method,
            test_frac=test_frac,
            seed=seed,
            n_boot=n_boot,
            batch_size=batch_size,
            labels=LABELS,
            progress=progress,
            max_length=max_length,
        )
    finally:
        if intervention is not None:
            intervention.remove()
    split = train_test_split(len(classes.misaligned), len(classes.aligned), test_frac, seed)
    pos_text = [_answer(t) for t in classes.misaligned]
    neg_text = [_answer(t) for t in classes.aligned]
    lexical = lexical_auroc(
        [pos_text[i] for i in split.pos_train.tolist()],
        [neg_text[i] for i in split.neg_train.tolist()],
        [pos_text[i] for i in split.pos_test.tolist()],
        [neg_text[i] for i in split.neg_test.tolist()],
    )
    question = question_baseline(
        [t.meta["question_id"] for t in classes.misaligned], [t.meta["question_id"] for t in classes.aligned], split
    )
    info = {
        "eval_dir": str(eval_dir),
        "eval_model": config.get("model_label", config.get("model")),
        "reader": lm.spec,
        "read_by_writer": writer,
        "intervention_while_reading": None if intervention is None else intervention.description,
        "aligned_key": aligned_key,
        "min_per_class": min_per_class,
        "questions_misaligned": dict(Counter(t.meta["question_id"] for t in classes.misaligned)),
    }
    best = sweep.best_layer
    log.info(
        "own-answer direction: best layer %d (AUROC %.3f), final layer %d (AUROC %.3f), lexical %.3f, question %.3f",
        best,
        sweep.directions[best].metrics["auroc"],
        max(sweep.layers),
        sweep.directions[max(sweep.layers)].metrics["auroc"],
        lexical,
        question,
    )
    return OwnDirection(sweep, classes, max(sweep.layers), lexical, question, info)


def load_own_direction(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What `OwnDirection.save` wrote: its summary (``config.json``); the directions are in ``sweep/``."""
    return read_config(directory, KIND, required=("counts", "table", "best_layer"))


# ---------------------------------------------------------------------------------------------------------------
# Model-diff direction


def _consistency(diffs: torch.Tensor, vector: torch.Tensor, n_boot: int, seed: int) -> dict[str, Any]:
    """How consistently held-out paired differences point along `vector`: positive share and mean cosine, with CIs."""
    unit = vector.double() / vector.double().norm().clamp_min(1e-12)
    d = diffs.double()
    proj = (d @ unit).numpy()
    cos = proj / d.norm(dim=1).clamp_min(1e-12).numpy()
    rng = np.random.default_rng(seed)
    positive = (proj > 0).astype(float)
    out: dict[str, Any] = {
        "paired_positive_share": float(positive.mean()),
        "paired_mean_cosine": float(cos.mean()),
        "paired_mean_projection": float(proj.mean()),
        "n_test_pairs": len(proj),
    }
    if n_boot > 0 and len(proj) > 1:
        out["paired_positive_share_ci"] = list(percentile_interval(resample(positive, n_boot, rng).mean(1)))
        out["paired_mean_cosine_ci"] = list(percentile_interval(resample(cos, n_boot, rng).mean(1)))
    return out


def model_diff_direction(
    base_lm: LoadedModel,
    organism_lm: LoadedModel,
    transcripts: Sequence[Transcript],
    layers: LayerSpec = "all",
    *,
    pool: str = "mean",
    test_frac: float = 0.3,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = False,
    base_activations: Mapping[int, torch.Tensor] | None = None,
    organism_activations: Mapping[int, torch.Tensor] | None = None,
) -> SweepResult:
    """Per layer, the organism's activation minus the base's on the same transcripts (mean over the train pairs).

    Transcripts are split into train and held-out pairs (both models' reading of one transcript stay on
    one side). Each layer's `Direction` holds the usual held-out separation of organism vs base
    projections and, in its metrics, how consistently the held-out paired differences point along it
    (``paired_positive_share``, ``paired_mean_cosine``, with bootstrap 95% intervals). Both lineages are
    recorded: ``lineage`` is the organism's, ``meta["base_lineage"]`` the base's. Pooled activations already
    captured on `transcripts` with `pool` (``base_activations``, ``organism_activations``: layer -> [n, width])
    are used instead of capturing again, so that comparing many organisms with one base captures the base once.
    """
    from emscope.activations.capture import capture_activations

    transcripts = list(transcripts)
    if len(transcripts) < 2:
        raise DataFormatError(f"a model-diff direction needs at least 2 transcripts, got {len(transcripts)}")
    if base_lm.width != organism_lm.width or base_lm.n_layers != organism_lm.n_layers:
        from emscope.errors import WidthMismatchError

        raise WidthMismatchError(
            f"{base_lm.spec} (width {base_lm.width}, {base_lm.n_layers} layers) and {organism_lm.spec} (width "
            f"{organism_lm.width}, {organism_lm.n_layers} layers) are not one architecture: pass the organism's base"
        )
    kw: dict[str, Any] = {"layers": layers, "pool": pool, "batch_size": batch_size, "progress": progress}

    def pooled(lm: LoadedModel, given: Mapping[int, torch.Tensor] | None) -> dict[int, torch.Tensor]:
        if given is None:
            return capture_activations(lm, transcripts, max_length=max_length, **kw).pooled
        wanted = resolve_layers(layers, lm.n_layers)
        missing = [i for i in wanted if i not in given or given[i].shape[0] != len(transcripts)]
        if missing:
            raise DataFormatError(
                f"the activations passed to model_diff_direction lack layers {missing} for {len(transcripts)} "
                f"transcripts: capture them on the same transcripts, or pass none and let it capture"
            )
        return {i: given[i] for i in wanted}

    org = pooled(organism_lm, organism_activations)
    base = pooled(base_lm, base_activations)
    data_fp = fingerprint(transcripts)
    result = layer_sweep(
        org,
        base,
        method="diff_in_means",
        test_frac=test_frac,
        seed=seed,
        n_boot=n_boot,
        dataset_fingerprint=data_fp,
        token_selection=f"response_{pool}",
        labels=("organism", "base"),
        **direction_provenance(
            organism_lm,
            direction_kind=MODEL_DIFF_KIND,
            base_model=base_lm.spec,
            base_lineage=base_lm.lineage.to_dict(),
            organism_model=organism_lm.spec,
            organism_lineage=organism_lm.lineage.to_dict(),
        ),
    )
    split = train_test_split(len(transcripts), len(transcripts), test_frac, seed)
    directions = {}
    for layer, d in result.directions.items():
        held = org[layer][split.pos_test].float() - base[layer][split.pos_test].float()
        metrics = {**d.metrics, **_consistency(held, d.vector, n_boot, seed)}
        directions[layer] = replace(d, method="model_diff", metrics=metrics)
    config = {
        **result.config,
        "kind_of_direction": MODEL_DIFF_KIND,
        "base": base_lm.provenance(),
        "organism": organism_lm.provenance(),
        "dataset_fingerprint": data_fp,
        "n_transcripts": len(transcripts),
    }
    return replace(result, directions=directions, method="model_diff", config=config)
