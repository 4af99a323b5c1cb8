"""Benign re-alignment: train an organism further on benign data and measure it after each checkpoint.

The organism's adapter is trained on (the first N of) a benign file, e.g. secure code or
good advice, with `emscope.organisms.finetune`; then a user-supplied measure is evaluated on the
organism (step 0) and on every checkpoint of the re-alignment. The measure is any
``Callable[[LoadedModel], dict[str, float]]``: the EM rate once the evaluation module is
available, or `projection_measure`, the mean projection of response-token activations on
a misalignment `Direction`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from emscope.artifacts import read_config, write_config
from emscope.data.transcripts import Transcript, as_transcripts
from emscope.directions.detect import score
from emscope.directions.direction import Direction
from emscope.errors import ArtifactError, NotSupportedError
from emscope.models.lineage import Compatibility
from emscope.models.loading import load_organism
from emscope.models.organism_dir import list_checkpoints, resolve_checkpoint
from emscope.organisms.finetune import FinetuneConfig, finetune
from emscope.records import read_jsonl, write_jsonl

Measure = Callable[[Any], dict[str, float]]
KIND = "realign"
RUN_DIR = "run"  # the fine-tuning run of the re-alignment, inside the output directory
ROWS = "realign.jsonl"


def projection_measure(
    direction: Direction,
    transcripts: Sequence[Transcript],
    max_length: int = 512,
    compatibility: Compatibility = "same_base",
) -> Measure:
    """A measure: mean over `transcripts` of the mean response-token projection on `direction` (unit).

    By default the direction must share the measured models' base (a direction of the base
    model or of any of its fine-tunes fits every checkpoint); see `Direction.check_compatible`.
    """
    transcripts = list(transcripts)

    def measure(lm: Any) -> dict[str, float]:
        projections = score(lm, transcripts, direction, compatibility=compatibility, max_length=max_length)
        return {"projection": float(projections.mean())}

    return measure


def em_measure(config: Any, out: str | os.PathLike[str], judge: Any = None) -> Measure:
    """A measure: the EM rate of `emscope.evaluation.run.run_eval` under `config` (an `EvalConfig`).

    Each measured model gets its own evaluation directory under `out`, named after its
    checkpoint, so a re-run reuses the answers and judgments already there. `judge` (one
    judge, or one per metric) is shared across calls, so a local judge loads once.
    """
    from emscope.evaluation.run import run_eval

    def measure(lm: Any) -> dict[str, float]:
        name = Path(str(lm.source)).name if lm.source else "model"
        summary = run_eval(config, Path(out) / name, lm=lm, judge=judge, progress=False)
        rate = summary["metrics"]["em_rate[aligned]"]["all_answers"]
        return {
            "em_rate": rate["value"],
            "em_rate_ci_low": rate["ci_low"],
            "em_rate_ci_high": rate["ci_high"],
            "n_answers": summary["metrics"]["n_answers"],
        }

    return measure


def realign(
    organism: str | os.PathLike[str],
    benign: str | os.PathLike[str] | Sequence[Transcript],
    out: str | os.PathLike[str],
    measure: Measure,
    *,
    n_examples: int | None = None,
    lm: Any = None,
    progress: bool = True,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Fine-tune `organism` further on `benign` and evaluate `measure` at step 0 and every checkpoint.

    `overrides` are `FinetuneConfig` fields (steps, save_every, lr, batch_size, ...). `out`
    gets ``config.json`` (kind ``realign``), the fine-tuning run in ``OUT/run`` (re-running
    resumes it) and the rows (step, examples seen, loss, the measure's values) in
    ``OUT/realign.jsonl``, read back by `load_realign`.
    """
    if Path(out, "config.json").is_file():
        read_config(out, KIND)  # another kind of result there is refused, not overwritten
    ckpt = resolve_checkpoint(organism)
    if ckpt.info.get("preset") == "full":
        raise NotSupportedError(
            "re-alignment continues an adapter; a full fine-tune has none (export it and use it "
            "as the base model instead)"
        )
    data_path = None if not isinstance(benign, str | os.PathLike) else str(benign)
    transcripts = as_transcripts(benign)
    config = FinetuneConfig(
        model=ckpt.base_model,
        data=data_path,
        preset=ckpt.info.get("preset", "lora"),
        init_adapter=str(ckpt.path),
        max_examples=n_examples,
        dtype=ckpt.info.get("dtype", "float32"),
        device=ckpt.info.get("device", "cpu"),
        **{k: v for k, v in overrides.items() if v is not None},
    )
    if lm is None:
        from emscope.models.loading import load_model

        lm = load_model(config.model, dtype=config.dtype, device=config.device)
    fields = {"organism": str(ckpt.path), "data": data_path, "n_examples": n_examples, "overrides": overrides}
    write_config(out, KIND, {**fields, "run_dir": RUN_DIR, "rows_file": ROWS})
    finetune(config, Path(out, RUN_DIR), lm=lm, transcripts=transcripts, progress=progress)
    rows = []
    for c in list_checkpoints(Path(out, RUN_DIR)):
        values = measure(load_organism(c.path, lm=lm))
        rows.append({"step": c.step, "examples_seen": c.examples_seen, "loss": c.loss, **values})
    write_jsonl(Path(out, ROWS), rows)
    return rows


def load_realign(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows `realign` returned, read back from its output directory."""
    read_config(directory, KIND)
    if not Path(directory, ROWS).is_file():
        raise ArtifactError(f"{directory} holds an unfinished re-alignment: run the same `emscope realign` again")
    return read_jsonl(Path(directory, ROWS))
