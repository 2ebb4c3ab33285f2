"""What is wrong in a loaded cluster file, each problem in plain words (`config check`, ClusterConfig.validate)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from artifex_agent.errors import ConfigError
from artifex_agent.hosts import split_hostport

if TYPE_CHECKING:  # config imports this module (its checks and the limits below); only the types come back
    from artifex_agent.config import AgentConfig, ClusterConfig, NetworkConfig

# What a cluster file's values must be one of.
Stage = Literal["generate", "post"]
STAGES: tuple[Stage, ...] = ("generate", "post")
# IPv4's minimum MTU, and the largest jumbo frame common 10GbE NICs (Intel X550: 9216) accept.
MTU_RANGE = (576, 9216)
# How the PCs' link NICs meet: one cable between two, or one switch port each.
TOPOLOGIES = ("direct", "switch")


def cluster_problems(cfg: ClusterConfig) -> list[str]:
    """Every setting of `cfg` that cannot work, each with its reason."""
    found: list[str] = []
    names = [a.name for a in cfg.agents]
    if len(set(names)) != len(names):
        found.append("agent names must be unique")
    for a in cfg.agents:
        found += _agent_problems(a)
    found += _address_problems("coordinator", cfg.coordinator.listen, cfg.coordinator.address)
    if cfg.web.listen:
        found += _address_problems("web", cfg.web.listen, "")
    if cfg.web.session_hours <= 0 or cfg.web.upload_mib < 1:
        found.append("web: session_hours must be above 0 and upload_mib at least 1")
    found += network_problems(cfg.network)
    if cfg.shares.protocol not in ("nfs", "smb"):
        found.append(f"shares.protocol must be nfs or smb, not {cfg.shares.protocol!r}")
    if cfg.coordinator.batch_size < 1:
        found.append("coordinator.batch_size must be at least 1")
    return found


def network_problems(net: NetworkConfig) -> list[str]:
    """[network] values outside what a NIC, netplan or Windows accept (render must never write them)."""
    low, high = MTU_RANGE
    found = []
    if not mtu_allowed(net.mtu):
        found.append(f"[network] mtu {net.mtu!r} is outside {low}–{high} (9000 for jumbo frames on the 10GbE "
                     "link, 1500 without them)")
    if net.rtt_target_ms <= 0 or net.bandwidth_target_gbit <= 0:
        found.append("[network] rtt_target_ms and bandwidth_target_gbit must be above 0")
    if net.ring_buffers < 1 or net.queues < 1:
        found.append("[network] ring_buffers and queues must be at least 1")
    if net.topology not in TOPOLOGIES:
        found.append(f"[network] topology must be {' or '.join(repr(t) for t in TOPOLOGIES)}, not {net.topology!r}")
    return found


def mtu_allowed(mtu: object) -> bool:
    """An MTU a NIC, netplan and Windows all accept."""
    return isinstance(mtu, int) and not isinstance(mtu, bool) and MTU_RANGE[0] <= mtu <= MTU_RANGE[1]


def _agent_problems(a: AgentConfig) -> list[str]:
    where = f"agents.{a.name}"
    found = []
    for stage in (*a.roles, *a.prefer):
        if stage not in STAGES:
            found.append(f"{where}: unknown stage {stage!r} (use {', '.join(STAGES)})")
    if not 0.0 <= a.gpu_memory_fraction <= 1.0:
        found.append(f"{where}: gpu_memory_fraction must be within 0..1")
    if not isinstance(a.lora_budget_mib, int) or isinstance(a.lora_budget_mib, bool) or a.lora_budget_mib < 0:
        found.append(f"{where}: lora_budget_mib must be a whole number of MiB (0: the default)")
    found += _stream_limit_problems(a)
    found += _placement_problems(a)
    found += _address_problems(where, a.listen, a.address)
    if a.platform not in ("linux", "windows"):
        found.append(f"{where}: platform must be linux or windows, not {a.platform!r}")
    if a.mtu and not mtu_allowed(a.mtu):
        found.append(f"{where}: mtu {a.mtu!r} is outside {MTU_RANGE[0]}–{MTU_RANGE[1]} (0: [network] mtu)")
    return found


def _address_problems(where: str, listen: str, address: str) -> list[str]:
    found = []
    for key, value in (("listen", listen), ("address", address)):
        if key == "address" and not value:
            continue
        try:
            _, port = split_hostport(value)
        except ConfigError as exc:
            found.append(f"{where}: {key}: {exc}")
            continue
        if port > 65535:
            found.append(f"{where}: {key} {value!r}: port {port} is outside 0–65535")
    return found


def _placement_problems(a: AgentConfig) -> list[str]:
    """The memory settings of one agent, checked when the file is read, not when a job needs them."""
    from artifex_agent.engines.choices import (
        ATTENTION_CHOICES,
        OFFLOAD_CHOICES,
        STORAGE_CHOICES,
        check_choice,
    )

    where = f"agents.{a.name}"
    found = []
    for key, choices in (("offload", OFFLOAD_CHOICES), ("weight_storage", STORAGE_CHOICES),
                         ("attention", ATTENTION_CHOICES)):
        try:
            check_choice(key, getattr(a, key), choices, where)
        except ConfigError as exc:
            found.append(str(exc))
    if a.vae_tiling not in (True, False, "auto"):
        found.append(f'{where}: vae_tiling must be true, false or "auto", not {a.vae_tiling!r}')
    if a.cpu_offload and a.offload not in ("auto", "model"):
        found.append(f"{where}: cpu_offload = true contradicts offload = {a.offload!r}; keep only offload")
    if a.vram_budget_gib < 0:
        found.append(f"{where}: vram_budget_gib must be 0 (the GPU's own) or more")
    return found


def _stream_limit_problems(a: AgentConfig) -> list[str]:
    where = f"agents.{a.name}"
    found = []
    if not isinstance(a.max_streams, int) or a.max_streams < 1:
        found.append(f"{where}: max_streams must be a whole number of at least 1")
    if not isinstance(a.stream_memory_mib, int) or a.stream_memory_mib < 16:
        found.append(f"{where}: stream_memory_mib must be a whole number of at least 16 (MiB)")
    if not 0 < a.stream_idle_s <= a.stream_deadline_s:
        found.append(f"{where}: stream_idle_s must be above 0 and at most stream_deadline_s "
                     f"({a.stream_deadline_s:g})")
    if a.hold_mib < 0 or a.hold_s < 0:
        found.append(f"{where}: hold_mib and hold_s must be 0 (hold nothing) or more")
    return found
