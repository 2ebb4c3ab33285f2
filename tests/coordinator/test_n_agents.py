"""N agents (issue 16, items 1, 2 and 5): routing by what each GPU holds, reload, the best split pair, metrics."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import signal
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from artifex_agent.config import AgentConfig, ClusterConfig
from artifex_agent.coordinator import links as links_module
from artifex_agent.coordinator import routing, split_runs
from artifex_agent.coordinator.agents import AgentHandle, AgentPool
from artifex_agent.coordinator.batching import QueueEntry
from artifex_agent.coordinator.job import Job
from artifex_agent.coordinator.links import LinkMatrix
from artifex_agent.coordinator.waiting import explain
from artifex_agent.engines import memplan
from artifex_agent.engines.models import list_models
from artifex_agent.jobspec import JobSpec
from artifex_agent.local_cluster import DEMO_MODEL, LocalCluster, write_cluster_toml
from artifex_agent.metrics import BusyClock, JobMetrics, Metrics
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.services.diagnostics import budget_bytes, model_info
from tests.coordinator.conftest import Coordinator, free_port, spec
from tests.processes import started

GIB = 1 << 30
A14B, TI2V = "wan2.2-t2v-a14b", "wan2.2-ti2v-5b"


def handle(name: str, *, models: dict[str, bool] | None = None, prefer: tuple[str, ...] = (),
           vram: tuple[int, int] = (0, 0)) -> AgentHandle:
    """An agent as the coordinator sees it after an Info: `models` maps a model to whether it cannot be held."""
    info = pb.AgentInfo(name=name, models=[pb.ModelInfo(name=m, complete=True, cannot_hold=too_big)
                                           for m, too_big in (models or {}).items()],
                        gpus=[pb.GpuInfo(memory_total=vram[0], memory_used=vram[1])] if vram[0] else [])
    # Routing reads only the config, the Info and the load: no channel is needed to decide.
    agent = AgentHandle(AgentConfig(name=name, prefer=list(prefer)), cast(Any, None), cast(Any, None))
    agent.up, agent.info = True, info
    return agent


# ---------------------------------------------------------------- routing by what fits (pure)


def test_holds_needs_the_plans_margin_and_an_unknown_side_never_refuses() -> None:
    assert memplan.holds(10 * GIB, 24 * GIB)
    assert not memplan.holds(23 * GIB + GIB // 2, 24 * GIB)  # within the card, not within its margin
    assert memplan.holds(0, 12 * GIB) and memplan.holds(30 * GIB, 0)


def test_the_tiny_checkpoint_reports_what_it_needs_and_a_small_budget_cannot_hold_it(models_root: Path) -> None:
    entry = next(m for m in list_models(models_root) if m.name == DEMO_MODEL)
    small = AgentConfig(name="c", vram_budget_gib=0.01)
    info = model_info(entry, small, budget_bytes(small, []))
    assert info.hold_bytes > memplan.CUDA_OVERHEAD_BYTES  # the overhead, the tiny weights and activations
    assert info.cannot_hold
    roomy = model_info(entry, AgentConfig(name="a"), budget_bytes(AgentConfig(name="a"), []))
    assert roomy.hold_bytes == info.hold_bytes and not roomy.cannot_hold  # no GPU, no budget: not judged here
    gpus = [{"memory_total": 12 * GIB}]
    assert budget_bytes(AgentConfig(name="g", gpu_memory_fraction=0.5), gpus) == 6 * GIB  # type: ignore[list-item]


def _widened(models_root: Path, tmp_path: Path, name: str, **config: Any) -> Any:
    """The tiny checkpoint with its transformers' configs set to a real model's widths (the plan reads configs)."""
    folder = tmp_path / name
    shutil.copytree(models_root / DEMO_MODEL, folder)
    for expert in ("transformer", "transformer_2"):
        file = folder / expert / "config.json"
        if file.exists():
            file.write_text(json.dumps({**json.loads(file.read_text()), **config}))
    return next(m for m in list_models(tmp_path) if m.name == name)


def test_an_agent_says_a_12gb_card_cannot_hold_an_a14b_expert_but_a_24gb_card_can(
        models_root: Path, tmp_path: Path) -> None:
    a14b = _widened(models_root, tmp_path, "a14b-shaped", num_attention_heads=40, attention_head_dim=128,
                    ffn_dim=13824, num_layers=40)
    cards = {gib: AgentConfig(name=f"pc{gib}", vram_budget_gib=gib) for gib in (12, 24)}
    infos = {gib: model_info(a14b, cfg, budget_bytes(cfg, [])) for gib, cfg in cards.items()}
    # One expert resident, stored in fp8 (weight_storage "auto" allows it): about 14 GiB.
    assert 13 * GIB < infos[12].hold_bytes < 16 * GIB, infos[12].hold_bytes / GIB
    assert infos[12].cannot_hold and not infos[24].cannot_hold
    native = AgentConfig(name="pc24n", vram_budget_gib=24, weight_storage="native")
    assert model_info(a14b, native, budget_bytes(native, [])).cannot_hold  # bf16: 27 GiB does not fit 24


def test_a_12gb_card_generates_ti2v_and_posts_but_is_never_given_an_a14b_expert() -> None:
    big = handle("pc1", models={A14B: False, TI2V: False}, prefer=("generate",))
    small = handle("pc3", models={A14B: True, TI2V: False}, prefer=("generate",))
    a14b = JobSpec(prompts=["x"], model=A14B)
    ti2v = JobSpec(prompts=["x"], model=TI2V)
    assert [a.name for a in routing.idle_generators([big, small]) if a.can_generate(a14b)] == ["pc1"]
    assert [a.name for a in routing.idle_generators([big, small]) if a.can_generate(ti2v)] == ["pc1", "pc3"]
    assert small.can_post(a14b)  # it still post-processes the A14B clips the others make
    big.generating = 1
    # Busy pc1 does not make pc3 take the A14B job: it waits for pc1.
    assert split_runs.choose_agents([big, small], a14b, "none") is None
    assert split_runs.choose_agents([big, small], ti2v, "none") == (small, small, small)


def test_a_queued_job_says_which_agent_cannot_hold_its_model() -> None:
    entry = QueueEntry(Job.submitted("job1", spec(), 1000.0), 0, "key", 1000.0)
    small = handle("pc3", models={DEMO_MODEL: True})
    down = handle("pc1", models={DEMO_MODEL: False})
    down.up = False
    waits = explain([entry], [down, small], [], batch_size=1, batch_timeout_s=0, now=1000.0)
    assert waits["job1"].reason == (f"waiting for an agent able to run it (pc1 is down; "
                                    f"pc3's GPU cannot hold {DEMO_MODEL})")


def test_submit_refuses_a_model_that_no_generating_agent_can_hold() -> None:
    pool = AgentPool(ClusterConfig(agents=[AgentConfig(name="pc3")]))
    pool.agents["pc3"] = handle("pc3", models={A14B: True})
    pool.agents["pc3"].info.models[0].hold_bytes = 15 * GIB  # type: ignore[union-attr]
    problems = pool.job_problems(JobSpec(prompts=["x"], model=A14B))
    assert len(problems) == 1 and "15.0 GiB" in problems[0] and "pc3" in problems[0], problems


# ---------------------------------------------------------------- the best split pair (a faked link matrix)


def _probe(rtt_ms: float | None) -> pb.ProbeResult:
    if rtt_ms is None:
        return pb.ProbeResult(reachable=False, error="connection refused")
    return pb.ProbeResult(reachable=True, rtt_p50_ms=rtt_ms)


def test_split_picks_the_two_with_the_fastest_link_and_never_an_unhealthy_one() -> None:
    a, b, c, d = (handle(n, models={DEMO_MODEL: False}) for n in "abcd")
    links = LinkMatrix()
    for x, y, rtt in (("a", "b", 0.9), ("a", "c", 0.8), ("a", "d", 0.9), ("b", "c", 0.7), ("b", "d", 0.8),
                      ("c", "d", 0.05)):
        links.record(x, y, _probe(rtt))
    job = spec(split="experts")
    first, other, _post = split_runs.choose_agents([a, b, c, d], job, "experts", links=links) or ()
    assert {first.name, other.name} == {"c", "d"}
    links.record("d", "c", _probe(None))  # the fast link went down: the next best healthy pair
    first, other, _post = split_runs.choose_agents([a, b, c, d], job, "experts", links=links) or ()
    assert {first.name, other.name} == {"b", "c"}
    for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
        links.record(x, y, _probe(None))
    # Only pairs through d are left, and c-d is down: a-d (0.9) or b-d (0.8).
    first, other, _post = split_runs.choose_agents([a, b, c, d], job, "experts", links=links) or ()
    assert {first.name, other.name} == {"b", "d"}


def test_a_rate_limited_link_loses_to_a_fast_one_even_with_the_same_round_trip() -> None:
    a, b, c = (handle(n, models={DEMO_MODEL: False}) for n in "abc")
    links = LinkMatrix()
    assert links.bandwidth_due("a", "b")  # a pair's first probe streams too
    fast = pb.ProbeResult(reachable=True, rtt_p50_ms=0.2, download_gbit=9.4, upload_gbit=9.6)
    shaped = pb.ProbeResult(reachable=True, rtt_p50_ms=0.2, download_gbit=9.4, upload_gbit=1.0)  # tc tbf one way
    links.record("a", "b", shaped)
    links.record("a", "c", shaped)
    links.record("b", "c", fast)
    chosen = split_runs.best_pair([a, b, c], links)
    assert chosen is not None and {x.name for x in chosen} == {"b", "c"}
    # A pair with only a round trip (measured when there were two agents) ranks after those streamed over.
    links.links[("b", "c")] = links_module.Link(0.05, True, "", 0.0)
    chosen = split_runs.best_pair([a, b, c], links)
    assert chosen is not None and {x.name for x in chosen} == {"a", "b"}
    links.record("b", "c", fast)
    # Echo-only probes keep the pair's bandwidth until the next streaming one is due.
    assert not links.bandwidth_due("b", "c")
    for _ in range(links_module.BANDWIDTH_EVERY - 1):
        links.record("b", "c", _probe(0.3))
    assert links.get("b", "c").gbit == 9.4 and links.bandwidth_due("b", "c")  # type: ignore[union-attr]


def test_with_equal_links_the_pair_with_more_free_vram_splits() -> None:
    a = handle("a", models={DEMO_MODEL: False}, vram=(24 * GIB, 20 * GIB))
    b = handle("b", models={DEMO_MODEL: False}, vram=(24 * GIB, 2 * GIB))
    c = handle("c", models={DEMO_MODEL: False}, vram=(24 * GIB, 1 * GIB))
    chosen = split_runs.best_pair([a, b, c], LinkMatrix())
    assert chosen is not None and {x.name for x in chosen} == {"b", "c"}


def test_two_agents_split_as_before_until_their_link_is_measured_unhealthy() -> None:
    a, b = handle("a", models={DEMO_MODEL: False}), handle("b", models={DEMO_MODEL: False})
    links = LinkMatrix()
    assert split_runs.best_pair([a, b], links) == (a, b)
    links.record("a", "b", _probe(None))
    assert split_runs.best_pair([a, b], links) is None


def test_the_stalest_pair_is_probed_next_and_a_departed_agent_is_forgotten() -> None:
    links = LinkMatrix()
    links.record("a", "b", _probe(0.1), now=100.0)
    links.record("a", "c", _probe(0.1), now=50.0)
    assert links.stalest(["a", "b", "c"], older_than_s=10, now=101.0) == ("b", "c")  # never measured
    links.record("b", "c", _probe(0.1), now=101.0)
    assert links.stalest(["a", "b", "c"], older_than_s=10, now=102.0) == ("a", "c")
    assert links.stalest(["a", "b", "c"], older_than_s=60, now=102.0) is None  # all fresh enough
    links.ask("a", "c", now=102.0)  # asked (an older agent may never answer): not asked again at once
    assert links.stalest(["a", "b", "c"], older_than_s=10, now=103.0) is None
    links.forget("c")
    assert set(links.links) == {("a", "b")} and math.isinf(links.rtt_ms("a", "c"))


# ---------------------------------------------------------------- reload of the pool (in process)


def test_pool_reload_adds_and_retires_agents_and_keeps_a_running_ones_load() -> None:
    async def main() -> None:
        cluster = ClusterConfig(agents=[AgentConfig(name="a", listen="127.0.0.1:1"),
                                        AgentConfig(name="b", listen="127.0.0.1:2")])
        changes: list[int] = []
        pool = AgentPool(cluster, interval_s=60, on_change=lambda: changes.append(1))
        await pool.start()
        a, b = pool.agents["a"], pool.agents["b"]
        a.up, b.up, b.generating = True, True, 1  # b is running a stage
        added, removed = pool.reload([AgentConfig(name="a", listen="127.0.0.1:1", prefer=["post"]),
                                      AgentConfig(name="c", listen="127.0.0.1:3")])
        assert (added, removed) == (["c"], ["b"]) and changes
        assert pool.agents["a"] is a and a.prefers("post") and a.up  # same address: same handle, new settings
        assert [x.name for x in pool.retired] == ["b"] and not b.up  # no new work for b ...
        assert b.channel is not None and [x.name for x in cluster.agents] == ["a", "c"]
        await pool._close_retired()
        assert pool.retired == [b]  # ... and its channel stays open while its stage runs
        b.generating = 0
        await pool._close_retired()
        assert pool.retired == []
        await pool.close()

    asyncio.run(main())


# ---------------------------------------------------------------- metrics show every agent


def test_busy_time_of_an_agent_removed_while_busy_stops_counting() -> None:
    clock = BusyClock()
    clock.update({("b", "generate"): True, ("a", "generate"): False}, 10.0)
    clock.update({("a", "generate"): True}, 20.0)  # b left the cluster file
    assert clock.seconds(100.0) == {("b", "generate"): 10.0, ("a", "generate"): 80.0}


def test_coordinator_metrics_list_every_agent_and_link() -> None:
    jobs = JobMetrics()
    jobs.agents.source = lambda: ({"a": True, "b": False, "c": True}, {("a", "c"): 0.0002})
    metrics = Metrics("coordinator", "coordinator", jobs=jobs)
    port = metrics.serve("127.0.0.1:0", free_port())
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.close()
    for line in ('artifex_agent_up{agent="a"} 1.0', 'artifex_agent_up{agent="b"} 0.0',
                 'artifex_agent_up{agent="c"} 1.0', 'artifex_link_rtt_seconds{a="a",b="c"} 0.0002'):
        assert line in text, text


# ---------------------------------------------------------------- real agents: three on loopback


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """a and b post-preferring, c generation-preferring but with a budget too small for the model."""
    tables = {"a": {"prefer": ["post"], "preload": [DEMO_MODEL]},
              "b": {"prefer": ["post"], "preload": [DEMO_MODEL]},
              "c": {"prefer": ["generate"], "vram_budget_gib": 0.01}}
    with started(LocalCluster(tmp_path_factory.mktemp("trio"), agents=tables)) as cluster:
        yield cluster


def _rewrite_agents(path: Path, keep: dict[str, dict[str, Any]]) -> None:
    """The coordinator's cluster file with [agents.*] replaced by `keep` (other sections as they were)."""
    raw = tomllib.loads(path.read_text())
    raw.pop("agents", None)
    write_cluster_toml(path, keep, **raw)


def _wait_log(c: Coordinator, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in c.log():
        assert time.monotonic() < deadline, f"{text!r} not in the coordinator log:\n{c.log()[-3000:]}"
        time.sleep(0.05)


def test_an_agent_that_cannot_hold_the_model_is_never_given_it(trio: LocalCluster, tmp_path: Path) -> None:
    c = Coordinator(tmp_path, trio, metrics_port=free_port()).start()
    try:
        with c.client() as client:
            c.wait_for_agents(client)
            ids = [client.submit(spec(f"fox {i}", seed=i)) for i in range(4)]
            jobs = [client.wait(i, timeout=60) for i in ids]
            _wait_log(c, "link a <-> b: RTT")  # the agents measured their link (Probe), as for any pair
            # Three agents: a choice of pairs, so the first probe streamed each way too.
            assert re.search(r"link a <-> b: RTT p50 [\d.]+ ms, [\d.]+ Gbit/s", c.log()), c.log()[-3000:]
            split = client.wait(client.submit(spec("split fox", seed=9, split="experts")), timeout=60)
            messages = [e.message for e in client.watch(split.id, history=True, timeout=10)]
        assert [j.state for j in jobs] == ["done"] * 4, [j.error for j in jobs]
        # c prefers generation and is idle, yet its GPU cannot hold the model: a and b generate, once each job.
        assert {j.agent for j in jobs} <= {"a", "b"} and all(j.attempts == 1 for j in jobs), jobs
        assert split.state == "done", split.error
        assert any("split 'experts' on a + b" in m for m in messages), messages
        url = f"http://127.0.0.1:{_metrics_port(c)}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        assert all(f'artifex_agent_up{{agent="{n}"}} 1.0' in text for n in "abc"), text
        assert 'artifex_link_rtt_seconds{a="a",b="b"}' in text, text
    finally:
        c.stop()


def _metrics_port(c: Coordinator) -> int:
    return int(tomllib.loads(c.config.read_text())["coordinator"]["metrics_port"])


def test_sighup_picks_up_an_agent_added_to_the_cluster_file_and_queued_jobs_survive(
        trio: LocalCluster, tmp_path: Path) -> None:
    c = Coordinator(tmp_path, trio)
    tables = tomllib.loads(c.config.read_text())["agents"]
    # At first the coordinator knows only a, as a post-processor: generation jobs queue.
    _rewrite_agents(c.config, {"a": {**tables["a"], "roles": ["post"]}})
    c.start()
    try:
        with c.client() as client:
            _wait_log(c, "agent a is up")
            ids = [client.submit(spec(f"queued fox {i}", seed=20 + i)) for i in range(3)]
            time.sleep(0.5)
            assert {client.get(i).state for i in ids} == {"queued"}
            _rewrite_agents(c.config, {"a": {**tables["a"], "roles": ["post"]}, "b": tables["b"]})
            assert c.child is not None and c.child.proc is not None
            c.child.proc.send_signal(signal.SIGHUP)
            jobs = [client.wait(i, timeout=60) for i in ids]
        assert [(j.state, j.agent, j.attempts) for j in jobs] == [("done", "b", 1)] * 3, jobs
        assert "agents reloaded: b added, none removed" in c.log()
    finally:
        c.stop()


def test_top_shows_every_agent_what_it_cannot_hold_and_one_added_to_the_file(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from artifex_agent.cli import top

    path = write_cluster_toml(tmp_path / "cluster.toml", {n: {"listen": f"127.0.0.1:{free_port()}"} for n in "ab"})

    async def main() -> tuple[list[str], list[str]]:
        poller = top.Poller(ClusterConfig.load(path), lambda: ClusterConfig.load(path))
        try:
            before = [v.name for v in (await poller.snapshot()).agents]
            write_cluster_toml(path, {n: {"listen": f"127.0.0.1:{free_port()}"} for n in "abc"})
            poller._stamp = -1.0  # the file system's mtime may not tick within this test
            return before, [v.name for v in (await poller.snapshot()).agents]
        finally:
            await poller.close()

    before, after = asyncio.run(main())
    assert (before, after) == (["a", "b"], ["a", "b", "c"])
    small = handle("pc3", models={A14B: True, TI2V: False}).info
    out = io.StringIO()
    Console(file=out, width=200).print(top.render(top.Snapshot([top.AgentView("pc3", "x:1", info=small)], None), None))
    assert f"cannot hold: {A14B}" in out.getvalue()


def test_an_agent_on_a_gpu_plans_with_its_card_under_the_fraction_or_its_budget() -> None:
    # What NVML reports (services/diagnostics gpu rows), without a GPU here.
    card = [{"name": "RTX 3090", "memory_total": 24 * GIB}]
    assert budget_bytes(AgentConfig(name="a", device="cuda", gpu_memory_fraction=0.5), card) == 12 * GIB
    assert budget_bytes(AgentConfig(name="a", device="cuda", gpu_memory_fraction=0.0), card) == 24 * GIB
    assert budget_bytes(AgentConfig(name="a", device="cuda", vram_budget_gib=10), card) == 10 * GIB
    assert budget_bytes(AgentConfig(name="a", device="cpu"), card) == 0  # a CPU agent is not judged


def test_a_rerun_waits_for_its_earlier_post_agents_first_health_check_after_a_restart() -> None:
    a, b = handle("a", models={DEMO_MODEL: False}), handle("b", models={DEMO_MODEL: False}, prefer=("post",))
    job = JobSpec(prompts=["x"], model=DEMO_MODEL)
    b.up, b.checked, a.checked = False, False, True  # the coordinator just started: b not heard from yet
    assert routing.choose_post([a, b], job, a, previous="b") is None  # not a second file on a
    b.checked = True  # checked and down: the re-run goes elsewhere
    assert routing.choose_post([a, b], job, a, previous="b") is a
    b.up = True
    assert routing.choose_post([a, b], job, a, previous="b") is b
