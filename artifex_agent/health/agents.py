"""What each agent says about itself: serving, protocol, GPU, torch/CUDA, models, link MTU."""

from __future__ import annotations

from artifex_agent import PROTOCOL_VERSION
from artifex_agent.health.checks import AgentState, CheckResult, HealthContext, check
from artifex_agent.health.system import interface_for
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.wire_enums import MODEL_KIND

GiB = 1 << 30
# NVML's slowdown thresholds on RTX 3090s start in the high 80s; past this, clips take longer.
GPU_TEMP_LIMIT_C = 85
GENERATION_KINDS = ("t2v", "i2v", "ti2v")


def _gpu_required(agent: AgentState) -> bool:
    # An agent configured for the CPU (tests, a laptop) has no GPU to demand.
    return agent.cfg.device != "cpu"


def unreachable_reason(agent: AgentState) -> tuple[str, str]:
    """Why `agent` did not answer, naming the link toward it when there is one; (reason, what to do)."""
    reason = agent.error or "did not answer"
    if reason.startswith("TLS:"):
        start = "one CA for all PCs (`artifex-agent certs`); tls_ca, tls_cert and tls_key set on each"
    elif "token" in reason:
        start = "use the same [security] token (or ARTIFEX_TOKEN) on both PCs"
    elif agent.local:
        # On this PC: no link or firewall in between, only a process that is not running.
        start = f"start it: artifex-agent up --config FILE (or artifex-agent serve --name {agent.name})"
    else:
        start = f"start it on its PC (artifex-agent serve --name {agent.name}), check the link and the firewall"
    if agent.local:
        return reason, start
    iface = interface_for(agent.host)
    if iface is None:
        return f"{reason}; no interface of this PC reaches {agent.host}", start
    if iface.up and iface.carrier:
        return f"{reason} (over link {iface.name})", start
    state = "DOWN" if not iface.up else "NO CARRIER"
    return (f"{reason} (over link {iface.name}, which is {state})",
            f"link {iface.name} is {state}: plug the cable in / bring it up (ip link set {iface.name} up)")


@check("agent", "agents")
async def serving(ctx: HealthContext) -> list[CheckResult]:
    """Every agent answers the standard grpc.health.v1 check with SERVING, and its Info."""
    rows = []
    for a in ctx.agents:
        ok = a.serving and a.info is not None
        if ok:
            value = f"SERVING at {a.address} ({a.check_ms:.1f} ms)"
            fix = ""
        elif a.serving:
            value, fix = f"SERVING, but Info failed: {a.error}", "see the agent's log"
        else:
            value, fix = unreachable_reason(a)
        rows.append(CheckResult(f"agent {a.name}", ok=ok, value=value, target="SERVING", fix=fix))
    return rows


@check("protocol", "agents")
async def protocol(ctx: HealthContext) -> list[CheckResult]:
    """Every agent speaks this CLI's protocol version."""
    rows = []
    for a in ctx.agents:
        if a.info is None:
            continue
        ok = a.info.protocol_version == PROTOCOL_VERSION
        rows.append(CheckResult(f"protocol {a.name}", ok=ok,
                                value=f"v{a.info.protocol_version} (artifex-agent {a.info.version})",
                                target=f"v{PROTOCOL_VERSION}",
                                fix="" if ok else "install the same artifex-agent version on both PCs"))
    return rows


def _gpu_text(g: pb.GpuInfo) -> str:
    temp = f", {g.temperature_c} °C" if g.temperature_c else ""
    return (f"{g.name}, driver {g.driver}, VRAM {g.memory_used / GiB:.1f}/{g.memory_total / GiB:.1f} GiB{temp}")


@check("gpu", "agents")
async def gpus(ctx: HealthContext) -> list[CheckResult]:
    """GPU name, driver, VRAM used/total and temperature from NVML, as each agent sees it."""
    rows = []
    for a in ctx.agents:
        if a.info is None:
            continue
        info = a.info
        if not info.gpus:
            rows.append(CheckResult(f"GPU {a.name}", ok=False, required=_gpu_required(a),
                                    value=info.gpu_problem or "no NVIDIA GPU found", target="an NVIDIA GPU",
                                    fix="install the NVIDIA driver (nvidia-smi must work) and reboot"))
            continue
        for g in info.gpus:
            hot = bool(g.temperature_c) and g.temperature_c >= GPU_TEMP_LIMIT_C
            rows.append(CheckResult(f"GPU {a.name}:{g.index}", ok=not hot, required=_gpu_required(a),
                                    value=_gpu_text(g), target=f"< {GPU_TEMP_LIMIT_C} °C",
                                    fix="" if not hot else "improve airflow; the GPU throttles when this hot"))
    return rows


@check("torch", "agents")
async def torch_cuda(ctx: HealthContext) -> list[CheckResult]:
    """torch and CUDA in each agent's process."""
    rows = []
    for a in ctx.agents:
        if a.info is None:
            continue
        info = a.info
        cuda = f"CUDA {info.cuda_version}" if info.cuda_version else "CPU-only build"
        ok = info.cuda_available or not _gpu_required(a)
        state = "available" if info.cuda_available else "NOT available"
        fix = ("install torch from the CUDA index (pip install torch --index-url "
               "https://download.pytorch.org/whl/cu128)" if not info.cuda_version else
               "the driver is older than torch's CUDA, or no GPU is visible (CUDA_VISIBLE_DEVICES?)")
        rows.append(CheckResult(f"torch {a.name}", ok=ok, required=_gpu_required(a),
                                value=f"torch {info.torch_version}, {cuda}, {state}",
                                target="CUDA available" if _gpu_required(a) else "device = cpu",
                                fix="" if ok else fix))
    return rows


@check("models", "agents")
async def models(ctx: HealthContext) -> list[CheckResult]:
    """Model folders present and complete; a generating agent needs at least one video model."""
    rows = []
    for a in ctx.agents:
        if a.info is None:
            continue
        complete = [m for m in a.info.models if m.complete]
        broken = [m for m in a.info.models if not m.complete]
        video = [m for m in complete if m.model_kind in {MODEL_KIND.to_pb(k) for k in GENERATION_KINDS}]
        missing = [name for name in a.cfg.preload if name not in {m.name for m in complete}]
        generates = "generate" in a.cfg.roles
        ok = not broken and not missing and (bool(video) or not generates)
        parts = [f"{len(complete)} complete" + (f" ({', '.join(m.name for m in complete[:4])}"
                                                 f"{', …' if len(complete) > 4 else ''})" if complete else "")]
        parts += [f"{m.name} INCOMPLETE: {m.problem}" for m in broken]
        if missing:
            parts.append(f"preload {', '.join(missing)} missing")
        if generates and not video:
            fix = f"put a Wan2.2 model folder under {a.cfg.models_root} (or drop 'generate' from its roles)"
        elif broken or missing:
            fix = "copy the missing files again (an interrupted download?) or fix preload"
        else:
            fix = ""
        rows.append(CheckResult(f"models {a.name}", ok=ok, value="; ".join(parts),
                                target="≥ 1 video model, all complete" if generates else "all complete", fix=fix))
    return rows


@check("agent mtu", "agents")
async def agent_mtu(ctx: HealthContext) -> list[CheckResult]:
    """The MTU of the interface each other PC's agent sits on (this PC's own: see `mtu`)."""
    mtu = ctx.cluster.network.mtu
    rows = []
    for a in ctx.remote_agents():
        if a.info is None or not a.info.link_mtu:
            continue
        ok = a.info.link_mtu == mtu
        rows.append(CheckResult(f"MTU {a.name} ({a.info.link_interface})", ok=ok, value=str(a.info.link_mtu),
                                target=f"{mtu} ([network] mtu)",
                                fix="" if ok else f"set MTU {mtu} on {a.name}'s link NIC "
                                                  "(Windows: Jumbo Packet 9014; Linux: ip link set … mtu 9000)"))
    return rows
