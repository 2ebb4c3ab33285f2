"""Round trips, clock skew and streaming bandwidth: from here to each agent, and between every pair of agents
(the RTT and bandwidth matrix, as rows and as the JSON's "links")."""

from __future__ import annotations

import math
from collections.abc import Hashable

import grpc

from artifex_agent.health.checks import AgentState, CheckResult, HealthContext, check
from artifex_agent.health.link import describe_rpc_error, measure_rtt
from artifex_agent.health.schedule import run_disjoint
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb

# Clocks further apart than this confuse logs and the drop folder's mtime comparisons
# between PCs; NTP keeps them within milliseconds.
CLOCK_SKEW_LIMIT_S = 1.0
# Above this share of a core, the measuring process itself was the bottleneck; above this
# share of all cores, the PC had no CPU left for the stream.
CPU_BOUND = 0.85
# On two cores with three busy processes 85% is already saturation.
SYSTEM_BUSY = 0.8
# Two agents on one machine have no link between them: their figures measure this PC's CPUs and
# scheduler, shown as advice, never a failure.
ONE_MACHINE = "same PC: no link"
RTT_FIX = ("keep the agents on the direct 10GbE link (not Wi-Fi or a switch chain); disable NIC interrupt "
           "moderation (ethtool -C IFACE adaptive-rx off rx-usecs 0); avoid CPU power-saving states")


async def _probe(ctx: HealthContext, a: AgentState, b: AgentState, *, echoes: int,
                 seconds: float) -> pb.ProbeResult:
    """Have agent `a` measure its link to `b`; errors become an unreachable result."""
    timeout = 10.0 + 3 * seconds + echoes * 0.01
    request = pb.ProbeRequest(address=b.address, echo_count=echoes, bandwidth_seconds=seconds, timeout_s=timeout)
    try:
        return await a.stub.probe(request, timeout=timeout + 2)
    except grpc.aio.AioRpcError as exc:
        return pb.ProbeResult(address=b.address, error=describe_rpc_error(exc, a.address, timeout))


def _same_machine(a: AgentState, b: AgentState) -> bool:
    """Both agents are on the PC health runs on, so nothing between them is a link."""
    return a.local and b.local


def _unmeasured(a: AgentState, b: AgentState | None = None) -> str:
    down = [x for x in (a, b) if x is not None and not x.serving]
    return f"not measured: {', '.join(x.name for x in down)} did not answer" if down else "not measured"


@check("rtt here", "measure")
async def rtt_here(ctx: HealthContext) -> list[CheckResult]:
    """RTT from this process to each agent over one open Echo stream (what the CLI sees)."""
    rows = []
    target = ctx.cluster.network.rtt_target_ms
    for a in ctx.agents:
        if not a.serving:
            continue
        name = f"RTT here → {a.name}"
        try:
            rtt = await measure_rtt(a.stub, ctx.rtt_count, timeout=ctx.info_timeout + ctx.rtt_count * 0.01)
        except grpc.aio.AioRpcError as exc:
            rows.append(CheckResult(name, ok=False, required=False, value=describe_rpc_error(exc, a.address)))
            continue
        clock = "" if math.isnan(rtt.clock_offset_s) else f"; clock {rtt.clock_offset_s * 1000:+.1f} ms"
        ok = rtt.p99_ms < target
        rows.append(CheckResult(name, ok=ok, required=False,
                                value=f"p50 {rtt.p50_ms:.3f} ms, p99 {rtt.p99_ms:.3f} ms{clock}",
                                target=f"p99 < {target} ms", fix="" if ok or a.local else RTT_FIX))
    return rows


def scheduler_pairs(ctx: HealthContext) -> list[tuple[AgentState, AgentState]]:
    """The pairs the coordinator may stream between: frames go from a generating agent to any other, and a
    split runs on two generating ones; two agents that only post-process never exchange anything."""
    return [(a, b) for a, b in ctx.pairs() if "generate" in a.cfg.roles or "generate" in b.cfg.roles]


def _pc(agent: AgentState) -> frozenset[Hashable]:
    # Pairs on distinct PCs run at once (on a switch each port is its own full-duplex link); two pairs
    # with an agent, or a PC and so its NIC and CPUs, in common would skew each other's figures. Every
    # address of this PC (127.0.0.1, 127.0.0.2, its link address) is one PC.
    return frozenset({"this PC" if agent.local else agent.host})


async def _probe_pairs(ctx: HealthContext, pairs: list[tuple[AgentState, AgentState]], *, echoes: int,
                       seconds: float) -> list[pb.ProbeResult | None]:
    """Probe every pair whose agents both serve, concurrently where they share no PC; None: not measured
    (an agent down, or the pair budget spent)."""
    live = [i for i, (a, b) in enumerate(pairs) if a.serving and b.serving]
    measured = await run_disjoint(live, lambda i: _pc(pairs[i][0]) | _pc(pairs[i][1]),
                                  lambda i: _probe(ctx, *pairs[i], echoes=echoes, seconds=seconds),
                                  ctx.pair_deadline())
    found = dict(zip(live, measured, strict=True))
    return [found.get(i) for i in range(len(pairs))]


def _over_budget(ctx: HealthContext, name: str, target: str) -> CheckResult:
    return CheckResult(name, ok=False, required=False, target=target,
                       value=f"not measured: the {ctx.pair_budget_s:g} s budget for pair tests ran out",
                       fix="raise --pair-budget (every pair of N agents is measured: N(N-1)/2 of them)")


@check("rtt pairs", "measure")
async def rtt_pairs(ctx: HealthContext) -> list[CheckResult]:
    """RTT and clock skew between each pair of agents, measured by the agents themselves."""
    rows = []
    target = ctx.cluster.network.rtt_target_ms
    pairs = scheduler_pairs(ctx)
    for (a, b), res in zip(pairs, await _probe_pairs(ctx, pairs, echoes=ctx.rtt_count, seconds=0), strict=True):
        name = f"RTT {a.name} ⇄ {b.name}"
        clock_name = f"clock {a.name} ⇄ {b.name}"
        if not (a.serving and b.serving):
            rows.append(CheckResult(name, ok=False, value=_unmeasured(a, b), target=f"p99 < {target} ms",
                                    fix=f"bring both agents up first (see agent {a.name}/{b.name} above)"))
            continue
        if res is None:
            rows.append(_over_budget(ctx, name, f"p99 < {target} ms"))
            continue
        if not res.reachable:
            rows.append(CheckResult(name, ok=False, value=f"{a.name} cannot reach {b.name}: {res.error}",
                                    target=f"p99 < {target} ms",
                                    fix=f"{a.name} must reach {b.address}: same token, link up, port open"))
            continue
        ctx.link(a, b).update(rtt_p50_ms=round(res.rtt_p50_ms, 4), rtt_p99_ms=round(res.rtt_p99_ms, 4),
                              clock_offset_ms=round(res.clock_offset_s * 1000, 3))
        ok = res.rtt_p99_ms < target
        link = not _same_machine(a, b)
        rows.append(CheckResult(name, ok=ok, required=link,
                                value=f"p50 {res.rtt_p50_ms:.3f} ms, p99 {res.rtt_p99_ms:.3f} ms",
                                target=f"p99 < {target} ms" + ("" if link else f" ({ONE_MACHINE})"),
                                fix="" if ok or not link else RTT_FIX))
        skew = abs(res.clock_offset_s)
        ok = skew < CLOCK_SKEW_LIMIT_S
        rows.append(CheckResult(clock_name, ok=ok,
                                value=f"{res.clock_offset_s * 1000:+.1f} ms (± {res.clock_uncertainty_s * 1000:.2f})",
                                target=f"< {CLOCK_SKEW_LIMIT_S * 1000:.0f} ms",
                                fix="" if ok else "turn on time sync on both PCs (timedatectl set-ntp true; "
                                                  "Windows: w32tm /resync)"))
    return rows + _extremes(ctx, "rtt_p99_ms", "slowest RTT", "p99 {:.3f} ms", high_is_bad=True)


def _extremes(ctx: HealthContext, key: str, title: str, shape: str, *, high_is_bad: bool) -> list[CheckResult]:
    """One advice row naming the worst and best link of the matrix, once there are three agents or more."""
    links = sorted((link for link in ctx.links.values() if key in link), key=lambda link: float(link[key]),
                   reverse=high_is_bad)
    if len(links) < 2:
        return []
    bad, good = links[0], links[-1]
    return [CheckResult(title, ok=True, required=False, target=f"of {len(links)} links",
                        value=f"{bad['a']} ⇄ {bad['b']} {shape.format(bad[key])}; best {good['a']} ⇄ {good['b']} "
                              f"{shape.format(good[key])}")]


def why_slow(gbit: float, target: float, cpu: float, system_cpu: float, prober: str) -> str:
    """Why a stream stayed under the target, from what the CPUs did meanwhile."""
    if system_cpu >= SYSTEM_BUSY:
        return (f"CPU-bound, not the link: {prober}'s PC had its cores {system_cpu:.0%} busy at {gbit:.1f} Gbit/s "
                f"(the agent itself {cpu:.0%} of a core); stop other work there, or use a faster CPU")
    if cpu >= CPU_BOUND:
        return (f"CPU-bound, not the link: {prober} used {cpu:.0%} of a core at {gbit:.1f} Gbit/s; "
                "a faster core or fewer busy processes on that PC")
    return (f"under {target} Gbit/s with CPU to spare: check MTU 9000 on both ends, the socket buffer sysctls, "
            "the NIC's negotiated speed and cable (Cat6a), and that the 10GbE NIC carries this traffic")


@check("bandwidth", "bandwidth")
async def bandwidth(ctx: HealthContext) -> list[CheckResult]:
    """Streaming bandwidth both ways between each pair, over the agents' own raw-bytes streams."""
    rows = []
    target = ctx.cluster.network.bandwidth_target_gbit
    pairs = scheduler_pairs(ctx)
    for (a, b), res in zip(pairs, await _probe_pairs(ctx, pairs, echoes=0, seconds=ctx.seconds), strict=True):
        names = (f"bandwidth {b.name} → {a.name}", f"bandwidth {a.name} → {b.name}")
        if not (a.serving and b.serving):
            rows += [CheckResult(n, ok=False, value=_unmeasured(a, b), target=f"≥ {target} Gbit/s",
                                 fix="bring both agents up first") for n in names]
            continue
        if res is None:
            rows += [_over_budget(ctx, n, f"≥ {target} Gbit/s") for n in names]
            continue
        if not res.reachable:
            rows += [CheckResult(n, ok=False, value=f"{a.name} cannot reach {b.name}: {res.error}",
                                 target=f"≥ {target} Gbit/s", fix=f"{a.name} must reach {b.address}") for n in names]
            continue
        # The slower direction is what a stream across this pair can count on.
        ctx.link(a, b).update(gbit_b_to_a=round(res.download_gbit, 3), gbit_a_to_b=round(res.upload_gbit, 3),
                              gbit=round(min(res.download_gbit, res.upload_gbit), 3))
        link = not _same_machine(a, b)
        for n, gbit, cpu, busy in ((names[0], res.download_gbit, res.download_cpu, res.download_system_cpu),
                                   (names[1], res.upload_gbit, res.upload_cpu, res.upload_system_cpu)):
            ok = gbit >= target
            value = f"{gbit:.2f} Gbit/s ({a.name}: agent {cpu:.0%} of a core, PC {busy:.0%} busy)"
            rows.append(CheckResult(n, ok=ok, required=link, value=value,
                                    target=f"≥ {target} Gbit/s" + ("" if link else f" ({ONE_MACHINE})"),
                                    fix="" if ok else why_slow(gbit, target, cpu, busy, a.name)))
    return rows + _extremes(ctx, "gbit", "slowest link", "{:.2f} Gbit/s", high_is_bad=False)
