"""Build a judge from a spec string (the CLI's ``--judge``).

- ``local:MODEL``: `LocalJudge` on any model spec `emscope.models.loading.load_model` accepts;
- ``openai:MODEL`` or ``openai:MODEL@http://HOST/v1``: `OpenAICompatJudge`;
- ``http://HOST/v1`` (optionally ``#MODEL``): `OpenAICompatJudge` on a local server;
- ``probe:DIR`` or ``probe:builtin``: a `ProbeJudge` (alignment only; `make_metric_judges` pairs it
  with the raw local judge of the same model for coherence).
"""

from __future__ import annotations

from typing import Any

from emscope.errors import EmscopeError
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

        where = spec.removeprefix("probe:")
        return ProbeJudge.load(BUILTIN_PROBE if where == "builtin" else where)
    if spec.startswith("openai:"):
        from emscope.evaluation.judges.openai_compat import OpenAICompatJudge

        model, _, url = spec.removeprefix("openai:").partition("@")
        return OpenAICompatJudge(model, url or None, **kwargs)
    if spec.startswith(("http://", "https://")):
        from emscope.evaluation.judges.openai_compat import OpenAICompatJudge

        url, _, model = spec.partition("#")
        return OpenAICompatJudge(model or _first_model(url), url, **kwargs)
    raise EmscopeError(
        f"unknown judge spec {spec!r}; use local:MODEL (e.g. {DEFAULT_LOCAL_JUDGE}), openai:MODEL, "
        "openai:MODEL@http://HOST/v1, http://HOST/v1[#MODEL] or probe:DIR"
    )


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

        probe = ProbeJudge.load(BUILTIN_PROBE if spec == "probe:builtin" else spec.removeprefix("probe:"))
        local = LocalJudge(load_model(probe.judge_model), spec=f"local:{probe.judge_model}")
        probe._lm = local.lm
        coherence: Judge = local
        if spec == "probe:builtin" and BUILTIN_COHERENCE_PROBE.is_dir():
            coherence = ProbeJudge.load(BUILTIN_COHERENCE_PROBE)
            coherence._lm = local.lm
        return {"aligned": probe, "coherent": coherence}
    judge = make_judge(spec, **kwargs)
    return {"aligned": judge, "coherent": judge}
