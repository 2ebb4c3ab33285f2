"""A job answered from the results cache has its output where a fresh run would write it (issue 14, item 9)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from artifex_agent.coordinator.cache import MANIFEST, ResultsCache
from artifex_agent.engines.encode import file_sha256
from tests.coordinator.conftest import Coordinator, spec

KEY = "ab" + "0" * 62


def _outputs(root: Path, *names: str) -> list[str]:
    """Files as a post agent writes them under its output root."""
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"video {name}".encode())
        paths.append(str(path))
    return paths


def test_a_hit_is_placed_under_the_new_jobs_output_name(tmp_path: Path) -> None:
    cache, out = ResultsCache(tmp_path / "cache"), tmp_path / "out"
    assert cache.store(KEY, _outputs(out, "jobs/J1.mp4"), ["s1"], name="jobs/J1")
    hit = cache.lookup(KEY, "jobs/J2")
    assert hit is not None and hit.placed and hit.outputs == [str(out / "jobs" / "J2.mp4")]
    assert (out / "jobs" / "J2.mp4").read_bytes() == b"video jobs/J1.mp4"
    # A name of the user's own, in a folder that does not exist yet, with or without the suffix.
    for name in ("renders/fox", "renders/fox.mp4"):
        hit = cache.lookup(KEY, name)
        assert hit is not None and hit.outputs == [str(out / "renders" / "fox.mp4")]
    assert not list(out.rglob("*.part"))
    # The cache keeps its own copy: deleting the placed file leaves the entry whole.
    os.unlink(out / "jobs" / "J2.mp4")
    again = cache.lookup(KEY)
    assert again is not None and Path(again.outputs[0]).is_file() and str(cache.root) in again.outputs[0]


def test_every_clip_of_a_multi_prompt_job_is_placed(tmp_path: Path) -> None:
    cache, out = ResultsCache(tmp_path / "cache"), tmp_path / "out"
    assert cache.store(KEY, _outputs(out, "jobs/J1_0.webm", "jobs/J1_1.webm"), ["s0", "s1"], name="jobs/J1")
    hit = cache.lookup(KEY, "jobs/J2")
    assert hit is not None and hit.outputs == [str(out / "jobs" / "J2_0.webm"), str(out / "jobs" / "J2_1.webm")]
    assert (out / "jobs" / "J2_1.webm").read_bytes() == b"video jobs/J1_1.webm"


def test_an_entry_without_its_layout_keeps_the_cache_path(tmp_path: Path) -> None:
    cache, out = ResultsCache(tmp_path / "cache"), tmp_path / "out"
    assert cache.store(KEY, _outputs(out, "jobs/J1.mp4"), ["s1"])  # filed before output names were kept
    manifest = json.loads((tmp_path / "cache" / KEY[:2] / KEY / MANIFEST).read_text())
    assert "root" not in manifest
    hit = cache.lookup(KEY, "jobs/J2")
    assert hit is not None and str(cache.root) in hit.outputs[0] and not (out / "jobs" / "J2.mp4").exists()


def test_an_output_folder_that_cannot_be_written_keeps_the_cache_path(tmp_path: Path) -> None:
    cache, out = ResultsCache(tmp_path / "cache"), tmp_path / "out"
    assert cache.store(KEY, _outputs(out, "jobs/J1.mp4"), ["s1"], name="jobs/J1")
    (out / "taken").write_text("a file where the job's folder would go")
    hit = cache.lookup(KEY, "taken/J2")
    assert hit is not None and not hit.placed and str(cache.root) in hit.outputs[0]
    assert Path(hit.outputs[0]).is_file()


def test_a_repeated_job_through_the_coordinator_names_its_own_output(coordinator: Coordinator) -> None:
    with coordinator.client() as client:
        coordinator.wait_for_agents(client)
        first = client.wait(client.submit(spec("a cached heron", seed=31)), timeout=60)
        assert first.state == "done", first.error
        again = client.get(client.submit(spec("a cached heron", seed=31, output="renders/heron")))
        assert again.state == "done" and again.cached
        expected = Path(first.outputs[0]).parent.parent / "renders" / "heron.mp4"
        assert again.outputs == [str(expected)]
        assert file_sha256(expected) == first.sha256[0] == again.sha256[0]
        # Resent with the key of a job that exists: no second job, and no file for one.
        kept = client.submit(spec("a cached heron", seed=31), idempotency_key="k1")
        folder = Path(first.outputs[0]).parent
        before = set(folder.iterdir())
        assert folder / f"{kept}.mp4" in before
        assert client.submit(spec("a cached heron", seed=31), idempotency_key="k1") == kept
        assert set(folder.iterdir()) == before


def test_where_no_hard_link_can_be_made_the_file_is_copied_never_through_a_planted_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from artifex_agent.coordinator import cache

    src = tmp_path / "cache" / "0.mp4"
    src.parent.mkdir()
    src.write_bytes(b"the cached clip")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (outputs / "job.mp4").symlink_to(victim)  # planted where the output goes

    def no_link(a: object, b: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(cache.os, "link", no_link)
    cache._place_file(src, outputs / "job.mp4")
    assert victim.read_bytes() == b"keep me"
    assert not (outputs / "job.mp4").is_symlink() and (outputs / "job.mp4").read_bytes() == b"the cached clip"
