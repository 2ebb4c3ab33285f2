"""How many of our modules one queued job passes through, from `artifex-agent submit` to the MP4 on disk.

Starts two agents and a coordinator on loopback (tiny checkpoint), submits one job with the CLI and
waits for it; start-up and shutdown of the services count too (the same way before and after a
change). Every process runs with a profile hook (installed by a generated `sitecustomize.py` on
PYTHONPATH) that records which `artifex_agent` modules had a function called. Module and class
bodies run at import time do not count, so a module that is only imported is not "passed through";
neither do the `add_parser` functions the CLI calls for every command.

    .venv/bin/python bench/job_path.py [--list] [--source DIR]

--source DIR measures another checkout of the package (e.g. a `git worktree` of an older commit):
its directory goes first on PYTHONPATH for every process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Written into the trace folder as sitecustomize.py; Python imports it at start-up in every process.
_HOOK = r'''
import atexit, inspect, os, sys, threading

_out = os.environ.get("ARTIFEX_TRACE_DIR")
if _out:
    _seen = set()
    _PKG = os.sep + "artifex_agent" + os.sep

    def _profile(frame, event, _arg):
        if event == "call":
            code = frame.f_code
            # Functions only: module and class bodies (no CO_NEWLOCALS) run at import time; every
            # command's add_parser runs to build the CLI, whatever the command.
            if code.co_flags & inspect.CO_NEWLOCALS and code.co_name != "add_parser" and _PKG in code.co_filename:
                _seen.add(code.co_filename)

    sys.setprofile(_profile)
    threading.setprofile(_profile)

    @atexit.register
    def _dump():
        with open(os.path.join(_out, f"{os.getpid()}.txt"), "w") as f:
            f.write("\n".join(sorted(_seen)))
'''


def _module_name(path: str) -> str:
    """artifex_agent.x.y for .../artifex_agent/x/y.py (the last artifex_agent folder in the path)."""
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[len(parts) - 1 - parts[::-1].index("artifex_agent"):])


def measure(workdir: Path, source: Path | None) -> dict[str, set[str]]:
    trace = workdir / "trace"
    trace.mkdir()
    (trace / "sitecustomize.py").write_text(_HOOK)
    extra = [str(source)] if source else []
    os.environ["PYTHONPATH"] = os.pathsep.join([str(trace), *extra, os.environ.get("PYTHONPATH", "")])
    if source:
        sys.path.insert(0, str(source))
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from artifex_agent.local_cluster import DEMO_MODEL, LocalCluster
    from tests.coordinator.conftest import Coordinator  # the test rig's coordinator process

    os.environ["ARTIFEX_TRACE_DIR"] = str(trace)  # read by the hook in every child process
    with LocalCluster(workdir / "agents", agents={"a": {"prefer": ["generate"]}, "b": {"prefer": ["post"]}}) as cl:
        cdir = workdir / "coordinator"
        cdir.mkdir()
        coordinator = Coordinator(cdir, cl).start()
        try:
            subprocess.run([sys.executable, "-m", "artifex_agent", "submit", "--config", str(coordinator.config),
                            "--wait", "--no-progress", "--model", DEMO_MODEL, "--size", "16x16",
                            "--frames", "5", "--steps", "1", "--guidance", "1", "--fps", "8", "a red fox"],
                           check=True)
        finally:
            coordinator.stop()
    roles = {}
    print("source:", next(iter(trace.glob("*.txt"))).read_text().split("\n")[0])
    for dump in trace.glob("*.txt"):
        roles[dump.stem] = {_module_name(p) for p in dump.read_text().split("\n") if p}
    return roles


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="store_true", help="print the modules too")
    ap.add_argument("--source", type=Path, help="measure the package in this checkout instead")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        roles = measure(Path(tmp), args.source.resolve() if args.source else None)
    every = set().union(*roles.values())
    hand = {m for m in every if ".proto." not in m}
    print(f"processes traced: {len(roles)}; modules passed through: {len(hand)} hand-written "
          f"(+{len(every) - len(hand)} generated protobuf)")
    for pid, mods in sorted(roles.items(), key=lambda kv: -len(kv[1])):
        print(f"  process {pid}: {len({m for m in mods if '.proto.' not in m})} modules")
    if args.list:
        print("\n".join(sorted(hand)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
