"""Capture to a directory of safetensors shards, resumable, and read it back.

A capture directory holds:

- ``config.json``: what was captured (model provenance, layers, pool, token selection,
  storage dtype, max_length, dataset fingerprint, shard size). Written when a run starts
  and once more when it completes (``"complete": true``, row and truncation counts);
- ``shards.jsonl`` (named by ``index_file``): one line appended per finished shard, with its
  file, its transcript range, its row count, the labels of its transcripts and how many of
  them were truncated. Nothing is rewritten per shard, so writing stays linear in the data;
- ``shard-00000.safetensors`` ...: ``layer.{i}`` tensors [rows, D] for `shard_size`
  transcripts in dataset order (pool="tokens": their selected tokens concatenated, with
  ``lengths`` giving each transcript's count).

A shard is written atomically before its line is appended, so a killed run resumes from
the shards already listed. Directories of emscope versions that kept the labels and the
shard list in ``config.json`` still load (and resume).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from emscope.activations.forward import DEFAULT_BATCH_TOKENS, run_capture
from emscope.activations.inputs import log_truncation, prepare_inputs
from emscope.activations.pooling import TOKENS
from emscope.activations.result import KIND, Activations
from emscope.activations.settings import CaptureSettings
from emscope.activations.sites import canonical_site
from emscope.artifacts import atomic_save_tensors, member, read_config, write_config
from emscope.data.transcripts import Transcript, as_transcripts, fingerprint
from emscope.errors import ArtifactError, ConfigError, DataFormatError
from emscope.models.architecture import LayerSpec
from emscope.models.context import token_limit
from emscope.models.loading import LoadedModel
from emscope.records import append_jsonl, read_jsonl, write_jsonl
from emscope.runtime import resolve_dtype

log = logging.getLogger(__name__)
INDEX_NAME = "shards.jsonl"


@dataclass(frozen=True)
class ShardRecord:
    """One finished shard: transcripts [start, end) of the dataset, `rows` activation rows."""

    file: str
    start: int
    end: int
    rows: int | None  # None in directories of older versions
    labels: list[str | None]
    n_truncated: int | None = None  # transcripts cut to max_length (None: not recorded)
    longest: int | None = None  # the longest transcript's length before truncation


def _read_index(directory: Path, config: dict[str, Any]) -> list[ShardRecord]:
    """The shard records, in dataset order (a last line cut short by a killed run is skipped)."""
    if "index_file" not in config:  # older layout: shards and labels inside config.json
        labels = config.get("labels", [])
        old = (
            ShardRecord(s["file"], s["start"], s["end"], None, labels[s["start"] : s["end"]]) for s in config["shards"]
        )
        return sorted(old, key=lambda r: r.start)
    path = directory / config["index_file"]
    by_start: dict[int, ShardRecord] = {}
    for row in read_jsonl(path, missing_ok=True, torn_tail_ok=True):
        try:
            record = ShardRecord(**row)
        except TypeError:
            raise ArtifactError(
                f"{path} holds a line that is not a shard record ({row!r:.80}): the directory is damaged"
            ) from None
        by_start[record.start] = record  # a shard computed again replaces its earlier line
    return sorted(by_start.values(), key=lambda r: r.start)


def read_manifest(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], list[ShardRecord]]:
    """(config, shard records) of a complete capture directory of any layout; refuses an unfinished one."""
    directory = Path(directory)
    config = read_config(directory, KIND)
    if not config.get("complete"):
        raise ArtifactError(f"{directory} holds an unfinished capture: run the same capture again to resume it")
    records = _read_index(directory, config)
    ends = [0, *(r.end for r in records)]
    if [r.start for r in records] != ends[:-1] or ends[-1] != config["n"]:
        raise ArtifactError(
            f"{directory}: the shards do not cover transcripts 0..{config['n']}: the directory is damaged"
        )
    return config, records


def shard_rows(directory: str | os.PathLike[str], records: list[ShardRecord], layer: int) -> list[tuple[str, int]]:
    """(path, row count) of each shard; paths stay inside `directory`, and older layouts that recorded no
    row count are read from the shard's header at `layer`."""
    out = []
    for r in records:
        path = str(member(directory, r.file, "shard file"))
        if r.rows is not None:
            out.append((path, r.rows))
            continue
        with safe_open(path, "pt") as f:
            out.append((path, int(f.get_slice(f"layer.{layer}").get_shape()[0])))
    return out


def _reusable(record: ShardRecord, old_max: int | None, new_max: int | None, new_limit: int | None) -> bool:
    """A shard written under `old_max` is the same under `new_max` if nothing in it was or would be cut."""
    if old_max == new_max:
        return True
    if record.n_truncated != 0 or record.longest is None:
        return False
    return new_limit is None or record.longest <= new_limit


def _resume(
    out: Path, identity: dict[str, Any], max_length: int | None, limit: int | None, later: set[str]
) -> tuple[list[ShardRecord], bool]:
    """(shards already done, whether the directory is complete as asked) of a previous run in `out`.

    Keys in `later` (provenance fields newer emscope versions record) are compared only where present.
    """
    if not (out / "config.json").is_file():
        return [], False
    old = read_config(out, KIND)
    if "site" in old:  # directories written before the sites registry say "block_output"
        old["site"] = canonical_site(old["site"])
    diff = [k for k in identity if (k in old or k not in later) and old.get(k) != identity[k]]
    records = _read_index(out, old)
    if any(not _reusable(r, old.get("max_length"), max_length, limit) for r in records):
        diff.append("max_length")
    if diff:
        raise ArtifactError(
            f"{out} holds a different capture (differs in: {', '.join(diff)}); use another --out or delete it"
        )
    complete = bool(old.get("complete")) and old.get("max_length") == max_length
    return [r for r in records if (out / r.file).is_file()], complete


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
    dtype: str | torch.dtype = "float32",
    token_selection: str = "response",
    max_batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
) -> Path:
    """Capture into `out_dir` as safetensors shards + ``shards.jsonl`` + ``config.json``; resumes a killed run.

    Options as in `capture_activations`; `dtype="bfloat16"` halves the shards (recorded in
    ``config.json``), `pool="tokens", token_selection="all"` keeps every token (for SAE training,
    read it with `ActivationStream`). Memory holds one shard of `shard_size` transcripts.
    """
    settings = CaptureSettings.make(lm, layers, pool, token_selection, dtype, batch_size, max_batch_tokens, max_length)
    transcripts = as_transcripts(data)
    if not transcripts:
        raise DataFormatError("no transcripts to capture")
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(out_dir)
    record = {k: v for k, v in settings.record().items() if k != "max_length"}
    identity = {
        **lm.provenance(),
        **record,
        "dataset_fingerprint": fingerprint(transcripts),
        "n": len(transcripts),
        "shard_size": shard_size,
    }
    done, complete = _resume(out, identity, max_length, token_limit(lm, max_length), set(lm.provenance()))
    if complete:
        log.info("%s is already complete", out)
        return out
    fields = {**identity, "max_length": max_length, "index_file": INDEX_NAME}
    write_jsonl(out / INDEX_NAME, [asdict(r) for r in done])  # drops a torn last line; converts an old layout
    write_config(out, KIND, {**fields, "complete": False})
    starts = sorted(set(range(0, len(transcripts), shard_size)) - {r.start for r in done})
    with tqdm(
        total=len(transcripts),
        initial=sum(r.end - r.start for r in done),
        desc="capture",
        unit="transcript",
        disable=not progress,
    ) as bar:
        for start in starts:
            done.append(_capture_shard(lm, transcripts, start, shard_size, settings, out, bar))
    truncated = [r.n_truncated for r in done]
    n_truncated = None if None in truncated else sum(t for t in truncated if t is not None)
    log_truncation(n_truncated or 0, len(transcripts), max_length)
    rows = [r.rows for r in done]
    n_rows = None if None in rows else sum(r for r in rows if r is not None)
    write_config(out, KIND, {**fields, "complete": True, "n_rows": n_rows, "n_truncated": n_truncated})
    return out


def _capture_shard(
    lm: LoadedModel,
    transcripts: Sequence[Transcript],
    start: int,
    shard_size: int,
    s: CaptureSettings,
    out: Path,
    bar: tqdm,
) -> ShardRecord:
    """Capture transcripts [start, start + shard_size), write the shard, then append its record."""
    chunk = transcripts[start : start + shard_size]
    inputs = prepare_inputs(lm, chunk, s.token_selection, s.max_length, first_index=start)
    pooled, tokens = run_capture(lm, inputs, s.layers, s.pool, s.dtype, s.batch_size, s.max_batch_tokens, bar)
    if s.pool == TOKENS:
        tensors = {f"layer.{layer}": torch.cat(tokens[layer]) for layer in s.layers}
        tensors["lengths"] = torch.tensor([len(x) for x in tokens[s.layers[0]]])
    else:
        tensors = {f"layer.{layer}": pooled[layer] for layer in s.layers}
    name = f"shard-{start // shard_size:05d}.safetensors"
    atomic_save_tensors(out / name, tensors)
    record = ShardRecord(
        file=name,
        start=start,
        end=start + len(chunk),
        rows=len(tensors[f"layer.{s.layers[0]}"]),
        labels=[t.label for t in chunk],
        n_truncated=sum(x.truncated for x in inputs),
        longest=max(x.n_tokens for x in inputs),
    )
    append_jsonl(out / INDEX_NAME, [asdict(record)])
    return record


def load_activations(
    directory: str | os.PathLike[str], layers: Sequence[int] | None = None, dtype: str | torch.dtype | None = None
) -> Activations:
    """Load what `capture_to_disk` wrote (only `layers`, if given; converted to `dtype`, if given), in memory.

    To iterate over a capture larger than memory, use `ActivationStream`.
    """
    directory = Path(directory)
    config, records = read_manifest(directory)
    wanted = list(layers) if layers is not None else config["layers"]
    missing = [layer for layer in wanted if layer not in config["layers"]]
    if missing:
        raise ArtifactError(f"{directory} has no layer(s) {missing}; it holds {config['layers']}")
    pool = config["pool"]
    shards = shard_rows(directory, records, wanted[0])
    whole: dict[int, torch.Tensor] = {}  # filled in place: peak memory is the result plus one tensor
    lengths: list[int] = []
    offset = 0
    for path, n in shards:
        with safe_open(path, "pt") as f:
            for layer in wanted:
                t = f.get_tensor(f"layer.{layer}")
                if layer not in whole:
                    whole[layer] = torch.empty(
                        sum(n for _, n in shards), t.shape[-1], dtype=resolve_dtype(dtype or t.dtype)
                    )
                whole[layer][offset : offset + n] = t
            if pool == TOKENS:
                lengths.extend(f.get_tensor("lengths").tolist())
        offset += n
    meta = {k: v for k, v in config.items() if k not in ("labels", "shards")}
    return Activations(
        layers=wanted,
        pool=pool,
        labels=[label for r in records for label in r.labels],
        pooled={} if pool == TOKENS else whole,
        tokens={layer: list(t.split(lengths)) for layer, t in whole.items()} if pool == TOKENS else {},
        fingerprint=config["dataset_fingerprint"],
        meta=meta,
    )
