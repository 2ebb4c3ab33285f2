"""bench/hostile: hostile PostProcess streams against a real agent; its RSS and a legit job's latency.

The load is the attack run of issue 10. Phase "few-bytes" opens 50 streams of four kinds and
keeps them open: a spec, a header announcing an 8K frame and one byte of it; an 8x upscale of
1024x1024 frames; a spec and nothing more; a spec and a header and nothing more. Phase "park"
opens 50 streams that each try to park 48 MiB of an 8K frame (the agent-wide stream memory
budget refuses the ones past it). A legit job (24 frames, 320x180 upscaled 2x, H.264) runs
before the load (the baseline), under each phase and right after. Prints the agent's RSS
(VmRSS, the peak sampled during each load), how each kind of stream was answered, and the
latency ratio. The agent runs with its default limits. "INTERNAL" in the outcomes is the
gRPC aio client's report of a refusal that met it mid-write; the agent refused those too.

    .venv/bin/python -m bench.hostile [--streams 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from artifex_agent.config import AgentConfig
from artifex_agent.launcher import ChildProcess, start_agent, wait_serving
from artifex_agent.local_cluster import write_cluster_toml
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import frames, wire
from artifex_agent.transport.channel import AgentStub, open_channel
from bench._common import emit, workdir

MiB = 1 << 20
# A 7680x4320 RGB frame: 99.5 MB announced; the receiver must not reserve it for one byte.
BIG = (7680, 4320)
PARK_BYTES = 48 * MiB
PARK_CHUNK = 4 * MiB


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (VmRSS), Linux only."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def peak_rss_mb(pid: int, seconds: float) -> float:
    """The highest RSS of `pid` seen over `seconds` (sampled every 50 ms) while the load goes on."""
    peak = rss_mb(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        peak = max(peak, rss_mb(pid))
    return peak


def start_post_agent(tmp: Path, **agent: Any) -> ChildProcess:
    """A real `artifex-agent serve` for post-processing on 127.0.0.1, serving; `agent` overrides its table."""
    cfg = write_cluster_toml(tmp / "hostile.toml", {"post": {
        "listen": "127.0.0.1:0", "output_root": str(tmp / "out"), "models_root": str(tmp / "models"),
        "torch_threads": 1, **agent}})
    child = start_agent(cfg, "post", tmp)
    asyncio.run(wait_serving(f"127.0.0.1:{child.port}"))
    return child


def hostile_messages(kind: str, i: int) -> list[bytes]:
    """The messages one hostile stream of `kind` sends before it stalls."""
    spec = wire.encode_spec(pb.PostSpec(output_name=f"hostile-{kind}/{i}", encode=True,
                                        upscale=8 if kind == "upscale-bomb" else 1))
    if kind == "idle-spec":
        return [spec]
    if kind == "upscale-bomb":
        # 12 MiB of frames that would come out as four 8192x8192 frames.
        sender = frames.FrameSender(frames.rgb_header(1024, 1024, 4, 16.0))
        frame = np.zeros((1024, 1024, 3), np.uint8)
        return [spec, sender.header_message(), *[m for _ in range(4) for m in sender.frame_messages(frame)]]
    header = wire.encode_header(frames.rgb_header(*BIG, 1, 16.0))
    if kind == "idle-header":
        return [spec, header]
    if kind == "few-bytes":
        return [spec, header, wire.encode_chunk(b"\x00")]
    if kind == "park":
        chunk = wire.encode_chunk(bytes(PARK_CHUNK))
        return [spec, header, *[chunk] * (PARK_BYTES // PARK_CHUNK)]
    raise ValueError(kind)


class Hostile:
    """Hostile streams kept open until close(); `outcomes` counts how the agent answered each kind."""

    def __init__(self, stubs: list[AgentStub]) -> None:
        self.stubs = stubs
        self.release = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.details: dict[str, str] = {}

    def open(self, kind: str, count: int) -> None:
        for _ in range(count):
            i = len(self.tasks)
            self.tasks.append(asyncio.ensure_future(self._one(self.stubs[i % len(self.stubs)], kind, i)))

    async def _one(self, stub: AgentStub, kind: str, i: int) -> None:
        release = self.release

        async def requests() -> AsyncIterator[bytes]:
            for m in hostile_messages(kind, i):
                yield m
            await release.wait()

        call = stub.post_process(requests())
        try:
            async for _ in call:
                pass
            self.outcomes[kind]["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            if release.is_set():
                self.outcomes[kind]["held"] += 1  # the agent still had it open when we let go
            else:
                self.outcomes[kind][exc.code().name] += 1
                self.details.setdefault(f"{kind}:{exc.code().name}", exc.details() or "")
        finally:
            call.cancel()

    async def close(self) -> dict[str, dict[str, int]]:
        """End every stream (the agent drops them as truncated); returns the outcomes by kind."""
        self.release.set()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=30)
        return {kind: dict(c) for kind, c in self.outcomes.items()}


def legit_messages(name: str, n: int = 24, w: int = 320, h: int = 180, upscale: int = 2) -> list[bytes]:
    """A real post job: spec, header, frames, trailer."""
    rng = np.random.default_rng(7)
    sender = frames.FrameSender(frames.rgb_header(w, h, n, 16.0))
    out = [wire.encode_spec(pb.PostSpec(output_name=name, encode=True, upscale=upscale, video_codec=pb.CODEC_H264)),
           sender.header_message()]
    for _ in range(n):
        out += list(sender.frame_messages(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
    return [*out, sender.trailer_message()]


async def legit_job(stub: AgentStub, name: str, timeout: float = 60.0) -> tuple[float, pb.PostResult]:
    """Run one legit job; returns (seconds, result); raises AioRpcError when refused."""
    messages = legit_messages(name)

    async def requests() -> AsyncIterator[bytes]:
        for m in messages:
            yield m

    start = time.perf_counter()
    result = None
    async for event in stub.post_process(requests(), timeout=timeout):
        if event.HasField("result"):
            result = event.result
    if result is None:
        raise RuntimeError("post stream ended without a result")
    return time.perf_counter() - start, result


async def _median_job(stub: AgentStub, label: str, runs: int) -> float:
    times = [(await legit_job(stub, f"legit/{label}-{i}"))[0] for i in range(runs)]
    return statistics.median(times)


async def run(address: str, pid: int, streams: int, runs: int) -> dict[str, Any]:
    channels = [open_channel(address) for _ in range(5)]
    stubs = [AgentStub(ch) for ch in channels]
    defaults = AgentConfig()
    out: dict[str, Any] = {"streams": streams, "max_streams": defaults.max_streams,
                           "stream_memory_mib": defaults.stream_memory_mib}
    try:
        await legit_job(stubs[0], "legit/warm-up")
        out["rss_before_mb"] = rss_mb(pid)
        out["legit_baseline_s"] = await _median_job(stubs[0], "baseline", runs)

        load = Hostile(stubs)
        per_kind = streams // 4
        for kind in ("few-bytes", "upscale-bomb", "idle-spec", "idle-header"):
            load.open(kind, per_kind if kind != "idle-header" else streams - 3 * per_kind)
        out["rss_few_bytes_load_mb"] = await peak_rss_mb(pid, 1.0)
        out["rss_rise_few_bytes_mb"] = out["rss_few_bytes_load_mb"] - out["rss_before_mb"]
        out["legit_under_few_bytes_load_s"] = await _median_job(stubs[0], "few-bytes", runs)
        out["ratio_under_few_bytes_load"] = out["legit_under_few_bytes_load_s"] / out["legit_baseline_s"]
        out["few_bytes_outcomes"] = await load.close()

        park = Hostile(stubs)
        park.open("park", streams)
        out["rss_park_load_mb"] = await peak_rss_mb(pid, 3.0)
        out["rss_rise_park_mb"] = out["rss_park_load_mb"] - out["rss_before_mb"]
        try:
            out["legit_under_park_load_s"] = (await legit_job(stubs[0], "legit/park"))[0]
        except grpc.aio.AioRpcError as exc:
            out["legit_under_park_load_s"] = f"{exc.code().name}: {exc.details()}"
        out["park_outcomes"] = await park.close()
        out["park_refusals"] = park.details
        await asyncio.sleep(0.5)
        seconds, result = await legit_job(stubs[0], "legit/after")
        out["legit_after_s"] = seconds
        out["legit_after_frames"] = result.frames
        # glibc keeps what was freed (transport/options.tune_malloc), so this is the high-water mark.
        out["rss_after_mb"] = rss_mb(pid)
    finally:
        for ch in channels:
            await ch.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=50, help="hostile streams per phase")
    parser.add_argument("--runs", type=int, default=3, help="legit jobs per latency figure (median)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = workdir("hostile")
    agent = start_post_agent(tmp)
    try:
        results = asyncio.run(run(f"127.0.0.1:{agent.port}", agent.proc.pid, args.streams, args.runs))  # type: ignore[union-attr]
    finally:
        agent.stop()
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
