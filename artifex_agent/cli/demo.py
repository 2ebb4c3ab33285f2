"""`artifex-agent demo`: two agents on loopback, a tiny Wan2.2 checkpoint, a real MP4 out."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from artifex_agent.cli.direct import print_result, run_direct
from artifex_agent.cli.jobargs import parse_size, to_messages
from artifex_agent.cli.options import env
from artifex_agent.config import default_home
from artifex_agent.jobspec import JobSpec
from artifex_agent.local_cluster import DEMO_MODEL, LocalCluster


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run the whole pipeline on this machine with a tiny built-in model",
        description="Starts two agents on 127.0.0.1 (one generates, one upscales and encodes), builds a tiny "
                    "random-weight Wan2.2-architecture checkpoint once (offline), and writes an MP4.")
    p.add_argument("--workdir", type=Path, default=env("--workdir", str(default_home() / "demo")),
                   help="where the checkpoint, logs and output go")
    p.add_argument("--prompt", default="a red fox running through snow, cinematic", help="the prompt")
    p.add_argument("--size", type=parse_size, default="64x64", help="WIDTHxHEIGHT of the generated clip")
    p.add_argument("--frames", type=int, default=17, help="frames (4k+1)")
    p.add_argument("--steps", type=int, default=6, help="denoising steps")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=42, help="seed")
    p.add_argument("--upscale", type=int, default=4, help="integer upscale factor")
    # The two codecs every PyAV wheel encodes quickly at the demo's tiny size (of vocabulary.CODECS).
    p.add_argument("--codec", default="h264", choices=["h264", "hevc"], help="video codec of the MP4")
    p.add_argument("--fresh", action="store_true", help="rebuild the checkpoint and start from an empty workdir")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    width, height = args.size
    # Checked before anything starts: a job the model cannot run is refused in a moment, not after the agents.
    job = JobSpec(prompts=[args.prompt], model=DEMO_MODEL, width=width, height=height, frames=args.frames,
                  steps=args.steps, guidance=args.guidance, seed=args.seed, fps=16.0, upscale=args.upscale,
                  codec=args.codec, crf=20, output=f"demo-{time.strftime('%Y%m%d-%H%M%S')}").validate()
    request, spec = to_messages(job)
    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    with LocalCluster(args.workdir, log=print, model=DEMO_MODEL) as cluster:
        print(f"generating on agent 'gen' ({cluster.address('gen')}), post-processing on 'post' "
              f"({cluster.address('post')})")
        result = asyncio.run(run_direct(cluster.config, "gen", "post", request, spec, progress=not args.no_progress))
    print_result(result)
    print(describe_video(Path(result.result.output_paths[0])))
    return 0


def describe_video(path: Path) -> str:
    """Frames, size and codec as a decoder sees them (proof the file is a real video)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return (f"verified with PyAV: {frames} frames {stream.codec_context.width}x{stream.codec_context.height} "
                f"{stream.codec_context.name}, {path.stat().st_size} bytes")
