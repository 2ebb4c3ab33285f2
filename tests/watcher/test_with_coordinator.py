"""The watcher as `artifex-agent watch` processes against a real coordinator process: exactly once, crashes included."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from artifex_agent.launcher import ChildProcess
from tests.processes import link_models, started
from tests.watcher.conftest import Rig, wait_for

# Watcher and coordinator processes, a hundred job files at a time.
pytestmark = pytest.mark.slow


def _coordinator_jobs(rig: Rig) -> list[Any]:
    with rig.client() as client:
        return client.list(limit=1000)


def _assert_once_each(rig: Rig, count: int) -> None:
    jobs = _coordinator_jobs(rig)
    ids = rig.accepted_ids()
    assert len(jobs) == count, f"coordinator has {len(jobs)} jobs for {count} files"
    assert sorted(ids) == sorted(j.id for j in jobs), "every accepted file names its own job"
    assert len({j.idempotency_key for j in jobs}) == count
    assert sorted(j.spec.prompts[0] for j in jobs) == sorted(f"job {i}" for i in range(count))
    assert not list(rig.layout.inbox.glob("*.toml")) and not list(rig.layout.processing.iterdir())


def test_hundred_job_files_make_hundred_jobs_once_each(queue_only: Rig) -> None:
    drop = queue_only.stage(100)
    queue_only.start_watcher()
    drop()
    wait_for(lambda: len(list(queue_only.layout.accepted.glob("*.toml"))) == 100, timeout=60, what="100 accepted")
    _assert_once_each(queue_only, 100)


def test_killed_mid_batch_and_restarted_still_once_each(queue_only: Rig) -> None:
    drop = queue_only.stage(100)
    accepted = lambda: len(list(queue_only.layout.accepted.glob("*.toml")))  # noqa: E731
    watcher = queue_only.start_watcher()
    drop()
    for stop_at in (10, 45):
        wait_for(lambda n=stop_at: accepted() >= n, timeout=60, what=f"{stop_at} accepted")  # type: ignore[misc]
        watcher.kill()  # kill -9: no clean-up at all
        assert accepted() < 100, "the batch was over before the kill"
        watcher = queue_only.start_watcher(log=f"watch-{stop_at}.log")
    wait_for(lambda: accepted() == 100, timeout=60, what="all 100 accepted after restarts")
    _assert_once_each(queue_only, 100)


def test_two_watchers_on_one_folder_take_each_file_once(queue_only: Rig) -> None:
    drop = queue_only.stage(100)
    second = queue_only.write("pc2.toml", owner="pc2", ledger=str(queue_only.work / "pc2.db"))
    queue_only.start_watcher()
    queue_only.start_watcher(second, log="watch-pc2.log")
    drop()
    wait_for(lambda: len(list(queue_only.layout.accepted.glob("*.toml"))) == 100, timeout=60, what="100 accepted")
    _assert_once_each(queue_only, 100)


def test_files_dropped_while_the_watcher_was_down_are_taken_at_start(queue_only: Rig) -> None:
    drop = queue_only.stage(5)
    drop()
    queue_only.start_watcher()
    # NAME.job is written before the file leaves processing/ (a crash between the two is recovered through the
    # ledger), so "accepted" is the job files themselves, not their id notes.
    wait_for(lambda: len(list(queue_only.layout.accepted.glob("*.toml"))) == 5, timeout=30, what="5 accepted")
    _assert_once_each(queue_only, 5)
    out = ChildProcess(["watch", "--config", str(queue_only.config), "--status"], queue_only.work / "status.log")
    out.start()
    assert out.proc is not None and out.proc.wait(30) == 0
    assert "running 5" in out.log_tail()


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory, models_root: Path) -> Iterator[Any]:
    """Real agents 'gen' and 'post' serving the tiny Wan2.2 checkpoint."""
    from artifex_agent.local_cluster import DEMO_MODEL, LocalCluster

    tables = {"gen": {"prefer": ["generate"], "preload": [DEMO_MODEL]},
              "post": {"prefer": ["post"], "preload": [DEMO_MODEL]}}
    with started(LocalCluster(link_models(tmp_path_factory.mktemp("agents"), models_root), agents=tables)) as cluster:
        yield cluster


def test_job_file_and_frame_folder_end_to_end_on_real_agents(agents: Any, tmp_path: Path) -> None:
    import av
    import numpy as np
    from PIL import Image

    tables = {a.name: {"address": a.dial_address, "prefer": list(a.prefer), "roles": list(a.roles),
                       "output_root": str(a.output_root), "inputs_root": str(a.inputs_root)}
              for a in agents.config.agents}
    # The drop folder on the share the agents read (their inputs root): frame folders go through the coordinator.
    rig = Rig(tmp_path, tables, root=agents.config.agent("post").inputs_root / f"drop-{tmp_path.name}")
    rig.start_coordinator()
    try:
        rig.layout.create()
        rig.start_watcher()
        tiny = 'size = "16x16"\nframes = 5\nsteps = 1\nguidance = 1.0\nfps = 8.0\n'
        (rig.layout.inbox / "fox.toml.part").write_text(f'prompt = "a red fox"\nmodel = "{agents.model}"\n{tiny}')
        (rig.layout.inbox / "fox.toml.part").rename(rig.layout.inbox / "fox.toml")
        # i2v: the image exists only in the drop folder, beside its job file (no agent's inputs folder has it).
        Image.new("RGB", (20, 12), (10, 200, 10)).save(rig.layout.inbox / "first.png")
        (rig.layout.inbox / "moves.toml").write_text(
            f'prompt = "it moves"\nmodel = "wan2.2-tiny-i2v-a14b"\nimage = "first.png"\n{tiny}')
        (rig.layout.inbox / "unknown.toml").write_text(f'prompt = "a red fox"\nmodel = "wan9-huge"\n{tiny}')
        (rig.layout.inbox / "noupscaler.toml").write_text(
            f'prompt = "a cat"\nmodel = "{agents.model}"\nupscale_model = "missing.safetensors"\n{tiny}')
        shot = tmp_path / "shot"
        shot.mkdir()
        for i in range(4):
            Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)).save(shot / f"{i:04d}.png")
        os.rename(shot, rig.layout.frames / "shot")

        result = rig.layout.accepted / "fox.toml.result.txt"
        wait_for(result.exists, timeout=120, what="fox.toml's result")
        output = Path(result.read_text().splitlines()[0])
        with av.open(str(output)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 5
        moved = rig.layout.accepted / "moves.toml.result.txt"
        wait_for(moved.exists, timeout=120, what="the i2v job's result")
        with av.open(moved.read_text().splitlines()[0]) as c:
            assert sum(1 for _ in c.decode(video=0)) == 5
        assert (rig.layout.accepted / "first.png").exists() and not (rig.layout.inbox / "first.png").exists()
        # No path reached the agent: the image's bytes travelled with the job.
        i2v = [j for j in _coordinator_jobs(rig) if j.spec.model == "wan2.2-tiny-i2v-a14b"]
        assert len(i2v) == 1 and i2v[0].state == "done" and i2v[0].spec.image == ""
        note = (rig.layout.failed / "unknown.toml.error.txt")
        wait_for(note.exists, timeout=30, what="the unknown model refused")
        assert "wan9-huge" in note.read_text()
        wait_for((rig.layout.accepted / "noupscaler.toml.error.txt").exists, timeout=120,
                 what="the failed job's error")
        assert "missing.safetensors" in (rig.layout.accepted / "noupscaler.toml.error.txt").read_text()
        done = rig.layout.done / "shot.result.txt"
        wait_for(done.exists, timeout=60, what="the frame folder's result")
        shot_mp4 = Path(done.read_text().splitlines()[0])
        assert shot_mp4 in [a.output_root / "drop" / "shot.mp4" for a in agents.config.agents]
        with av.open(str(shot_mp4)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 4
        # It was a post-only job at the coordinator, named relative to the share, not a direct call.
        post_only = [j for j in _coordinator_jobs(rig) if j.spec.post_input]
        assert len(post_only) == 1 and post_only[0].state == "done"
        assert post_only[0].spec.post_input.startswith(f"drop-{tmp_path.name}/processing/")
    finally:
        rig.stop()
