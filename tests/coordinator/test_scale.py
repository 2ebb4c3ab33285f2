"""Many clients at once: 200 jobs from 4 clients all complete, each exactly once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.local_cluster import LocalCluster
from tests.coordinator.conftest import parts, spec

CLIENTS = 4
JOBS_PER_CLIENT = 50


@pytest.mark.slow
def test_200_jobs_from_4_clients_all_complete(coordinator_factory: Any, agents: LocalCluster) -> None:
    coordinator = coordinator_factory(batch_size=4, batch_timeout_s=0.1)
    t0 = time.monotonic()

    def client_run(n: int) -> list[str]:
        with coordinator.client() as client:
            # Every job distinct (its own seed): none is answered from the results cache.
            ids = [client.submit(spec(f"a small boat {n}", seed=1000 * n + i)) for i in range(JOBS_PER_CLIENT)]
            for job_id in ids:
                client.wait(job_id, timeout=120)
            return ids

    with ThreadPoolExecutor(CLIENTS) as pool:
        ids = [i for chunk in pool.map(client_run, range(CLIENTS)) for i in chunk]
    elapsed = time.monotonic() - t0
    assert len(set(ids)) == CLIENTS * JOBS_PER_CLIENT
    with coordinator.client() as client:
        jobs = client.list(limit=1000)
    assert len(jobs) == len(ids)
    assert all(j.state == "done" and not j.cached and j.attempts == 1 for j in jobs), \
        [(j.id, j.state, j.error) for j in jobs if j.state != "done"][:5]
    assert {j.agent for j in jobs} == {"a", "b"}
    for job in jobs:
        assert [Path(p).name for p in job.outputs] == [f"{job.id}.mp4"] and Path(job.outputs[0]).is_file()
    assert not parts(agents)
    print(f"200 jobs from {CLIENTS} clients in {elapsed:.1f}s")
