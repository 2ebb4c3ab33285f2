"""Prometheus metrics of one process (agent or coordinator) and the HTTP endpoint serving them.

Each process owns a private registry rather than prometheus_client's global one, so tests and
a process hosting several components never see each other's series.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
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
WILDCARDS = ("", "0.0.0.0", "::", "*")


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


class Metrics:
    """The series every artifex process exports; the coordinator adds queue depth."""

    def __init__(self, component: str, name: str = "", *, activity: Activity | None = None,
                 gpu: bool = False) -> None:
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
