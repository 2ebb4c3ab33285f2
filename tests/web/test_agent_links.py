"""The agents page's link figures: what the coordinator last measured between each pair (coordinator/links.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from artifex_agent.config import ClusterConfig
from artifex_agent.coordinator.agents import AgentPool
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.web.views import link_views


def _with_pool(check: Callable[[AgentPool], None]) -> None:
    """`check` on a started pool of agents a, b, c (nothing listens at their addresses: they stay down)."""
    async def scenario() -> None:
        cluster = ClusterConfig.from_dict(
            {"agents": {n: {"address": f"127.0.0.1:{i + 1}"} for i, n in enumerate("abc")}})
        pool = AgentPool(cluster, 60.0)
        await pool.start()
        try:
            check(pool)
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_each_card_lists_its_links_with_rtt_bandwidth_failures_and_their_age() -> None:
    _with_pool(_measured)


def test_an_agent_whose_pairs_were_never_probed_says_so() -> None:
    _with_pool(_never)


def _never(pool: AgentPool) -> None:
    assert [v["text"] for v in link_views(pool, "b")] == ["to a: not measured yet", "to c: not measured yet"]


def _measured(pool: AgentPool) -> None:
    pool.links.record("a", "b", pb.ProbeResult(reachable=True, rtt_p50_ms=0.214, download_gbit=9.61,
                                               upload_gbit=9.42), now=100.0)
    pool.links.record("c", "a", pb.ProbeResult(reachable=False, error="connection refused"), now=70.0)
    links = {v["peer"]: v for v in link_views(pool, "a", now=103.0)}
    assert set(links) == {"b", "c"}  # never itself
    assert links["b"]["text"] == "to b: RTT p50 0.214 ms, 9.42 Gbit/s (3 s ago)" and links["b"]["ok"] is True
    assert links["b"]["gbit"] == 9.42 and math.isclose(links["b"]["rtt_ms"], 0.214)
    assert links["c"]["text"] == "to c: unreachable: connection refused (33 s ago)" and links["c"]["ok"] is False
    # A pair only echoed (two agents: no stream crosses their link) shows its round trip alone.
    pool.links.record("b", "c", pb.ProbeResult(reachable=True, rtt_p50_ms=1.5), now=100.0)
    assert [v["text"] for v in link_views(pool, "c", now=100.4)] == [
        "to a: unreachable: connection refused (30 s ago)", "to b: RTT p50 1.500 ms (0 s ago)"]
