"""The halves of bench/link that run inside a rig namespace; each prints one JSON line.

    python -m bench._netprobe tcp-sink PORT
    python -m bench._netprobe tcp-source HOST PORT SECONDS
    python -m bench._netprobe tcp-echo PORT
    python -m bench._netprobe tcp-pingpong HOST PORT COUNT
    python -m bench._netprobe grpc ADDRESS TOKEN SECONDS COUNT
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from typing import Any

BUF = 4 << 20
PING = 64


def _out(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


def tcp_sink(port: int) -> None:
    """Accept one connection, count bytes until EOF; the receiver's view is the honest one."""
    srv = socket.create_server(("0.0.0.0", port))
    print(json.dumps({"ready": True}), flush=True)
    conn, _ = srv.accept()
    buf = bytearray(BUF)
    got = 0
    start = 0.0
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        if not start:
            start = time.perf_counter()
        got += n
    elapsed = time.perf_counter() - start
    _out({"bytes": got, "seconds": elapsed, "gbit": got * 8 / elapsed / 1e9})


def tcp_source(host: str, port: int, seconds: float) -> None:
    data = memoryview(bytes(BUF))
    with socket.create_connection((host, port)) as s:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            s.sendall(data)
    _out({"sent": True})


def tcp_echo(port: int) -> None:
    srv = socket.create_server(("0.0.0.0", port))
    print(json.dumps({"ready": True}), flush=True)
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        data = conn.recv(PING)
        if not data:
            return
        conn.sendall(data)


def tcp_pingpong(host: str, port: int, count: int) -> None:
    from artifex_agent.health.link import percentile

    msg = bytes(PING)
    samples = []
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count + 50):
            t0 = time.perf_counter()
            s.sendall(msg)
            got = 0
            while got < PING:
                got += len(s.recv(PING - got))
            if i >= 50:
                samples.append((time.perf_counter() - t0) * 1000)
    _out({"p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)})


async def _grpc(address: str, token: str, seconds: float, count: int) -> dict[str, Any]:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from artifex_agent.health.link import measure_download, measure_rtt, measure_upload, percentile
    from artifex_agent.transport.channel import AgentStub, open_channel

    channel = open_channel(address)
    stub = AgentStub(channel, token)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        samples = []
        for i in range(count + 50):
            t0 = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest(), metadata=stub.metadata, timeout=5)
            if i >= 50:
                samples.append((time.perf_counter() - t0) * 1000)
        stream = await measure_rtt(stub, count)
        result: dict[str, Any] = {"unary_p50_ms": percentile(samples, 50), "unary_p99_ms": percentile(samples, 99),
                                  "stream_p50_ms": stream.p50_ms, "stream_p99_ms": stream.p99_ms}
        if seconds:
            down = await measure_download(stub, seconds)
            up = await measure_upload(stub, seconds)
            result |= {"download_gbit": down.gbit, "upload_gbit": up.gbit, "download_cpu": down.cpu,
                       "upload_cpu": up.cpu, "system_cpu": max(down.system_cpu, up.system_cpu)}
        return result
    finally:
        await channel.close()


def main(argv: list[str]) -> int:
    role, args = argv[0], argv[1:]
    if role == "tcp-sink":
        tcp_sink(int(args[0]))
    elif role == "tcp-source":
        tcp_source(args[0], int(args[1]), float(args[2]))
    elif role == "tcp-echo":
        tcp_echo(int(args[0]))
    elif role == "tcp-pingpong":
        tcp_pingpong(args[0], int(args[1]), int(args[2]))
    elif role == "grpc":
        _out(asyncio.run(_grpc(args[0], args[1], float(args[2]), int(args[3]))))
    else:
        raise SystemExit(f"unknown role {role!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
