"""Link measurements over the agent's own streams: RTT on one open Echo stream, streaming
bandwidth both ways, clock offset. Used by `health` (from this process) and by an agent's
Diagnostics.Probe (from the agent to its peer), so both sides measure the same way."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import psutil

from artifex_agent.config import SecurityConfig
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import options, wire
from artifex_agent.transport.channel import AgentStub, open_channel
from artifex_agent.transport.diagnose import explain

logger = logging.getLogger(__name__)

# Ping-pongs before timing starts: the first ones pay for HTTP/2 window updates and caches.
RTT_WARMUP = 20
# Seconds streamed before counting: TCP slow start and the first allocations.
BANDWIDTH_WARMUP_S = 0.3
# Ask Download for more than any measurement needs; the client cancels when time is up.
_DOWNLOAD_ASK = 64 << 30


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Rtt:
    """Round trips on one open stream, and the peer's clock offset from the fastest one."""

    p50_ms: float
    p99_ms: float
    min_ms: float
    count: int
    # Peer clock minus ours (NTP-style, from the fastest round trip) and its uncertainty.
    clock_offset_s: float
    clock_uncertainty_s: float


@dataclass
class Throughput:
    """Payload streamed in one direction."""

    gbit: float
    bytes: int
    seconds: float
    # Share of one core this process used meanwhile (all threads): near 1.0 means CPU-bound.
    cpu: float
    # How busy all of this machine's cores were (0..1): near 1.0, something else competed.
    system_cpu: float = 0.0


class _CpuMeter:
    """This process's CPU seconds and the machine's busy share between start() and stop()."""

    def start(self) -> None:
        self.t0, self.cpu0, self.sys0 = time.perf_counter(), time.process_time(), psutil.cpu_times()

    def stop(self) -> tuple[float, float]:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        now = psutil.cpu_times()
        total = sum(now) - sum(self.sys0)
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (self.sys0.idle + getattr(self.sys0, "iowait", 0.0))
        return (time.process_time() - self.cpu0) / wall, (1.0 - idle / total) if total > 0 else 0.0


async def measure_rtt(stub: AgentStub, count: int = 500, *, timeout: float = 10.0) -> Rtt:
    """Ping-pong `count` small messages on one Echo stream (the way agents keep theirs open)."""
    call = stub.echo(timeout=timeout)
    samples: list[float] = []
    best = (math.inf, 0.0, 0.0)  # (rtt, our midpoint, peer time)
    try:
        for seq in range(RTT_WARMUP + count):
            sent = time.time()
            t0 = time.perf_counter()
            await call.write(pb.EchoMessage(seq=seq, sent_unix=sent))
            reply = await call.read()
            rtt = time.perf_counter() - t0
            if reply is grpc.aio.EOF:
                raise ConnectionError("the agent closed the echo stream")
            if seq < RTT_WARMUP:
                continue
            samples.append(rtt)
            if rtt < best[0] and reply.reply_unix:
                best = (rtt, sent + rtt / 2, reply.reply_unix)
        await call.done_writing()
    finally:
        call.cancel()
    ms = [s * 1000 for s in samples]
    offset = best[2] - best[1] if best[2] else math.nan
    return Rtt(p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99), min_ms=min(ms), count=len(ms),
               clock_offset_s=offset, clock_uncertainty_s=best[0] / 2)


async def measure_download(stub: AgentStub, seconds: float, *, chunk_bytes: int = 0,
                           timeout: float | None = None) -> Throughput:
    """Agent -> this process for `seconds` (after a warm-up), over the raw-bytes Download stream."""
    options.tune_malloc()
    chunk = chunk_bytes or options.DEFAULT_CHUNK_BYTES
    call = stub.download(_DOWNLOAD_ASK, chunk, timeout=timeout or seconds + 30)
    start = time.perf_counter()
    mark = 0.0
    meter = _CpuMeter()
    got = 0
    now = start
    try:
        async for raw in call:
            now = time.perf_counter()
            if not mark:
                if now - start >= BANDWIDTH_WARMUP_S:
                    mark = now
                    meter.start()
                continue
            got += wire.bandwidth_payload_size(raw)
            if now - mark >= seconds:
                break
    finally:
        call.cancel()
    if not mark:
        raise ConnectionError("the download stream ended during warm-up")
    elapsed = max(now - mark, 1e-9)
    cpu, system_cpu = meter.stop()
    return Throughput(gbit=got * 8 / elapsed / 1e9, bytes=got, seconds=elapsed, cpu=cpu, system_cpu=system_cpu)


async def measure_upload(stub: AgentStub, seconds: float, *, chunk_bytes: int = 0,
                         timeout: float | None = None) -> Throughput:
    """This process -> agent for `seconds`; the agent times what it received."""
    options.tune_malloc()
    message = wire.encode_bandwidth_chunk(bytes(chunk_bytes or options.DEFAULT_CHUNK_BYTES))
    total_s = BANDWIDTH_WARMUP_S + seconds

    async def chunks() -> AsyncIterator[bytes]:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < total_s:
            yield message

    meter = _CpuMeter()
    meter.start()
    result: pb.BandwidthResult = await stub.upload(chunks(), timeout=timeout or total_s + 30)
    cpu, system_cpu = meter.stop()
    secs = max(result.seconds, 1e-9)
    return Throughput(gbit=result.bytes * 8 / secs / 1e9, bytes=result.bytes, seconds=secs, cpu=cpu,
                      system_cpu=system_cpu)


async def describe_failure(exc: grpc.aio.AioRpcError, address: str, security: SecurityConfig,
                           deadline_s: float | None = None, who: str = "the agent") -> str:
    """describe_rpc_error, but a TLS or token mistake named as such (a TLS probe runs off the event loop)."""
    named = await asyncio.to_thread(explain, exc, address, security, who)
    return named or describe_rpc_error(exc, address, deadline_s)


def describe_rpc_error(exc: grpc.aio.AioRpcError, address: str, deadline_s: float | None = None) -> str:
    """A one-line reason an agent did not answer, without gRPC's internals."""
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from {address} within {deadline_s:.1f} s" if deadline_s else f"{address} timed out"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"{address} refused the token: {exc.details()}"
    details = (exc.details() or code.name).splitlines()[0]
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach {address}: {short_reason(details)}"
    return f"{address}: {code.name}: {details}"


def short_reason(details: str) -> str:
    """The OS's reason at the end of gRPC's connect error ("... remote host: Connection refused")."""
    # gRPC prefixes it with "failed to connect to all addresses; last error: UNKNOWN: ipv4:...:".
    reason = details.rsplit(": ", 1)[-1].strip() or details
    return reason[0].lower() + reason[1:] if reason[:1].isupper() and reason[1:2].islower() else reason


async def probe_peer(request: pb.ProbeRequest, security: SecurityConfig, token: str) -> pb.ProbeResult:
    """Measure the link from this process to the agent at request.address (Diagnostics.Probe)."""
    address = request.address
    result = pb.ProbeResult(address=address)
    timeout = request.timeout_s or 30.0
    deadline = time.monotonic() + timeout
    channel = open_channel(address, security)
    stub = AgentStub(channel, token)
    try:
        if request.echo_count:
            rtt = await measure_rtt(stub, request.echo_count, timeout=timeout)
            result.rtt_p50_ms, result.rtt_p99_ms = rtt.p50_ms, rtt.p99_ms
            if not math.isnan(rtt.clock_offset_s):
                result.clock_offset_s, result.clock_uncertainty_s = rtt.clock_offset_s, rtt.clock_uncertainty_s
        if request.bandwidth_seconds:
            left = max(deadline - time.monotonic(), 1.0)
            down = await measure_download(stub, request.bandwidth_seconds, timeout=left)
            left = max(deadline - time.monotonic(), 1.0)
            up = await measure_upload(stub, request.bandwidth_seconds, timeout=left)
            result.download_gbit, result.download_cpu, result.download_system_cpu = down.gbit, down.cpu, down.system_cpu
            result.upload_gbit, result.upload_cpu, result.upload_system_cpu = up.gbit, up.cpu, up.system_cpu
        result.reachable = True
    except grpc.aio.AioRpcError as exc:
        result.error = await describe_failure(exc, address, security, timeout)
    except ConnectionError as exc:
        result.error = f"{address}: {exc}"
    finally:
        await channel.close()
    return result
