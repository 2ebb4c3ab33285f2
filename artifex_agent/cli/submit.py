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
from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ExitCode, RequestError
from artifex_agent.jobspec import MAX_IMAGE_BYTES, JobSpec
from artifex_agent.presets import resolve
from artifex_agent.vocabulary import DECODE_ON, SPLITS


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "submit", help="queue a job at the coordinator (prints its id), or run it directly on two agents",
        description="Queues one job at the coordinator and prints its id at once; --wait follows it to the end. "
                    "With --generate-on/--post-on it runs directly on those agents instead.")
    add_config(p)
    add_job_arguments(p)
    p.add_argument("--wait", action="store_true", default=env("--wait", False),
                   help="follow the job with progress bars until it ends; exit 1 if it fails")
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
                              "split": args.split, "decode_on": args.decode_on})


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
    with JobsClient.from_config(cluster) as client:
        job_id = client.submit(spec, idempotency_key=args.idempotency_key)
        if not args.wait:
            if args.json:
                print(json.dumps(job_dict(client.get(job_id)), indent=2))
            else:
                print(job_id)
            return int(ExitCode.OK)
        print(f"job {job_id} submitted to {client.address}", file=sys.stderr)
        job = follow(client, job_id, progress=not args.no_progress and not args.json, config=args.config)
    if args.json:
        print(json.dumps(job_dict(job), indent=2))
    else:
        print_job(job)
    return int(ExitCode.OK if job.state == "done" else ExitCode.FAILURE)
