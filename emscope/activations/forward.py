"""The capture forward pass: decoder stack only, stopped after the last block asked for.

Batches are sorted by length to cut padding and bounded both in rows (`batch_size`) and
in padded tokens (`max_batch_tokens`, rows x longest), so one enormous transcript runs
alone instead of being padded into a batch that does not fit in memory. Padding is on the
right with an attention mask, so a transcript's result does not depend on what else was
in its batch. Pooling happens inside the hook: memory holds one batch of hidden states.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from emscope.activations.inputs import CaptureInput
from emscope.activations.pooling import POOLERS, TOKENS
from emscope.activations.sites import DEFAULT_SITE, Site, site_hooks
from emscope.models.loading import LoadedModel

DEFAULT_BATCH_TOKENS = 16384  # padded tokens per forward pass


def _body(lm: LoadedModel) -> torch.nn.Module:
    """The decoder stack without the output layer (``base_model`` in transformers)."""
    return getattr(lm.model, "base_model", lm.model)


class _StopForward(Exception):
    """Raised by the hook on the last wanted block, to skip the blocks after it."""


@torch.inference_mode()
def block_outputs(lm: LoadedModel, layers: Sequence[int], **inputs: Any) -> dict[int, torch.Tensor]:
    """The output hidden states of blocks `layers` for one forward of the decoder stack on `inputs`.

    Only the blocks up to the last of `layers` run (no later block, no output layer);
    `inputs` are the model's own forward arguments (``input_ids``, ``past_key_values``, ...).
    """
    grabbed: dict[int, torch.Tensor] = {}
    last = max(layers)

    def make_hook(layer: int) -> Callable[[torch.Tensor], None]:
        def grab(hidden: torch.Tensor) -> None:
            grabbed[layer] = hidden
            if layer == last:
                raise _StopForward

        return grab

    with site_hooks(lm, {Site(DEFAULT_SITE, layer): make_hook(layer) for layer in layers}):
        try:
            _body(lm)(**inputs)
        except _StopForward:
            pass
    return grabbed


def token_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None) -> Iterator[list[int]]:
    """Indices into `lengths`, longest first, in batches of <= `batch_size` rows and <= `max_batch_tokens`
    padded tokens (rows x longest); an input longer than the budget forms a batch of its own."""
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if batch:
            width = lengths[batch[0]]  # longest first: the first row sets the padded width
            full = len(batch) >= batch_size or (
                max_batch_tokens is not None and (len(batch) + 1) * width > max_batch_tokens
            )
            if full:
                yield batch
                batch = []
        batch.append(i)
    if batch:
        yield batch


@torch.inference_mode()
def run_capture(
    lm: LoadedModel,
    inputs: Sequence[CaptureInput],
    layers: list[int],
    pool: str,
    dtype: torch.dtype,
    batch_size: int,
    max_batch_tokens: int | None,
    bar: tqdm | None = None,
) -> tuple[dict[int, torch.Tensor], dict[int, list[torch.Tensor]]]:
    """Run `inputs` through the decoder stack; (pooled [N, D], or per-input token rows) per layer, in input order."""
    n, device = len(inputs), lm.device
    pad_id = lm.tokenizer.pad_token_id or 0
    pooled: dict[int, torch.Tensor] = {}
    tokens: dict[int, list[torch.Tensor]] = {layer: [torch.empty(0)] * n for layer in layers}
    current: dict[str, Any] = {}
    last_layer = max(layers)

    def make_hook(layer: int) -> Callable[[torch.Tensor], None]:
        def hook(hidden: torch.Tensor) -> None:
            mask, idx = current["mask"], current["idx"]
            if pool == TOKENS:  # one device-to-host copy per layer and batch, split per input
                rows = hidden[mask].to("cpu", dtype).split(current["counts"])
                for row, i in enumerate(idx):
                    tokens[layer][i] = rows[row]
            else:
                out = POOLERS[pool](hidden.float(), mask).to("cpu", dtype)
                if layer not in pooled:
                    pooled[layer] = torch.empty(n, out.shape[-1], dtype=dtype)
                pooled[layer][torch.tensor(idx)] = out
            if layer == last_layer:
                raise _StopForward

        return hook

    body = _body(lm)
    t0, n_tokens = time.perf_counter(), 0
    with site_hooks(lm, {Site(DEFAULT_SITE, layer): make_hook(layer) for layer in layers}):
        for idx in token_batches([len(x) for x in inputs], batch_size, max_batch_tokens):
            width = len(inputs[idx[0]])
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            sel = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                x = inputs[i]
                ids[row, : len(x)] = torch.tensor(x.input_ids)
                attn[row, : len(x)] = 1
                sel[row, : len(x)] = torch.tensor(x.mask)
            current.update(mask=sel.to(device), idx=idx, counts=sel.sum(1).tolist())
            try:
                body(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False)
            except _StopForward:
                pass
            if bar is not None:
                n_tokens += int(attn.sum())
                bar.update(len(idx))
                bar.set_postfix(tok_s=f"{n_tokens / max(time.perf_counter() - t0, 1e-9):.0f}", refresh=False)
    return pooled, tokens
