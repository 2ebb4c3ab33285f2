"""Prometheus metrics of one process (agent or coordinator) and the HTTP endpoint serving them.

Each process owns a private registry rather than prometheus_client's global one, so tests and
a process hosting several components never see each other's series.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from artifex_agent import PROTOCOL_VERSION, __version__
from artifex_agent.config import STAGES, split_hostport
from artifex_agent.errors import ConfigError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from artifex_agent.services.activity import Activity

logger = logging.getLogger(__name__)

# Stages take seconds (post-processing) to tens of minutes (A14B generation at 720p).
STAGE_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
# A queue wait is nothing (an idle agent) to hours (a long queue behind two GPUs).
WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
WILDCARDS = ("", "0.0.0.0", "::", "*")
# The coordinator's job stages (coordinator/run_events.py), present from the start so graphs show zeros.
JOB_STAGES = ("generating", "streaming", "post")


class GpuCollector(Collector):
    """GPU utilisation, VRAM and temperature read from NVML at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from artifex_agent.engines import gpu

        gpus, problem = gpu.gpu_info()
        available = GaugeMetricFamily("artifex_gpu_available", "1 when NVML answered (an NVIDIA driver is present)")
        available.add_metric([], 0.0 if problem else 1.0)
        yield available
        labels = ["gpu", "name"]
        util = GaugeMetricFamily("artifex_gpu_utilization_ratio", "GPU busy fraction over NVML's last sample",
                                 labels=labels)
        used = GaugeMetricFamily("artifex_gpu_memory_used_bytes", "GPU memory in use (all processes)", labels=labels)
        total = GaugeMetricFamily("artifex_gpu_memory_total_bytes", "GPU memory installed", labels=labels)
        temp = GaugeMetricFamily("artifex_gpu_temperature_celsius", "GPU core temperature", labels=labels)
        for g in gpus:
            key = [str(g["index"]), g["name"]]
            used.add_metric(key, g["memory_used"])
            total.add_metric(key, g["memory_total"])
            # Boards that cannot report a reading get no sample rather than a false zero.
            if g.get("utilization_pct") is not None:
                util.add_metric(key, g["utilization_pct"] / 100.0)
            if g.get("temperature_c") is not None:
                temp.add_metric(key, g["temperature_c"])
        yield from (util, used, total, temp)


class ActivityCollector(Collector):
    """Stages and jobs in flight, read from the agent's Activity at scrape time."""

    def __init__(self, activity: Activity) -> None:
        self.activity = activity

    def collect(self) -> Iterator[Metric]:
        entries = list(self.activity.active.values())
        by_stage = Tally(stage for stage, _, _ in entries)
        stages = GaugeMetricFamily("artifex_stages_in_flight", "Streams this agent is serving, by stage",
                                   labels=["stage"])
        for stage in sorted({*STAGES, *by_stage}):
            stages.add_metric([stage], by_stage.get(stage, 0))
        yield stages
        jobs = GaugeMetricFamily("artifex_jobs_in_flight", "Distinct job ids among the streams in flight")
        jobs.add_metric([], len({job for _, job, _ in entries if job}))
        yield jobs


class BusyClock(Collector):
    """Seconds each agent has been busy, per role, integrated from what the coordinator sees.

    `update` is called on the event loop whenever the coordinator looks at its agents; a scrape
    (another thread) adds the time since an agent became busy, so a long generation shows as
    busy while it runs rather than in one step at its end.
    """

    def __init__(self) -> None:
        self.total: dict[tuple[str, str], float] = {}
        self.since: dict[tuple[str, str], float] = {}

    def update(self, busy: Mapping[tuple[str, str], bool], now: float) -> None:
        """`busy`: (agent, role) -> busy now, for every agent; `now`: time.monotonic().

        An agent missing from `busy` (taken out of the cluster file) counts as idle from now on.
        """
        busy = {**{key: False for key in self.since}, **busy}
        for key, on in busy.items():
            self.total.setdefault(key, 0.0)
            if on and key not in self.since:
                self.since[key] = now
            elif not on and key in self.since:
                self.total[key] += now - self.since.pop(key)

    def seconds(self, now: float) -> dict[tuple[str, str], float]:
        since = dict(self.since)
        return {key: spent + (now - since[key] if key in since else 0.0) for key, spent in list(self.total.items())}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("artifex_agent_busy_seconds", "Seconds an agent spent generating or "
                                     "post-processing jobs of this coordinator", labels=["agent", "role"])
        for (agent, role), seconds in sorted(self.seconds(time.monotonic()).items()):
            family.add_metric([agent, role], seconds)
        yield family


# (agent -> up, (agent, agent) -> RTT in seconds, inf when unreachable): what the coordinator's pool says now.
AgentsView = tuple[Mapping[str, bool], Mapping[tuple[str, str], float]]


class AgentsCollector(Collector):
    """Every agent of the cluster file (up or not) and every link measured between two, read at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], AgentsView] = lambda: ({}, {})

    def collect(self) -> Iterator[Metric]:
        up, links = self.source()
        agents = GaugeMetricFamily("artifex_agent_up", "1 while the coordinator's health checks find the agent "
                                   "serving", labels=["agent"])
        for name, on in sorted(up.items()):
            agents.add_metric([name], 1.0 if on else 0.0)
        yield agents
        rtt = GaugeMetricFamily("artifex_link_rtt_seconds", "Round trip between two agents, as the first "
                                "measured it (p50 of a few echoes); +Inf: the last probe failed", labels=["a", "b"])
        for (a, b), seconds in sorted(links.items()):
            rtt.add_metric([a, b], seconds)
        yield rtt


class JobMetrics:
    """The coordinator's series about jobs: stage and queue times, failures and retries by reason, busy agents.

    They exist (unregistered) whether or not the coordinator serves /metrics, so the scheduler
    records into them unconditionally; Metrics registers them when it serves.
    """

    def __init__(self) -> None:
        self.stage_seconds = Histogram("artifex_job_stage_duration_seconds", "Time a job spent in one stage, "
                                       "as the coordinator saw it", ["stage"], buckets=STAGE_BUCKETS, registry=None)
        self.job_seconds = Histogram("artifex_job_duration_seconds", "A job from submission to its end, by outcome",
                                     ["outcome"], buckets=STAGE_BUCKETS, registry=None)
        self.queue_wait = Histogram("artifex_job_queue_wait_seconds", "Time a job waited in the queue before "
                                    "an attempt started", buckets=WAIT_BUCKETS, registry=None)
        self.failures = Counter("artifex_job_failures", "Jobs that failed for good, by reason", ["reason"],
                                registry=None)
        self.retries = Counter("artifex_job_retries", "Failed attempts that were retried, by reason", ["reason"],
                               registry=None)
        self.busy = BusyClock()
        self.agents = AgentsCollector()
        for stage in JOB_STAGES:
            self.stage_seconds.labels(stage=stage)

    def register(self, registry: CollectorRegistry) -> None:
        for collector in (self.stage_seconds, self.job_seconds, self.queue_wait, self.failures, self.retries,
                          self.busy, self.agents):
            registry.register(collector)


class Metrics:
    """The series every artifex process exports; the coordinator adds queue depth and its JobMetrics."""

    def __init__(self, component: str, name: str = "", *, activity: Activity | None = None,
                 gpu: bool = False, jobs: JobMetrics | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Info("artifex_build", "Version of this process", registry=r).info(
            {"version": __version__, "protocol": str(PROTOCOL_VERSION), "component": component, "name": name})
        self.frames = Counter("artifex_frames", "Frames streamed over the link (sent or received)",
                              ["direction"], registry=r)
        self.bytes = Counter("artifex_stream_bytes", "Frame payload bytes streamed over the link",
                             ["direction"], registry=r)
        self.stage_seconds = Histogram("artifex_stage_duration_seconds", "Time one stage took, by outcome",
                                       ["stage", "outcome"], buckets=STAGE_BUCKETS, registry=r)
        self.queue_depth = Gauge("artifex_queue_depth", "Jobs in the coordinator's queue, by state",
                                 ["state"], registry=r)
        if activity is not None:
            r.register(ActivityCollector(activity))
        if gpu:
            r.register(GpuCollector())
        if jobs is not None:
            jobs.register(r)
        self._server: WSGIServer | None = None
        self._queue_states: set[str] = set()

    def observe_stage(self, stage: str, seconds: float, outcome: str = "ok") -> None:
        self.stage_seconds.labels(stage=stage, outcome=outcome).observe(seconds)

    def count_frames(self, direction: str, frames: int, nbytes: int) -> None:
        if frames:
            self.frames.labels(direction=direction).inc(frames)
        if nbytes:
            self.bytes.labels(direction=direction).inc(nbytes)

    def set_queue_depth(self, depths: Mapping[str, int]) -> None:
        """The coordinator reports its queue here, e.g. {"queued": 3, "running": 2}."""
        # A state that emptied since the last report reads 0, not its last count.
        for state in self._queue_states - set(depths):
            self.queue_depth.labels(state=state).set(0)
        for state, count in depths.items():
            self.queue_depth.labels(state=state).set(count)
        self._queue_states |= set(depths)

    def serve(self, listen: str, port: int) -> int:
        """Serve /metrics on `port` at the host part of `listen`; returns the bound port."""
        host = split_hostport(listen)[0]
        addr = "0.0.0.0" if host in WILDCARDS else host
        try:
            self._server, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None
        bound = int(self._server.server_port)
        logger.info("metrics on http://%s:%d/metrics", addr if ":" not in addr else f"[{addr}]", bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def parse_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A /metrics page as {(sample name, sorted labels): value}, for `top` and the tests."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /,
          **labels: str) -> float:
    """Sum of the samples called `metric` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == metric and want <= set(lbl))


def scrape(url: str, timeout: float = 2.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Fetch and parse one /metrics page."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - our own endpoint
        return parse_samples(reply.read().decode("utf-8"))


def metrics_url(listen: str, port: int) -> str:
    """Where a process listening at `listen` serves metrics on `port`, dialled from elsewhere."""
    host = split_hostport(listen)[0]
    host = "127.0.0.1" if host in WILDCARDS else host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
