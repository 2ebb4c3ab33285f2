#!/usr/bin/env bash
# Set up (once) and run the end-to-end demo: two agents on loopback, a tiny model, an MP4.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/artifex-agent demo "$@"
