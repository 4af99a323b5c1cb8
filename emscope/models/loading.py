"""Load a model from a spec: an embedded name, a ``.gguf`` file, a local directory or a hub id.

GGUF files are dequantized once into a safetensors cache (``$EMSCOPE_CACHE``, default
``~/.cache/emscope``): the first load takes 15-50 s on a laptop CPU, later ones about a
second. The cache directory is written under a temporary name and renamed when complete,
so a crash never leaves a half-written cache that a later load would use.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emscope.artifacts import load_tensors
from emscope.errors import ModelLoadError, require
from emscope.models.architecture import decoder_blocks, model_width, num_layers
from emscope.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_parts
from emscope.models.lineage import (
    MARKER,
    Lineage,
    checkpoint_fingerprint,
    directory_lineage,
    fingerprint_files,
    write_marker,
)
from emscope.models.organism_dir import (
    ADAPTER_WEIGHTS,
    FULL_WEIGHTS,
    is_organism_dir,
    load_weights_into,
    resolve_checkpoint,
)
from emscope.runtime import cache_root, resolve_device, resolve_dtype

log = logging.getLogger(__name__)
CACHE_FORMAT = "1"


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and where they came from."""

    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # a transformers tokenizer with a chat template
    spec: str  # what the user asked for, e.g. "smollm2-135m-instruct"
    source: str  # what was read: a directory, a file, or "random-init"
    revision: str | None = None
    blocks_path: str | None = None  # override for the block lookup, when the probe cannot find them
    _blocks: nn.ModuleList | None = field(default=None, repr=False, compare=False)
    _lineage: Lineage | None = field(default=None, repr=False)  # set by load_model / load_organism

    @property
    def lineage(self) -> Lineage:
        """Which weights these are (base and fine-tune); a model built by hand is known by its spec."""
        return self._lineage if self._lineage is not None else Lineage(base=self.spec)

    @property
    def blocks(self) -> nn.ModuleList:
        if self._blocks is None:
            self._blocks = decoder_blocks(self.model, self.blocks_path)
        return self._blocks

    @property
    def n_layers(self) -> int:
        return num_layers(self.model)

    @property
    def width(self) -> int:
        return model_width(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def provenance(self) -> dict[str, Any]:
        """What every saved result records about the model it came from."""
        return {
            "model": self.spec,
            "model_source": self.source,
            "model_revision": self.revision,
            "model_lineage": self.lineage.to_dict(),
            "model_class": type(self.model).__name__,
            "width": self.width,
            "n_layers": self.n_layers,
        }


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    revision: str | None = None,
    blocks_path: str | None = None,
) -> LoadedModel:
    """Load `spec`: an embedded name, a ``.gguf`` path, a local directory or a Hugging Face id.

    An emscope fine-tuning run directory (or one of its checkpoints) loads as its base model
    with the adapter merged, so every command reads organisms as it reads models; so does the
    ``BASE+CHECKPOINT`` label that results record for an organism (``model`` in an eval's config.json).

    Use float32 on CPU (bfloat16 matmuls are hundreds of times slower there).
    """
    dtype, device = resolve_dtype(dtype), resolve_device(device)  # a bad name fails here, before any loading
    directory: Path | None
    rev: str | None
    lineage: Lineage | None
    base, plus, ckpt_path = spec.partition("+")
    if plus and not Path(spec).exists() and is_organism_dir(ckpt_path):  # the label organisms record: BASE+CHECKPOINT
        trained_from = resolve_checkpoint(ckpt_path).base_model
        if trained_from != base:
            raise ModelLoadError(
                f"{spec}: {ckpt_path} was fine-tuned from {trained_from!r}, not {base!r}; pass {ckpt_path} alone"
            )
        spec = ckpt_path
    if is_organism_dir(spec):  # a fine-tuning run (its latest checkpoint) or one checkpoint: base + adapter
        ckpt = resolve_checkpoint(spec)
        return load_organism(ckpt.path, lm=load_model(ckpt.base_model, dtype=dtype, device=device))
    local_only = False
    if spec in EMBEDDED_MODELS:
        (directory, rev), lineage = _embedded_to_cache(spec), Lineage(base=spec)
    elif spec.endswith(".gguf"):
        lineage = Lineage(base=fingerprint_files([Path(spec)])) if Path(spec).is_file() else None
        directory, rev = _gguf_to_cache([Path(spec)], key_name=Path(spec).stem, lineage=lineage)
    elif Path(spec).is_dir():
        directory, rev, lineage = Path(spec), revision, directory_lineage(spec)
    elif Path(spec).exists():
        raise ModelLoadError(f"{spec} is a file but not a .gguf; pass a model directory, a .gguf file or a hub id")
    else:
        directory, rev, lineage = None, revision, None
        local_only = _hub_local_only(spec, revision)
    lm = _from_pretrained(
        str(directory) if directory else spec,
        spec,
        dtype,
        device,
        revision=rev if not directory else None,
        local_only=local_only,
    )
    lm.revision = rev
    lm._lineage = lineage or _hub_lineage(spec, rev)
    lm.blocks_path = blocks_path
    _ = lm.blocks  # fail now, not in the middle of a run, if the blocks cannot be found
    return lm


def load_organism(checkpoint: str | os.PathLike[str], lm: LoadedModel | None = None, merge: bool = True) -> LoadedModel:
    """The fine-tuned model of a checkpoint (or a run's latest) as a `LoadedModel`.

    `lm` is the base model (loaded from the checkpoint's record when None). With
    ``merge=True`` (default) the adapter is merged and a plain model comes back; the base
    model passed in is copied first, never modified.
    """
    ckpt = resolve_checkpoint(checkpoint)
    if lm is None:
        lm = load_model(ckpt.base_model, dtype=ckpt.info.get("dtype", "float32"), device=ckpt.info.get("device", "cpu"))
    model = copy.deepcopy(lm.model)
    if (ckpt.path / FULL_WEIGHTS).is_file():
        load_weights_into(model, ckpt)
    else:
        require("peft", extra="train")
        from peft import PeftModel

        load_tensors(ckpt.path / ADAPTER_WEIGHTS)  # a missing or damaged adapter: one line, not peft's trace
        model = PeftModel.from_pretrained(model, str(ckpt.path))
        if merge:
            model = model.merge_and_unload()
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=lm.tokenizer,
        spec=f"{lm.spec}+{ckpt.path}",
        source=str(ckpt.path),
        revision=lm.revision,
        blocks_path=lm.blocks_path if merge else None,
        _lineage=lm.lineage.fine_tuned(checkpoint_fingerprint(ckpt.path), str(ckpt.path)),
    )


def _from_pretrained(
    source: str, spec: str, dtype: Any, device: Any, revision: str | None, local_only: bool = False
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"revision": revision} if revision else {}
    if local_only:
        kw["local_files_only"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kw)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(dtype), **kw)
    except (OSError, ValueError) as e:  # ValueError: huggingface_hub's HFValidationError for a malformed id
        known = ", ".join(EMBEDDED_MODELS)
        raise ModelLoadError(
            f"cannot load model {spec!r}: not an embedded name ({known}), a .gguf file or a local directory, "
            f"and the hub copy is not reachable or not cached ({str(e).splitlines()[0][:200]}). "
            "Fix: pass a local path, or download it once while online (HF_HUB_OFFLINE=1 then uses the cache)"
        ) from None
    model = model.to(resolve_device(device))  # type: ignore[arg-type]  # transformers' typing of .to
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, source=source)


def _hub_local_only(spec: str, revision: str | None) -> bool:
    """Whether hub id `spec` must be read from the local cache; fail at once when it is not there and cannot be.

    Without this check an unknown name offline costs a minute of hub retries before the error.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = isinstance(try_to_load_from_cache(spec, "config.json", revision=revision), str)
    except HFValidationError:
        known = ", ".join(EMBEDDED_MODELS)
        raise ModelLoadError(
            f"cannot load model {spec!r}: not an embedded name ({known}), an existing path or a valid hub id; "
            "fix: check the spelling, or pass a local directory or .gguf file"
        ) from None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    elif not _hub_reachable(constants.ENDPOINT):
        reason = f"{constants.ENDPOINT} cannot be reached"
    else:
        return False
    if cached:
        return True
    close = difflib.get_close_matches(spec, list(EMBEDDED_MODELS), n=1, cutoff=0.6)
    raise ModelLoadError(
        f"cannot load model {spec!r}: not an embedded name ({', '.join(EMBEDDED_MODELS)}), not a local path, "
        f"and not in the Hugging Face cache while {reason}; fix: "
        + (f"did you mean {close[0]!r}? else " if close else "")
        + "download it once while online, or pass a local directory or .gguf file"
    )


def _hub_lineage(spec: str, revision: str | None) -> Lineage:
    """A hub model's lineage: its id and the commit its files came from (as for its snapshot directory)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec, "config.json", revision=revision)
    return directory_lineage(Path(found).parent) if isinstance(found, str) else Lineage(spec, revision)


def _hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within `timeout` (True behind a proxy: the hub client knows it)."""
    import socket
    import threading
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    url = urlparse(endpoint)
    result: list[bool] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            port = url.port or (80 if url.scheme == "http" else 443)
            socket.create_connection((url.hostname or "", port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def _embedded_to_cache(name: str) -> tuple[Path, str]:
    return _gguf_to_cache(embedded_parts(name), key_name=name, lineage=Lineage(base=name))


def _gguf_to_cache(parts: list[Path], key_name: str, lineage: Lineage | None) -> tuple[Path, str]:
    """Dequantize a (possibly split) GGUF into a safetensors directory, once; mark it with `lineage`."""
    for p in parts:
        if not p.is_file():
            raise ModelLoadError(f"GGUF file not found: {p}")
    stat = "|".join(f"{p.resolve()}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in parts)
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{stat}".encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{key_name}-{digest}"
    if (target / "config.json").is_file():
        if lineage is not None and not (target / MARKER).is_file():  # a cache written before lineage markers
            try:
                write_marker(target, lineage)
            except OSError as e:  # a read-only cache: loading it by path then falls back to its directory name
                log.debug("could not mark %s with its lineage: %s", target, e)
        return target, f"gguf:{digest}"
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s from GGUF into %s (once; later loads read the cache)", key_name, target)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        if len(parts) == 1:
            gguf_dir, gguf_name = parts[0].parent, parts[0].name
        else:
            gguf_dir, gguf_name = work, "joined.gguf"
            with open(work / gguf_name, "wb") as out:
                for p in parts:
                    with open(p, "rb") as f:
                        shutil.copyfileobj(f, out, 16 << 20)
        _convert_gguf(gguf_dir, gguf_name, work / "model")
        if lineage is not None:
            write_marker(work / "model", lineage)
        (work / gguf_name).unlink(missing_ok=True) if len(parts) > 1 else None
        try:
            os.replace(work / "model", target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # Another process finished the same conversion first: its copy is as good as ours.
            log.info("%s was converted by another process meanwhile; using it", target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target, f"gguf:{digest}"


def _convert_gguf(gguf_dir: Path, gguf_name: str, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while it still looks quantized.
    setattr(model, "hf_quantizer", None)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
