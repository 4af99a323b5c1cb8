"""Every pooling of every layer from one forward pass per transcript, cached on disk chunk by chunk.

A cross-domain sweep compares layers, methods and poolings on the same transcripts; reading them
once per pooling would multiply the (slow) forward passes. `capture_pooled` keeps the answer tokens
of one chunk of transcripts at a time (`emscope.activations.capture_activations` with ``pool="tokens"``),
reduces them with each pooler of `emscope.activations.pooling.POOLERS` and, given a cache directory,
writes the chunk atomically before the next one starts: a killed run resumes at the first missing
chunk, and a rerun on the same model, data and settings reads everything back without a forward pass.

Cache layout: ``CACHE/<key>/config.json`` (kind ``pooled_cache``: model provenance, dataset
fingerprint, layers, pools, chunk size) and ``chunk-00000.safetensors`` ... holding ``{pool}.{layer}``
tensors [rows of the chunk, D], float32. `key` is a hash of that identity, so one cache directory holds
the captures of several models and datasets side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from emscope.activations.capture import POOLERS, capture_activations
from emscope.artifacts import atomic_save_tensors, write_config
from emscope.data.transcripts import Transcript, fingerprint
from emscope.errors import ConfigError, DataFormatError, lookup
from emscope.models.architecture import LayerSpec, resolve_layers
from emscope.models.loading import LoadedModel

log = logging.getLogger(__name__)
KIND = "pooled_cache"
POOLS = ("mean", "last", "max")

Pooled = dict[str, dict[int, torch.Tensor]]  # pool -> layer -> [N, D]


def _pool_tokens(rows: Sequence[torch.Tensor], pool: str) -> torch.Tensor:
    """[N, D] from each transcript's selected token rows [n_i, D] (the same reduction as the capture hook)."""
    fn = POOLERS[pool]
    return torch.cat([fn(r.float()[None], torch.ones(1, len(r), dtype=torch.bool)) for r in rows])


def _capture_chunk(
    lm: LoadedModel,
    chunk: Sequence[Transcript],
    layers: list[int],
    pools: Sequence[str],
    batch_size: int,
    max_length: int | None,
) -> dict[str, torch.Tensor]:
    acts = capture_activations(
        lm, chunk, layers=layers, pool="tokens", batch_size=batch_size, max_length=max_length, progress=False
    )
    return {f"{pool}.{layer}": _pool_tokens(acts.tokens[layer], pool) for pool in pools for layer in layers}


def capture_pooled(
    lm: LoadedModel,
    transcripts: Sequence[Transcript],
    layers: LayerSpec = "all",
    pools: Sequence[str] = POOLS,
    cache_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 64,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
) -> Pooled:
    """``{pool: {layer: [N, D]}}`` over the response tokens of `transcripts`, one forward pass each.

    Every pooling of `POOLS` is captured and cached; `pools` selects what is returned. With `cache_dir`, finished chunks are written there and read back on the next call (see the module
    docstring); without it everything stays in memory.
    """
    if not transcripts:
        raise DataFormatError("no transcripts to capture")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    pools = [lookup(tuple(POOLERS), p, "pool") for p in dict.fromkeys(pools)]
    resolved = resolve_layers(layers, lm.n_layers)
    identity = {
        **lm.provenance(),
        "dataset_fingerprint": fingerprint(transcripts),
        "n": len(transcripts),
        "layers": resolved,
        "pools": list(POOLS),  # every pooling is kept (they cost nothing beside the forward pass)
        "chunk_size": chunk_size,
        "token_selection": "response",
        "max_length": max_length,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    where = Path(cache_dir) / key if cache_dir is not None else None
    if where is not None:
        where.mkdir(parents=True, exist_ok=True)
        write_config(where, KIND, identity)
    parts: list[dict[str, torch.Tensor]] = []
    starts = range(0, len(transcripts), chunk_size)
    with tqdm(total=len(transcripts), desc="capture", unit="transcript", disable=not progress) as bar:
        for i, start in enumerate(starts):
            chunk = transcripts[start : start + chunk_size]
            path = where / f"chunk-{i:05d}.safetensors" if where is not None else None
            if path is not None and path.is_file():
                part = load_file(str(path))
            else:
                part = _capture_chunk(lm, chunk, resolved, POOLS, batch_size, max_length)
                if path is not None:
                    atomic_save_tensors(path, part)
            parts.append(part)
            bar.update(len(chunk))
    if where is not None:
        log.info("pooled activations of %d transcripts cached in %s", len(transcripts), where)
    return {pool: {layer: torch.cat([p[f"{pool}.{layer}"] for p in parts]) for layer in resolved} for pool in pools}
