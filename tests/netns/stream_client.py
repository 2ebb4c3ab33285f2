"""Run inside a rig namespace: stream frames to an agent's PostProcess and print the result as JSON.

    python -m tests.netns.stream_client ADDRESS TOKEN [--frames N] [--size WxH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator

import numpy as np

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import frames, wire
from artifex_agent.transport.channel import AgentStub, open_channel


async def stream(address: str, token: str, n: int, w: int, h: int) -> dict[str, object]:
    rng = np.random.default_rng(7)
    clip = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    sender = frames.FrameSender(frames.rgb_header(w, h, n, 8.0))

    async def requests() -> AsyncIterator[bytes]:
        yield wire.encode_spec(pb.PostSpec(output_name="loss", encode=False, upscale=1))
        yield sender.header_message()
        for frame in clip:
            for message in sender.frame_messages(frame):
                yield message
        yield sender.trailer_message()

    channel = open_channel(address)
    t0 = time.perf_counter()
    try:
        # Under the packet loss this test adds, the first TCP/HTTP2 handshake may be lost; gRPC would fail
        # the call at once (UNAVAILABLE) instead of reconnecting. The test is about the stream, so connect first.
        await asyncio.wait_for(channel.channel_ready(), 60)
        result = None
        async for event in AgentStub(channel, token).post_process(requests(), timeout=120):
            if event.HasField("result"):
                result = event.result
    finally:
        await channel.close()
    assert result is not None
    return {"frames": result.frames, "payload_bytes": result.payload_bytes, "sent_bytes": sender.bytes,
            "checksum": sender.trailer().checksum, "seconds": time.perf_counter() - t0}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("address")
    p.add_argument("token")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", default="320x240")
    args = p.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    print(json.dumps(asyncio.run(stream(args.address, args.token, args.frames, w, h))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
