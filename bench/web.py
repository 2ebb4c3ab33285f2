"""bench/web: the coordinator's web page over a full queue, and what open pages cost the scheduler.

A coordinator process over two agents: 'live' (a real agent, the tiny checkpoint) and 'absent'
(an address nothing listens on). Before it starts, its database gets `--finished` done jobs,
written through the coordinator's own Store as if they had run; then `--queued` jobs are
submitted over gRPC for a model only the absent agent could hold, so they stay queued and the
scheduler explains their wait after every dispatch. Its [web] page listens on a free port with a
password (this client logs in once, as a browser would). Then, in alternating rounds:

- quiet: probe jobs one at a time on the live agent, one every `--every-s` (a ~50 ms job here, so
  the coordinator keeps scheduling without being saturated; 0: back to back), Submit -> stage
  start (bench.scaling's dispatch_latency: job.started - job.created, the coordinator's own clock);
- pages: the same probes while `--pages` pages hold the queue page's event stream open
  (GET /events, Server-Sent Events, read line by line) and the queue page (GET /) is loaded
  `--loads-per-s` times a second: its time to first byte, and /healthz's (the same server with
  nothing to render or read: the floor) right after each.

Prints the queue page's TTFB p50/p99 (and as a ratio to /healthz) and its whole answer's time (the page
is sent in slices as it renders), job events delivered per
second to all pages and per page (and whether every page got every state change), and the
probes' p50/p99 with and without pages and the p99 ratio (goal: within 1.2x), and the coordinator's
CPU per probe job on each side (/proc/PID/stat).

    .venv/bin/python -m bench.web [--finished 500] [--queued 50] [--pages 20] [--probes 50] [--rounds 6]
        [--every-s 0.1] [--loads-per-s 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import emit, workdir
from bench.scaling import PROBE_JOB, _free_port, dispatch_latency, proc_cpu_s

# What the queued jobs ask for: a model no agent that is up holds (only the absent one could).
ABSENT_MODEL = "wan2.2-absent-t2v"
PASSWORD = "bench-web-password"
HOST = "127.0.0.1"


# ---------------------------------------------------------------------- the cluster


def populate(database: Path, finished: int, model: str, output_root: Path) -> None:
    """`finished` done jobs (with their queued/running/done events) through the coordinator's own Store."""
    from artifex_agent.coordinator.job import Job
    from artifex_agent.coordinator.messages import JobEvent
    from artifex_agent.coordinator.scheduler import new_id
    from artifex_agent.coordinator.store import Store
    from artifex_agent.jobspec import JobSpec

    store = Store(database).open()
    # Set-up, not jobs a user is waiting on: no fsync per job (FULL costs seconds for 500 jobs here).
    store.db.execute("PRAGMA synchronous=OFF")
    try:
        start = time.time() - finished * 60.0
        for i in range(finished):
            spec = JobSpec(prompts=[f"a finished clip {i}: a red fox in snow"], model=model, seed=i,
                           **PROBE_JOB)  # type: ignore[arg-type]
            created = start + i * 60.0
            job = Job.submitted(new_id(), spec, created)
            store.insert(job, spec.content_key(),
                         JobEvent(job.id, "state", "queued", stage="queued", message="queued", time=created))
            job.start("live", "live", "", created + 1.0, waited=1.0)
            store.save(job, JobEvent(job.id, "state", "running", stage="generating", agent="live", time=created + 1))
            job.finish([str(output_root / f"{job.id}.mp4")], ["0" * 64], created + 30.0)
            store.save(job, JobEvent(job.id, "state", "done", stage="done", agent="live", time=created + 30.0))
    finally:
        store.close()


@dataclass
class Cluster:
    """The live agent, the coordinator (gRPC and web) and where they keep things."""

    tmp: Path
    agent: Any
    coordinator: Any
    address: str
    web_port: int
    model: str
    jobs: int  # in the store before the probes: the queue page shows at least min(QUEUE_PAGE, jobs) rows

    @classmethod
    def start(cls, tmp: Path, finished: int, queued: int) -> Cluster:
        from artifex_agent.client import JobsClient
        from artifex_agent.jobspec import JobSpec
        from artifex_agent.launcher import ChildProcess
        from artifex_agent.local_cluster import LocalCluster, write_cluster_toml

        live = LocalCluster(tmp / "agents", agents={"live": {"prefer": ["generate"], "device": "cpu"}})
        live.start()
        try:
            # Nothing listens there: the coordinator health-checks it and finds it down for the whole run.
            tables = {"live": {"address": live.address("live"), "prefer": ["generate"]},
                      "absent": {"address": f"{HOST}:{_free_port()}", "prefer": ["generate"]}}
            work = tmp / "coordinator"
            work.mkdir()
            database = work / "jobs.db"
            populate(database, finished, live.model, live.workdir / "outputs" / "live")
            address, web_port = f"{HOST}:{_free_port()}", _free_port()
            config = write_cluster_toml(
                work / "coordinator.toml", tables,
                coordinator={"listen": address, "database": str(database), "results_cache": str(work / "cache"),
                             "batch_size": 1, "batch_timeout_s": 0.0, "health_interval_s": 0.5},
                web={"listen": f"{HOST}:{web_port}", "password": PASSWORD})
            child = ChildProcess(["coordinator", "--config", str(config), "--port-file", str(work / "port")],
                                 work / "coordinator.log", work / "port").start()
        except BaseException:
            live.stop()
            raise
        cluster = cls(tmp, live, child, address, web_port, live.model, finished + queued)
        try:
            child.wait_port()
            cluster._wait_log(" is up (", "the live agent up")
            with JobsClient(address, timeout=30) as client:
                for i in range(queued):
                    client.submit(JobSpec(prompts=[f"queued {i}: a fox waits"], model=ABSENT_MODEL, seed=i,
                                          **PROBE_JOB))  # type: ignore[arg-type]
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _wait_log(self, text: str, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        log = self.tmp / "coordinator" / "coordinator.log"
        while text not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"coordinator: no {what} after {timeout:.0f}s:\n{self.coordinator.log_tail()}")
            time.sleep(0.05)

    def cpu_s(self) -> float:
        """The coordinator process's CPU seconds so far."""
        return proc_cpu_s(self.coordinator.proc.pid)

    def stop(self) -> None:
        self.coordinator.stop()
        self.agent.stop()


# ---------------------------------------------------------------------- HTTP, as a browser on loopback would


async def login(port: int) -> str:
    """Log in with the page's form; the session cookie ("name=value") to send from then on."""
    body = urllib.parse.urlencode({"password": PASSWORD, "next": "/"}).encode()
    head, _ = await request(port, "POST", "/login", body=body,
                            headers={"content-type": "application/x-www-form-urlencoded"})
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"set-cookie:"):
            return line.split(b":", 1)[1].split(b";", 1)[0].strip().decode()
    raise RuntimeError(f"login refused: {head[:200]!r}")


async def request(port: int, method: str, path: str, *, cookie: str = "", body: bytes = b"",
                  headers: dict[str, str] | None = None) -> tuple[bytes, bytes]:
    """One HTTP/1.0 request (the server closes when done): (head, body); anything but 2xx/3xx raises."""
    _, _, head, content = await timed_request(port, method, path, cookie=cookie, body=body, headers=headers)
    return head, content


async def timed_request(port: int, method: str, path: str, *, cookie: str = "", body: bytes = b"",
                        headers: dict[str, str] | None = None) -> tuple[float, float, bytes, bytes]:
    """(seconds from the request written to the answer's first byte, and to its last; head, body)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        lines = [f"{method} {path} HTTP/1.0", f"Host: {HOST}:{port}", f"Content-Length: {len(body)}"]
        lines += [f"Cookie: {cookie}"] if cookie else []
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        t0 = time.perf_counter()
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        first = await reader.read(1)
        ttfb = time.perf_counter() - t0
        answer = first + await reader.read()
        whole = time.perf_counter() - t0
    finally:
        writer.close()
    head, _, content = answer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if not status or not status[0].startswith((b"2", b"3")):
        raise RuntimeError(f"{method} {path}: {head[:200]!r}")
    return ttfb, whole, head, content


@dataclass
class Page:
    """One open queue page: its event stream, and what arrived on it."""

    events: int = 0  # `event: job` messages
    states: int = 0  # of them, state changes (never dropped for a slow page, unlike progress)
    snapshot: asyncio.Event = field(default_factory=asyncio.Event)


async def read_events(port: int, cookie: str, page: Page) -> None:
    """Read the queue page's event stream until cancelled, counting job events."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET /events HTTP/1.0\r\nHost: {HOST}:{port}\r\nCookie: {cookie}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        await writer.drain()
        event = b""
        while line := await reader.readline():
            if line.startswith(b"event: "):
                event = line[7:].strip()
            elif line.startswith(b"data: "):
                if event == b"snapshot":
                    page.snapshot.set()
                elif event == b"job":
                    page.events += 1
                    page.states += b'"kind":"state"' in line
        raise RuntimeError("the event stream ended")
    finally:
        writer.close()


# ---------------------------------------------------------------------- the rounds


class Probes(threading.Thread):
    """dispatch_latency in a thread (its client blocks), so the event loop keeps reading the pages meanwhile."""

    def __init__(self, address: str, n: int, model: str, first_seed: int, every_s: float) -> None:
        super().__init__(name="probes", daemon=True)
        self.args = (address, n, model, first_seed, every_s)
        self.latency: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        address, n, model, first_seed, every_s = self.args
        try:
            self.latency = dispatch_latency(address, n, model=model, first_seed=first_seed, every_s=every_s)
        except BaseException as exc:  # re-raised in the loop's thread
            self.error = exc


async def with_pages(cluster: Cluster, cookie: str, pages: int, probes: int, first_seed: int, every_s: float,
                     loads_per_s: float) -> dict[str, Any]:
    """Probes while `pages` event streams are open and the queue page is loaded `loads_per_s` a second."""
    from artifex_agent.web.app import QUEUE_PAGE

    open_pages = [Page() for _ in range(pages)]
    readers = [asyncio.create_task(read_events(cluster.web_port, cookie, p)) for p in open_pages]
    try:
        await asyncio.wait_for(asyncio.gather(*(p.snapshot.wait() for p in open_pages)), 60)
        before = [(p.events, p.states) for p in open_pages]
        t0 = time.monotonic()
        cpu0 = cluster.cpu_s()
        thread = Probes(cluster.address, probes, cluster.model, first_seed, every_s)
        thread.start()
        queue_ttfb, queue_whole, health_ttfb = [], [], []
        while True:  # at least one load, however quick the probes
            tick = time.monotonic()
            ttfb, whole, _, body = await timed_request(cluster.web_port, "GET", "/", cookie=cookie)
            queue_ttfb.append(ttfb)
            queue_whole.append(whole)
            health_ttfb.append((await timed_request(cluster.web_port, "GET", "/healthz"))[0])
            rows = body.count(b'<tr id="job-')
            if rows < min(QUEUE_PAGE, cluster.jobs):
                raise RuntimeError(f"the queue page shows {rows} jobs of {cluster.jobs}")
            if not thread.is_alive():
                break
            await asyncio.sleep(max(0.0, 1.0 / loads_per_s - (time.monotonic() - tick)))
        wall, cpu = time.monotonic() - t0, cluster.cpu_s() - cpu0
        # The last probe's events are still on their way: give them a moment before counting.
        await asyncio.sleep(0.3)
        if thread.error is not None:
            raise thread.error
        for reader in readers:
            if reader.done():
                reader.result()  # a stream that broke says why
        got = [(p.events - e0, p.states - s0) for p, (e0, s0) in zip(open_pages, before, strict=True)]
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return {"latency_ms": thread.latency, "queue_ttfb_s": queue_ttfb, "queue_whole_s": queue_whole,
            "healthz_ttfb_s": health_ttfb, "wall_s": wall,
            "cpu_s": cpu, "events": [e for e, _ in got], "states": [s for _, s in got]}


def pct(values: list[float], q: float) -> float:
    from artifex_agent.health.link import percentile

    return percentile(values, q)


def run(tmp: Path, *, finished: int, queued: int, pages: int, probes: int, rounds: int, every_s: float,
        loads_per_s: float) -> dict[str, Any]:
    """Every figure the script prints, from one cluster started in `tmp`."""
    cluster = Cluster.start(tmp, finished, queued)
    quiet: list[float] = []
    quiet_cpu = 0.0
    loaded: list[dict[str, Any]] = []
    try:
        cookie = asyncio.run(login(cluster.web_port))
        dispatch_latency(cluster.address, 2, model=cluster.model, first_seed=1_000_000)  # warm-up, not counted
        seed = 2_000_000
        for i in range(rounds):
            # Alternate the order, so a slow spell of the machine does not always hit the same side.
            for kind in (("quiet", "pages") if i % 2 == 0 else ("pages", "quiet")):
                if kind == "quiet":
                    cpu0 = cluster.cpu_s()
                    quiet += dispatch_latency(cluster.address, probes, model=cluster.model, first_seed=seed,
                                              every_s=every_s)
                    quiet_cpu += cluster.cpu_s() - cpu0
                else:
                    loaded.append(asyncio.run(with_pages(cluster, cookie, pages, probes, seed, every_s,
                                                         loads_per_s)))
                seed += probes
    finally:
        cluster.stop()
    with_pages_ms = [x for r in loaded for x in r["latency_ms"]]
    queue_ttfb = [x * 1000 for r in loaded for x in r["queue_ttfb_s"]]
    queue_whole = [x * 1000 for r in loaded for x in r["queue_whole_s"]]
    health_ttfb = [x * 1000 for r in loaded for x in r["healthz_ttfb_s"]]
    wall = sum(r["wall_s"] for r in loaded)
    per_page = [sum(r["events"][p] for r in loaded) for p in range(pages)]
    states = [sum(r["states"][p] for r in loaded) for p in range(pages)]
    return {
        "finished_jobs": finished, "queued_jobs": queued, "pages": pages, "probes_per_round": probes,
        "rounds": rounds, "probe_every_s": every_s, "queue_page_loads_per_s": loads_per_s,
        "queue_page_ttfb_p50_ms": pct(queue_ttfb, 50), "queue_page_ttfb_p99_ms": pct(queue_ttfb, 99),
        # The page is sent in slices as it renders (web/app.py): the whole answer's time too.
        "queue_page_whole_p50_ms": pct(queue_whole, 50), "queue_page_whole_p99_ms": pct(queue_whole, 99),
        "healthz_ttfb_p50_ms": pct(health_ttfb, 50), "healthz_ttfb_p99_ms": pct(health_ttfb, 99),
        "queue_page_over_healthz_p50": pct(queue_ttfb, 50) / pct(health_ttfb, 50),
        "queue_page_loads": len(queue_ttfb),
        "events_per_s_all_pages": sum(per_page) / wall, "events_per_s_per_page": sum(per_page) / wall / pages,
        "events_per_page_min_max": [min(per_page), max(per_page)],
        # State changes are never dropped for a slow page: every page must have the same count.
        "state_events_per_page_min_max": [min(states), max(states)],
        "submit_to_start_quiet_p50_ms": statistics.median(quiet), "submit_to_start_quiet_p99_ms": pct(quiet, 99),
        "submit_to_start_pages_p50_ms": statistics.median(with_pages_ms),
        "submit_to_start_pages_p99_ms": pct(with_pages_ms, 99),
        "submit_to_start_p99_ratio": pct(with_pages_ms, 99) / pct(quiet, 99),
        "submit_to_start_p50_ratio": statistics.median(with_pages_ms) / statistics.median(quiet),
        # The coordinator's own CPU per probe job; with pages it includes the event streams and the page loads.
        "coordinator_cpu_ms_per_job_quiet": 1000 * quiet_cpu / len(quiet),
        "coordinator_cpu_ms_per_job_pages": 1000 * sum(r["cpu_s"] for r in loaded) / len(with_pages_ms),
        "workdir": str(tmp),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=500, help="done jobs in the database")
    parser.add_argument("--queued", type=int, default=50, help="jobs that stay queued (their agent is absent)")
    parser.add_argument("--pages", type=int, default=20, help="open queue pages (event streams)")
    parser.add_argument("--probes", type=int, default=50, help="probe jobs per round and side")
    parser.add_argument("--rounds", type=int, default=6, help="quiet and pages sides alternate this many times")
    parser.add_argument("--every-s", type=float, default=0.1,
                        help="a probe every this many seconds (each runs ~50 ms here); 0: back to back")
    parser.add_argument("--loads-per-s", type=float, default=2.0,
                        help="queue page loads a second while the pages are open (20 pages reloading every 10 s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.loads_per_s <= 0:
        parser.error("--loads-per-s must be above 0 (the queue page's time to first byte is measured)")
    results = run(workdir("web"), finished=args.finished, queued=args.queued, pages=args.pages, probes=args.probes,
                  rounds=args.rounds, every_s=args.every_s, loads_per_s=args.loads_per_s)
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
