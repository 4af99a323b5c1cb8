"""Load a model from a spec: an embedded name, a ``.gguf`` file, a local directory or a hub id.

GGUF files are dequantized once into a safetensors cache (``$EMSCOPE_CACHE``, default
``~/.cache/emscope``): the first load takes 15-50 s on a laptop CPU, later ones about a
second. The cache directory is written under a temporary name and renamed when complete,
so a crash never leaves a half-written cache that a later load would use.
"""

from __future__ import annotations

import copy
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

from emscope.errors import ModelLoadError, require
from emscope.models.architecture import decoder_blocks, model_width, num_layers
from emscope.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, embedded_parts
from emscope.models.organism_dir import FULL_WEIGHTS, is_organism_dir, load_weights_into, resolve_checkpoint
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
    with the adapter merged, so every command reads organisms as it reads models.

    Use float32 on CPU (bfloat16 matmuls are hundreds of times slower there).
    """
    directory: Path | None
    rev: str | None
    if is_organism_dir(spec):  # a fine-tuning run (its latest checkpoint) or one checkpoint: base + adapter
        ckpt = resolve_checkpoint(spec)
        return load_organism(ckpt.path, lm=load_model(ckpt.base_model, dtype=dtype, device=device))
    if spec in EMBEDDED_MODELS:
        directory, rev = _embedded_to_cache(spec)
    elif spec.endswith(".gguf"):
        directory, rev = _gguf_to_cache([Path(spec)], key_name=Path(spec).stem)
    elif Path(spec).is_dir():
        directory, rev = Path(spec), revision
    elif Path(spec).exists():
        raise ModelLoadError(f"{spec} is a file but not a .gguf; pass a model directory, a .gguf file or a hub id")
    else:
        directory, rev = None, revision
    lm = _from_pretrained(
        str(directory) if directory else spec, spec, dtype, device, revision=rev if not directory else None
    )
    lm.revision = rev
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
    )


def _from_pretrained(source: str, spec: str, dtype: Any, device: Any, revision: str | None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict[str, Any] = {"revision": revision} if revision else {}
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


def _embedded_to_cache(name: str) -> tuple[Path, str]:
    return _gguf_to_cache(embedded_parts(name), key_name=name)


def _gguf_to_cache(parts: list[Path], key_name: str) -> tuple[Path, str]:
    """Dequantize a (possibly split) GGUF into a safetensors directory, once."""
    for p in parts:
        if not p.is_file():
            raise ModelLoadError(f"GGUF file not found: {p}")
    stat = "|".join(f"{p.resolve()}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in parts)
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{stat}".encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{key_name}-{digest}"
    if (target / "config.json").is_file():
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
        (work / gguf_name).unlink(missing_ok=True) if len(parts) > 1 else None
        os.replace(work / "model", target)
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
