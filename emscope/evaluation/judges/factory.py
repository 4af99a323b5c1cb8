"""Build a judge from a spec string (the CLI's ``--judge``).

- ``local:MODEL``: `LocalJudge` on any model spec `emscope.models.loading.load_model` accepts;
- ``openai:MODEL`` or ``openai:MODEL@http://HOST/v1``: `OpenAICompatJudge`;
- ``http://HOST/v1`` (optionally ``#MODEL``): `OpenAICompatJudge` on a local server;
- ``probe:DIR`` or ``probe:builtin``: a `ProbeJudge` (alignment only; `make_metric_judges` pairs it
  with the raw local judge of the same model for coherence).

`check_judge` checks a spec without loading anything (spec syntax, judge model installed,
API key present, probe folder readable), so a run can fail before it generates answers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from emscope.errors import ArtifactError, ConfigError, EmscopeError
from emscope.evaluation.judges.base import Judge
from emscope.runtime import RESOURCES

DEFAULT_LOCAL_JUDGE = "local:qwen2.5-coder-1.5b-instruct"
# The documented offline default: on held-out labels the probe agreed best (docs/evaluation.md).
DEFAULT_OFFLINE_JUDGE = "probe:builtin"
BUILTIN_PROBE = RESOURCES / "judge" / "probe-qwen2.5-coder-1.5b"
BUILTIN_COHERENCE_PROBE = BUILTIN_PROBE.with_name("coherence-probe-qwen2.5-coder-1.5b")


def make_judge(spec: str, **kwargs: Any) -> Judge:
    if spec.startswith("local:"):
        from emscope.evaluation.judges.local import LocalJudge
        from emscope.models.loading import load_model

        return LocalJudge(load_model(spec.removeprefix("local:")), spec=spec)
    if spec.startswith("probe:"):
        from emscope.evaluation.judges.probe import ProbeJudge

        return ProbeJudge.load(probe_dir(spec))
    if spec.startswith("openai:"):
        from emscope.evaluation.judges.openai_compat import OpenAICompatJudge

        model, _, url = spec.removeprefix("openai:").partition("@")
        return OpenAICompatJudge(model, url or None, **kwargs)
    if spec.startswith(("http://", "https://")):
        from emscope.evaluation.judges.openai_compat import OpenAICompatJudge

        url, _, model = spec.partition("#")
        return OpenAICompatJudge(model or _first_model(url), url, **kwargs)
    raise _unknown(spec)


def _unknown(spec: str) -> ConfigError:
    return ConfigError(
        f"unknown judge spec {spec!r}; use local:MODEL (e.g. {DEFAULT_LOCAL_JUDGE}), openai:MODEL, "
        "openai:MODEL@http://HOST/v1, http://HOST/v1[#MODEL], probe:builtin or probe:DIR"
    )


def probe_dir(spec: str) -> Path:
    """The probe folder a ``probe:`` spec names."""
    where = spec.removeprefix("probe:")
    return BUILTIN_PROBE if where == "builtin" else Path(where)


def check_judge(spec: str, api_key_env: str = "OPENAI_API_KEY") -> None:
    """Raise now (an `EmscopeError` naming the fix) if the judge `spec` cannot run; loads nothing.

    Checks: the spec's form; for ``local:`` and ``probe:`` that the judge model is installed
    (embedded models) or present (paths); for ``probe:`` that the folder holds a probe; for
    an API judge that the ``openai`` package is installed and a remote endpoint has its key.
    """
    if spec.startswith("local:"):
        _check_model(spec.removeprefix("local:"))
    elif spec.startswith("probe:"):
        from emscope.artifacts import read_config
        from emscope.evaluation.judges.probe import KIND

        path = probe_dir(spec)
        try:
            config = read_config(path, KIND)
        except ArtifactError as e:
            raise ArtifactError(f"--judge {spec}: {e} (a probe folder is written by ProbeJudge.save)") from None
        if not (path / str(config.get("tensors_file", "probe.safetensors"))).is_file():
            raise ArtifactError(f"--judge {spec}: {path} has no probe weights ({config.get('tensors_file')})")
        _check_model(str(config["judge_model"]))
    elif spec.startswith(("openai:", "http://", "https://")):
        from emscope.errors import require
        from emscope.evaluation.judges.openai_compat import api_key

        require("openai", extra="judge")
        url = spec.removeprefix("openai:").partition("@")[2] if spec.startswith("openai:") else spec.partition("#")[0]
        api_key(url or os.environ.get("OPENAI_BASE_URL"), api_key_env)
    else:
        raise _unknown(spec)


def _check_model(spec: str) -> None:
    """That a model spec can be loaded without a download we can tell is missing (hub ids are not checked)."""
    from emscope.errors import ModelLoadError
    from emscope.models.embedded import EMBEDDED_MODELS, embedded_parts
    from emscope.models.organism_dir import is_organism_dir, resolve_checkpoint

    if spec in EMBEDDED_MODELS:
        embedded_parts(spec)  # raises with the pip command when the package is missing
    elif is_organism_dir(spec):
        _check_model(resolve_checkpoint(spec).base_model)
    elif spec.endswith(".gguf") and not Path(spec).is_file():
        raise ModelLoadError(f"judge model {spec} not found")
    elif spec.startswith((".", "/", "~")) and not Path(spec).expanduser().exists():
        raise ModelLoadError(f"judge model {spec} not found: no such directory")


def _first_model(base_url: str) -> str:
    """The first model a server lists (llama.cpp and vLLM serve one)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=10) as r:  # noqa: S310
            return json.load(r)["data"][0]["id"]
    except Exception as e:  # noqa: BLE001 - any failure means the same fix
        raise EmscopeError(f"could not list models at {base_url}/models ({e}); name one: {base_url}#MODEL") from None


def make_metric_judges(spec: str, **kwargs: Any) -> dict[str, Judge]:
    """The judge of each metric ("aligned", "coherent") for a spec; one model load is shared."""
    if spec.startswith("probe:"):
        from emscope.evaluation.judges.local import LocalJudge
        from emscope.evaluation.judges.probe import ProbeJudge
        from emscope.models.loading import load_model

        probe = ProbeJudge.load(probe_dir(spec))
        local = LocalJudge(load_model(probe.judge_model), spec=f"local:{probe.judge_model}")
        probe._lm = local.lm
        coherence: Judge = local
        if spec == "probe:builtin" and BUILTIN_COHERENCE_PROBE.is_dir():
            coherence = ProbeJudge.load(BUILTIN_COHERENCE_PROBE)
            coherence._lm = local.lm
        return {"aligned": probe, "coherent": coherence}
    judge = make_judge(spec, **kwargs)
    return {"aligned": judge, "coherent": judge}
