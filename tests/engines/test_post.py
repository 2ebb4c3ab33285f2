"""PostJob: batches upscaled and encoded into real files, one per clip when asked, its bytes given back."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from artifex_agent.engines.post import Encoding, PostJob
from artifex_agent.engines.upscale import Upscaler
from artifex_agent.errors import ResourceError


class Ledger:
    """A budget that keeps count (services/admission.Ticket in the agent), full past `limit` bytes."""

    def __init__(self, limit: int = 1 << 30) -> None:
        self.limit = limit
        self.held = 0

    def hold(self, nbytes: int) -> None:
        if self.held + nbytes > self.limit:
            raise ResourceError("budget full")
        self.held += nbytes

    def release(self, nbytes: int) -> None:
        self.held -= nbytes


def _job(output: Path | None, ledger: Ledger, *, factor: int = 1, split: bool = False, per_clip: int = 4) -> PostJob:
    return PostJob(Upscaler(factor, device="cpu"), 16, 16, per_clip, Encoding(output, 8.0, split_clips=split), ledger)


def _frames(n: int, ledger: Ledger) -> list[np.ndarray]:
    frames = [np.full((16, 16, 3), 30 * i, np.uint8) for i in range(n)]
    ledger.hold(sum(f.nbytes for f in frames))  # as the receiver charges them on arrival
    return frames


def _decoded(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as f:
        frames = list(f.decode(video=0))
    return len(frames), frames[0].width, frames[0].height


def test_two_clips_become_two_files_upscaled_and_every_byte_comes_back(tmp_path: Path) -> None:
    ledger = Ledger()
    job = _job(tmp_path / "out.mp4", ledger, factor=2, split=True)
    for _ in range(4):
        job.process(_frames(2, ledger))
    job.finish()
    assert [r.path for r in job.results] == [tmp_path / "out_0.mp4", tmp_path / "out_1.mp4"]
    assert [_decoded(Path(r.path)) for r in job.results] == [(4, 32, 32), (4, 32, 32)]
    assert (job.frames_done, job.out_size(), ledger.held) == (8, (32, 32), 0)


def test_an_aborted_job_leaves_no_file_behind(tmp_path: Path) -> None:
    ledger = Ledger()
    job = _job(tmp_path / "out.mp4", ledger, split=True)
    job.process(_frames(4, ledger))
    job.process(_frames(2, ledger))  # the second clip's encoder is open, the first clip's file in place
    assert (tmp_path / "out_0.mp4").exists()
    job.abort()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_without_an_output_frames_are_counted_not_written(tmp_path: Path) -> None:
    ledger = Ledger()
    job = _job(None, ledger)
    job.process(_frames(3, ledger))
    job.finish()
    assert (job.frames_done, job.results, ledger.held) == (3, [], 0)


def test_a_batch_the_budget_cannot_upscale_is_refused_before_any_work(tmp_path: Path) -> None:
    ledger = Ledger(limit=4 * 16 * 16 * 3)
    job = _job(tmp_path / "out.mp4", ledger, factor=2)
    frames = _frames(4, ledger)
    with pytest.raises(ResourceError, match="budget full"):
        job.process(frames)
    # Nothing upscaled or opened; the received frames stay the stream's until it ends.
    assert (job.frames_done, job.encoders, ledger.held) == (0, [], 4 * 16 * 16 * 3)
