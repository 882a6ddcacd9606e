#!/usr/bin/env bash
# The action's first step: pyimage from the action's own checkout ($ACTION_PATH) in a venv of its own, made
# with the runner's python3 (>= 3.10; actions/setup-python before the action picks another). The venv is
# named by a hash of the source it was built from, under the runner's tool cache, so a self-hosted runner
# (or a second use in one job) reuses it; a half-made venv is never trusted (.complete is written last).
# Outputs: python (the venv's interpreter) and cache-dir (pyimage's cache: $PYIMAGE_CACHE_DIR or ~/.cache/pyimage).
set -euo pipefail

: "${ACTION_PATH:?}" "${GITHUB_OUTPUT:?}"
python=python3
if ! command -v "$python" >/dev/null; then
    echo "::error title=pyimage action::python3 is not on PATH; add actions/setup-python before this action"
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "::error title=pyimage action::pyimage needs Python >= 3.10, the runner has $("$python" -V 2>&1); add actions/setup-python before this action"
    exit 1
fi

id=$("$python" "$ACTION_PATH/action/run.py" source-id "$ACTION_PATH")
root="${RUNNER_TOOL_CACHE:-${RUNNER_TEMP:-/tmp}}/pyimage-action"
venv="$root/$id"
mkdir -p "$root"
(
    flock 9
    if [ ! -f "$venv/.complete" ]; then
        rm -rf "$venv"
        echo "installing pyimage from $ACTION_PATH into $venv"
        if ! "$python" -m venv "$venv"; then
            echo "::error title=pyimage action::python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv, or use actions/setup-python)"
            exit 1
        fi
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$ACTION_PATH"
        touch "$venv/.complete"
    fi
) 9>"$venv.lock"
echo "pyimage $("$venv/bin/python" -m pyimage --version | cut -d' ' -f2) in $venv"

{
    echo "python=$venv/bin/python"
    echo "cache-dir=${PYIMAGE_CACHE_DIR:-$HOME/.cache/pyimage}"
} >>"$GITHUB_OUTPUT"
