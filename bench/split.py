"""bench/split: one job on two agents, against one agent, on the tiny model made heavier.

Two real agents (`artifex-agent serve`, one torch thread each) serve a two-expert tiny
checkpoint with more layers and larger latents, so that compute dominates. Measured:
  - latency of one clip with guidance on one agent, and CFG-parallel across both
    (conditional pass on one, unconditional on the other, predictions swapped each step);
  - throughput of a queue of clips on one agent, and with an expert split across both
    (high-noise steps on agent a, low-noise steps on b, consecutive jobs overlapping), over
    the whole queue (pipeline fill and drain included) and in steady state (first to last
    completion); one whole job per agent is measured too, for comparison;
  - hand-off bytes and time per job, and an estimate of the hand-off at 720p/81 frames.
Outputs are latents (the VAE decode is the same work either way). Every split result is
checked bitwise against the one-agent run.

    .venv/bin/python -m bench.split [--queue 12] [--size 256x256] [--frames 17] [--steps 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from typing import Any

import torch

from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.split.client import SplitResult, cluster_stubs, run_split
from artifex_agent.transport.channel import AgentStub
from bench._common import emit, workdir

MODEL = "wan2.2-bench-a14b"
# flow_shift 6 puts the 0.875 expert boundary at exactly half of 6, 8, 10, 12 or 20 steps, so the
# two stages of an expert split are the same length (see docs/split.md for Wan2.2's own settings).
CHECKPOINT = {"layers": 4, "heads": 4, "head_dim": 32, "ffn_dim": 512, "text_dim": 64, "flow_shift": 6.0}
# Jobs in flight in the expert-split queue: one per stage plus one waiting.
IN_FLIGHT = 3


def _request(args: argparse.Namespace, seed: int) -> pb.GenerateRequest:
    w, h = (int(x) for x in args.size.lower().split("x"))
    return pb.GenerateRequest(model=MODEL, task=pb.TASK_T2V, prompts=["a red fox running through snow"], width=w,
                              height=h, num_frames=args.frames, steps=args.steps, guidance_scale=4.0,
                              guidance_scale_2=3.0, seed=seed, output=pb.PAYLOAD_KIND_LATENT)


async def _one(stubs: dict[str, AgentStub], req: pb.GenerateRequest, mode: str, first: str = "a",
               second: str = "b") -> tuple[float, SplitResult]:
    started = time.perf_counter()
    result = await run_split(stubs, req, mode, generate_on=first, other=second)  # type: ignore[arg-type]
    return time.perf_counter() - started, result


def _latents(result: SplitResult) -> torch.Tensor:
    assert result.output is not None and result.output.latents is not None
    return result.output.latents


async def _queue(stubs: dict[str, AgentStub], reqs: list[pb.GenerateRequest],
                 mode: str) -> tuple[float, list[float], list[SplitResult]]:
    """Run the queue; returns total seconds, completion times and results (in queue order)."""
    started = time.perf_counter()
    done: list[float] = []
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def job(i: int, req: pb.GenerateRequest) -> SplitResult:
        if mode == "parallel":  # whole jobs, alternating agents
            first, second, how = ("a", "b", "none") if i % 2 == 0 else ("b", "a", "none")
        else:
            first, second, how = "a", "b", mode
        async with gate:
            result = await run_split(stubs, req, how, generate_on=first, other=second)  # type: ignore[arg-type]
        done.append(time.perf_counter() - started)
        return result

    if mode == "none":
        results = []
        for req in reqs:
            results.append(await run_split(stubs, req, "none", generate_on="a", other="b"))
            done.append(time.perf_counter() - started)
    else:
        results = list(await asyncio.gather(*(job(i, r) for i, r in enumerate(reqs))))
    return time.perf_counter() - started, sorted(done), results


async def measure(cluster: LocalCluster, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with cluster_stubs(cluster.config) as stubs:
        # Warm-up: both agents load the model and run every path once.
        await asyncio.gather(_one(stubs, _request(args, 0), "none", "a", "b"),
                             _one(stubs, _request(args, 0), "none", "b", "a"))
        await _one(stubs, _request(args, 0), "experts")
        await _one(stubs, _request(args, 0), "cfg")

        single, cfg, equal = [], [], True
        for rep in range(args.repeats):
            t1, ref = await _one(stubs, _request(args, 100 + rep), "none")
            t2, par = await _one(stubs, _request(args, 100 + rep), "cfg")
            single.append(t1)
            cfg.append(t2)
            equal &= torch.equal(_latents(ref), _latents(par))
            exchange = par.stats.exchange_bytes
        # Best of the repeats: on a shared machine the other processes only ever add time. The runs
        # alternate, so the pair ratios also say how much the machine's load moved the figure.
        out["single_clip_one_agent_s"] = min(single)
        out["single_clip_cfg_parallel_s"] = min(cfg)
        out["cfg_latency_ratio"] = out["single_clip_one_agent_s"] / out["single_clip_cfg_parallel_s"]
        out["cfg_latency_ratio_median_pair"] = statistics.median(a / b for a, b in zip(single, cfg, strict=True))
        out["cfg_exchange_bytes_per_step"] = exchange / args.steps
        out["cfg_bitwise_equal"] = equal

        reqs = [_request(args, 200 + i) for i in range(args.queue)]
        base_s, base_done, base = await _queue(stubs, reqs, "none")
        split_s, split_done, split = await _queue(stubs, reqs, "experts")
        par_s, _, par_results = await _queue(stubs, reqs, "parallel")
        per_job = base_s / args.queue
        steady = (split_done[-1] - split_done[0]) / (args.queue - 1)
        out["queue_clips"] = args.queue
        out["queue_one_agent_s"] = base_s
        out["queue_expert_split_s"] = split_s
        out["expert_split_throughput_ratio"] = base_s / split_s
        out["expert_split_steady_state_ratio"] = per_job / steady
        out["queue_whole_jobs_on_both_s"] = par_s
        out["whole_jobs_on_both_throughput_ratio"] = base_s / par_s
        out["expert_split_bitwise_equal"] = all(torch.equal(_latents(a), _latents(b))
                                               for a, b in zip(base, split, strict=True)) and \
            all(torch.equal(_latents(a), _latents(b)) for a, b in zip(base, par_results, strict=True))
        out["handoff_bytes_per_job"] = statistics.mean(r.stats.handoff_bytes for r in split)
        out["handoff_s_per_job"] = statistics.mean(r.stats.handoff_s for r in split)
        # Latents, two UniPC model outputs and last_sample in float32, two bf16 UMT5 embeddings (512 x 4096).
        out["handoff_bytes_720p_81f_estimate"] = 4 * 16 * 21 * 90 * 160 * 4 + 2 * 512 * 4096 * 2
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queue", type=int, default=12, help="clips in the throughput queue")
    parser.add_argument("--size", default="256x256", help="WIDTHxHEIGHT of each clip")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="single-clip runs per mode (the best counts)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    # Both agents need a core each: anything else running on the machine shows in the ratios.
    load_start = os.getloadavg()[0]
    with LocalCluster(workdir("split"), agents={"a": {}, "b": {}}, model=MODEL,
                      checkpoint_options=CHECKPOINT) as cluster:
        results = asyncio.run(measure(cluster, args))
    results = {"size": args.size, "frames": args.frames, "steps": args.steps, "torch_threads_per_agent": 1,
               "cpu_cores": os.cpu_count(), **{f"checkpoint_{k}": v for k, v in CHECKPOINT.items()}, **results,
               "load_average_1m_before": load_start, "load_average_1m_after": os.getloadavg()[0],
               "bench_s": time.perf_counter() - started}
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
