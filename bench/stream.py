"""bench/stream: frames from a generating agent to a post agent, against raw TCP in the same run.

Agent to agent (the path every job takes, issue 13): two processes. A generating agent (a
real GenerateService whose engine hands it a ready clip, so no denoising is timed) is asked
to Deliver to a post agent (a real `artifex-agent serve`, PostProcess with encoding off:
frames are received, checked against header and trailer, and dropped); this process only
sends the request and reads the result. Baseline: raw TCP sockets between two processes,
the same bytes, timed from connect to the receiver's acknowledgement.

The old three-process figure (Generate stream -> this process relaying -> PostProcess,
bench/relay.py, the path every job took before Deliver) is measured too, against raw TCP over the same three
processes, when the relay still exists. A third figure, grpcio alone (one client stream of
the same bytes between two processes that do nothing else), shows how much of the gap is
grpcio's own. Prints GB/s, ratios and each agent's CPU seconds per GB; `--profile DIR`
writes a cProfile of the generating agent there.

    .venv/bin/python -m bench.stream [--frames 300] [--size 1280x720] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from artifex_agent.local_cluster import write_cluster_toml
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import options
from artifex_agent.transport.channel import AgentStub, open_channel
from bench._common import emit, workdir

RAW_CHUNK = 4 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


# ---------------------------------------------------------------- raw TCP baselines


def _raw_sender(port: int, frame_bytes: int, frames: int) -> None:
    """Send `frames` frames, wait for the receiver's byte, print the seconds from connect to it."""
    frame = bytes(frame_bytes)
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(frames):
            s.sendall(frame)
        s.recv(1)
    print(time.perf_counter() - start, flush=True)


def _raw_receiver(port: int, total: int) -> None:
    srv = socket.create_server(("127.0.0.1", port))
    print("listening", flush=True)
    conn, _ = srv.accept()
    buf = bytearray(RAW_CHUNK)
    got = 0
    while got < total:
        n = conn.recv_into(buf)
        if not n:
            break
        got += n
    conn.sendall(b"k")


def raw_tcp_direct(frame_bytes: int, frames: int) -> float:
    """Sender process -> receiver process over plain sockets (the agent to agent baseline); returns GB/s."""
    total = frame_bytes * frames
    port = _free_port()
    recv = subprocess.Popen([sys.executable, "-c",
                             f"from bench.stream import _raw_receiver; _raw_receiver({port}, {total})"],
                            stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "listening"
    send = subprocess.Popen([sys.executable, "-c",
                             f"from bench.stream import _raw_sender; _raw_sender({port}, {frame_bytes}, {frames})"],
                            stdout=subprocess.PIPE, text=True)
    out, _ = send.communicate()
    recv.wait()
    return total / float(out.strip()) / 1e9


def raw_tcp(frame_bytes: int, frames: int) -> float:
    """Sender -> this process -> receiver over plain sockets (the relay baseline); returns GB/s."""
    total = frame_bytes * frames
    lsock = socket.create_server(("127.0.0.1", 0))
    in_port = lsock.getsockname()[1]
    out_port = _free_port()
    recv = subprocess.Popen([sys.executable, "-c",
                             f"from bench.stream import _raw_receiver; _raw_receiver({out_port}, {total})"],
                            stdout=subprocess.PIPE, text=True)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "listening"
    send = subprocess.Popen([sys.executable, "-c",
                             f"from bench.stream import _raw_sender; _raw_sender({in_port}, {frame_bytes}, {frames})"],
                            stdout=subprocess.DEVNULL)
    conn, _ = lsock.accept()
    # From the sender's connect, not its start: a Python process's imports are no transport.
    start = time.perf_counter()
    out = socket.create_connection(("127.0.0.1", out_port))
    buf = bytearray(RAW_CHUNK)
    view = memoryview(buf)
    moved = 0
    while moved < total:
        n = conn.recv_into(buf)
        if not n:
            break
        out.sendall(view[:n])
        moved += n
    out.recv(1)
    elapsed = time.perf_counter() - start
    conn.sendall(b"k")
    send.wait()
    recv.wait()
    return total / elapsed / 1e9


# ---------------------------------------------------------------- grpcio alone: the ceiling

_BARE_PATH = "/bench.Bare/Push"


def _bare_receiver(port: int) -> None:
    """A gRPC server taking a client stream of raw messages and answering their byte count."""
    import grpc

    async def push(requests: Any, context: Any) -> bytes:
        got = 0
        async for message in requests:
            got += len(message)
        return str(got).encode()

    async def serve() -> None:
        server = grpc.aio.server(options=options.SERVER_OPTIONS)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "bench.Bare", {"Push": grpc.stream_unary_rpc_method_handler(push)})])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("listening", flush=True)
        await server.wait_for_termination()

    options.tune_malloc()
    asyncio.run(serve())


def _bare_sender(port: int, frame_bytes: int, frames: int) -> None:
    """Stream `frames` messages of `frame_bytes`; print the seconds from the call to the answer."""
    import grpc

    async def send() -> float:
        frame = bytes(frame_bytes)

        async def messages() -> Any:
            for _ in range(frames):
                yield frame

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options.CHANNEL_OPTIONS) as channel:
            await channel.channel_ready()
            push = channel.stream_unary(_BARE_PATH)
            await push(messages())  # warm-up
            start = time.perf_counter()
            got = int(await push(messages()))
            elapsed = time.perf_counter() - start
        assert got == frame_bytes * frames
        return elapsed

    options.tune_malloc()
    print(asyncio.run(send()), flush=True)


def bare_grpc(frame_bytes: int, frames: int) -> float:
    """The same bytes as one client stream between two processes doing nothing else; returns GB/s.

    What grpcio itself allows here: no header, trailer, checksum, admission or post stage."""
    port = _free_port()
    recv = subprocess.Popen([sys.executable, "-c", f"from bench.stream import _bare_receiver; _bare_receiver({port})"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None and recv.stdout.readline().strip() == "listening"
        out = subprocess.run([sys.executable, "-c", f"from bench.stream import _bare_sender; "
                              f"_bare_sender({port}, {frame_bytes}, {frames})"],
                             capture_output=True, text=True, check=True).stdout
    finally:
        recv.terminate()
        recv.wait()
    return frame_bytes * frames / float(out.strip()) / 1e9


# ---------------------------------------------------------------- the agents

SENDER = '''
import asyncio, cProfile, signal, sys
import numpy as np
import grpc
from artifex_agent.transport import options
options.tune_malloc() if {tune} else None
from artifex_agent.config import ClusterConfig
from artifex_agent.delivery.deliverer import Deliverer
from artifex_agent.engines.generation import GenerationResult
from artifex_agent.services.activity import Activity
from artifex_agent.services.generate import GenerateService
from artifex_agent.transport import methods

class ReadyClip:
    """Hands the service a clip that is already there: the transport alone is timed."""
    def validate(self, req): pass
    def generate(self, req, on_step=None, cancel=None, on_preview=None):
        frame = np.zeros(({h}, {w}, 3), np.uint8)
        frames = np.broadcast_to(frame, (1, req.num_frames, {h}, {w}, 3))
        return GenerationResult(frames=frames, latents=None, fps=16.0, model="ready", seconds=0.0)

async def main():
    cluster = ClusterConfig.load({config!r})
    cfg, activity, engine = cluster.agent("gen"), Activity(), ReadyClip()
    svc = GenerateService(engine, cfg, activity, chunk_bytes={chunk},
                          deliverer=Deliverer(cfg, cluster, activity, engine, {chunk}))
    server = grpc.aio.server(options=options.SERVER_OPTIONS)
    server.add_generic_rpc_handlers([methods.service_handler(methods.GENERATE.service, svc, methods.AGENT)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)

profile = {profile!r}
if profile:
    cProfile.run("asyncio.run(main())", profile)
else:
    asyncio.run(main())
'''


class Agents:
    """A ready-clip generating agent 'gen' and a real post agent 'post' (encode off), on loopback."""

    def __init__(self, w: int, h: int, frames: int, chunk: int, tune: bool, profile_dir: Path | None,
                 tmp: Path | None = None) -> None:
        from artifex_agent.launcher import start_agent

        tmp = tmp or workdir("stream")
        self.post_address = f"127.0.0.1:{_free_port()}"
        common = {"models_root": str(tmp / "models"), "max_frames": frames, "torch_threads": 1}
        config = write_cluster_toml(tmp / "cluster.toml", {
            "gen": {"listen": "127.0.0.1:0", "output_root": str(tmp / "out-gen"), "hold_s": 0, **common},
            "post": {"listen": self.post_address, "output_root": str(tmp / "out"), **common}},
            network={"chunk_bytes": chunk})
        env = {} if tune else {"ARTIFEX_NO_MALLOC_TUNING": "1"}
        self.post = start_agent(config, "post", tmp, env=env)
        profile = str(profile_dir / "gen.prof") if profile_dir else ""
        self.gen = subprocess.Popen([sys.executable, "-c", SENDER.format(h=h, w=w, chunk=chunk, tune=tune,
                                                                          config=str(config), profile=profile)],
                                    stdout=subprocess.PIPE, text=True)
        assert self.gen.stdout is not None
        self.gen_address = f"127.0.0.1:{int(self.gen.stdout.readline())}"

    def pids(self) -> dict[str, int]:
        assert self.post.proc is not None
        return {"gen": self.gen.pid, "post": self.post.proc.pid}

    def close(self) -> None:
        self.gen.terminate()
        self.gen.wait(30)
        self.post.stop()


async def _deliver(agents: Agents, w: int, h: int, n: int) -> tuple[float, pb.PostResult]:
    """Deliver with encode off from gen to post; seconds from the call to the result."""
    request = pb.DeliverRequest(generate=pb.GenerateRequest(model="ready", prompts=["x"], width=w, height=h,
                                                            num_frames=n), post_agent="post")
    request.deliveries.add(spec=pb.PostSpec(encode=False, upscale=1, output_name="bench"), clips=1)
    async with open_channel(agents.gen_address) as channel:
        await channel.channel_ready()
        start = time.perf_counter()
        result = None
        async for event in AgentStub(channel).deliver(request):
            if event.HasField("result"):
                if event.result.HasField("error"):
                    raise RuntimeError(f"delivery failed: {event.result.error.message}")
                result = event.result.result
        elapsed = time.perf_counter() - start
    assert result is not None
    return elapsed, result


def agent_to_agent(agents: Agents, w: int, h: int, n: int) -> dict[str, float]:
    """GB/s of frame payload from gen to post, and each process's CPU seconds per GB."""
    asyncio.run(_deliver(agents, w, h, min(n, 10)))  # warm-up: connections, first allocations
    cpu0 = {k: _cpu_s(pid) for k, pid in agents.pids().items()}
    elapsed, result = asyncio.run(_deliver(agents, w, h, n))
    gb = w * h * 3 * n / 1e9
    assert result.frames == n and result.payload_bytes == w * h * 3 * n, result
    cpu = {k: (_cpu_s(pid) - cpu0[k]) / gb for k, pid in agents.pids().items()}
    return {"GBps": gb / elapsed, "gen_cpu_s_per_GB": cpu["gen"], "post_cpu_s_per_GB": cpu["post"]}


async def _relay_run(agents: Agents, w: int, h: int, n: int) -> tuple[float, pb.PostResult]:
    from bench.relay import generate_and_post

    gen_ch, post_ch = open_channel(agents.gen_address), open_channel(agents.post_address)
    request = pb.GenerateRequest(model="ready", prompts=["x"], width=w, height=h, num_frames=n)
    spec = pb.PostSpec(encode=False, upscale=1)
    start = time.perf_counter()
    relay = await generate_and_post(AgentStub(gen_ch), AgentStub(post_ch), request, spec)
    elapsed = time.perf_counter() - start
    await gen_ch.close()
    await post_ch.close()
    return elapsed, relay.result


def relay_path(agents: Agents, w: int, h: int, n: int) -> float:
    """Generate stream -> this process (relay.py) -> PostProcess; returns GB/s of frame payload."""
    asyncio.run(_relay_run(agents, w, h, min(n, 10)))  # warm-up
    elapsed, result = asyncio.run(_relay_run(agents, w, h, n))
    assert result.frames == n and result.payload_bytes == w * h * 3 * n
    return w * h * 3 * n / elapsed / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--chunk", type=int, default=options.DEFAULT_CHUNK_BYTES, help="bytes per message")
    parser.add_argument("--repeat", type=int, default=3,
                        help="raw and gRPC runs alternate this many times; the best of each is compared")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="measure without raised malloc thresholds")
    parser.add_argument("--no-relay", action="store_true", help="skip the old three-process relay figure")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="write a cProfile of the generating agent here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    w, h = (int(x) for x in args.size.lower().split("x"))
    n = args.frames
    options.tune_malloc()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    relay_exists = importlib.util.find_spec("bench.relay") is not None and not args.no_relay
    agents = Agents(w, h, n, args.chunk, not args.no_malloc_tuning, args.profile)
    raw2: list[float] = []
    bare: list[float] = []
    a2a: list[dict[str, float]] = []
    raw3: list[float] = []
    relay: list[float] = []
    try:
        for _ in range(args.repeat):
            # Interleaved, so a slow spell of the shared machine hits both sides alike.
            raw2.append(raw_tcp_direct(w * h * 3, n))
            a2a.append(agent_to_agent(agents, w, h, n))
            bare.append(bare_grpc(w * h * 3, n))
            if relay_exists:
                raw3.append(raw_tcp(w * h * 3, n))
                relay.append(relay_path(agents, w, h, n))
    finally:
        agents.close()
    best = max(a2a, key=lambda r: r["GBps"])
    results: dict[str, Any] = {
        "frames": n, "frame_bytes": w * h * 3, "chunk_bytes": args.chunk, "malloc_tuning": not args.no_malloc_tuning,
        "repeat": args.repeat,
        "raw_tcp_2proc_GBps": max(raw2), "agent_to_agent_GBps": best["GBps"],
        "agent_to_agent_ratio_vs_raw_tcp": best["GBps"] / max(raw2),
        "agent_to_agent_runs_GBps": [round(r["GBps"], 3) for r in a2a],
        "raw_tcp_2proc_runs_GBps": [round(r, 3) for r in raw2],
        "gen_cpu_s_per_GB": best["gen_cpu_s_per_GB"], "post_cpu_s_per_GB": best["post_cpu_s_per_GB"],
        # grpcio alone between two processes: the most any gRPC path could reach here.
        "bare_grpc_2proc_GBps": max(bare), "bare_grpc_ratio_vs_raw_tcp": max(bare) / max(raw2),
        "agent_to_agent_vs_bare_grpc": best["GBps"] / max(bare),
    }
    if relay_exists:
        results.update({"raw_tcp_3proc_GBps": max(raw3), "relay_3proc_GBps": max(relay),
                        "relay_ratio_vs_raw_tcp": max(relay) / max(raw3)})
    else:
        results["relay_3proc"] = "relay.py is gone: no three-process figure"
    if args.profile:
        results["profile"] = str(args.profile / "gen.prof")
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
