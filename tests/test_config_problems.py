"""What `config check` and ClusterConfig.validate say is wrong in a cluster file: every check, in its words."""

from __future__ import annotations

import pytest

from artifex_agent.config import ClusterConfig, NetworkConfig
from artifex_agent.config_problems import cluster_problems, mtu_allowed, network_problems
from artifex_agent.errors import ConfigError

# A cluster file with every setting a check refuses (each of the right type, so loading keeps it).
EVERYTHING_WRONG = {
    "agents": {
        "a": {"roles": ["gen", "post"], "prefer": ["x"], "gpu_memory_fraction": 1.5, "lora_budget_mib": 1.5,
              "max_streams": 0, "stream_memory_mib": 8, "stream_idle_s": 0, "hold_mib": -1, "offload": "nah",
              "weight_storage": "q", "attention": "z", "vae_tiling": "maybe", "cpu_offload": True,
              "vram_budget_gib": -1, "listen": "nohost", "address": "h:70000", "platform": "mac", "mtu": 100},
        "b": {"listen": "[::1]:99999", "mtu": 9000, "offload": "group", "cpu_offload": True},
    },
    "coordinator": {"listen": "x", "address": "y:1", "batch_size": 0},
    "web": {"listen": "web", "session_hours": 0, "upload_mib": 0},
    "network": {"mtu": 20000, "rtt_target_ms": 0, "ring_buffers": 0, "topology": "ring"},
    "shares": {"protocol": "ftp"},
}
EVERY_PROBLEM = [
    "agents.a: unknown stage 'gen' (use generate, post)",
    "agents.a: unknown stage 'x' (use generate, post)",
    "agents.a: gpu_memory_fraction must be within 0..1",
    "agents.a: lora_budget_mib must be a whole number of MiB (0: the default)",
    "agents.a: max_streams must be a whole number of at least 1",
    "agents.a: stream_memory_mib must be a whole number of at least 16 (MiB)",
    "agents.a: stream_idle_s must be above 0 and at most stream_deadline_s (14400)",
    "agents.a: hold_mib and hold_s must be 0 (hold nothing) or more",
    "agents.a: offload must be one of auto, none, model, group, sequential, not 'nah'",
    "agents.a: weight_storage must be one of auto, native, fp8, not 'q'",
    "agents.a: attention must be one of auto, native, flash, sage, not 'z'",
    "agents.a: vae_tiling must be true, false or \"auto\", not 'maybe'",
    "agents.a: cpu_offload = true contradicts offload = 'nah'; keep only offload",
    "agents.a: vram_budget_gib must be 0 (the GPU's own) or more",
    "agents.a: listen: address 'nohost' must look like host:port",
    "agents.a: address 'h:70000': port 70000 is outside 0–65535",
    "agents.a: platform must be linux or windows, not 'mac'",
    "agents.a: mtu 100 is outside 576–9216 (0: [network] mtu)",
    "agents.b: cpu_offload = true contradicts offload = 'group'; keep only offload",
    "agents.b: listen '[::1]:99999': port 99999 is outside 0–65535",
    "coordinator: listen: address 'x' must look like host:port",
    "web: listen: address 'web' must look like host:port",
    "web: session_hours must be above 0 and upload_mib at least 1",
    "[network] mtu 20000 is outside 576–9216 (9000 for jumbo frames on the 10GbE link, 1500 without them)",
    "[network] rtt_target_ms and bandwidth_target_gbit must be above 0",
    "[network] ring_buffers and queues must be at least 1",
    "[network] topology must be 'direct' or 'switch', not 'ring'",
    "shares.protocol must be nfs or smb, not 'ftp'",
    "coordinator.batch_size must be at least 1",
]


def test_the_defaults_have_no_problems() -> None:
    assert cluster_problems(ClusterConfig()) == []
    assert network_problems(NetworkConfig()) == []


def test_every_problem_is_listed_in_file_order_with_its_reason() -> None:
    found: list[str] = []
    cfg = ClusterConfig.from_dict(EVERYTHING_WRONG, problems=found)
    assert found == EVERY_PROBLEM
    assert cluster_problems(cfg) == cfg.problems() == EVERY_PROBLEM


def test_validate_refuses_with_all_the_reasons_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        ClusterConfig.from_dict(EVERYTHING_WRONG)
    assert str(exc.value) == "; ".join(EVERY_PROBLEM)


def test_duplicate_agent_names_are_refused() -> None:
    found: list[str] = []
    cfg = ClusterConfig.from_dict({"agents": {"a": {"name": "x"}, "b": {"name": "x"}}}, problems=found)
    assert found == cluster_problems(cfg) == ["agent names must be unique"]


@pytest.mark.parametrize(("mtu", "allowed"), [(576, True), (9216, True), (575, False), (9217, False),
                                              (True, False), (1500.0, False)])
def test_mtu_allowed_is_a_whole_number_a_nic_accepts(mtu: object, allowed: bool) -> None:
    assert mtu_allowed(mtu) is allowed
