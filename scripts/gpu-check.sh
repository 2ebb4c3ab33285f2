#!/usr/bin/env bash
# The A14B-width placement check on this machine's GPU (bench/gpu_check.py, under 6 minutes).
# Without a CUDA device there is nothing to measure: it says so and succeeds, so CI can call it anywhere.
# Arguments go to bench.gpu_check, e.g.: scripts/gpu-check.sh --json gpu-check.json
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi
if ! "$PY" -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1; then
    echo "no CUDA device: skipped"
    exit 0
fi
# Everything is built here from random weights: nothing may wait on a hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$PY" -m bench.gpu_check "$@"
