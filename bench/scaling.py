"""bench/scaling: the same jobs through the coordinator with one agent, then with two, in one run.

Two real agents (`artifex-agent serve`, torch at 1 thread) serve a heavier tiny Wan2.2
checkpoint whose generation costs about 4x its post-processing (2x upscale + H.264).
Each agent is pinned to its own CPU core (taskset): one core stands for one PC's GPU, so
an agent's generation and its post-processing compete as they do on one GPU, and the
second agent brings its own core as a second PC brings its own GPU. (Unpinned, the lone
agent would post-process on the idle second core for free, and the ratio could not pass
2G/(G+P) = 1.6; --no-pin measures that case.) A real coordinator process runs the jobs
(batch_size 1: batching changes the cost per job, and 12 jobs in batches of 4 cannot split
evenly over two agents). Prints jobs/minute for one and two agents and their ratio, the
ratio the machine itself gives for the same jobs run straight on the agents (two cores of
a shared VM do not compute twice as fast as one), how busy the coordinator kept the
agents, and its own overhead: its CPU seconds per job (from /proc/PID/stat, printed next to
the ratio) against the time a job runs, and Submit -> stage start p50/p99 on an idle cluster.

`--agents 1,2,4` measures each of those cluster sizes in one run (agents a, b, c, d, preferring
generation and post-processing in turn, pinned round-robin over the cores this process may use:
four agents on two cores share them as the machine allows): jobs/minute for each, its ratio to
one agent, the machine's own ratio for the same jobs straight on that many agents, ours as a
share of it, and the coordinator's CPU per job for each size (it must not grow with N).

    .venv/bin/python -m bench.scaling [--jobs 12] [--rounds 2] [--agents 1,2] [--no-pin] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import emit, workdir

MODEL = "wan2.2-bench-t2v-a14b"
# build_tiny_checkpoint knobs: wider and deeper than the test model, so denoising dominates.
CHECKPOINT = {"layers": 4, "heads": 8, "head_dim": 32, "ffn_dim": 1024}
JOB = {"width": 96, "height": 96, "frames": 33, "steps": 10, "guidance": 1.0, "fps": 16.0, "upscale": 2}
PROBE_JOB = {"width": 16, "height": 16, "frames": 5, "steps": 1, "guidance": 1.0, "fps": 8.0}
NAMES = "abcdefgh"
# What each agent prefers, by position: a generates, b post-processes, and so on in turn.
STAGES = ("generate", "post")


def stage_of(name: str) -> str:
    return STAGES[NAMES.index(name) % len(STAGES)]


def parse_agents(text: str) -> list[int]:
    """`--agents 1,2,4` -> [1, 2, 4]: sorted, unique, one agent included (the ratios are against it)."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--agents takes numbers separated by commas, not {text!r}") from None
    if not counts or counts[0] != 1 or counts[-1] > len(NAMES):
        raise argparse.ArgumentTypeError(f"--agents must include 1 and stay within 1..{len(NAMES)}: {text!r}")
    return counts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_agents(tmp: Path, pin: bool, n: int = 2) -> tuple[dict[str, Any], dict[str, str]]:
    """Agents 'a' (prefers generation), 'b' (prefers post), ... (`n` of them), each on its own core when pinned."""
    from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint
    from artifex_agent.launcher import start_agent, wait_serving
    from artifex_agent.local_cluster import write_cluster_toml

    models = tmp / "models"
    ensure_tiny_checkpoint(models, MODEL, variant="t2v-a14b", **CHECKPOINT)
    addresses = {name: f"127.0.0.1:{_free_port()}" for name in NAMES[:n]}
    tables = {name: {"listen": addresses[name], "models_root": str(models), "output_root": str(tmp / "out" / name),
                     "torch_threads": 1, "preload": [MODEL], "prefer": [stage_of(name)]} for name in addresses}
    config = write_cluster_toml(tmp / "agents.toml", tables)
    children: dict[str, Any] = {}
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    for i, name in enumerate(addresses):
        prefix = ["taskset", "-c", str(cpus[i % len(cpus)])] if pin and cpus and shutil.which("taskset") else []
        children[name] = start_agent(config, name, tmp, prefix=prefix, env={"OMP_NUM_THREADS": "1"})
        asyncio.run(wait_serving(addresses[name], timeout=120))
    return children, addresses


async def deliver_once(address: str, name: str) -> tuple[float, float]:
    """One job on one agent, generated and post-processed there (Deliver, in process): its two stages' seconds."""
    from artifex_agent.jobspec import JobSpec
    from artifex_agent.jobspec_pb import generate_request, post_spec
    from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
    from artifex_agent.transport.channel import AgentStub, open_channel

    spec = JobSpec(prompts=["a red fox running"], model=MODEL, **JOB)  # type: ignore[arg-type]
    request = pb.DeliverRequest(generate=generate_request(spec))
    request.deliveries.add(spec=post_spec(spec, name), clips=1)
    start = time.monotonic()
    generated = 0.0
    async with open_channel(address) as ch:
        async for event in AgentStub(ch).deliver(request):
            if event.HasField("progress") and event.progress.current_stage == pb.STAGE_STREAM:
                generated = time.monotonic()
            if event.HasField("result") and event.result.HasField("error"):
                raise RuntimeError(f"{name}: {event.result.error.message}")
    end = time.monotonic()
    generated = generated or end
    return generated - start, end - generated


def calibrate(address: str) -> tuple[float, float]:
    """Generation and post-processing seconds of one job on one agent (after a warm-up)."""
    asyncio.run(deliver_once(address, "calibrate/warm"))
    runs = [asyncio.run(deliver_once(address, f"calibrate/run{i}")) for i in range(2)]
    return statistics.mean(r[0] for r in runs), statistics.mean(r[1] for r in runs)


def direct_ratios(addresses: dict[str, str], jobs: int, counts: list[int]) -> dict[int, float]:
    """The machine's own N-vs-one ratios of jobs/minute, the jobs straight on the agents (no coordinator).

    One agent runs `jobs // 2` of them (as many as each of two agents); N agents share `jobs` as the
    coordinator's run spreads them, `jobs // N` each, so each size works through the same tail."""

    async def loop(name: str, n: int) -> None:
        for i in range(n):
            await deliver_once(addresses[name], f"direct/{name}{i}")

    async def rate(names: list[str], each: int) -> float:
        t0 = time.monotonic()
        await asyncio.gather(*(loop(n, each) for n in names))
        return len(names) * each / (time.monotonic() - t0)

    names = list(addresses)
    alone = asyncio.run(rate(names[:1], max(jobs // 2, 1)))
    return {n: asyncio.run(rate(names[:n], max(jobs // n, 1))) / alone if n > 1 else 1.0 for n in counts}


class CoordinatorRun:
    """A coordinator process over some of the agents, with a fresh database and cache."""

    def __init__(self, tmp: Path, name: str, addresses: dict[str, str]) -> None:
        from artifex_agent.launcher import ChildProcess
        from artifex_agent.local_cluster import write_cluster_toml

        self.dir = tmp / name
        self.dir.mkdir()
        self.names = list(addresses)
        self.address = f"127.0.0.1:{_free_port()}"
        tables = {n: {"address": addr, "prefer": [stage_of(n)]} for n, addr in addresses.items()}
        config = write_cluster_toml(self.dir / "coordinator.toml", tables, coordinator={
            "listen": self.address, "database": str(self.dir / "jobs.db"), "results_cache": str(self.dir / "cache"),
            "batch_size": 1, "batch_timeout_s": 0.0}, web={"listen": ""})
        self.child = ChildProcess(["coordinator", "--config", str(config), "--port-file", str(self.dir / "port")],
                                  self.dir / "coordinator.log", self.dir / "port").start()
        self.child.wait_port()
        deadline = time.monotonic() + 30
        while (self.dir / "coordinator.log").read_text().count(" is up (") < len(addresses):
            if time.monotonic() > deadline:
                raise RuntimeError(f"agents not up for the coordinator:\n{self.child.log_tail()}")
            time.sleep(0.05)

    def cpu_s(self) -> float:
        assert self.child.proc is not None
        return proc_cpu_s(self.child.proc.pid)

    def stop(self) -> None:
        self.child.stop()


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, all its threads (/proc/PID/stat, fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    return sum(proc_cpu_s(pid) for pid in pids)


def throughput(run: CoordinatorRun, jobs: int, agent_pids: list[int]) -> dict[str, Any]:
    """Submit `jobs` at once, wait for all; jobs/minute, CPU per job (coordinator, agents), where things ran."""
    from artifex_agent.client import JobsClient
    from artifex_agent.jobspec import JobSpec

    with JobsClient(run.address, timeout=60) as client:
        agents0 = _cpu_s(agent_pids)
        cpu0, t0 = run.cpu_s(), time.monotonic()
        ids = [client.submit(JobSpec(prompts=[f"a red fox running {i}"], model=MODEL, seed=i, **JOB))  # type: ignore[arg-type]
               for i in range(jobs)]
        done = [client.wait(i, timeout=600) for i in ids]
        wall, cpu = time.monotonic() - t0, run.cpu_s() - cpu0
        agents_cpu = _cpu_s(agent_pids) - agents0
    failed = [j for j in done if j.state != "done"]
    if failed:
        raise RuntimeError(f"{len(failed)} job(s) failed: {failed[0].error}")
    run_s = statistics.mean((j.finished or 0) - (j.started or 0) for j in done)
    names = sorted({"a", "b", *run.names})  # a and b always: the default report names both
    used = sum(1 for n in names if any(j.agent == n or j.post_agent == n for j in done))
    return {"jobs_per_min": jobs / wall * 60, "wall_s": wall, "cpu_per_job_ms": cpu / jobs * 1000,
            "agent_cpu_per_job_s": agents_cpu / jobs, "agent_busy": agents_cpu / (wall * used),
            "job_run_s": run_s, "generated_on": {a: sum(j.agent == a for j in done) for a in names},
            "posted_on_same_agent": sum(j.agent == j.post_agent for j in done)}


def dispatch_latency(address: str, n: int, *, model: str = MODEL, first_seed: int = 10_000,
                     every_s: float = 0.0) -> list[float]:
    """Submit -> stage start (the Generate call), one job at a time on an idle agent, in ms.

    Each probe has its own seed: a repeated one would come from the results cache without starting.
    `every_s` > 0 submits one every that many seconds (after the previous one ended), not back to back."""
    from artifex_agent.client import JobsClient
    from artifex_agent.jobspec import JobSpec

    out = []
    start = time.monotonic()
    with JobsClient(address, timeout=60) as client:
        for i in range(n):
            if every_s:
                time.sleep(max(0.0, start + i * every_s - time.monotonic()))
            job = client.wait(client.submit(JobSpec(prompts=["a probe"], model=model, seed=first_seed + i,
                                                    **PROBE_JOB)), timeout=60)  # type: ignore[arg-type]
            if job.state != "done" or job.started is None:
                raise RuntimeError(f"probe job {job.id} ended {job.state}: {job.error}")
            out.append((job.started - job.created) * 1000)
    return out


def measure(args: argparse.Namespace, tmp: Path) -> tuple[dict[int, list[dict[str, Any]]], dict[int, float],
                                                         list[float], float, float]:
    """Agents up, calibration, the machine's own ratios, then `rounds` coordinator runs of each cluster size."""
    counts: list[int] = args.agents
    children, addresses = start_agents(tmp, pin=not args.no_pin, n=counts[-1])
    pids = [c.proc.pid for c in children.values()]
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    latency: list[float] = []
    try:
        gen_s, post_s = calibrate(addresses["a"])
        direct = direct_ratios(addresses, args.jobs, counts)
        for i in range(args.rounds):
            # Alternate the order, so a slow spell of the machine does not always hit the same setup.
            for n in (counts if i % 2 == 0 else counts[::-1]):
                label = {1: "one", 2: "two"}.get(n, f"n{n}")
                run = CoordinatorRun(tmp, f"{label}{i}", dict(list(addresses.items())[:n]))
                try:
                    runs[n].append(throughput(run, args.jobs, pids))
                    if n == counts[-1] and i == args.rounds - 1:
                        latency = sorted(dispatch_latency(run.address, args.probes))
                finally:
                    run.stop()
    finally:
        for child in children.values():
            child.stop()
    return runs, direct, latency, gen_s, post_s


def med(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def pair_report(runs: dict[int, list[dict[str, Any]]], direct: dict[int, float]) -> dict[str, Any]:
    """One agent against two: the report's keys as they were before --agents existed."""
    one, two = runs[1], runs[2]
    one_jpm, two_jpm = med(one, "jobs_per_min"), med(two, "jobs_per_min")
    return {
        "one_agent_jobs_per_min": one_jpm, "two_agents_jobs_per_min": two_jpm, "ratio": two_jpm / one_jpm,
        # The coordinator's own CPU (its /proc/PID/stat before and after the jobs), per job: it carries
        # progress and results only, the frames go agent to agent.
        "coordinator_cpu_s_per_job_one": med(one, "cpu_per_job_ms") / 1000,
        "coordinator_cpu_s_per_job_two": med(two, "cpu_per_job_ms") / 1000,
        "ratios_per_round": [round(b["jobs_per_min"] / a["jobs_per_min"], 3) for a, b in zip(one, two, strict=True)],
        # The same jobs straight on the agents, one after another on each: what this machine allows.
        "direct_ratio_without_coordinator": direct[2],
        # Share of the wall time the agents' cores were computing: what the coordinator controls.
        "agent_busy_one": med(one, "agent_busy"), "agent_busy_two": med(two, "agent_busy"),
        "agent_cpu_per_job_s_one": med(one, "agent_cpu_per_job_s"),
        "agent_cpu_per_job_s_two": med(two, "agent_cpu_per_job_s"),
        "two_agents_generated_on": two[-1]["generated_on"],
        "two_agents_posted_on_generating_agent": two[-1]["posted_on_same_agent"],
    }


def sizes_report(runs: dict[int, list[dict[str, Any]]], direct: dict[int, float]) -> dict[str, Any]:
    """Each cluster size N: jobs/minute, the ratio to one agent, the machine's own, ours as a share of it,
    and the coordinator's CPU per job (flat in N while it stays control plane only)."""
    one_jpm = med(runs[1], "jobs_per_min")
    out: dict[str, Any] = {}
    for n, rs in runs.items():
        jpm = med(rs, "jobs_per_min")
        out[f"agents_{n}_jobs_per_min"] = jpm
        if n > 1:
            out[f"agents_{n}_ratio"] = jpm / one_jpm
            out[f"agents_{n}_direct_ratio_without_coordinator"] = direct[n]
            out[f"agents_{n}_ratio_of_direct"] = jpm / one_jpm / direct[n]
        out[f"agents_{n}_coordinator_cpu_s_per_job"] = med(rs, "cpu_per_job_ms") / 1000
        out[f"agents_{n}_busy"] = med(rs, "agent_busy")
        out[f"agents_{n}_generated_on"] = rs[-1]["generated_on"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2,
                        help="the cluster sizes' runs alternate this many times; medians are reported")
    parser.add_argument("--agents", type=parse_agents, default=[1, 2],
                        help="cluster sizes to measure, e.g. 1,2,4 (must include 1; default 1,2)")
    parser.add_argument("--probes", type=int, default=30, help="jobs for the Submit -> stage start latency")
    parser.add_argument("--no-pin", action="store_true", help="do not pin each agent to its own core")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = workdir("scaling")
    runs, direct, latency, gen_s, post_s = measure(args, tmp)
    p99 = latency[min(len(latency) - 1, round(0.99 * (len(latency) - 1)))]
    largest = runs[args.agents[-1]]
    report = pair_report(runs, direct) if args.agents == [1, 2] else sizes_report(runs, direct)
    emit({
        "jobs": args.jobs, "rounds": args.rounds, "pinned": not args.no_pin,
        "job": f"{JOB['width']}x{JOB['height']} {JOB['frames']} frames {JOB['steps']} steps, "
               f"upscale {JOB['upscale']}, h264",
        "generate_s": gen_s, "post_s": post_s, "generate_over_post": gen_s / post_s,
        **report,
        "submit_to_stage_start_p50_ms": statistics.median(latency), "submit_to_stage_start_p99_ms": p99,
        "coordinator_cpu_pct_of_job_run": 100 * med(largest, "cpu_per_job_ms") / 1000 / med(largest, "job_run_s"),
        "workdir": str(tmp),
    }, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
