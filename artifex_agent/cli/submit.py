"""`artifex-agent submit`: queue a job at the coordinator (the default), or run it straight on two agents.

With --generate-on/--post-on the job bypasses the coordinator: generated on one agent and
post-processed on another, the frames going from agent to agent (Deliver; no queue, no retry, no cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from artifex_agent.cli.direct import print_result, run_direct, run_split
from artifex_agent.cli.jobargs import add_job_arguments, job_fields, to_messages
from artifex_agent.cli.jobview import follow, job_dict, print_job
from artifex_agent.cli.options import add_config, env
from artifex_agent.cli.preview_file import PreviewFile
from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ExitCode, RequestError
from artifex_agent.jobspec import MAX_IMAGE_BYTES, JobSpec
from artifex_agent.presets import resolve
from artifex_agent.vocabulary import DECODE_ON, SPLITS

# The CLI's preview cadence once --preview asks for one (the web form's default is the same).
PREVIEW_EVERY = 5


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "submit", help="queue a job at the coordinator (prints its id), or run it directly on two agents",
        description="Queues one job at the coordinator and prints its id at once; --wait follows it to the end. "
                    "With --generate-on/--post-on it runs directly on those agents instead.")
    add_config(p)
    add_job_arguments(p)
    p.add_argument("--wait", action="store_true", default=env("--wait", False),
                   help="follow the job with progress bars until it ends; exit 1 if it fails")
    p.add_argument("--preview", type=Path, metavar="PATH", default=env("--preview"),
                   help="with --wait: keep the job's newest live preview at PATH, an animated WebP replaced whole "
                        "as each arrives (docs/previews.md)")
    p.add_argument("--preview-every", type=int, metavar="N", default=env("--preview-every"),
                   help=f"a live preview every N denoising steps; 0: none (default: {PREVIEW_EVERY} with --preview, "
                        "else 0)")
    p.add_argument("--priority", type=int, default=env("--priority", 0), help="higher runs first")
    p.add_argument("--idempotency-key", default=env("--idempotency-key", ""),
                   help="resending with the same key gives the same job, never a second one")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.add_argument("--generate-on", default=env("--generate-on"),
                   help="direct mode: the agent that generates (bypasses the coordinator)")
    p.add_argument("--post-on", default=env("--post-on"), help="direct mode: the agent that post-processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--split", default=env("--split", "none"), choices=SPLITS,
                   help="one job on both agents: experts (high-noise expert on --generate-on, low-noise on "
                        "--post-on), cfg (conditional and unconditional passes on both), auto (docs/split.md)")
    p.add_argument("--decode-on", default=env("--decode-on", "generate"), choices=DECODE_ON,
                   help="where the VAE decodes: post sends latents over the link instead of frames")


def run(args: argparse.Namespace) -> int:
    if not (args.generate_on or args.post_on):
        return run_queued(args)
    if args.preview is not None:
        raise RequestError("--preview follows a job at the coordinator; it does not work with --generate-on/--post-on")
    cluster = ClusterConfig.load(args.config)
    gen_cfg = cluster.agent(args.generate_on) if args.generate_on else cluster.agents[0]
    post_cfg = cluster.agent(args.post_on) if args.post_on else cluster.agents[-1]
    # No coordinator to resolve the preset: resolve it here, from the same cluster file.
    job = resolve(JobSpec.from_dict(job_fields(args)), cluster.presets,
                  task="i2v" if args.image is not None else "t2v")
    request, spec = to_messages(job, args.image)
    if args.split != "none" or args.decode_on == "post":
        return run_split(cluster, gen_cfg.name, post_cfg.name, request, spec, split=args.split,
                         decode_on=args.decode_on, progress=not args.no_progress)
    result = asyncio.run(run_direct(cluster, gen_cfg.name, post_cfg.name, request, spec,
                                    progress=not args.no_progress))
    print_result(result)
    return 0


def spec_from_args(args: argparse.Namespace, cluster: ClusterConfig) -> JobSpec:
    """The JobSpec the flags describe; an i2v image travels with the job as its bytes.

    Its preset is left unresolved: the coordinator resolves it from its cluster file.
    """
    return JobSpec.from_dict({**job_fields(args), **_image_fields(args.image), "priority": args.priority,
                              "split": args.split, "decode_on": args.decode_on, "preview_every": preview_every(args)})


def preview_every(args: argparse.Namespace) -> int:
    """Steps between live previews: as asked, else PREVIEW_EVERY when --preview wants them, else none."""
    if args.preview_every is not None:
        return int(args.preview_every)
    return PREVIEW_EVERY if args.preview is not None else 0


def _preview_file(args: argparse.Namespace, spec: JobSpec) -> PreviewFile | None:
    """Where --preview writes, checked before the job is submitted."""
    if args.preview is None:
        return None
    if not args.wait:
        raise RequestError("--preview needs --wait: the preview is written while the job is followed")
    if not args.preview.parent.is_dir():
        raise RequestError(f"--preview {args.preview}: folder {args.preview.parent} does not exist")
    return PreviewFile(args.preview, spec.width, spec.height, spec.frames)


def _image_fields(image: Path | None) -> dict[str, Any]:
    """A readable file goes as its bytes (no shared path needed); a relative name that is no file here
    still names one under the agents' inputs folder, as before."""
    if image is None:
        return {}
    if image.is_file():
        size = image.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise RequestError(f"{image} is {size:,} bytes; an i2v image sent with a job may have {MAX_IMAGE_BYTES:,}")
        try:
            return {"image_data": image.read_bytes()}
        except OSError as exc:
            raise RequestError(f"cannot read image {image}: {exc.strerror}") from None
    if image.is_absolute():
        raise RequestError(f"image {image} is not a file")
    return {"image": image.as_posix()}


def run_queued(args: argparse.Namespace) -> int:
    """Submit to the coordinator; print the id at once, or follow the job with --wait."""
    from artifex_agent.client import JobsClient

    cluster = ClusterConfig.load(args.config)
    spec = spec_from_args(args, cluster)
    preview = _preview_file(args, spec)
    with JobsClient.from_config(cluster) as client:
        job_id = client.submit(spec, idempotency_key=args.idempotency_key)
        if not args.wait:
            if args.json:
                print(json.dumps(job_dict(client.get(job_id)), indent=2))
            else:
                print(job_id)
            return int(ExitCode.OK)
        print(f"job {job_id} submitted to {client.address}", file=sys.stderr)
        job = follow(client, job_id, progress=not args.no_progress and not args.json, config=args.config,
                     on_preview=None if preview is None else lambda e: preview.update(e.preview, e.preview_step))
    if args.json:
        print(json.dumps(job_dict(job), indent=2))
    else:
        print_job(job)
    return int(ExitCode.OK if job.state == "done" else ExitCode.FAILURE)
