"""Capture residual-stream activations (block outputs) of transcripts, in memory.

Only the decoder stack runs (no output layer: capture needs no logits), and the forward
pass stops after the last block asked for (see `emscope.activations.forward`). For data
that does not fit in memory, `capture_to_disk` writes shards, `load_activations` reads them
back and `ActivationStream` streams them shuffled for SAE training (`emscope.activations.disk`,
`emscope.activations.reader`); all are importable from here too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from emscope.activations.disk import capture_to_disk, load_activations
from emscope.activations.forward import DEFAULT_BATCH_TOKENS, block_outputs, run_capture
from emscope.activations.inputs import log_truncation, prepare_inputs
from emscope.activations.pooling import POOL_CHOICES, POOLERS, SELECTIONS, TOKENS
from emscope.activations.reader import ActivationStream
from emscope.activations.result import Activations
from emscope.activations.settings import CaptureSettings
from emscope.data.transcripts import Transcript, as_transcripts, fingerprint
from emscope.errors import DataFormatError
from emscope.models.architecture import LayerSpec
from emscope.models.loading import LoadedModel

__all__ = [
    "POOLERS",
    "POOL_CHOICES",
    "SELECTIONS",
    "TOKENS",
    "ActivationStream",
    "Activations",
    "block_outputs",
    "capture_activations",
    "capture_to_disk",
    "load_activations",
]


def capture_activations(
    lm: LoadedModel,
    data: str | os.PathLike[str] | Sequence[Transcript | dict[str, Any]],
    layers: LayerSpec = "all",
    pool: str = "mean",
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    dtype: str | torch.dtype = "float32",
    token_selection: str = "response",
    max_batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
) -> Activations:
    """Capture block-output activations in memory.

    `token_selection` is "response" (the assistant's content tokens) or "all" (every token of
    the transcript); `pool` is "mean", "last", "max" over them, or "tokens" (keep them all).
    Transcripts longer than `max_length` are truncated (counted in ``meta["n_truncated"]``);
    without `max_length`, one longer than the model's context is refused. A forward pass holds
    at most `batch_size` transcripts and `max_batch_tokens` padded tokens. `dtype` is the
    storage dtype of the result. For large datasets use `capture_to_disk`.
    """
    settings = CaptureSettings.make(lm, layers, pool, token_selection, dtype, batch_size, max_batch_tokens, max_length)
    transcripts = as_transcripts(data)
    if not transcripts:
        raise DataFormatError("no transcripts to capture")
    inputs = prepare_inputs(lm, transcripts, token_selection, max_length)
    n_truncated = sum(x.truncated for x in inputs)
    log_truncation(n_truncated, len(inputs), max_length)
    with tqdm(total=len(inputs), desc="capture", unit="transcript", disable=not progress) as bar:
        pooled, tokens = run_capture(
            lm, inputs, settings.layers, pool, settings.dtype, batch_size, max_batch_tokens, bar
        )
    return Activations(
        layers=settings.layers,
        pool=pool,
        labels=[t.label for t in transcripts],
        pooled=pooled,
        tokens=tokens if pool == TOKENS else {},
        fingerprint=fingerprint(transcripts),
        meta={**lm.provenance(), **settings.record(), "n_truncated": n_truncated},
    )
