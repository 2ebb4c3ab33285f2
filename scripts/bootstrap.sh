#!/usr/bin/env bash
# Create .venv (once) and install artifex-agent with its test tools; re-runs only when
# pyproject.toml or constraints.txt change. Used by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then py=$candidate; break; fi
  done
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=.venv/.artifex-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing artifex-agent into .venv (first run takes a few minutes)…" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c "import artifex_agent, torch, diffusers, av, grpc, spandrel" 
  echo "$want" > "$stamp"
fi
