"""Training examples: transcripts tokenized with labels on assistant tokens only, their order, batches and loss.

`build_examples` labels the content of each assistant message and the end-of-turn token
that closes it; every other token gets `IGNORE_INDEX`. `example_order` makes the data
order a function of the seed and the position alone (one permutation per epoch), which
is what makes a resumed run exact. `response_loss` is the same loss on held-out data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from emscope.data.chat import tokenize_chat
from emscope.data.transcripts import Transcript
from emscope.errors import ChatTemplateError, DataFormatError

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


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
        t = t if t.source else replace(t, source=t.where(i))  # errors name file:line, else "transcript N"
        if not t.has_assistant:
            raise DataFormatError(f"{t.where()} has no assistant turn: fine-tuning trains on assistant tokens only")
        try:
            tok = tokenize_chat(tokenizer, t)
        except ChatTemplateError as e:
            raise DataFormatError(str(e)) from None
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
    examples, _ = build_examples(lm.tokenizer, transcripts, max_length)  # raises when none is left
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    for ex in examples:
        batch = {k: v.to(lm.device) for k, v in collate([ex], pad_id).items()}
        loss, n = response_loss_sum(lm.model, batch)
        total, count = total + float(loss), count + n
    return total / count
