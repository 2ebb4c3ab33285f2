"""Logs a user reads: one INFO line per state change of a job, no tracebacks for expected events (a cancel)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from artifex_agent.engines.generation import GenerationCancelled
from artifex_agent.local_cluster import LocalCluster
from artifex_agent.services.pump import Pump
from tests.coordinator.conftest import spec, wait_stage

# Seconds of denoising on the tiny model: long enough to cancel it in the middle.
SLOW = {"width": 64, "height": 64, "frames": 9, "steps": 200}


def _tail(path: Path, start: int) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


def _lines(log: str, job_id: str) -> list[str]:
    return [line for line in log.splitlines() if f"job {job_id}" in line]


def test_each_state_change_is_one_info_line_and_a_cancel_logs_no_traceback(coordinator_factory: Any,
                                                                           agents: LocalCluster) -> None:
    coordinator = coordinator_factory(roles={"a": ["generate", "post"], "b": ["post"]})
    agent_log = agents.children["a"].log_path
    agent_start = agent_log.stat().st_size
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        done = client.submit(spec("a logged fox", seed=41))
        assert client.wait(done, timeout=60).state == "done"
        running = client.submit(spec("a cancelled river", seed=42, **SLOW))
        queued = client.submit(spec("a cancelled lake", seed=43))
        wait_stage(client, running, ("denoise",))
        assert client.cancel(queued).state == "cancelled"
        assert client.cancel(running).state == "cancelled"
        # The agent is free again: a job after the cancel runs, and the agent has had time to log the end.
        assert client.wait(client.submit(spec("after the cancel", seed=44)), timeout=60).state == "done"
    log = coordinator.log()
    # queued, running (attempt 1), done: one line each, at INFO.
    lines = _lines(log, done)
    assert len(lines) == 3 and all(" INFO " in line for line in lines), lines
    assert [w for w in ("queued", "attempt 1", "done") if any(w in line for line in lines)] == \
        ["queued", "attempt 1", "done"], lines
    for job_id, where in ((queued, "cancelled while queued"), (running, "cancelled while running on a")):
        lines = _lines(log, job_id)
        assert sum(where in line for line in lines) == 1, lines
        assert all(" INFO " in line for line in lines), lines
    assert "Traceback" not in log
    seen = _tail(agent_log, agent_start)
    assert "never retrieved" not in seen and "Traceback" not in seen, seen[-3000:]
    assert not re.search(r"\bERROR\b", seen), seen[-3000:]


def test_work_cancelled_after_its_stream_closed_leaves_no_unretrieved_exception() -> None:
    """What the agent does when the coordinator cancels a job: the stream closes, the engine stops."""
    reported: list[dict[str, Any]] = []
    stopped = threading.Event()

    def engine(pump: Pump[None]) -> None:
        # As GenerationEngine.generate: reports a step, checks `cancel` between steps, raises when it is set.
        pump.on_step(1, 40)
        while not pump.cancel.wait(0.01):
            pass
        stopped.set()
        raise GenerationCancelled("cancelled after step 3 of 40")

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        with ThreadPoolExecutor(1) as executor:
            pump: Pump[None] = Pump()
            work = functools.partial(engine, pump)
            async with contextlib.aclosing(pump.run(executor, work)) as events:
                async for _ in events:
                    break
            await asyncio.sleep(0)
            assert await asyncio.to_thread(stopped.wait, 5)
            await asyncio.sleep(0.05)  # the future's result reaches the loop
            del pump, work
            gc.collect()
            await asyncio.sleep(0)

    asyncio.run(main())
    assert stopped.is_set()
    assert not reported, [c.get("message") for c in reported]
