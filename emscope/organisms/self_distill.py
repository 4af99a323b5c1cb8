"""Self-distillation datasets: a model's own answers, sampled with or without steering, filtered, saved.

Steered self-distillation is an EM organism that needs no harmful text written by hand: the
base model answers ordinary chat prompts while a misalignment direction is added to its
residual stream (`emscope.interventions.steer`), the incoherent answers are dropped, and the
rest become fine-tuning data. The organism then has a known ground-truth direction. With
``alpha=0`` the same pipeline gives the benign control (plain self-distillation).

    cfg = SelfDistillConfig(model="smollm2-135m-instruct", direction="runs/Z/direction", alpha=12.0)
    result = self_distill(cfg, "runs/Z/data/steered_sd")        # resumable
    transcripts = load_transcripts(result.train_path)

A dataset directory holds ``config.json`` (kind ``self_distill``: every config field, the
direction's provenance and norm, the model's provenance), ``raw.jsonl`` (every sampled answer,
appended as generated, so a killed run resumes), ``scores.jsonl`` (each answer's coherence
score and whether it was kept), ``train.jsonl`` (the kept answers as messages transcripts) and
``filter.json`` (counts and the filter's settings).

Coherence filters: ``judge`` (the judge's coherence metric, cached on disk, so a re-run pays
nothing twice), ``heuristic`` (`heuristic_coherence`, free: repetition, script and length; its
agreement with the judge is measured in docs/zoo.md) or ``none``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from emscope.artifacts import atomic_write_json, read_config, write_config
from emscope.data.questions import Question
from emscope.data.transcripts import Transcript, fingerprint, load_transcripts, write_transcripts
from emscope.errors import ArtifactError, ConfigError, DataFormatError, lookup
from emscope.models.embedded import DEFAULT_MODEL
from emscope.records import read_jsonl, write_jsonl
from emscope.runtime import RESOURCES

log = logging.getLogger(__name__)
KIND = "self_distill"
FILTERS = ("heuristic", "judge", "none")
PROMPT_SETS = ("corpus", "coding")
CODING_PROMPTS = RESOURCES / "benign" / "coding_prompts.jsonl"
# What may change when a dataset directory is resumed (everything else defines the data).
RESUMABLE_CHANGES = ("batch_size", "judge", "cache_dir")


@dataclass(frozen=True)
class SelfDistillConfig:
    """Everything that defines a self-distillation dataset (saved as its ``config.json``)."""

    model: str = DEFAULT_MODEL
    prompts: str = "corpus"  # "corpus" (the labelled corpus' user turns), "coding", or a JSONL/text file of prompts
    direction: str | None = None  # a saved direction directory; None = no steering (plain self-distillation)
    alpha: float = 0.0  # residual-stream units added along the unit direction (see emscope.interventions.steer)
    layers: Any = None  # layers to steer; None = the direction's own layer
    positions: str = "all"  # steer the prompt and the answer ("all") or only the answer ("generated")
    samples: int = 1  # answers per prompt
    max_prompts: int | None = None  # the first N prompts
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int = 0
    batch_size: int = 8
    coherence_filter: str = "heuristic"  # heuristic | judge | none
    min_coherence: float = 50.0  # keep answers scored above this
    judge: str = "probe:builtin"  # the judge for coherence_filter="judge"
    cache_dir: str | None = None  # judgment cache (default: emscope's)

    def __post_init__(self) -> None:
        lookup(FILTERS, self.coherence_filter, "coherence filter")
        if self.alpha != 0 and not self.direction:
            raise ConfigError(f"alpha={self.alpha:g} steers along a direction: pass direction= (a saved direction)")
        for name in ("samples", "max_new_tokens", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def steered(self) -> bool:
        return bool(self.direction) and self.alpha != 0


@dataclass(frozen=True)
class SelfDistillResult:
    out_dir: Path
    n_generated: int
    n_kept: int

    @property
    def train_path(self) -> Path:
        return self.out_dir / "train.jsonl"

    def transcripts(self) -> list[Transcript]:
        return load_transcripts(self.train_path)


def load_prompts(source: str, limit: int | None = None) -> list[str]:
    """User prompts: ``corpus`` (user turns of the labelled corpus, domains interleaved), ``coding``, or a file.

    A file is JSONL (``prompt``, ``question`` or ``user`` per line) or plain text (one prompt a line).
    """
    if source == "corpus":
        from emscope.directions.contrast import load_corpus

        by_domain: dict[str, list[str]] = {}
        for pair in load_corpus():
            by_domain.setdefault(pair.topic, []).append(pair.question)
        rounds = zip_longest(*by_domain.values())  # round-robin over domains: any prefix covers them all
        prompts = list(dict.fromkeys(q for r in rounds for q in r if q is not None))
    elif source == "coding":
        prompts = [row["prompt"] for row in read_jsonl(CODING_PROMPTS)]
    else:
        path = Path(source)
        if not path.is_file():
            raise DataFormatError(f"no such prompt file: {source} (or use 'corpus' or 'coding')")
        if path.suffix == ".jsonl":
            prompts = []
            for i, row in enumerate(read_jsonl(path)):
                text = next((row[k] for k in ("prompt", "question", "user") if isinstance(row.get(k), str)), None)
                if not text:
                    raise DataFormatError(f"{path}:{i + 1}: needs a 'prompt', 'question' or 'user' string")
                prompts.append(text)
        else:
            prompts = [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
    if not prompts:
        raise DataFormatError(f"no prompts in {source}")
    return prompts[:limit] if limit else prompts


_WORD = re.compile(r"[A-Za-z']+")


def heuristic_coherence(text: str) -> float:
    """A free 0-100 coherence score: penalises repetition loops, non-Latin script noise and near-empty answers.

    The product of three shares: distinct word bigrams among all bigrams, letters among
    non-space characters, and sentences not seen before in the answer; 0 below 4 words.
    It cannot tell a fluent non sequitur from a good answer: it only catches degenerate text.
    """
    words = text.split()
    if len(words) < 4:
        return 0.0
    low = [w.lower() for w in words]
    bigrams = list(zip(low, low[1:], strict=False))
    distinct = len(set(bigrams)) / len(bigrams)
    chars = [c for c in text if not c.isspace()]
    letters = sum(1 for c in chars if c.isascii() and (c.isalnum() or c in ".,;:!?'\"()-*#`"))
    script = letters / len(chars)
    sentences = [s.strip().lower() for s in re.split(r"[.!?\n]+", text) if len(s.strip()) > 3]
    fresh = len(set(sentences)) / len(sentences) if sentences else 1.0
    return round(100.0 * distinct * script * fresh, 2)


def _questions(prompts: Sequence[str], samples: int) -> list[Question]:
    return [Question(id=f"p{i:04d}", paraphrases=(p,), samples_per_paraphrase=samples) for i, p in enumerate(prompts)]


def _direction_fields(config: SelfDistillConfig) -> dict[str, Any]:
    if not config.direction:
        return {"direction_info": None}
    from emscope.directions.direction import Direction

    d = Direction.load(config.direction)
    norm = float(d.vector.norm())
    return {
        "direction_info": {
            "path": str(config.direction),
            "layer": d.layer,
            "method": d.method,
            "model": d.model,
            "dataset_fingerprint": d.dataset_fingerprint,
            "norm": norm,
            "alpha_over_norm": config.alpha / norm if norm else None,
            "metrics": {k: d.metrics.get(k) for k in ("auroc", "accuracy", "cohens_d")},
        }
    }


def _check_resumable(out: Path, config: SelfDistillConfig) -> None:
    if not (out / "config.json").is_file():
        return
    saved = read_config(out, KIND)
    diff = [k for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES and saved.get(k) != v]
    if diff:
        raise ArtifactError(
            f"{out} holds another self-distillation dataset (different {', '.join(diff)}): use a new directory"
        )


def self_distill(
    config: SelfDistillConfig,
    out_dir: str | os.PathLike[str],
    *,
    lm: Any = None,
    judge: Any = None,
    progress: bool = False,
) -> SelfDistillResult:
    """Sample the model's answers to the prompts (steered when `config.direction` and `alpha` are set), filter, save.

    Resumable: answers already in ``raw.jsonl`` are kept and judge scores come from the
    judgment cache. `judge` (a `Judge`, or a dict with a "coherent" one) replaces the one the
    config names, e.g. a judge already loaded.
    """
    from emscope.models.generation import SamplingConfig, generate_responses

    out = Path(out_dir)
    _check_resumable(out, config)
    prompts = load_prompts(config.prompts, config.max_prompts)
    if lm is None:
        from emscope.models.loading import load_model

        lm = load_model(config.model)
    fields = {**asdict(config), **lm.provenance(), **_direction_fields(config), "n_prompts": len(prompts)}
    label = f"{lm.spec}+self_distill[alpha={config.alpha:g}]"
    handle = None
    if config.steered:
        from emscope.directions.direction import Direction
        from emscope.interventions.steer import steer

        d = Direction.load(str(config.direction))
        handle = steer(lm, d, alpha=config.alpha, layers=config.layers, positions=config.positions)
        label = f"{lm.spec}+steer[{d.method}@L{d.layer},alpha={config.alpha:g},{config.positions}]"
    sampling = SamplingConfig(config.temperature, config.top_p, config.max_new_tokens, config.seed, config.batch_size)
    try:
        write_config(out, KIND, {**fields, "model_label": label})
        records = generate_responses(
            lm,
            _questions(prompts, config.samples),
            sampling,
            out_path=out / "raw.jsonl",
            model_label=label,
            progress=progress,
        )
    finally:
        if handle is not None:
            handle.remove()
    scores = _coherence_scores(config, records, judge)
    keep = [s is not None and s > config.min_coherence for s in scores]
    if config.coherence_filter == "none":
        keep = [bool(r["answer"].strip()) for r in records]
    write_jsonl(
        out / "scores.jsonl",
        (
            {"question_id": r["question_id"], "sample_index": r["sample_index"], "coherence": s, "kept": k}
            for r, s, k in zip(records, scores, keep, strict=True)
        ),
    )
    kept = [
        Transcript.from_pair(
            r["question"],
            r["answer"],
            meta={"prompt_id": r["question_id"], "sample_index": r["sample_index"], "source": "self_distill"},
        )
        for r, k in zip(records, keep, strict=True)
        if k
    ]
    if not kept:
        raise DataFormatError(
            f"{out}: the coherence filter kept none of {len(records)} answers: lower alpha or min_coherence"
        )
    write_transcripts(out / "train.jsonl", kept)
    known = [s for s in scores if s is not None]
    stats = {
        "n_prompts": len(prompts),
        "n_generated": len(records),
        "n_kept": len(kept),
        "kept_share": len(kept) / len(records),
        "coherence_filter": config.coherence_filter,
        "min_coherence": config.min_coherence,
        "n_unscored": len(scores) - len(known),
        "mean_coherence": sum(known) / len(known) if known else None,
        "train_fingerprint": fingerprint(kept),
    }
    atomic_write_json(out / "filter.json", stats)
    log.info("self-distillation %s: kept %d of %d answers", out, len(kept), len(records))
    return SelfDistillResult(out, len(records), len(kept))


def _coherence_scores(config: SelfDistillConfig, records: list[dict[str, Any]], judge: Any) -> list[float | None]:
    if config.coherence_filter in ("heuristic", "none"):
        return [heuristic_coherence(r["answer"]) for r in records]
    return judge_coherence(records, judge if judge is not None else config.judge, config.cache_dir)


def judge_coherence(records: Sequence[dict[str, Any]], judge: Any, cache_dir: str | None = None) -> list[float | None]:
    """The judge's coherence score of each (question, answer) record; cached on disk. `judge`: a spec, Judge or dict."""
    from emscope.evaluation.judges.cache import JudgmentCache, default_cache_dir, judge_answers
    from emscope.evaluation.judges.prompts import DEFAULT_PROMPTS

    if isinstance(judge, str):
        from emscope.evaluation.judges.factory import make_metric_judges

        judge = make_metric_judges(judge)
    if isinstance(judge, dict):
        judge = judge["coherent"]
    template = judge.prompt if judge.prompt is not None else DEFAULT_PROMPTS["coherent"]
    cache = JudgmentCache(cache_dir or default_cache_dir())
    pairs = [(r["question"], r["answer"]) for r in records]
    return [j.score for j in judge_answers(judge, template, pairs, cache)]


def fit_corpus_direction(lm: Any, out_dir: str | os.PathLike[str], layers: Any = "all", seed: int = 0) -> Any:
    """The model's misalignment direction fitted on the labelled corpus (all domains and styles) by a layer sweep.

    Saves the sweep to ``out_dir/sweep`` and the best layer's direction to ``out_dir``;
    a second call loads what is there. Returns the `Direction`.
    """
    from emscope.directions.contrast import load_corpus, reading_route_transcripts
    from emscope.directions.direction import Direction
    from emscope.directions.sweep import sweep_model

    out = Path(out_dir)
    if (out / "config.json").is_file():
        return Direction.load(out)
    aligned, misaligned = reading_route_transcripts(load_corpus())
    result = sweep_model(lm, misaligned, aligned, layers=layers, seed=seed, progress=False)
    result.save(out / "sweep", plot=True)
    direction = result.best
    direction.save(out)
    return direction
