"""The job flags `submit` and `demo` share, and their translation to wire messages."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from artifex_agent.cli.options import env
from artifex_agent.errors import RequestError
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 1280x720")
    return int(m.group(1)), int(m.group(2))


def add_job_arguments(p: argparse.ArgumentParser, *, model_default: str = "wan2.2-t2v-a14b") -> None:
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="one clip per prompt")
    p.add_argument("--model", default=env("--model", model_default), help="model folder name under models_root")
    p.add_argument("--size", default=env("--size", "1280x720"), type=parse_size, help="WIDTHxHEIGHT")
    p.add_argument("--frames", default=env("--frames", 81), type=int, help="frames (4k+1, e.g. 81)")
    p.add_argument("--steps", default=env("--steps", 40), type=int, help="denoising steps")
    p.add_argument("--guidance", default=env("--guidance", 4.0), type=float, help="classifier-free guidance scale")
    p.add_argument("--guidance-2", default=env("--guidance-2", 0.0), type=float,
                   help="guidance of the low-noise expert (0: same)")
    p.add_argument("--negative", default=env("--negative", ""), help="negative prompt")
    p.add_argument("--seed", default=env("--seed", -1), type=int, help="seed (-1: from the clock)")
    p.add_argument("--fps", default=env("--fps", 16.0), type=float, help="frames per second of the output")
    p.add_argument("--image", type=Path, default=env("--image"), help="i2v: first frame (PNG/JPEG) to send")
    p.add_argument("--upscale", default=env("--upscale", 1), type=int, help="integer upscale factor")
    p.add_argument("--upscale-model", default=env("--upscale-model", ""),
                   help="upscale model file under models_root/upscale (default: plain resampler)")
    p.add_argument("--codec", default=env("--codec", "h264"), choices=["h264", "hevc", "h265", "av1", "vp9"])
    p.add_argument("--crf", default=env("--crf", 18), type=int)
    p.add_argument("--preset", default=env("--preset", ""))
    p.add_argument("--encoder", default=env("--encoder", "auto"), choices=["auto", "software", "nvenc"])
    p.add_argument("--output", default=env("--output", ""), help="output name under the post agent's output_root")


def to_messages(args: argparse.Namespace) -> tuple[pb.GenerateRequest, pb.PostSpec]:
    """The GenerateRequest and PostSpec that the flags describe."""
    width, height = args.size
    image = b""
    if args.image is not None:
        try:
            image = Path(args.image).read_bytes()
        except OSError as exc:
            raise RequestError(f"cannot read image {args.image}: {exc.strerror}") from None
    seed = args.seed if args.seed >= 0 else int(time.time()) & 0x7FFFFFFF
    request = pb.GenerateRequest(
        model=args.model, task=pb.TASK_I2V if image else pb.TASK_T2V, prompts=args.prompts,
        negative_prompt=args.negative, width=width, height=height, num_frames=args.frames, steps=args.steps,
        guidance_scale=args.guidance, guidance_scale_2=args.guidance_2, seed=seed, fps=args.fps, image=image,
        output=pb.PAYLOAD_KIND_RGB24)
    name = args.output or f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(args.prompts[0])}"
    spec = pb.PostSpec(output_name=name, upscale=args.upscale, upscale_model=args.upscale_model, codec=args.codec,
                       crf=args.crf, preset=args.preset, fps=args.fps, encoder=args.encoder, encode=True,
                       split_clips=len(args.prompts) > 1)
    return request, spec


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40].lower() or "clip"
