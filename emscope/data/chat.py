"""Chat-template tokenization with a mask of the assistant's response tokens.

The template is rendered to text, each assistant message's content is located in that
text, and tokens are marked from the tokenizer's character offsets. Template markup
(role headers, end-of-turn tokens) is therefore never part of the mask, whatever the
template, without relying on ``{% generation %}`` tags that most templates lack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emscope.data.transcripts import Transcript
from emscope.errors import ChatTemplateError


@dataclass(frozen=True)
class TokenizedChat:
    input_ids: list[int]
    response_mask: list[bool]  # True on tokens of assistant message content

    def __len__(self) -> int:
        return len(self.input_ids)


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except ValueError as e:
        if "chat_template" in str(e) or "chat template" in str(e):
            raise ChatTemplateError(
                f"{type(tokenizer).__name__} has no chat template: set tokenizer.chat_template "
                "(a Jinja string) or load a chat/instruct model"
            ) from None
        raise


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The text a model sees before it writes its next assistant turn."""
    if not has_chat_template(tokenizer):
        raise ChatTemplateError(
            f"{type(tokenizer).__name__} has no chat template: set tokenizer.chat_template or load an instruct model"
        )
    return _render(tokenizer, messages, add_generation_prompt=True)


def tokenize_chat(tokenizer: Any, transcript: Transcript, max_length: int | None = None) -> TokenizedChat:
    """Token ids of the rendered transcript and the mask of its assistant content tokens."""
    if not has_chat_template(tokenizer):
        raise ChatTemplateError(
            f"{type(tokenizer).__name__} has no chat template: set tokenizer.chat_template or load an instruct model"
        )
    if not transcript.has_assistant:
        raise ChatTemplateError(
            f"{transcript.where()} has no assistant turn: response tokens are what emscope reads; "
            f"add an assistant message (first message: {transcript.messages[0]['content'][:60]!r})"
        )
    msgs = list(transcript.messages)
    text = _render(tokenizer, msgs, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, msgs[:k], add_generation_prompt=True) if k else ""
        start_search = len(prefix) if text.startswith(prefix) else cursor
        content = m["content"].strip()
        if not content:
            continue
        start = text.find(content, max(start_search, cursor))
        if start < 0:
            raise ChatTemplateError(
                f"{transcript.where()}: the chat template changed assistant message {k}'s text, "
                "so its tokens cannot be located"
            )
        spans.append((start, start + len(content)))
        cursor = start + len(content)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    mask = [
        tid not in special and e > s and any(s < hi and e > lo for lo, hi in spans)
        for tid, (s, e) in zip(ids, offsets, strict=True)
    ]
    if max_length is not None and len(ids) > max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    if not any(mask):
        raise ChatTemplateError(
            f"{transcript.where()}: no response tokens left (empty answer, or cut off by max_length: raise it)"
        )
    return TokenizedChat(ids, mask)
