"""Job files through a real watcher (real inotify and polling observers) and a recording submitter."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from artifex_agent.watcher.names import Layout
from tests.watcher.conftest import (
    RecordingSubmitter,
    drop_file,
    job_text,
    make_cluster,
    running,
    wait_for,
)


def _accepted(layout: Layout) -> list[Path]:
    return sorted(p for p in layout.accepted.iterdir() if p.suffix in (".toml", ".json"))


def test_job_file_is_submitted_once_and_accepted_with_its_id(tmp_path: Path, submitter: RecordingSubmitter,
                                                            mode: str) -> None:
    cluster = make_cluster(tmp_path, mode=mode)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter) as w:
        assert w.mode is not None and w.mode.mode == mode
        drop_file(layout.inbox, "fox.toml", job_text())
        wait_for(lambda: (layout.accepted / "fox.toml").exists(), what="fox.toml accepted")
        job_id = (layout.accepted / "fox.toml.job").read_text().strip()
        assert (layout.accepted / "fox.toml").is_file() and not (layout.inbox / "fox.toml").exists()
        assert submitter.calls == 1 and submitter.specs[job_id].prompts == ["a fox"]
        submitter.finish(job_id, outputs=["/projects/drop/fox.mp4"])
        result = wait_for(lambda: (layout.accepted / "fox.toml.result.txt").exists(), what="result note")
        assert result
        assert (layout.accepted / "fox.toml.result.txt").read_text() == "/projects/drop/fox.mp4\n"
    assert submitter.calls == 1


def test_failed_job_writes_its_error_beside_the_file(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter):
        drop_file(layout.inbox, "bad.json", json.dumps({"prompt": "x", "model": "wan2.2-tiny-t2v-a14b"}))
        wait_for(lambda: (layout.accepted / "bad.json").exists())
        job_id = (layout.accepted / "bad.json.job").read_text().strip()
        submitter.finish(job_id, "failed", error="generate agent: CUDA out of memory")
        wait_for(lambda: (layout.accepted / "bad.json.error.txt").exists())
        text = (layout.accepted / "bad.json.error.txt").read_text()
    assert "CUDA out of memory" in text and job_id in text


def test_hundred_files_at_once_make_hundred_jobs_once_each(tmp_path: Path, submitter: RecordingSubmitter,
                                                           mode: str) -> None:
    cluster = make_cluster(tmp_path, mode=mode)
    layout = Layout(cluster.watcher.root)
    layout.create()
    staging = cluster.watcher.root / "staging"
    staging.mkdir()
    for i in range(100):
        (staging / f"job{i:03d}.toml").write_text(job_text(f"clip {i}"))
    with running(cluster, submitter):
        for i in range(100):  # renamed in, all within a few milliseconds
            os.rename(staging / f"job{i:03d}.toml", layout.inbox / f"job{i:03d}.toml")
        wait_for(lambda: len(list(layout.accepted.glob("*.job"))) == 100, what="100 accepted")
    ids = {p.read_text().strip() for p in layout.accepted.glob("*.job")}
    assert len(ids) == 100 and len(submitter.jobs) == 100 and submitter.calls == 100
    assert sorted(s.prompts[0] for s in submitter.specs.values()) == sorted(f"clip {i}" for i in range(100))


def test_temporary_names_wait_until_renamed(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter):
        for name in ("a.toml.part", ".a.toml.swp", "~$a.toml", "a.toml.tmp", "a.toml.crdownload"):
            (layout.inbox / name).write_text(job_text())
        time.sleep(1.0)
        assert submitter.calls == 0 and not list(layout.failed.iterdir())
        os.rename(layout.inbox / "a.toml.part", layout.inbox / "a.toml")
        wait_for(lambda: (layout.accepted / "a.toml.job").exists())
    assert submitter.calls == 1


@pytest.mark.slow
def test_slowly_written_file_is_taken_only_when_complete(tmp_path: Path, submitter: RecordingSubmitter,
                                                         mode: str) -> None:
    cluster = make_cluster(tmp_path, mode=mode, settle_s=0.6)
    layout = Layout(cluster.watcher.root)
    text = job_text("a slow fox", negative="blurry, " * 20)
    pieces = [text[i:i + 40] for i in range(0, len(text), 40)]
    with running(cluster, submitter):
        with open(layout.inbox / "slow.toml", "w", encoding="utf-8") as f:
            for piece in pieces[:6]:  # 6 pieces over ~2.4 s, each flushed to disk
                f.write(piece)
                f.flush()
                os.fsync(f.fileno())
                time.sleep(0.4)
                assert submitter.calls == 0 and (layout.inbox / "slow.toml").exists(), "taken while being written"
            f.write("".join(pieces[6:]))
        wait_for(lambda: (layout.accepted / "slow.toml.job").exists(), what="slow.toml accepted")
    assert not list(layout.failed.iterdir())
    assert next(iter(submitter.specs.values())).negative == "blurry, " * 20


def test_same_file_dropped_again_gets_the_same_job(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter):
        drop_file(layout.inbox, "again.toml", job_text())
        wait_for(lambda: (layout.accepted / "again.toml").exists())
        first = (layout.accepted / "again.toml.job").read_text()
        submitter.finish(first.strip())
        wait_for(lambda: (layout.accepted / "again.toml.result.txt").exists())
        drop_file(layout.inbox, "again.toml", job_text())
        wait_for(lambda: len(list(layout.accepted.glob("again*.job"))) == 2)
        wait_for(lambda: len(list(layout.accepted.glob("again*.result.txt"))) == 2)
        drop_file(layout.inbox, "again.toml", job_text(seed=7))  # changed content: a new job
        wait_for(lambda: len(list(layout.accepted.glob("again*.job"))) == 3)
    ids = [p.read_text() for p in sorted(layout.accepted.glob("again*.job"))]
    assert ids.count(first) == 2 and len(set(ids)) == 2
    assert len(submitter.jobs) == 2


def test_coordinator_down_leaves_files_and_submits_when_it_is_back(tmp_path: Path,
                                                                   submitter: RecordingSubmitter) -> None:
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    submitter.down = True
    with running(cluster, submitter):
        for i in range(5):
            drop_file(layout.inbox, f"q{i}.toml", job_text(f"q {i}"))
        wait_for(lambda: submitter.calls >= 1)
        time.sleep(0.5)
        calls_while_down = submitter.calls
        submitter.down = False
        wait_for(lambda: len(list(layout.accepted.glob("*.job"))) == 5, what="5 accepted after recovery")
    assert calls_while_down <= 2, "each file should not time out in turn while the coordinator is down"
    assert len(submitter.jobs) == 5 and not list(layout.failed.iterdir())


def test_restart_finishes_a_claim_left_by_a_crash(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    from artifex_agent.watcher import claim as claims

    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    layout.create()
    (layout.inbox / "crash.toml").write_text(job_text())
    c = claims.claim(layout.inbox / "crash.toml", layout, "w1", "job")  # claimed, then the process died
    assert c is not None and not (layout.inbox / "crash.toml").exists()
    with running(cluster, submitter):
        wait_for(lambda: (layout.accepted / "crash.toml").exists(), what="the left-over claim accepted")
    assert submitter.calls == 1 and not list(layout.processing.iterdir())


def test_claims_of_a_watcher_whose_heartbeat_stopped_are_taken_over(tmp_path: Path,
                                                                   submitter: RecordingSubmitter) -> None:
    from artifex_agent.watcher import claim as claims

    cluster = make_cluster(tmp_path, claim_timeout_s=0.5, mode="polling")  # a pass every 0.1 s
    layout = Layout(cluster.watcher.root)
    layout.create()
    (layout.state / "pc2.alive").write_text("dead")
    for name in ("alive.toml", "orphan.toml"):
        (layout.inbox / name).write_text(job_text(name))
    alive = claims.claim(layout.inbox / "alive.toml", layout, "pc3", "job")
    claims.claim(layout.inbox / "orphan.toml", layout, "pc2", "job")
    with running(cluster, submitter):
        for _ in range(15):  # pc3 keeps beating; pc2 does not
            (layout.state / "pc3.alive").write_text(str(time.monotonic()))
            time.sleep(0.1)
        wait_for(lambda: (layout.accepted / "orphan.toml").exists(), what="pc2's claim taken over")
        assert alive is not None and alive.path.exists(), "a live watcher's claim must be left alone"
    assert submitter.calls == 1


def test_a_job_file_carries_loras_scheduler_and_its_preset_unresolved(tmp_path: Path,
                                                                     submitter: RecordingSubmitter) -> None:
    from artifex_agent.coordinator.messages import spec_to_pb
    from artifex_agent.lora_ref import LoraRef

    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    text = job_text(preset="fast", scheduler="euler") + (
        'loras = ["ink:0.8:high", { name = "grain", strength = 0.5, expert = "low" }]\nshift = 5.0\n')
    with running(cluster, submitter):
        drop_file(layout.inbox, "styled.toml", text)
        wait_for(lambda: (layout.accepted / "styled.toml.job").exists(), what="styled.toml accepted")
        job_id = (layout.accepted / "styled.toml.job").read_text().strip()
    spec = submitter.specs[job_id]
    assert spec.loras == [LoraRef("ink", 0.8, "high"), LoraRef("grain", 0.5, "low")]
    assert (spec.scheduler, spec.shift, spec.preset, spec.steps) == ("euler", 5.0, "fast", 2)
    # What goes to the coordinator: the file's fields, the rest left for the preset there.
    msg = spec_to_pb(spec)
    assert len(msg.loras) == 2 and msg.steps == 2 and not msg.HasField("guidance_scale")


def test_a_job_file_with_a_bad_lora_fails_naming_it(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter):
        drop_file(layout.inbox, "bad-lora.toml", job_text() + 'loras = ["../../etc/passwd"]\n')
        wait_for(lambda: any(layout.failed.glob("bad-lora.toml*.error.txt")), what="bad-lora.toml refused")
        text = next(layout.failed.glob("bad-lora.toml*.error.txt")).read_text()
    assert "without folders" in text and submitter.calls == 0
