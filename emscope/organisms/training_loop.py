"""The fine-tuning loop: optimizer steps over the ordered examples, metrics, checkpoints, the step hook.

`finetune` (in `emscope.organisms.finetune`) prepares the model and the run directory and
calls `train_loop`. After each optimizer step, and after that step's checkpoint is saved,
the loop calls the optional plain hook ``on_step(step, lm, row)``: `lm` is a `LoadedModel`
of the model being trained (adapter active), put in eval mode under ``torch.no_grad()``
with the RNG state forked, so a hook (a drift monitor reading activations, a quick eval)
cannot change the training run; `row` is that step's metrics. A hook that returns True
stops the run after saving a resumable checkpoint at that step (a monitor's alert;
re-running `finetune` on the run directory continues it); one that raises stops it at
once (the last checkpoint saved is the resumable point).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from emscope.errors import ArtifactError
from emscope.models.loading import LoadedModel
from emscope.models.organism_dir import METRICS_NAME, Checkpoint, list_checkpoints, load_weights_into, read_metrics
from emscope.organisms.checkpoints import load_trainer_state, save_checkpoint
from emscope.organisms.examples import IGNORE_INDEX, Example, collate, example_order, response_loss_sum
from emscope.records import append_jsonl, write_jsonl
from emscope.runtime import reading_mode

if TYPE_CHECKING:
    from emscope.organisms.finetune import FinetuneConfig

# on_step(step, lm, row): called after each optimizer step; True stops the run (see the module docstring).
StepHook = Callable[[int, LoadedModel, dict[str, Any]], bool | None]


def train_loop(
    config: FinetuneConfig,
    run_dir: Path,
    model: Any,
    lm: LoadedModel,
    examples: list[Example],
    resume_from: Checkpoint | None,
    progress: bool = False,
    on_step: StepHook | None = None,
) -> list[dict[str, Any]]:
    """Train `model` (`lm`'s model with its adapter, or a copy for full fine-tuning) until the run's limit.

    Writes ``metrics.jsonl`` and the checkpoints; returns the metric rows of the steps run
    in this call. `on_step(step, lm, row)` runs after each step (see `StepHook`).
    """
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warm = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    step, seen = 0, {"examples_seen": 0, "tokens_seen": 0, "response_tokens_seen": 0}
    if resume_from is not None:
        step, seen = _restore(model, optimizer, scheduler, resume_from)
    elif not list_checkpoints(run_dir):
        _save(run_dir, 0, model, config, None, seen, None)  # the starting point, for monitors
    metrics_path = run_dir / METRICS_NAME
    _truncate_metrics(run_dir, step)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    view = trained_view(lm, model)
    by_tokens = config.max_tokens is not None  # the bar counts toward whichever limit the run is given
    bar = tqdm(
        total=config.max_tokens if by_tokens else config.steps,
        initial=seen["tokens_seen"] if by_tokens else step,
        disable=not progress,
        desc="finetune",
        unit="tok" if by_tokens else "step",
        unit_scale=by_tokens,
    )
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    tokens_this_call = 0

    def finished() -> bool:
        budget = config.max_tokens
        return step >= config.steps or (budget is not None and seen["tokens_seen"] >= budget)

    while not finished():
        order = example_order(len(examples), config.seed, seen["examples_seen"], config.examples_per_step)
        micro = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        batches = [{k: v.to(device) for k, v in collate([examples[j] for j in m], pad_id).items()} for m in micro]
        loss, n_resp, n_tok = _optimizer_step(model, params, optimizer, scheduler, batches, config.max_grad_norm)
        step += 1
        tokens_this_call += n_tok
        seen = {
            "examples_seen": seen["examples_seen"] + len(order),
            "tokens_seen": seen["tokens_seen"] + n_tok,
            "response_tokens_seen": seen["response_tokens_seen"] + n_resp,
        }
        elapsed = time.perf_counter() - start
        row = {
            "step": step,
            "loss": loss,
            "lr": scheduler.get_last_lr()[0],
            **seen,
            "elapsed_s": round(elapsed, 3),
            "tokens_per_s": round(tokens_this_call / max(elapsed, 1e-9), 2),
        }
        rows.append(row)
        append_jsonl(metrics_path, [row])
        bar.update(n_tok if by_tokens else 1)
        if by_tokens:  # tqdm itself shows tokens/s
            bar.set_postfix(step=step, loss=f"{row['loss']:.3f}")
        else:
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
        saved = step % config.save_every == 0 or finished()
        if saved:
            _save_with_state(run_dir, step, model, config, optimizer, scheduler, seen, float(row["loss"]))
        if on_step is not None and _call_hook(on_step, step, model, view, row):
            if not saved:  # the hook stopped the run: leave a resumable point here
                _save_with_state(run_dir, step, model, config, optimizer, scheduler, seen, float(row["loss"]))
            break
    bar.close()
    return rows


def trained_view(lm: LoadedModel, model: Any) -> LoadedModel:
    """`lm` as the model being trained: `lm` itself when the adapter sits in its modules, else a copy's view."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lm if inner is lm.model else replace(lm, model=inner, _blocks=None)


def _call_hook(on_step: StepHook, step: int, model: Any, view: LoadedModel, row: dict[str, Any]) -> bool:
    """Run the hook in eval mode, without gradients, on a forked RNG (so it cannot change the training run).

    Returns whether the hook asked to stop the run (returned True itself, not merely a truthy value).
    """
    with reading_mode(model):
        return on_step(step, view, dict(row)) is True


def _restore(model: Any, optimizer: Any, scheduler: Any, checkpoint: Checkpoint) -> tuple[int, dict[str, int]]:
    """Put weights, optimizer, scheduler and RNG back as they were at `checkpoint`: (step, data seen)."""
    load_weights_into(model, checkpoint)
    state = load_trainer_state(checkpoint)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        seen = {k: int(v) for k, v in state["seen"].items()}
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise ArtifactError(
            f"{checkpoint.path}: the trainer state does not fit this run ({type(e).__name__}: {e}); "
            "resume with the settings it was written with, or start a new output directory"
        ) from None
    return checkpoint.step, seen


def _save_with_state(
    run_dir: Path,
    step: int,
    model: Any,
    config: FinetuneConfig,
    optimizer: Any,
    scheduler: Any,
    seen: dict[str, int],
    last_loss: float,
) -> None:
    """A resumable checkpoint; its loss is the mean training loss of the last `save_every` steps."""
    window = [r["loss"] for r in read_metrics(run_dir) if r["step"] > step - config.save_every]
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "seen": seen,
    }
    _save(run_dir, step, model, config, sum(window) / len(window), seen, state, last_loss=last_loss)


def _optimizer_step(
    model: Any,
    params: list[torch.Tensor],
    optimizer: Any,
    scheduler: Any,
    batches: list[dict[str, torch.Tensor]],
    max_grad_norm: float,
) -> tuple[float, int, int]:
    """One optimizer step over micro-batches: (mean loss per response token, response tokens, tokens)."""
    n_resp = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    total = 0.0
    for batch in batches:
        loss_sum, _ = response_loss_sum(model, batch)
        (loss_sum / max(n_resp, 1)).backward()
        total += float(loss_sum.detach())
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total / max(n_resp, 1), n_resp, sum(int(b["attention_mask"].sum()) for b in batches)


def _save(
    run_dir: Path,
    step: int,
    model: Any,
    config: FinetuneConfig,
    loss: float | None,
    seen: dict[str, int],
    state: dict[str, Any] | None,
    last_loss: float | None = None,
) -> None:
    # loss: mean training loss of the last `save_every` steps (None for the step-0 starting point)
    fields = {
        "loss": loss,
        "last_step_loss": last_loss,
        **seen,
        "model": config.model,
        "preset": config.preset,
        "dtype": config.dtype,
        "device": config.device,
        "seed": config.seed,
        "run_dir": str(run_dir),
    }
    save_checkpoint(run_dir, step, model, fields, state)


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric rows past the checkpoint being resumed (they are re-run)."""
    write_jsonl(run_dir / METRICS_NAME, [r for r in read_metrics(run_dir) if r["step"] <= step])
