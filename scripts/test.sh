#!/usr/bin/env bash
# Set up (once) and run the whole test suite; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/system-deps.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
.venv/bin/python scripts/gen_protos.py --check
.venv/bin/ruff check artifex_agent tests bench scripts
.venv/bin/mypy artifex_agent
# Three workers on two cores: most tests wait on agent processes, not the CPU. Tests sharing a session-
# or module-scoped fixture stay on one worker (tests/conftest.py), so each pair of agents starts once.
# Extra arguments come last and win (`-n 0` runs in one process).
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 3 --dist loadgroup "$@"
