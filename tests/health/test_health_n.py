"""`health` with three agents: every pair the scheduler may use, the links matrix, the pair budget."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifex_agent.cli.main import main
from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ExitCode
from artifex_agent.health.checks import HealthReport, run_health
from artifex_agent.health.schedule import run_disjoint
from artifex_agent.local_cluster import LocalCluster, write_cluster_toml
from tests.health.conftest import TOKEN
from tests.processes import started


@pytest.fixture(scope="module")
def third(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[LocalCluster]:
    """A third agent 'old' beside the session's pair (an older PC that only post-processes)."""
    workdir = tmp_path_factory.mktemp("health-third")
    (workdir / "models").symlink_to(models_root, target_is_directory=True)
    with started(LocalCluster(workdir, agents={"old": {"roles": ["post"], "device": "cpu"}}, token=TOKEN)) as c:
        yield c


def _three(health_pair: LocalCluster, third: LocalCluster, **roles: list[str]) -> ClusterConfig:
    cfg = copy.deepcopy(health_pair.config)
    cfg.agents.append(copy.deepcopy(third.config.agent("old")))
    for agent in cfg.agents:
        agent.roles = roles.get(agent.name, agent.roles)  # type: ignore[assignment]
    # Loopback on two shared cores: the test is about what health reports, not this box's jitter.
    cfg.network.rtt_target_ms = 50.0
    cfg.network.bandwidth_target_gbit = 0.05
    return cfg


def _names(report: HealthReport, prefix: str) -> list[str]:
    return [r.name for r in report.results if r.name.startswith(prefix)]


def test_every_pair_is_measured_and_summarised(health_pair: LocalCluster, third: LocalCluster) -> None:
    report = asyncio.run(run_health(_three(health_pair, third), quick=True, rtt_count=30))
    assert report.ok, report.failed
    assert _names(report, "agent ") == ["agent gen", "agent post", "agent old"]
    assert _names(report, "RTT ") == ["RTT here → gen", "RTT here → post", "RTT here → old",
                                      "RTT gen ⇄ post", "RTT gen ⇄ old", "RTT post ⇄ old"]
    assert _names(report, "clock ") == ["clock gen ⇄ post", "clock gen ⇄ old", "clock post ⇄ old"]
    slowest = next(r for r in report.results if r.name == "slowest RTT")
    assert slowest.target == "of 3 links" and "best" in slowest.value
    matrix = {(link["a"], link["b"]): link for link in report.links}
    assert set(matrix) == {("gen", "post"), ("gen", "old"), ("post", "old")}
    assert all(0 < link["rtt_p50_ms"] <= link["rtt_p99_ms"] and link["same_pc"] for link in matrix.values())
    assert not _names(report, "bandwidth")


def test_bandwidth_skips_pairs_the_scheduler_never_uses(health_pair: LocalCluster, third: LocalCluster) -> None:
    # Two post-only agents never exchange frames: only the generating agent's two links are measured.
    cfg = _three(health_pair, third, post=["post"])
    report = asyncio.run(run_health(cfg, seconds=0.2, rtt_count=20))
    assert report.ok, report.failed
    assert _names(report, "bandwidth") == ["bandwidth post → gen", "bandwidth gen → post",
                                           "bandwidth old → gen", "bandwidth gen → old"]
    assert not [r for r in report.results if "post ⇄ old" in r.name]
    links = {(link["a"], link["b"]): link for link in report.links}
    assert set(links) == {("gen", "post"), ("gen", "old")}
    for link in links.values():
        assert link["gbit"] == min(link["gbit_a_to_b"], link["gbit_b_to_a"]) > 0
    slowest = next(r for r in report.results if r.name == "slowest link")
    worst = min(links.values(), key=lambda link: link["gbit"])
    assert slowest.value.startswith(f"{worst['a']} ⇄ {worst['b']} {worst['gbit']:.2f} Gbit/s")


def test_a_spent_pair_budget_is_advice_and_health_still_ends(health_pair: LocalCluster, third: LocalCluster,
                                                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _three(health_pair, third)
    agents = {a.name: {"listen": a.dial_address, "device": "cpu", "models_root": str(a.models_root)}
              for a in cfg.agents}
    path = write_cluster_toml(tmp_path / "c.toml", agents, security={"token": TOKEN},
                              network={"rtt_target_ms": 50.0})
    rc = main(["health", "--config", str(path), "--quick", "--json", "--rtt-count", "10", "--pair-budget", "0"])
    report = json.loads(capsys.readouterr().out)
    assert rc == ExitCode.OK, report
    pairs = [c for c in report["checks"] if c["name"].startswith("RTT ") and "⇄" in c["name"]]
    assert len(pairs) == 3 and report["links"] == []
    assert all(not c["ok"] and not c["required"] and "budget for pair tests ran out" in c["value"]
               and "--pair-budget" in c["fix"] for c in pairs)


def test_pairs_on_different_pcs_run_at_once_and_the_deadline_holds() -> None:
    async def go(deadline_s: float) -> tuple[list[str | None], dict[str, float]]:
        started_at: dict[str, float] = {}
        t0 = time.monotonic()

        async def measure(pair: tuple[str, str]) -> str:
            started_at["".join(pair)] = time.monotonic() - t0
            await asyncio.sleep(0.2)
            return "".join(pair)

        pairs = [("a", "b"), ("c", "d"), ("a", "c"), ("b", "d")]
        done = await run_disjoint(pairs, frozenset, measure, time.monotonic() + deadline_s)
        return done, started_at

    done, at = asyncio.run(go(5.0))
    assert done == ["ab", "cd", "ac", "bd"]
    # a-b and c-d share no PC: together; a-c and b-d wait for them to end (0.2 s), then run together.
    assert at["cd"] < 0.19 <= min(at["ac"], at["bd"])
    assert abs(at["ac"] - at["bd"]) < 0.19
    # The deadline cuts the second round short: cancelled, not reported.
    done, at = asyncio.run(go(0.3))
    assert done == ["ab", "cd", None, None]
