"""bench/pipeline: the demo pipeline's time per stage and each agent's peak memory, short vs long clip.

Each clip length runs in a fresh pair of agents (peak RSS is per process lifetime):
generate on `gen`, stream to `post`, upscale 4x and encode. The post agent's peak RSS
must not grow with clip length (goal: 809 frames (the 4k+1 nearest 810) within 20% of 81), because it
holds a few frames plus the encoder, never the clip.

    .venv/bin/python -m bench.pipeline [--frames 81 809] [--size 64x64] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel
from bench._common import emit, workdir
from bench.relay import generate_and_post


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a live process (VmHWM on Linux, peak working set on Windows)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil

    info = psutil.Process(pid).memory_info()
    return getattr(info, "peak_wset", info.rss) / 2**20


async def _run(cluster: LocalCluster, frames: int, w: int, h: int, upscale: int, steps: int) -> dict[str, float]:
    gen, post = open_channel(cluster.address("gen")), open_channel(cluster.address("post"))
    request = pb.GenerateRequest(model=cluster.model, prompts=["bench"], width=w, height=h, num_frames=frames,
                                 steps=steps, guidance_scale=3.0, seed=1, fps=16)
    spec = pb.PostSpec(output_name=f"bench-{frames}", upscale=upscale, video_codec=pb.CODEC_H264, crf=23, encode=True)
    t0 = time.perf_counter()
    r = await generate_and_post(AgentStub(gen), AgentStub(post), request, spec)
    total = time.perf_counter() - t0
    await gen.close()
    await post.close()
    return {"total_s": total, "generate_s": r.generate_s, "stream_and_post_s": total - r.generate_s,
            "upscale_s": r.result.upscale_s, "encode_s": r.result.encode_s, "output_bytes": r.result.output_bytes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[81, 809])
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--upscale", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    w, h = (int(x) for x in args.size.lower().split("x"))
    results: dict[str, object] = {"size": args.size, "upscale": args.upscale, "steps": args.steps}
    peaks: dict[int, float] = {}
    for n in args.frames:
        agents = {"gen": {"prefer": ["generate"], "max_frames": max(args.frames)},
                  "post": {"prefer": ["post"], "max_frames": max(args.frames)}}
        with LocalCluster(workdir("pipeline"), agents=agents) as cluster:
            stages = asyncio.run(_run(cluster, n, w, h, args.upscale, steps=args.steps))
            gen_pid = cluster.children["gen"].proc.pid  # type: ignore[union-attr]
            post_pid = cluster.children["post"].proc.pid  # type: ignore[union-attr]
            peaks[n] = peak_rss_mb(post_pid)
            results.update({f"{n}f_{k}": v for k, v in stages.items()})
            results[f"{n}f_gen_peak_rss_MB"] = peak_rss_mb(gen_pid)
            results[f"{n}f_post_peak_rss_MB"] = peaks[n]
    if len(args.frames) >= 2:
        first, last = args.frames[0], args.frames[-1]
        results["post_peak_rss_growth"] = peaks[last] / peaks[first] - 1.0
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
