"""Four hosts on one bridge (tests/netns/rig.py, `four_hosts`): the same code for N agents.

Hosts a, b, c and d each run an agent; a coordinator runs on host a. Tiny jobs (32x32, 5
frames, 1 step, no upscale) keep the wall time small: what is tested is where jobs go and
that none is lost or run twice, not how fast they run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.local_cluster import DEMO_MODEL
from tests.netns.rig import COORDINATOR_PORT, Hosts, unavailable

pytestmark = [pytest.mark.netns, pytest.mark.slow]

JOB = {"model": DEMO_MODEL, "width": 32, "height": 32, "frames": 5, "steps": 1, "guidance": 1.0}
# As in test_two_hosts_health: two shared cores say nothing about a link's RTT.
RELAXED = {"rtt_target_ms": 25.0}


def _specs(n: int, first_seed: int) -> list[dict[str, Any]]:
    # A seed each: a repeated job would come from the results cache without running anywhere.
    return [{**JOB, "prompts": [f"a red fox {i}"], "seed": first_seed + i} for i in range(n)]


def _start_batch(rig: Hosts, specs: list[dict[str, Any]], *extra: str) -> subprocess.Popen[str]:
    return rig.popen_in("a", ["-m", "tests.netns.batch_client", f"127.0.0.1:{COORDINATOR_PORT}", rig.token,
                              json.dumps(specs), *extra])


def _finish(client: subprocess.Popen[str], on_line: Callable[[dict[str, Any]], None] | None = None,
            timeout: float = 240) -> list[dict[str, Any]]:
    """Read the batch client's lines (calling `on_line` with each report) until its final list of jobs."""
    deadline = time.monotonic() + timeout
    assert client.stdout is not None
    try:
        for line in client.stdout:
            report = json.loads(line)
            if "final" in report:
                return list(report["final"])
            if on_line is not None:
                on_line(report)
            assert time.monotonic() < deadline, report
    finally:
        if client.poll() is None:
            client.kill()
        _, err = client.communicate(timeout=30)
    raise AssertionError(f"the batch client ended without a result:\n{err[-3000:]}")


def _assert_each_done_once(rig: Hosts, jobs: list[dict[str, Any]], n: int, killed: str = "") -> list[str]:
    """Every job done, with exactly one output file on all the hosts together; returns the killed host's orphans.

    An agent killed after writing a job's file but before its result reached the coordinator leaves that
    file behind (the coordinator cannot know it exists, and runs the job again elsewhere): such a file, on
    the `killed` host only and only of a job that was retried, is returned, not counted as a second output."""
    assert len({j["id"] for j in jobs}) == n
    assert [j for j in jobs if j["state"] != "done"] == [], [j for j in jobs if j["state"] != "done"][:3]
    outputs = rig.workdir / "outputs"
    orphans = []
    for job in jobs:
        files = [p for p in outputs.rglob(f"*{job['id']}*") if p.is_file() and ".tmp" not in p.parts]
        [output] = job["outputs"]
        left = [p for p in files if killed and p.parts[-3] == killed and str(p) != output and job["attempts"] > 1]
        orphans += [str(p) for p in left]
        kept = [str(p) for p in files if p not in left]
        assert kept == [output] and output.endswith(".mp4"), (job["id"], job["attempts"], output, files)
    return orphans


def _split(jobs: list[dict[str, Any]]) -> dict[str, int]:
    return dict(sorted(Counter(j["agent"] for j in jobs).items()))


def test_a_four_host_rig_shapes_one_link_and_is_removed_whole(tmp_path: Path) -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with Hosts(tmp_path, n=4, start_agents=False) as rig:
        names = {h.ns for h in rig.hosts} | {rig.bridge_ns}
        assert names <= _namespaces() and len(names) == 5
        if shutil.which("tc"):
            rig.shape("100mbit", key="d")

            def qdisc(ns: str, iface: str) -> str:
                return subprocess.run(["tc", "-n", ns, "qdisc", "show", "dev", iface], capture_output=True,
                                      text=True).stdout

            d, a = rig.host("d"), rig.host("a")
            # d's uploads leave by its own end, its downloads by its bridge port: both shaped, a's not.
            assert "tbf" in qdisc(d.ns, d.iface) and "tbf" in qdisc(rig.bridge_ns, d.port)
            assert "tbf" not in qdisc(a.ns, a.iface) + qdisc(rig.bridge_ns, a.port)
    assert not names & _namespaces()


def _namespaces() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())


def test_the_four_hosts_reach_each_other_over_the_bridge_with_jumbo_frames(four_hosts: Hosts) -> None:
    rig = four_hosts
    assert rig.bridge_ns and [h.key for h in rig.hosts] == ["a", "b", "c", "d"]
    for h in rig.hosts[1:]:
        # 8972 bytes of ICMP + 28 of headers = 9000, not to be fragmented: MTU 9000 end to end.
        ping = rig.run_in("a", ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "8972", h.ip])
        assert ping.returncode == 0, ping.stdout + ping.stderr
    ping = rig.run_in("c", ["ping", "-c", "1", "-W", "2", rig.host("d").ip])
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_forty_jobs_spread_over_all_four_agents(four_hosts: Hosts) -> None:
    rig = four_hosts
    rig.start_coordinator("a", {k: [] for k in rig.keys})
    jobs = _finish(_start_batch(rig, _specs(40, first_seed=100)))
    _assert_each_done_once(rig, jobs, 40)
    split = _split(jobs)
    print(f"40 jobs generated on: {split}; post-processed on: "
          f"{dict(sorted(Counter(j['post_agent'] for j in jobs).items()))}")
    assert set(split) == {"a", "b", "c", "d"} and min(split.values()) > 0, split


@pytest.mark.skipif(shutil.which("tc") is None, reason="tc (iproute2) is not installed")
def test_health_names_the_shaped_link_as_the_slow_one(four_hosts: Hosts) -> None:
    rig = four_hosts
    rig.shape("100mbit", key="d")
    config = rig.write_config(rig.workdir / "client-relaxed.toml", **RELAXED)
    proc = rig.cli_in("a", ["health", "--json", "--seconds", "0.5", "--rtt-count", "50"], config=config, timeout=180)
    assert proc.stdout, proc.stderr[-3000:]
    rows = [c for c in json.loads(proc.stdout)["checks"] if c["name"].startswith("bandwidth ")]
    # "bandwidth x → y": one row each way for every pair of the four agents.
    ends = {r["name"]: set(r["name"].removeprefix("bandwidth ").split(" → ")) for r in rows}
    assert len(rows) == 12 and all(len(e) == 2 for e in ends.values()), [r["name"] for r in rows]
    slow = [r for r in rows if "d" in ends[r["name"]]]
    fast = [r for r in rows if "d" not in ends[r["name"]]]

    def gbit(row: dict[str, Any]) -> float:
        return float(row["value"].split()[0])

    print({r["name"]: r["value"].split(" (")[0] for r in rows})
    assert len(slow) == 6 and all(not r["ok"] for r in slow), slow
    # tbf lets its 1 MB burst through at once: a 0.5 s stream measures a little over 0.1 Gbit/s.
    assert max(map(gbit, slow)) < 1.0 < min(map(gbit, fast)), {r["name"]: gbit(r) for r in rows}


@pytest.mark.skipif(shutil.which("tc") is None, reason="tc (iproute2) is not installed")
def test_a_split_job_runs_on_the_two_hosts_with_the_fast_link(four_hosts: Hosts) -> None:
    rig = four_hosts
    # b and c slow: a <-> d is the one fast link left, and not the pair routing order alone would pick (a, b).
    for key in ("b", "c"):
        rig.shape("100mbit", key=key)
    coordinator, _ = rig.start_coordinator("a", {k: [] for k in rig.keys})
    # The agents measure every pair's link for the coordinator (RTT, and a short stream each way).
    measured: set[str] = set()
    deadline = time.monotonic() + 90
    while len(measured) < 6:
        assert time.monotonic() < deadline, f"links measured: {sorted(measured)}\n{coordinator.log_tail()}"
        time.sleep(0.2)
        measured = set(re.findall(r"link (\w <-> \w): RTT p50 [\d.]+ ms, [\d.]+ Gbit/s",
                                  coordinator.log_path.read_text(errors="replace")))
    [job] = _finish(_start_batch(rig, [{**_specs(1, first_seed=400)[0], "split": "experts"}], "--history"))
    assert job["state"] == "done", job
    where = [m for m in job["messages"] if "split 'experts' on" in m]
    print(where)
    assert where and re.search(r"on (a \+ d|d \+ a)\b", where[0]), job["messages"]


def test_an_agent_that_cannot_hold_the_model_is_never_given_it(four_hosts: Hosts) -> None:
    rig = four_hosts
    # d plans for 1 MiB of GPU memory: no Wan2.2 model fits, however tiny. (The fixture gives the next
    # test d back as it was.)
    small = rig.write_config(rig.workdir / "cluster-small-d.toml", {"d": {"vram_budget_gib": 1 / 1024}})
    rig.start_agent("d", config=small)
    rig.start_coordinator("a", {k: [] for k in rig.keys})
    jobs = _finish(_start_batch(rig, _specs(12, first_seed=300)))
    _assert_each_done_once(rig, jobs, 12)
    split = _split(jobs)
    print(f"12 jobs with d unable to hold the model: generated on {split}")
    # Post-processing needs no Wan2.2 model: d may still encode what others generated.
    assert "d" not in split and set(split) == {"a", "b", "c"}, split


def test_an_agent_killed_mid_run_and_one_added_mid_run_lose_and_repeat_nothing(four_hosts: Hosts) -> None:
    rig = four_hosts
    coordinator, config = rig.start_coordinator("a", {"a": [], "b": [], "c": []})
    n, late_n = 24, 12
    client = _start_batch(rig, _specs(n, first_seed=200))
    events: list[str] = []
    late: list[subprocess.Popen[str]] = []

    def act(report: dict[str, Any]) -> None:
        # Kill b while it runs a job, once a few jobs are done; then add d (cluster file rewritten, SIGHUP).
        if "killed b" not in events and report.get("done", 0) >= 3 and report.get("running", {}).get("b"):
            rig.agents["b"].kill()
            events.append("killed b")
            rig.set_coordinator_agents(config, {"a": [], "b": [], "c": [], "d": []})
            assert coordinator.proc is not None
            os.kill(coordinator.proc.pid, signal.SIGHUP)
            events.append(f"added d at {report['done']}/{n} done")
            # Warm tiny jobs can drain the queue before d's first health check: more arrive once d is up.
            deadline = time.monotonic() + 30
            while "agent d is up" not in coordinator.log_path.read_text(errors="replace"):
                assert time.monotonic() < deadline, coordinator.log_tail()
                time.sleep(0.05)
            late.append(_start_batch(rig, _specs(late_n, first_seed=250)))

    jobs = _finish(client, act)
    assert "killed b" in events and late, "b ran no job while the batch ran: nothing was killed"
    jobs += _finish(late[0])
    orphans = _assert_each_done_once(rig, jobs, n + late_n, killed="b")
    split = _split(jobs)
    print(f"{events}; generated on: {split}; attempts: {dict(Counter(j['attempts'] for j in jobs))}; "
          f"files b finished but could not report: {orphans}")
    assert split.get("d", 0) > 0, f"the agent added by SIGHUP got no job: {split}"
