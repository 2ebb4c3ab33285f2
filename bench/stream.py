"""bench/stream: frames through the real Generate -> relay -> PostProcess path vs raw TCP on the same path.

Three processes in both runs: a sender (a real GenerateService whose engine hands it a
ready clip, so no denoising is timed), this process relaying, and a receiver (a real
`artifex-agent serve`, PostProcess with encoding off: frames are received, checked
against header and trailer, and dropped). The raw TCP baseline moves the same bytes
sender -> relay -> receiver with plain sockets. Prints GB/s for both and the ratio.

    .venv/bin/python -m bench.stream [--frames 300] [--size 1280x720] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time

from artifex_agent.local_cluster import write_cluster_toml
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import options
from artifex_agent.transport.channel import AgentStub, open_channel
from bench._common import emit, workdir

RAW_CHUNK = 4 << 20


def _raw_sender(port: int, frame_bytes: int, frames: int) -> None:
    frame = bytes(frame_bytes)
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(frames):
            s.sendall(frame)


def _raw_receiver(port: int, total: int) -> None:
    srv = socket.create_server(("127.0.0.1", port))
    conn, _ = srv.accept()
    buf = bytearray(RAW_CHUNK)
    got = 0
    while got < total:
        n = conn.recv_into(buf)
        if not n:
            break
        got += n
    conn.sendall(b"k")


def raw_tcp(frame_bytes: int, frames: int) -> float:
    """Sender -> this process -> receiver over plain sockets; returns GB/s."""
    total = frame_bytes * frames
    lsock = socket.create_server(("127.0.0.1", 0))
    in_port = lsock.getsockname()[1]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    out_port = probe.getsockname()[1]
    probe.close()
    recv = subprocess.Popen([sys.executable, "-c",
                             f"from bench.stream import _raw_receiver; _raw_receiver({out_port}, {total})"])
    time.sleep(0.5)
    start = time.perf_counter()
    send = subprocess.Popen([sys.executable, "-c",
                             f"from bench.stream import _raw_sender; _raw_sender({in_port}, {frame_bytes}, {frames})"])
    conn, _ = lsock.accept()
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
    send.wait()
    recv.wait()
    return total / elapsed / 1e9


SENDER = '''
import asyncio, sys
import numpy as np
import grpc
from artifex_agent.transport import options
options.tune_malloc() if {tune} else None
from artifex_agent.config import AgentConfig
from artifex_agent.engines.generation import GenerationResult
from artifex_agent.services.activity import Activity
from artifex_agent.services.generate import GenerateService
from artifex_agent.transport.methods import GENERATE

class ReadyClip:
    """Hands the service a clip that is already there: the transport alone is timed."""
    def validate(self, req): pass
    def generate(self, req, on_step=None, cancel=None):
        frame = np.zeros(({h}, {w}, 3), np.uint8)
        frames = np.broadcast_to(frame, (1, {n}, {h}, {w}, 3))
        return GenerationResult(frames=frames, latents=None, fps=16.0, model="ready", seconds=0.0)

async def main():
    svc = GenerateService(ReadyClip(), AgentConfig(), Activity(), chunk_bytes={chunk})
    server = grpc.aio.server(options=options.SERVER_OPTIONS)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(GENERATE.service, {{
        GENERATE.method: GENERATE.handler(svc.Generate)}})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()
asyncio.run(main())
'''


async def _grpc_run(sender_port: int, post_address: str, w: int, h: int, n: int) -> tuple[float, pb.PostResult]:
    from artifex_agent.relay import generate_and_post

    gen_ch, post_ch = open_channel(f"127.0.0.1:{sender_port}"), open_channel(post_address)
    request = pb.GenerateRequest(model="ready", prompts=["x"], width=w, height=h, num_frames=n)
    spec = pb.PostSpec(encode=False, upscale=1)
    start = time.perf_counter()
    relay = await generate_and_post(AgentStub(gen_ch), AgentStub(post_ch), request, spec)
    elapsed = time.perf_counter() - start
    await gen_ch.close()
    await post_ch.close()
    return elapsed, relay.result


def grpc_path(w: int, h: int, n: int, chunk: int, tune: bool) -> float:
    """Generate stream -> relay -> PostProcess; returns GB/s of frame payload."""
    from artifex_agent.launcher import start_agent

    tmp = workdir("stream")
    cfg = write_cluster_toml(tmp / "cluster.toml", {"post": {"listen": "127.0.0.1:0", "output_root": str(tmp / "out"),
                                                             "models_root": str(tmp / "models"),
                                                             "max_frames": n, "torch_threads": 1}},
                             network={"chunk_bytes": chunk})
    env = {} if tune else {"ARTIFEX_NO_MALLOC_TUNING": "1"}
    post = start_agent(cfg, "post", tmp, env=env)
    sender = subprocess.Popen([sys.executable, "-c", SENDER.format(h=h, w=w, n=n, chunk=chunk, tune=tune)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(sender.stdout.readline())  # type: ignore[union-attr]
        asyncio.run(_grpc_run(port, f"127.0.0.1:{post.port}", w, h, min(n, 10)))  # warm-up
        elapsed, result = asyncio.run(_grpc_run(port, f"127.0.0.1:{post.port}", w, h, n))
        assert result.frames == n and result.payload_bytes == w * h * 3 * n
        return w * h * 3 * n / elapsed / 1e9
    finally:
        sender.terminate()
        post.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--chunk", type=int, default=options.DEFAULT_CHUNK_BYTES, help="bytes per message")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="measure without raised malloc thresholds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    w, h = (int(x) for x in args.size.lower().split("x"))
    options.tune_malloc()
    raw = raw_tcp(w * h * 3, args.frames)
    ours = grpc_path(w, h, args.frames, args.chunk, not args.no_malloc_tuning)
    emit({"frames": args.frames, "frame_bytes": w * h * 3, "chunk_bytes": args.chunk,
          "malloc_tuning": not args.no_malloc_tuning, "raw_tcp_GBps": raw, "grpc_GBps": ours,
          "ratio_vs_raw_tcp": ours / raw}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
