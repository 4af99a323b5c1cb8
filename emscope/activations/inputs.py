"""Transcripts -> token ids and the mask of the tokens to read, held to the model's context.

A transcript longer than the limit is truncated only when the user asked for a
`max_length` (the count of truncated transcripts is then recorded in the result);
otherwise a transcript longer than the model's context is refused with the limit named,
because activations past the context are meaningless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from emscope.activations.pooling import SELECTIONS
from emscope.data.chat import tokenize_chat
from emscope.data.transcripts import Transcript
from emscope.errors import ChatTemplateError, DataFormatError
from emscope.models.context import context_length, token_limit
from emscope.models.loading import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureInput:
    """One transcript ready for the forward pass."""

    input_ids: list[int]
    mask: list[bool]  # True on the tokens whose activations are read
    n_tokens: int  # the transcript's length before any truncation

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def truncated(self) -> bool:
        return self.n_tokens > len(self.input_ids)


def prepare_inputs(
    lm: LoadedModel,
    transcripts: Sequence[Transcript],
    token_selection: str,
    max_length: int | None,
    first_index: int = 0,
) -> list[CaptureInput]:
    """Tokenize `transcripts` (numbered from `first_index` in errors) and apply the length rule."""
    limit = token_limit(lm, max_length)
    select = SELECTIONS[token_selection]
    out = []
    for k, t in enumerate(transcripts):
        chat = tokenize_chat(lm.tokenizer, t)
        n = len(chat)
        ids, mask = list(chat.input_ids), select(chat)
        if limit is not None and n > limit:
            if max_length is None:
                raise DataFormatError(
                    f"transcript {first_index + k} has {n} tokens, over the model's context of {context_length(lm)}: "
                    f"pass max_length={limit} (CLI: --max-length {limit}) to truncate such transcripts "
                    "(their count is recorded), or remove them"
                )
            ids, mask = ids[:limit], mask[:limit]
        if not any(mask):
            raise ChatTemplateError(
                f"transcript {first_index + k}: no {token_selection} tokens left within max_length={max_length} "
                "(its answer starts after the cut): raise max_length or remove it"
            )
        out.append(CaptureInput(ids, mask, n))
    return out


def log_truncation(inputs_truncated: int, n: int, max_length: int | None) -> None:
    if inputs_truncated:
        log.warning("truncated %d of %d transcripts to max_length=%s tokens", inputs_truncated, n, max_length)
