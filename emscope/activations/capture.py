"""Capture residual-stream activations (block outputs) over the response tokens of transcripts.

Only the decoder stack runs (no output layer: capture needs no logits), and the forward
pass stops after the last block asked for. Batches are sorted by length to cut padding;
padding is on the right with an attention mask, so a transcript's result does not depend
on what else was in its batch. Pooling happens inside the hook, so memory holds one batch
of full hidden states at a time.

On disk (`capture_to_disk`), results are safetensors shards of `shard_size` transcripts in
dataset order plus a `config.json` manifest updated after every shard: a killed run
resumes from the shards already written.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from emscope.activations.hooks import block_hooks
from emscope.artifacts import atomic_save_tensors, read_config, write_config
from emscope.data.chat import TokenizedChat, tokenize_chat
from emscope.data.transcripts import Transcript, as_transcripts, fingerprint
from emscope.errors import ArtifactError, DataFormatError
from emscope.models.architecture import LayerSpec, resolve_layers
from emscope.models.loading import LoadedModel

log = logging.getLogger(__name__)
KIND = "activations"

# hidden [B, T, D], mask [B, T] (bool, response tokens) -> pooled [B, D]
Pooler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mean(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    w = m.to(h.dtype).unsqueeze(-1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1)


def _last(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    last = torch.where(m, positions, -1).amax(1)
    return h[torch.arange(h.shape[0], device=h.device), last]


def _max(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return h.masked_fill(~m.unsqueeze(-1), float("-inf")).amax(1)


POOLERS: dict[str, Pooler] = {"mean": _mean, "last": _last, "max": _max}
TOKENS = "tokens"  # keep every response token instead of pooling
POOL_CHOICES = (*POOLERS, TOKENS)


@dataclass
class Activations:
    """Captured activations: `pooled[layer]` is [N, D], or `tokens[layer][i]` is [n_i, D]."""

    layers: list[int]
    pool: str
    labels: list[str | None]
    pooled: dict[int, torch.Tensor] = field(default_factory=dict)
    tokens: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    fingerprint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, label: str) -> dict[int, torch.Tensor]:
        """Pooled activations of the transcripts with `label`, per layer."""
        idx = torch.tensor([i for i, lab in enumerate(self.labels) if lab == label], dtype=torch.long)
        if not len(idx):
            raise DataFormatError(
                f"no transcripts labelled {label!r}; labels present: {sorted(set(map(str, self.labels)))}"
            )
        if self.pool == TOKENS:
            raise DataFormatError("select() needs pooled activations; capture with pool='mean', 'last' or 'max'")
        return {layer: t[idx] for layer, t in self.pooled.items()}


def _check_pool(pool: str) -> None:
    if pool not in POOL_CHOICES:
        raise ValueError(f"unknown pool {pool!r}; choose from {', '.join(POOL_CHOICES)}")


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

    with block_hooks(lm.blocks, {layer: make_hook(layer) for layer in layers}):
        try:
            _body(lm)(**inputs)
        except _StopForward:
            pass
    return grabbed


def _batches(items: Sequence[TokenizedChat], batch_size: int) -> Iterator[list[int]]:
    """Indices into `items`, longest first, in batches of `batch_size`."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i]))
    for k in range(0, len(order), batch_size):
        yield order[k : k + batch_size]


@torch.inference_mode()
def _capture_chunk(
    lm: LoadedModel,
    chats: Sequence[TokenizedChat],
    layers: list[int],
    pool: str,
    batch_size: int,
    out_dtype: torch.dtype,
    bar: tqdm | None,
) -> tuple[dict[int, torch.Tensor], dict[int, list[torch.Tensor]]]:
    """Run `chats` through the model; results in the order of `chats`."""
    n, device = len(chats), lm.device
    pad_id = lm.tokenizer.pad_token_id or 0
    pooled: dict[int, torch.Tensor] = {}
    tokens: dict[int, list[torch.Tensor]] = {layer: [torch.empty(0)] * n for layer in layers}
    current: dict[str, Any] = {}
    last_layer = max(layers)

    def make_hook(layer: int) -> Callable[[torch.Tensor], None]:
        def hook(hidden: torch.Tensor) -> None:
            mask, idx = current["mask"], current["idx"]
            if pool == TOKENS:
                for row, i in enumerate(idx):
                    tokens[layer][i] = hidden[row][mask[row]].to("cpu", out_dtype)
            else:
                out = POOLERS[pool](hidden.float(), mask).to("cpu", out_dtype)
                if layer not in pooled:
                    pooled[layer] = torch.empty(n, out.shape[-1], dtype=out_dtype)
                pooled[layer][torch.tensor(idx)] = out
            if layer == last_layer:
                raise _StopForward

        return hook

    body = _body(lm)
    t0, n_tokens = time.perf_counter(), 0
    with block_hooks(lm.blocks, {layer: make_hook(layer) for layer in layers}):
        for idx in _batches(chats, batch_size):
            width = max(len(chats[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            resp = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                c = chats[i]
                ids[row, : len(c)] = torch.tensor(c.input_ids)
                attn[row, : len(c)] = 1
                resp[row, : len(c)] = torch.tensor(c.response_mask)
            current.update(mask=resp.to(device), idx=idx)
            try:
                body(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False)
            except _StopForward:
                pass
            if bar is not None:
                n_tokens += int(attn.sum())
                bar.update(len(idx))
                bar.set_postfix(tok_s=f"{n_tokens / max(time.perf_counter() - t0, 1e-9):.0f}", refresh=False)
    return pooled, tokens


def _prepare(
    lm: LoadedModel, data: Any, layers: LayerSpec, pool: str, batch_size: int
) -> tuple[list[Transcript], list[int]]:
    _check_pool(pool)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    transcripts = as_transcripts(data)
    if not transcripts:
        raise DataFormatError("no transcripts to capture")
    return transcripts, resolve_layers(layers, lm.n_layers)


def capture_activations(
    lm: LoadedModel,
    data: str | os.PathLike[str] | Sequence[Transcript | dict[str, Any]],
    layers: LayerSpec = "all",
    pool: str = "mean",
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    out_dtype: torch.dtype = torch.float32,
) -> Activations:
    """Capture block-output activations over response tokens, in memory.

    `pool` is "mean", "last", "max" (over response tokens) or "tokens" (keep them all).
    For large datasets use `capture_to_disk`, whose memory does not grow with the data.
    """
    transcripts, layer_list = _prepare(lm, data, layers, pool, batch_size)
    chats = [tokenize_chat(lm.tokenizer, t, max_length) for t in transcripts]
    with tqdm(total=len(chats), desc="capture", unit="transcript", disable=not progress) as bar:
        pooled, tokens = _capture_chunk(lm, chats, layer_list, pool, batch_size, out_dtype, bar)
    return Activations(
        layers=layer_list,
        pool=pool,
        labels=[t.label for t in transcripts],
        pooled=pooled,
        tokens=tokens if pool == TOKENS else {},
        fingerprint=fingerprint(transcripts),
        meta=lm.provenance(),
    )


def capture_to_disk(
    lm: LoadedModel,
    data: str | os.PathLike[str] | Sequence[Transcript | dict[str, Any]],
    out_dir: str | os.PathLike[str],
    layers: LayerSpec = "all",
    pool: str = "mean",
    batch_size: int = 8,
    shard_size: int = 256,
    max_length: int | None = None,
    progress: bool = True,
    out_dtype: torch.dtype = torch.float32,
) -> Path:
    """Capture into `out_dir` as safetensors shards + `config.json`; resumes a killed run.

    Each shard `shard-00000.safetensors` holds `layer.{i}` tensors for `shard_size`
    transcripts in dataset order (pool="tokens": all their response tokens concatenated,
    with `lengths` giving each transcript's count).
    """
    transcripts, layer_list = _prepare(lm, data, layers, pool, batch_size)
    out = Path(out_dir)
    fields = {
        **lm.provenance(),
        "layers": layer_list,
        "pool": pool,
        "dtype": str(out_dtype).removeprefix("torch."),
        "site": "block_output",
        "token_selection": "response",
        "max_length": max_length,
        "dataset_fingerprint": fingerprint(transcripts),
        "n": len(transcripts),
        "shard_size": shard_size,
        "labels": [t.label for t in transcripts],
    }
    shards: list[dict[str, Any]] = []
    if (out / "config.json").is_file():
        old = read_config(out, KIND)
        same = {k: old.get(k) for k in fields} == fields
        if not same:
            diff = [k for k in fields if old.get(k) != fields[k]]
            raise ArtifactError(
                f"{out} holds a different capture (differs in: {', '.join(diff)}); use another --out or delete it"
            )
        shards = old.get("shards", [])
        if old.get("complete"):
            log.info("%s is already complete", out)
            return out
    done = {s["start"] for s in shards}
    starts = [s for s in range(0, len(transcripts), shard_size) if s not in done]
    with tqdm(
        total=len(transcripts),
        initial=len(transcripts) - sum(min(shard_size, len(transcripts) - s) for s in starts),
        desc="capture",
        unit="transcript",
        disable=not progress,
    ) as bar:
        for start in starts:
            chunk = transcripts[start : start + shard_size]
            chats = [tokenize_chat(lm.tokenizer, t, max_length) for t in chunk]
            pooled, tokens = _capture_chunk(lm, chats, layer_list, pool, batch_size, out_dtype, bar)
            if pool == TOKENS:
                tensors = {f"layer.{layer}": torch.cat(tokens[layer]) for layer in layer_list}
                tensors["lengths"] = torch.tensor([len(x) for x in tokens[layer_list[0]]])
            else:
                tensors = {f"layer.{layer}": pooled[layer] for layer in layer_list}
            name = f"shard-{start // shard_size:05d}.safetensors"
            atomic_save_tensors(out / name, tensors)
            shards.append({"file": name, "start": start, "end": start + len(chunk)})
            shards.sort(key=lambda s: s["start"])
            write_config(out, KIND, {**fields, "shards": shards, "complete": False})
    write_config(out, KIND, {**fields, "shards": shards, "complete": True})
    return out


def load_activations(directory: str | os.PathLike[str], layers: Sequence[int] | None = None) -> Activations:
    """Load what `capture_to_disk` wrote (only `layers`, if given)."""
    config = read_config(directory, KIND)
    if not config.get("complete"):
        raise ArtifactError(f"{directory} holds an unfinished capture: run the same capture again to resume it")
    wanted = list(layers) if layers is not None else config["layers"]
    missing = [layer for layer in wanted if layer not in config["layers"]]
    if missing:
        raise ArtifactError(f"{directory} has no layer(s) {missing}; it holds {config['layers']}")
    pool = config["pool"]
    parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}
    tokens: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}
    for shard in config["shards"]:
        tensors = load_file(str(Path(directory) / shard["file"]))
        for layer in wanted:
            t = tensors[f"layer.{layer}"]
            if pool == TOKENS:
                tokens[layer].extend(torch.split(t, tensors["lengths"].tolist()))
            else:
                parts[layer].append(t)
    meta = {k: v for k, v in config.items() if k not in ("labels", "shards")}
    return Activations(
        layers=wanted,
        pool=pool,
        labels=config["labels"],
        pooled={} if pool == TOKENS else {layer: torch.cat(p) for layer, p in parts.items()},
        tokens=tokens if pool == TOKENS else {},
        fingerprint=config["dataset_fingerprint"],
        meta=meta,
    )
