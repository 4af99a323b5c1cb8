"""Self-describing results: a directory with ``config.json`` + safetensors (+ JSONL where useful).

Every saved result names its format version, its kind and its provenance (emscope
version, model, layers, dataset fingerprint ...), so a reader can refuse what it does not
understand instead of misreading it, and `load_result` can open any result by its kind.
Writes are atomic: a file appears whole or not at all, with the permissions of any file
the user makes (``0666`` less the umask, usually ``0644``). Files a result names stay
inside its directory.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from emscope.errors import ArtifactError

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
DAMAGED = "the result was damaged or edited by hand: re-run the command that made it"

# kind -> "module:attribute" of its loader, which takes the result's path. Strings, imported only
# when asked for: the base layer cannot import the stages above it, and a registry filled at import
# time would depend on which modules happen to be imported. tests/test_artifacts_roundtrip.py checks
# that each entry loads what its writer saved.
LOADERS: dict[str, str] = {
    "activations": "emscope.activations.capture:load_activations",
    "direction": "emscope.directions.direction:Direction.load",
    "layer_sweep": "emscope.directions.sweep:SweepResult.load",
    "cross_domain_sweep": "emscope.directions.cross_domain_result:CrossDomainResult.load",
    "persona_route": "emscope.directions.persona:PersonaRoute.load",
    "dose_response": "emscope.interventions.dose_response:DoseResponse.load",
    "eval": "emscope.evaluation.report:load_eval_run",
    "eval_comparison": "emscope.evaluation.compare:EvalComparison.load",
    "judge_probe": "emscope.evaluation.judges.probe:ProbeJudge.load",
    "judge_calibration": "emscope.evaluation.judges.calibration:Calibration.load",
    "judge_agreement": "emscope.evaluation.judges.validation:load_agreement",
    "finetune": "emscope.models.organism_dir:read_run",
    "finetune_checkpoint": "emscope.models.organism_dir:read_checkpoint",
    "adapter_reading": "emscope.organisms.adapter_reading:AdapterScalars.load",
    "realign": "emscope.organisms.realign:load_realign",
    "realign_curve": "emscope.organisms.realign:load_realign_curve",
    "own_direction": "emscope.organisms.own_directions:load_own_direction",
    "cross_ablation": "emscope.organisms.cross_organism:load_cross_ablation",
    "activation_map_ridge": "emscope.transfer.maps:ActivationMap.load",
    "activation_map_least_squares": "emscope.transfer.maps:ActivationMap.load",
    "activation_map_procrustes": "emscope.transfer.maps:ActivationMap.load",
    "transfer_pair": "emscope.transfer.single:TransferPair.load",
    "transfer_matrix": "emscope.transfer.matrix:TransferMatrix.load",
    "sae": "emscope.sae.model:SparseAutoencoder.load",
    "latent_diff": "emscope.sae.diff:LatentDiff.load",
    "trait_set": "emscope.monitor.traits:TraitSet.load",
    "drift_profile": "emscope.monitor.drift:DriftProfile.load",
    "drift_axis": "emscope.monitor.axis:DriftAxis.load",
    "drift_detector": "emscope.monitor.detector:DriftDetector.load",
    "detector_evaluation": "emscope.monitor.detector:DetectorEvaluation.load",
}


def emscope_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("emscope")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


@contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """A fresh name beside `path`; whatever is written there replaces `path` on success, or is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (mode 0666 less the umask)."""
    with _temporary_beside(Path(path)) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_save_tensors(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """`safetensors.torch.save_file`, atomically."""
    from safetensors.torch import save_file

    with _temporary_beside(Path(path)) as tmp:
        mode = _ordinary_mode(tmp)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=dict(metadata or {}))
        os.chmod(tmp, mode)  # safetensors writes its files 0600


def _ordinary_mode(probe: Path) -> int:
    """The mode the user's umask gives a new file, read by creating `probe` (no process-wide umask change)."""
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def share_like_ordinary_files(directory: str | os.PathLike[str], pattern: str = "**/*") -> None:
    """Give the files of `directory` matching `pattern` the mode of a new file (0666 less the umask).

    For files that libraries wrote (``save_pretrained`` writes safetensors 0600), so that
    others in a shared group can read a result as they can the user's other files.
    """
    root = Path(directory)
    probe = root / f".mode-probe.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        mode = _ordinary_mode(probe)
    finally:
        probe.unlink(missing_ok=True)
    for path in root.glob(pattern):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def describe(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` headed by the format version, the kind and the emscope version (what a ``config.json`` holds)."""
    return {"format_version": FORMAT_VERSION, "kind": kind, "emscope_version": emscope_version(), **fields}


def write_config(directory: str | os.PathLike[str], kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``config.json`` with format version, kind and emscope version added."""
    config = describe(kind, fields)
    atomic_write_json(Path(directory) / CONFIG_NAME, config)
    return config


def read_config(path: str | os.PathLike[str], kind: str | None = None, required: Sequence[str] = ()) -> dict[str, Any]:
    """Read a result's description, checking its kind, format version and `required` fields.

    `path` is a result directory (its ``config.json`` is read) or a single-file result (a JSON file).
    """
    where = Path(path) / CONFIG_NAME if Path(path).is_dir() else Path(path)
    if not Path(path).exists():
        raise ArtifactError(f"{path} does not exist: pass the directory (or JSON file) of a saved result")
    if not where.is_file():
        raise ArtifactError(f"{path} is not an emscope result directory: {CONFIG_NAME} is missing")
    try:
        config = json.loads(where.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{where} is not valid JSON ({e}); {DAMAGED}") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{where} holds a JSON {type(config).__name__}, not an object; {DAMAGED}")
    if kind is not None and config.get("kind") != kind:
        raise ArtifactError(
            f"{path} holds a {config.get('kind')!r} result, expected {kind!r}: pass the directory of a {kind!r} result"
        )
    version = config.get("format_version", 0)
    if not isinstance(version, int):
        raise ArtifactError(f"{where}: format_version {version!r} is not a number; {DAMAGED}")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} was written in format version {version} by emscope "
            f"{config.get('emscope_version')}; this emscope reads up to {FORMAT_VERSION}: upgrade emscope"
        )
    missing = [k for k in required if k not in config]
    if missing:
        raise ArtifactError(f"{where} lacks the field(s) {', '.join(map(repr, missing))}; {DAMAGED}")
    return config


def member(directory: str | os.PathLike[str], name: Any, what: str = "file") -> Path:
    """The path of a file a result names, refusing any name that would leave its directory."""
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ArtifactError(
            f"{directory}: the {what} {name!r} is not a plain file name inside the result directory; {DAMAGED}"
        )
    return Path(directory) / name


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """`safetensors.torch.load_file`, with a one-line `ArtifactError` for a missing or damaged file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ArtifactError(f"{path} is missing: the result directory is incomplete; re-run the command that made it")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ArtifactError(f"{path} is not a readable safetensors file ({e}); {DAMAGED}") from None


def save_artifact(
    directory: str | os.PathLike[str],
    kind: str,
    fields: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    tensors_name: str = "tensors.safetensors",
) -> Path:
    """Save tensors plus a ``config.json`` describing them as one directory."""
    directory = Path(directory)
    atomic_save_tensors(member(directory, tensors_name), tensors)
    write_config(directory, kind, {**fields, "tensors_file": tensors_name})
    return directory


def load_artifact(
    directory: str | os.PathLike[str],
    kind: str | None = None,
    required: Sequence[str] = (),
    tensors: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load what `save_artifact` wrote: (config, tensors); `required` config fields and `tensors` must be there."""
    config = read_config(directory, kind, required)
    path = member(directory, config.get("tensors_file", "tensors.safetensors"), "tensors_file")
    loaded = load_tensors(path)
    missing = [k for k in tensors if k not in loaded]
    if missing:
        raise ArtifactError(f"{path} lacks the tensor(s) {', '.join(map(repr, missing))}; {DAMAGED}")
    return config, loaded


def result_loader(kind: str) -> Callable[[str | os.PathLike[str]], Any]:
    """The function that loads results of `kind` (see `LOADERS`)."""
    if kind not in LOADERS:
        raise ArtifactError(f"no loader for results of kind {kind!r}; known kinds: {', '.join(sorted(LOADERS))}")
    module, _, attribute = LOADERS[kind].partition(":")
    loader: Any = importlib.import_module(module)
    for part in attribute.split("."):
        loader = getattr(loader, part)
    return loader  # type: ignore[no-any-return]


def load_result(path: str | os.PathLike[str]) -> Any:
    """Load any saved result by the kind its ``config.json`` (or single JSON file) names.

    ``load_result("runs/dir/direction")`` is ``Direction.load(...)``, ``load_result("runs/eval")``
    an `emscope.evaluation.report.EvalRun`, and so on for every kind in `LOADERS`.
    """
    kind = read_config(path).get("kind")
    if kind is None:
        raise ArtifactError(f"{path} is not an emscope result: its {CONFIG_NAME} names no kind")
    return result_loader(str(kind))(path)
