"""Checks on their own: GPU and models rows from an agent's Info, shares, sysctls, MTU, rendering."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.config import AgentConfig, ClusterConfig, SharesConfig
from artifex_agent.health import agents, render, storage, system
from artifex_agent.health.checks import AgentState, CheckResult, HealthContext, HealthReport
from artifex_agent.health.link import percentile
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb


def _ctx(info: pb.AgentInfo, **agent: Any) -> HealthContext:
    cfg = AgentConfig(name="pc1", **agent)
    ctx = HealthContext(ClusterConfig(agents=[cfg]))
    state = AgentState(cfg, local=True, stub=None, channel=None, serving=True, info=info)  # type: ignore[arg-type]
    ctx.agents.append(state)
    return ctx


def test_no_nvidia_driver_is_said_plainly_and_required_unless_cpu() -> None:
    info = pb.AgentInfo(gpu_problem="no NVIDIA driver (NVML: NVML Shared Library Not Found)")
    [row] = asyncio.run(agents.gpus(_ctx(info)))
    assert not row.ok and row.required and row.value.startswith("no NVIDIA driver") and "driver" in row.fix
    [row] = asyncio.run(agents.gpus(_ctx(info, device="cpu")))
    assert not row.ok and not row.required


def test_gpu_row_shows_name_driver_vram_and_temperature() -> None:
    g = pb.GpuInfo(index=0, name="NVIDIA GeForce RTX 3090", memory_total=24 << 30, memory_used=3 << 30,
                   temperature_c=91, driver="550.54")
    [row] = asyncio.run(agents.gpus(_ctx(pb.AgentInfo(gpus=[g]))))
    assert "RTX 3090" in row.value and "550.54" in row.value and "3.0/24.0 GiB" in row.value and "91 °C" in row.value
    assert not row.ok and "airflow" in row.fix


def test_torch_without_cuda_fails_a_gpu_agent() -> None:
    info = pb.AgentInfo(torch_version="2.14.1+cpu", cuda_version="", cuda_available=False)
    [row] = asyncio.run(agents.torch_cuda(_ctx(info)))
    assert not row.ok and "CUDA index" in row.fix
    [row] = asyncio.run(agents.torch_cuda(_ctx(info, device="cpu")))
    assert row.ok


def test_models_must_be_complete_and_a_generator_needs_one() -> None:
    broken = pb.ModelInfo(name="Wan2.2-T2V-A14B", model_kind=pb.MODEL_KIND_T2V, complete=False,
                          problem="transformer_2 missing")
    [row] = asyncio.run(agents.models(_ctx(pb.AgentInfo(models=[broken]))))
    assert not row.ok and "INCOMPLETE: transformer_2 missing" in row.value
    [row] = asyncio.run(agents.models(_ctx(pb.AgentInfo())))
    assert not row.ok and "Wan2.2 model folder under" in row.fix
    [row] = asyncio.run(agents.models(_ctx(pb.AgentInfo(), roles=["post"])))
    assert row.ok


def test_shares_mounted_writable_and_measured(tmp_path: Path) -> None:
    for name in ("models", "projects", "cache"):
        (tmp_path / name).mkdir()
    shares = SharesConfig(models=str(tmp_path / "models"), projects=str(tmp_path / "projects"),
                          cache=str(tmp_path / "gone"))
    ctx = HealthContext(ClusterConfig(shares=shares))
    rows = {r.name: r for r in asyncio.run(storage.shares(ctx))}
    assert rows["share models"].ok and "readable" in rows["share models"].value
    assert rows["share projects"].ok and "writable" in rows["share projects"].value
    assert not rows["share cache"].ok and rows["share cache"].required and "mount" in rows["share cache"].fix
    assert not list((tmp_path / "projects").iterdir()), "the write probe is removed"
    write, read = storage.share_throughput(tmp_path / "projects", size=16 << 20)
    assert write > 0 and read > 0
    assert not list((tmp_path / "projects").iterdir())


def test_unconfigured_default_shares_do_not_fail() -> None:
    if any(Path(p).exists() for p in (SharesConfig().models, SharesConfig().projects, SharesConfig().cache)):
        pytest.skip("this machine has /data shares")
    [row] = asyncio.run(storage.shares(HealthContext(ClusterConfig())))
    assert row.ok and not row.required


def test_disk_free_row(tmp_path: Path) -> None:
    cfg = ClusterConfig(agents=[AgentConfig(output_root=tmp_path / "out", models_root=tmp_path / "m")])
    rows = asyncio.run(storage.disk_free(HealthContext(cfg)))
    assert len(rows) == 1 and "GiB free" in rows[0].value


@pytest.mark.parametrize("current, how, want, ok", [
    ("134217728", ">=", 134217728, True),
    ("4194304", ">=", 134217728, False),
    ("4096\t87380\t134217728", "max>=", 134217728, True),
    ("4096 131072 33554432", "max>=", 134217728, False),
    ("bbr", "==", "bbr", True),
    ("cubic", "==", "bbr", False),
])
def test_sysctl_comparison(current: str, how: str, want: int | str, ok: bool) -> None:
    assert system.sysctl_ok(current, how, want) is ok


@pytest.mark.skipif(not os.path.exists("/proc/sys/net"), reason="Linux only")
def test_sysctl_rows_are_advice_not_required() -> None:
    # Only with a link to tune: an agent on another PC (TEST-NET-1, never this machine's address).
    remote = ClusterConfig.from_dict({"agents": {"b": {"listen": "192.0.2.1:1"}}})
    rows = asyncio.run(system.sysctls(HealthContext(remote)))
    assert [r.name for r in rows][:2] == ["net.core.rmem_max", "net.core.wmem_max"]
    assert all(not r.required for r in rows)
    assert all(r.ok or r.fix.startswith("sysctl -w") for r in rows)


def test_no_sysctl_advice_when_every_agent_is_on_this_machine() -> None:
    [row] = asyncio.run(system.sysctls(HealthContext(ClusterConfig())))
    assert row.ok and "no link to tune" in row.value


def test_loopback_interface() -> None:
    iface = system.interface_for("127.0.0.1")
    assert iface is not None and iface.loopback


def test_path_mtu_on_loopback() -> None:
    ok, what = system.path_mtu_probe("127.0.0.1", 9000)
    assert ok, what


def test_percentile_interpolates() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile(list(range(101)), 99) == 99


def test_render_table_and_json() -> None:
    report = HealthReport([CheckResult("agent pc1", ok=True, value="SERVING [x]", target="SERVING"),
                           CheckResult("bandwidth a → b", ok=False, value="3.1 Gbit/s", target="≥ 9.4 Gbit/s",
                                       fix="check MTU"),
                           CheckResult("net.core.rmem_max", ok=False, required=False, value="4194304")], 1.25)
    out = io.StringIO()
    render.render(report, file=out)
    text = out.getvalue()
    assert "✓" in text and "✗" in text and "!" in text and "SERVING [x]" in text
    assert "UNHEALTHY: 1 of 2 required checks fail: bandwidth a → b" in text
    out = io.StringIO()
    render.render(report, as_json=True, file=out)
    data = json.loads(out.getvalue())
    assert data["ok"] is False and data["checks"][1]["fix"] == "check MTU"
