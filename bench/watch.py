"""bench/watch: drop-folder latency (drop -> submit, p50/p99) and the watcher's idle CPU with 10,000 files.

Latency: a real coordinator process (its one agent absent, so jobs just queue) and a watcher
in this process; job files are dropped the careful way (written as NAME.part, renamed) at
random moments, and the time from the rename to the watcher's Submit call is taken, with
polling at 1 s and with inotify. Direct writes (no rename) are timed too: they count only
once they stood still for the settle time (1 s by default).

CPU: `artifex-agent watch` as a child process, polling at 1 s, with 10,000 files in the drop
folder (a finished history in inbox/accepted, a 10,000-frame folder waiting for its _READY,
or 10,000 in-flight *.part files in inbox/); its CPU time is read over a quiet window.

    .venv/bin/python -m bench.watch [--drops 40] [--window 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from artifex_agent.client import JobsClient
from artifex_agent.config import ClusterConfig
from artifex_agent.launcher import ChildProcess, wait_serving
from artifex_agent.local_cluster import write_cluster_toml
from artifex_agent.watcher.names import Layout
from artifex_agent.watcher.service import Watcher
from bench._common import emit, workdir

JOB = 'prompt = "bench {i}"\nmodel = "wan2.2-t2v-a14b"\nsize = "64x64"\nframes = 5\nsteps = 1\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TimedClient:
    """The real JobsClient, noting when each job file's Submit call starts."""

    def __init__(self, client: JobsClient) -> None:
        self.client = client
        self.started: dict[str, float] = {}

    def submit(self, spec: Any, idempotency_key: str = "") -> str:
        self.started[spec.prompts[0]] = time.monotonic()
        return self.client.submit(spec, idempotency_key=idempotency_key)

    def get(self, job_id: str) -> Any:
        return self.client.get(job_id)


def _percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]
    return {"p50_ms": 1000 * statistics.median(values), "p99_ms": 1000 * p99, "n": len(values)}


def latency(work: Path, coordinator: str, mode: str, drops: int, direct: bool) -> dict[str, float]:
    """Drop `drops` files at random moments; returns drop->submit percentiles."""
    root = work / f"drop-{mode}-{'direct' if direct else 'rename'}"
    cluster = ClusterConfig()
    cluster.coordinator.address = coordinator
    cluster.watcher.root = root
    cluster.watcher.ledger = root.with_suffix(".db")
    cluster.watcher.mode = mode  # type: ignore[assignment]
    cluster.watcher.poll_interval_s = 1.0
    cluster.agents[0].address = f"127.0.0.1:{_free_port()}"  # nobody: the model check is skipped
    client = TimedClient(JobsClient(coordinator, timeout=20))
    watcher = Watcher(cluster, client)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    while watcher.mode is None:
        time.sleep(0.01)
    time.sleep(0.3)
    layout = Layout(root)
    dropped: dict[str, float] = {}
    rng = random.Random(7)
    for i in range(drops):
        time.sleep(rng.uniform(0.1, 0.4))
        final = layout.inbox / f"job{i:04d}.toml"
        if direct:
            final.write_text(JOB.format(i=i))
        else:
            part = final.with_name(final.name + ".part")
            part.write_text(JOB.format(i=i))
            os.rename(part, final)
        dropped[f"bench {i}"] = time.monotonic()
    deadline = time.monotonic() + 30
    while len(client.started) < drops and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.request_stop()
    thread.join(30)
    client.client.close()
    return _percentiles([client.started[k] - t for k, t in dropped.items() if k in client.started])


def _fill(layout: Layout, scenario: str, count: int) -> None:
    layout.create()
    if scenario == "accepted":
        for i in range(count // 2):  # a job file and its .job note, like a long history
            (layout.accepted / f"old{i:05d}.toml").write_text("x")
            (layout.accepted / f"old{i:05d}.toml.job").write_text("j\n")
    elif scenario == "frames":
        folder = layout.frames / "long-shot"
        folder.mkdir()
        for i in range(count):
            (folder / f"{i:05d}.png").write_bytes(b"")
    elif scenario == "parts":
        for i in range(count):
            (layout.inbox / f"upload{i:05d}.toml.part").write_text("x")


def cpu(work: Path, coordinator: str, scenario: str, count: int, window: float, polling: bool) -> float:
    """% of one core `artifex-agent watch` uses over `window` seconds, idle, with `count` files placed."""
    import psutil

    root = work / f"cpu-{scenario}-{'poll' if polling else 'native'}"
    _fill(Layout(root), scenario, count)
    host, port = coordinator.rsplit(":", 1)
    cfg = write_cluster_toml(work / f"{root.name}.toml", {"gpu": {"address": f"127.0.0.1:{_free_port()}"}},
                             coordinator={"address": coordinator},
                             watcher={"root": str(root), "ledger": str(root.with_suffix(".db")),
                                      "poll_interval_s": 1.0, "mode": "polling" if polling else "native"})
    child = ChildProcess(["watch", "--config", str(cfg)], work / f"{root.name}.log").start()
    try:
        assert child.proc is not None
        proc = psutil.Process(child.proc.pid)
        deadline = time.monotonic() + 30
        while "watching " not in child.log_tail(50) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)  # start-up (imports, first snapshot) is not what we measure
        before = proc.cpu_times()
        t0 = time.monotonic()
        time.sleep(window)
        after = proc.cpu_times()
        elapsed = time.monotonic() - t0
        return 100 * ((after.user - before.user) + (after.system - before.system)) / elapsed
    finally:
        child.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drops", type=int, default=40, help="job files dropped per latency run")
    parser.add_argument("--files", type=int, default=10_000, help="files in the folder for the CPU runs")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of CPU measurement per run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = workdir("watch")
    port = _free_port()
    cfg = write_cluster_toml(work / "coordinator.toml", {"gpu": {"address": f"127.0.0.1:{_free_port()}"}},
                             coordinator={"listen": f"127.0.0.1:{port}", "database": str(work / "jobs.db"),
                                          "results_cache": str(work / "cache")}, web={"listen": ""})
    coordinator = ChildProcess(["coordinator", "--config", str(cfg), "--port-file", str(work / "c.port")],
                               work / "coordinator.log", work / "c.port").start()
    results: dict[str, Any] = {}
    try:
        coordinator.wait_port()
        address = f"127.0.0.1:{port}"
        asyncio.run(wait_serving(address))
        for mode, label in (("polling", "polling_1s"), ("native", "inotify")):
            for direct in (False, True):
                r = latency(work, address, mode, args.drops, direct)
                kind = "direct_write" if direct else "rename"
                for key, value in r.items():
                    results[f"latency_{label}_{kind}_{key}"] = value
        for scenario in ("accepted", "frames", "parts"):
            results[f"cpu_pct_polling_1s_{args.files}_{scenario}"] = cpu(work, address, scenario, args.files,
                                                                         args.window, True)
        results[f"cpu_pct_inotify_{args.files}_accepted"] = cpu(work, address, "accepted", args.files,
                                                                args.window, False)
    finally:
        coordinator.stop()
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
