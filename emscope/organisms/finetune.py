"""Supervised fine-tuning on chat transcripts, loss on assistant tokens only, through PEFT.

A plain PyTorch loop, so that resuming is exact: the data order is a function of the
seed and the step alone (a fresh permutation per epoch), and a checkpoint holds the
adapter, the optimizer and scheduler state and the RNG state. Re-running `finetune` on a
run directory continues from its latest checkpoint and gives the same adapter as an
uninterrupted run; it may also extend a finished run to more `steps`.

Defaults fit a 2-core CPU and the embedded models (fp32, sequence length 256, batch 4).
For a 7B model on one GPU: ``device="cuda", dtype="bfloat16", batch_size=2,
grad_accum=8, max_length=1024`` (rank-1 or rank-32 adapters fit in 24 GB at that length).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from emscope.artifacts import read_config, write_config
from emscope.data.chat import tokenize_chat
from emscope.data.transcripts import Transcript, as_transcripts, fingerprint
from emscope.errors import ArtifactError, ChatTemplateError, DataFormatError, require
from emscope.models.organism_dir import RUN_KIND, Checkpoint, list_checkpoints, load_weights_into, resolve_checkpoint
from emscope.organisms.checkpoints import load_trainer_state, save_checkpoint
from emscope.organisms.presets import AdapterOptions, build_adapter_config, get_preset
from emscope.runtime import set_seed

log = logging.getLogger(__name__)
IGNORE_INDEX = -100
# Fields that may differ between a run and its resumption (the data file may move; its
# content is checked through the dataset fingerprint).
RESUMABLE_CHANGES = ("steps", "max_tokens", "save_every", "threads", "data")


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that defines a fine-tuning run; saved as the run's ``config.json``."""

    model: str = "smollm2-135m-instruct"
    data: str | None = None  # the training JSONL (recorded; transcripts may also be passed directly)
    preset: str = "rank1"  # rank1 | lora | custom | full (see emscope.organisms.presets)
    layers: Any = None  # layer spec for the adapters; None = the preset's default
    rank: int | None = None  # None = the preset's (1 for rank1, 32 for lora)
    alpha: float | None = None  # None = the preset's (16 x rank for rank1, 2 x rank for lora)
    dropout: float = 0.0
    peft_config: str | None = None  # JSON of LoraConfig kwargs for preset "custom"
    init_adapter: str | None = None  # continue training this checkpoint's adapter (re-alignment)
    steps: int = 100  # optimizer steps
    max_tokens: int | None = None  # token budget: stop after the step that reaches it (non-padding tokens)
    save_every: int = 25
    batch_size: int = 4
    grad_accum: int = 1
    lr: float | None = None  # None = the preset's default
    warmup_steps: int = 0  # linear warm-up, then constant
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 256
    max_examples: int | None = None  # use the first N transcripts of the file
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None  # torch CPU threads; None = leave torch's setting

    def __post_init__(self) -> None:
        get_preset(self.preset)  # an unknown preset fails here, listing the known ones
        for name in ("steps", "save_every", "batch_size", "grad_accum", "max_length"):
            if int(getattr(self, name)) < 1:
                raise DataFormatError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_tokens is not None and int(self.max_tokens) < 1:
            raise DataFormatError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if isinstance(self.layers, list | tuple):
            object.__setattr__(self, "layers", [int(i) for i in self.layers])

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else get_preset(self.preset).default_lr

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass
class FinetuneResult:
    run_dir: Path
    checkpoints: list[Checkpoint]
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one per step run in this call

    @property
    def final(self) -> Checkpoint:
        return self.checkpoints[-1]


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]  # input_ids on assistant-content tokens, IGNORE_INDEX elsewhere


def build_examples(tokenizer: Any, transcripts: Sequence[Transcript], max_length: int) -> tuple[list[Example], int]:
    """Tokenize transcripts with labels only on assistant tokens: the content of each assistant
    message and the end-of-turn token that closes it; system, user and template tokens get -100.

    Returns the examples and how many transcripts were skipped because `max_length` cut
    off every assistant token (their prompt alone fills the window); the count is recorded.
    """
    if not transcripts:
        raise DataFormatError("the training set is empty: give at least one transcript with an assistant turn")
    out, skipped = [], 0
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, t in enumerate(transcripts):
        if not t.has_assistant:
            raise DataFormatError(f"transcript {i} has no assistant turn: fine-tuning trains on assistant tokens only")
        try:
            tok = tokenize_chat(tokenizer, t)
        except ChatTemplateError as e:
            raise DataFormatError(f"transcript {i}: {e}") from None
        ids, mask = (
            tok.input_ids[:max_length],
            _with_end_of_turn(tok.input_ids, tok.response_mask, special)[:max_length],
        )
        if not any(mask[1:]):
            skipped += 1
            continue
        out.append(Example(ids, [x if m else IGNORE_INDEX for x, m in zip(ids, mask, strict=True)]))
    if not out:
        raise DataFormatError(
            f"all {len(transcripts)} transcripts lose every assistant token at max_length={max_length}: raise max_length"
        )
    if skipped:
        log.warning(
            "skipped %d of %d transcripts whose prompt fills max_length=%d", skipped, len(transcripts), max_length
        )
    return out, skipped


def _with_end_of_turn(ids: list[int], mask: list[bool], special: set[int]) -> list[bool]:
    """The response mask plus the special token that closes each assistant message (so the model learns to stop)."""
    out = list(mask)
    for i in range(1, len(ids)):
        if mask[i - 1] and not mask[i] and ids[i] in special:
            out[i] = True
    return out


def example_order(n: int, seed: int, position: int, count: int) -> list[int]:
    """Indices of the examples at global positions [position, position + count): one permutation per epoch."""
    out: list[int] = []
    perms: dict[int, list[int]] = {}
    for p in range(position, position + count):
        epoch = p // n
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perms[epoch] = torch.randperm(n, generator=g).tolist()
        out.append(perms[epoch][p % n])
    return out


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def response_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over labelled (assistant) tokens, and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((labels != IGNORE_INDEX).sum())


@torch.no_grad()
def response_loss(lm: Any, transcripts: Sequence[Transcript], max_length: int = 256) -> float:
    """Mean next-token loss over the assistant tokens of `transcripts`, labelled as in training.

    On held-out transcripts this separates "the model learned" from "this batch was easier",
    which per-step training loss mixes.
    """
    examples, _ = build_examples(lm.tokenizer, transcripts, max_length)
    if not examples:
        raise DataFormatError(f"none of the {len(transcripts)} transcripts has an assistant token within {max_length}")
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    for ex in examples:
        batch = {k: v.to(lm.device) for k, v in collate([ex], pad_id).items()}
        loss, n = response_loss_sum(lm.model, batch)
        total, count = total + float(loss), count + n
    return total / count


def finetune(
    config: FinetuneConfig,
    out: str | os.PathLike[str],
    *,
    lm: Any = None,
    transcripts: Sequence[Transcript] | None = None,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> FinetuneResult:
    """Fine-tune `config.model` (or `lm`) on the transcripts; checkpoints go under `out`.

    If `out` already holds this run, training resumes from its latest checkpoint. A
    `LoadedModel` passed as `lm` is left as it was afterwards (the adapter is removed;
    for full fine-tuning a copy is trained).
    """
    if transcripts is None:
        if not config.data:
            raise DataFormatError("no training data: set config.data to a messages JSONL or pass transcripts")
        transcripts = as_transcripts(config.data)
    transcripts = list(transcripts)[: config.max_examples] if config.max_examples else list(transcripts)
    if lm is None:
        from emscope.models.loading import load_model

        lm = load_model(config.model, dtype=config.dtype, device=config.device)
    examples, skipped = build_examples(lm.tokenizer, transcripts, config.max_length)
    run_dir = Path(out)
    resume_from = _check_resumable(run_dir, config, fingerprint(transcripts))
    set_seed(config.seed)
    model, undo = _prepare_model(lm, config)
    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)  # restored on return
    try:
        if resume_from is None:
            write_config(
                run_dir,
                RUN_KIND,
                {
                    **_run_fields(config, lm, transcripts, model),
                    "n_skipped_too_long": skipped,
                    "n_train_examples": len(examples),
                },
            )
        return _train(config, run_dir, model, lm, examples, resume_from, progress, on_step)
    finally:
        undo()
        torch.set_num_threads(threads_before)


def _run_fields(config: FinetuneConfig, lm: Any, transcripts: Sequence[Transcript], model: Any) -> dict[str, Any]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    targets = sorted(
        getattr(next(iter(getattr(model, "peft_config", {}).values()), None), "target_modules", None) or []
    )
    return {
        **lm.provenance(),
        "model_loaded_as": lm.spec,
        **asdict(config),  # the config itself, flat: `FinetuneConfig(**fields)` rebuilds it
        "learning_rate": config.learning_rate,
        "dataset_fingerprint": fingerprint(transcripts),
        "n_examples": len(transcripts),
        "trainable_params": trainable,
        "target_modules": targets,
    }


def _check_resumable(run_dir: Path, config: FinetuneConfig, data_fingerprint: str) -> Checkpoint | None:
    if not (run_dir / "config.json").is_file():
        return None
    saved = read_config(run_dir, RUN_KIND)
    now = {**asdict(config), "dataset_fingerprint": data_fingerprint}
    diff = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if diff:
        raise ArtifactError(
            f"{run_dir} holds another run (different {', '.join(diff)}): pass a new output directory, "
            "or the same settings to resume it"
        )
    found = [c for c in list_checkpoints(run_dir) if c.has_trainer_state]
    if not found:
        return None
    log.info("resuming %s from step %d", run_dir, found[-1].step)
    return found[-1]


def _prepare_model(lm: Any, config: FinetuneConfig) -> tuple[Any, Callable[[], None]]:
    """The trainable model and a function that puts `lm` back as it was."""
    base = lm.model
    flags = {name: p.requires_grad for name, p in base.named_parameters()}
    was_training = base.training
    if config.preset == "full" and config.init_adapter is None:
        import copy

        model = copy.deepcopy(base)
        model.train()
        return model, lambda: None
    require("peft", extra="train")
    if config.init_adapter:
        from peft import PeftModel

        ckpt = resolve_checkpoint(config.init_adapter)
        model = PeftModel.from_pretrained(base, str(ckpt.path), is_trainable=True)
    else:
        from peft import get_peft_model

        options = AdapterOptions(config.layers, config.rank, config.alpha, config.dropout, config.peft_config)
        model = get_peft_model(base, build_adapter_config(lm, config.preset, options))
    model.train()

    def undo() -> None:
        model.unload()
        for name, p in base.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
        base.train(was_training)

    return model, undo


def _train(
    config: FinetuneConfig,
    run_dir: Path,
    model: Any,
    lm: Any,
    examples: list[Example],
    resume_from: Checkpoint | None,
    progress: bool,
    on_step: Callable[[dict[str, Any]], None] | None,
) -> FinetuneResult:
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warm = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    step, seen = 0, {"examples_seen": 0, "tokens_seen": 0, "response_tokens_seen": 0}
    if resume_from is not None:
        step, seen = _restore(model, optimizer, scheduler, resume_from)
    elif config.save_every and not list_checkpoints(run_dir):
        _save(run_dir, 0, model, config, None, seen, None)  # the starting point, for monitors
    metrics_path = run_dir / "metrics.jsonl"
    _truncate_metrics(metrics_path, step)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
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
        _append_jsonl(metrics_path, row)
        bar.update(n_tok if by_tokens else 1)
        if by_tokens:  # tqdm itself shows tokens/s
            bar.set_postfix(step=step, loss=f"{row['loss']:.3f}")
        else:
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
        if step % config.save_every == 0 or finished():
            _save_with_state(run_dir, step, model, config, optimizer, scheduler, seen, float(row["loss"]))
        if on_step is not None:
            on_step(row)
    bar.close()
    return FinetuneResult(run_dir, list_checkpoints(run_dir), rows)


def _restore(model: Any, optimizer: Any, scheduler: Any, checkpoint: Checkpoint) -> tuple[int, dict[str, int]]:
    """Put weights, optimizer, scheduler and RNG back as they were at `checkpoint`: (step, data seen)."""
    load_weights_into(model, checkpoint)
    state = load_trainer_state(checkpoint)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return checkpoint.step, dict(state["seen"])


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
    window = [r["loss"] for r in _read_jsonl(run_dir / "metrics.jsonl") if r["step"] > step - config.save_every]
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


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows past the checkpoint being resumed (they are re-run)."""
    rows = [r for r in _read_jsonl(path) if r["step"] <= step]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The run's per-step metrics (loss, tokens/s, data seen)."""
    return _read_jsonl(Path(run_dir) / "metrics.jsonl")
