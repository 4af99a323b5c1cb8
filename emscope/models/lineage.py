"""`Lineage`: which weights a model is, so a direction can be matched to the models it fits.

A model is a base (an embedded name, a hub id at a commit, or the fingerprint of local
weights) plus, for an organism, the fine-tune on top (the fingerprint of its checkpoint's
adapter or full weights). The same weights reached by another route get the same lineage:
an embedded name and its converted cache directory, a hub id and its snapshot directory,
a run directory and its latest checkpoint, a directory and a copy of it.

Fingerprints read the file sizes and about 4 MB of a model's weights, evenly spread (all of
a file under 32 MB): tens of milliseconds for any model (18 ms for SmolLM2's 540 MB), and
any fine-tune that changes more than a sliver of the weights changes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from emscope.artifacts import atomic_write_json
from emscope.errors import ArtifactError
from emscope.models.embedded import EMBEDDED_MODELS
from emscope.models.organism_dir import ADAPTER_WEIGHTS, FULL_WEIGHTS
from emscope.runtime import cache_root

log = logging.getLogger(__name__)

Compatibility = Literal["same_model", "same_base", "any"]
COMPATIBILITY: tuple[Compatibility, ...] = ("same_model", "same_base", "any")
MARKER = "emscope_lineage.json"  # written beside weights emscope converts or exports
CHECKPOINT_WEIGHTS = (ADAPTER_WEIGHTS, FULL_WEIGHTS)  # an organism checkpoint's own weights
_WHOLE_FILE = 32 << 20
_CHUNKS, _CHUNK = 1024, 4096


@dataclass(frozen=True)
class Lineage:
    """A model's base weights and the fine-tune applied on top (None: the base itself)."""

    base: str  # embedded name, hub id, or "sha256:..." of local weights
    base_revision: str | None = None  # hub commit, when known (None matches any)
    checkpoint: str | None = None  # "sha256:..." of the fine-tune's weights
    checkpoint_path: str | None = field(default=None, compare=False)  # where the fine-tune was read (for messages)

    def same_base(self, other: Lineage) -> bool:
        revisions = (self.base_revision, other.base_revision)
        return self.base == other.base and (None in revisions or revisions[0] == revisions[1])

    def same_model(self, other: Lineage) -> bool:
        return self.same_base(other) and self.checkpoint == other.checkpoint

    def fits(self, other: Lineage, compatibility: Compatibility) -> bool:
        """Whether an artifact of this lineage may be used on a model of lineage `other`."""
        if compatibility == "any":
            return True
        return self.same_model(other) if compatibility == "same_model" else self.same_base(other)

    def fine_tuned(self, checkpoint: str, path: str | None = None) -> Lineage:
        """This base with a fine-tune of fingerprint `checkpoint` on top."""
        return replace(self, checkpoint=checkpoint, checkpoint_path=path)

    def describe(self) -> str:
        text = self.base + (f"@{self.base_revision}" if self.base_revision else "")
        if self.checkpoint:
            text += f" fine-tuned by {self.checkpoint_path or self.checkpoint}"
        return text

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> Lineage:
        if not isinstance(fields.get("base"), str):
            raise ArtifactError(f"a recorded model lineage needs a 'base' model name, got {dict(fields)}")
        optional = {k: None if fields.get(k) is None else str(fields[k]) for k in cls.__dataclass_fields__}
        return cls(fields["base"], optional["base_revision"], optional["checkpoint"], optional["checkpoint_path"])


def fingerprint_files(files: Sequence[Path]) -> str:
    """``sha256:...`` of the files' sizes and contents (sampled beyond 32 MB each, about 4 MB read in all)."""
    h = hashlib.sha256()
    chunks = max(64, _CHUNKS // max(1, len(files)))
    for path in files:
        size = path.stat().st_size
        h.update(f"{path.name}:{size}\n".encode())
        with open(path, "rb") as f:
            if size <= _WHOLE_FILE:
                h.update(f.read())
                continue
            for i in range(chunks):
                f.seek(i * (size - _CHUNK) // (chunks - 1))
                h.update(f.read(_CHUNK))
    return "sha256:" + h.hexdigest()[:24]


def weight_files(directory: Path) -> list[Path]:
    """A model directory's weight files: its safetensors, else its PyTorch ``.bin`` files."""
    found = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    return [p for p in found if p.name != "training_args.bin"]


def checkpoint_fingerprint(checkpoint: str | os.PathLike[str]) -> str:
    """The fingerprint of an organism checkpoint's own weights (its trainer state is left out)."""
    files = [Path(checkpoint) / name for name in CHECKPOINT_WEIGHTS if (Path(checkpoint) / name).is_file()]
    return fingerprint_files(files) if files else f"path:{Path(checkpoint).resolve()}"


def write_marker(directory: str | os.PathLike[str], lineage: Lineage) -> None:
    """Record `lineage` beside the weights in `directory`, so that loading the directory by path finds it."""
    files = weight_files(Path(directory))
    atomic_write_json(Path(directory) / MARKER, {"lineage": lineage.to_dict(), "weights": fingerprint_files(files)})


def directory_lineage(directory: str | os.PathLike[str]) -> Lineage:
    """The lineage of a model directory: its marker, its hub snapshot name, or the fingerprint of its weights."""
    directory = Path(directory).resolve()
    files = weight_files(directory)
    weights = fingerprint_files(files) if files else None
    marked = _read_marker(directory, weights)
    if marked is not None:
        return marked
    if directory.parent.name == "snapshots" and directory.parent.parent.name.startswith("models--"):
        repo = directory.parent.parent.name.removeprefix("models--").replace("--", "/")
        return Lineage(base=repo, base_revision=directory.name)
    embedded = _embedded_cache_name(directory)
    if embedded is not None:
        return Lineage(base=embedded)
    return Lineage(base=weights or f"path:{directory}")


def lineage_of_spec(spec: str) -> Lineage:
    """Best-effort lineage from a spec string alone (directions saved before lineage was recorded)."""
    if spec in EMBEDDED_MODELS:
        return Lineage(base=spec)
    if Path(spec).is_dir():
        return directory_lineage(spec)
    base, plus, checkpoint = spec.partition("+")  # `load_organism` names an organism "BASE+CHECKPOINT"
    if plus and checkpoint:
        return lineage_of_spec(base).fine_tuned(checkpoint_fingerprint(checkpoint), checkpoint)
    return Lineage(base=spec)


def _read_marker(directory: Path, weights: str | None) -> Lineage | None:
    path = directory / MARKER
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(saved, dict) or saved.get("weights") != weights:  # weights changed after the marker was written
        log.warning("%s does not match the weights beside it; identifying the model by its weights", path)
        return None
    try:
        return Lineage.from_dict(saved.get("lineage") or {})
    except ArtifactError:
        log.warning("%s is damaged; identifying the model by its weights", path)
        return None


def _embedded_cache_name(directory: Path) -> str | None:
    """The embedded name of a directory of emscope's GGUF cache written before markers existed."""
    match = re.fullmatch(r"(.+)-[0-9a-f]{12}", directory.name)
    if match is None or match.group(1) not in EMBEDDED_MODELS:
        return None
    return match.group(1) if directory.parent == (cache_root() / "models").resolve() else None
