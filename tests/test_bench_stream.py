"""The measuring parts of bench/stream.py and bench/scaling.py, on tiny sizes: they measure what they say."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from bench.scaling import proc_cpu_s
from bench.stream import Agents, agent_to_agent, bare_grpc, raw_tcp_direct


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/PID/stat is Linux's")
def test_proc_cpu_s_counts_this_processes_cpu_time() -> None:
    before = proc_cpu_s(os.getpid())
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    spent = proc_cpu_s(os.getpid()) - before
    # /proc counts in clock ticks (10 ms); other threads of this process may add a little.
    assert 0.25 <= spent < 0.6, spent
    times = os.times()
    assert abs(proc_cpu_s(os.getpid()) - (times.user + times.system)) < 0.05


@pytest.mark.slow
def test_agent_to_agent_delivers_every_frame_and_the_baselines_move_the_same_bytes(tmp_path: Path) -> None:
    w, h, n = 64, 48, 12
    agents = Agents(w, h, n, chunk=1 << 20, tune=True, profile_dir=None, tmp=tmp_path)
    try:
        # agent_to_agent asserts the post agent's result: every frame, every byte.
        measured = agent_to_agent(agents, w, h, n)
    finally:
        agents.close()
    assert measured["GBps"] > 0
    assert raw_tcp_direct(w * h * 3, n) > 0
    assert bare_grpc(w * h * 3, n) > 0  # asserts the receiver's byte count
