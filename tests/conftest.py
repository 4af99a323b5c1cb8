"""Shared fixtures: tiny random models (seconds) and one cached load of each real embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emergent-misalignment"


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model, loaded once per test session (first run converts the GGUF, ~20 s)."""
    from emscope.models.loading import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def qwen05():
    """The embedded Qwen2.5-Coder-0.5B-Instruct; only for tests marked heavy."""
    from emscope.models.loading import load_model

    return load_model("qwen2.5-coder-0.5b-instruct")


@pytest.fixture()
def one_thread():
    """Tiny matmuls run ~10x faster on one thread than on two when the CPU is shared (training tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny():
    """Factory: tiny(family="llama", n_layers=3, width=64) -> LoadedModel."""
    from emscope.testing import tiny_model

    return tiny_model


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public EM data not found at {SHARED_DATA} (only present beside the project checkout)")
    return SHARED_DATA
