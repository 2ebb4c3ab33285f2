"""The CLI starts without torch: `coordinator`, `watch`, `jobs` and `submit` to a coordinator never need it."""

from __future__ import annotations

import subprocess
import sys

# Importing torch costs about a second of CPU: every coordinator and watcher process (dozens in the test suite,
# one per `jobs` call for a user) would pay it. Run in a fresh interpreter: this one has torch loaded already.
PROBE = """
import sys
from artifex_agent.cli.main import build_parser
build_parser().parse_args(["coordinator"])
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(",".join(heavy))
"""


def test_parsing_every_command_loads_no_torch() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"the CLI imports {done.stdout.strip()} before any command runs"
