"""Shuffled batches of captured activations, streamed from disk with bounded memory (for SAE training).

`ActivationStream` reads a directory written by `capture_to_disk` in pieces of contiguous
rows (a row is a token for pool="tokens", a transcript otherwise), visits the pieces of all
shards in a seeded random order, and mixes them in a shuffle buffer of `buffer_size` rows:
when the buffer is full it is permuted and batches are taken from it until half of it is
left. Every row comes out exactly once per epoch; for given sizes the order depends only on (`seed`, epoch).
Memory is bounded by `buffer_size`, whatever the data size: the buffer (`buffer_size` rows plus
one piece) and, while it is reshuffled, a copy of the half it keeps.

It is a plain iterable and a ``torch.utils.data.IterableDataset`` (pass ``batch_size=None``
to a ``DataLoader``): DataLoader workers and distributed ranks (`rank`, `world_size`) each
take a disjoint share of the pieces. Call `set_epoch` between epochs for a new order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from emscope.activations.disk import read_manifest, shard_rows
from emscope.errors import ArtifactError, ConfigError
from emscope.runtime import resolve_dtype

PIECES_PER_BUFFER = 16  # a buffer mixes at least this many pieces from random places in the data

Piece = tuple[str, int, int]  # shard file, first row, end row
Batch = torch.Tensor | dict[int, torch.Tensor]


class ActivationStream(torch.utils.data.IterableDataset):
    """Batches [batch_size, D] of `layer` (or {layer: [batch_size, D]} for a list of layers), shuffled."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        layer: int | Sequence[int],
        batch_size: int = 4096,
        buffer_size: int = 2**18,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        dtype: str | torch.dtype | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        config, records = read_manifest(directory)
        self.layers = [layer] if isinstance(layer, int) else list(layer)
        missing = [x for x in self.layers if x not in config["layers"]]
        if missing or not self.layers:
            raise ArtifactError(f"{directory} has no layer(s) {missing or self.layers}; it holds {config['layers']}")
        if batch_size < 1 or buffer_size < batch_size:
            raise ConfigError(
                f"need 1 <= batch_size <= buffer_size, got batch_size={batch_size}, buffer_size={buffer_size}"
            )
        if not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.directory = Path(directory)
        self.config = config
        self.batch_size, self.buffer_size, self.seed = batch_size, buffer_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.dtype = resolve_dtype(dtype) if dtype is not None else None
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.peak_buffer_rows = 0  # the most rows the buffer has held (for sizing memory)
        self._shards = shard_rows(self.directory, records, self.layers[0])

    @property
    def n_rows(self) -> int:
        """Rows in the whole capture (tokens for pool="tokens", transcripts otherwise)."""
        return sum(n for _, n in self._shards)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of `epoch` on the next iteration (each epoch has its own order under the same seed)."""
        self.epoch = epoch

    def _pieces(self, rng: np.random.Generator) -> list[Piece]:
        """This worker's pieces, in the epoch's order."""
        size = max(1, self.buffer_size // PIECES_PER_BUFFER)
        pieces = [(path, a, min(a + size, n)) for path, n in self._shards for a in range(0, n, size)]
        if self.shuffle:
            pieces = [pieces[i] for i in rng.permutation(len(pieces))]
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return pieces[self.rank * workers + worker :: self.world_size * workers]

    def _read(self, piece: Piece) -> list[torch.Tensor]:
        path, a, b = piece
        with safe_open(path, "pt") as f:
            return [f.get_slice(f"layer.{layer}")[a:b] for layer in self.layers]

    def _batch(self, parts: list[torch.Tensor]) -> Batch:
        return parts[0] if len(self.layers) == 1 else dict(zip(self.layers, parts, strict=True))

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, self.epoch])
        buffers: list[torch.Tensor] | None = None
        filled, bs = 0, self.batch_size
        keep = min(self.buffer_size // 2, self.buffer_size - bs)  # rows left in the buffer after a round
        for piece in self._pieces(rng):
            rows = self._read(piece)
            if self.dtype is not None:
                rows = [r.to(self.dtype) for r in rows]
            if buffers is None:
                capacity = self.buffer_size + max(1, self.buffer_size // PIECES_PER_BUFFER)
                buffers = [torch.empty(capacity, r.shape[-1], dtype=r.dtype) for r in rows]
            n = len(rows[0])
            for buf, r in zip(buffers, rows, strict=True):
                buf[filled : filled + n] = r
            filled += n
            self.peak_buffer_rows = max(self.peak_buffer_rows, filled)
            if filled >= self.buffer_size:
                order = self._order(rng, filled)
                n_out = (filled - keep) // bs * bs
                for k in range(0, n_out, bs):
                    yield self._batch([buf[order[k : k + bs]] for buf in buffers])
                rest = order[n_out:]
                for buf in buffers:
                    buf[: len(rest)] = buf[rest]
                filled = len(rest)
        if buffers is None or filled == 0:
            return
        order = self._order(rng, filled)
        end = filled // bs * bs if self.drop_last else filled
        for k in range(0, end, bs):
            yield self._batch([buf[order[k : k + bs]] for buf in buffers])

    def _order(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        return torch.from_numpy(rng.permutation(n)) if self.shuffle else torch.arange(n)
