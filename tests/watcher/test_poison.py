"""One bad drop never stops the inbox: poison files are quarantined with a reason, good ones pass promptly."""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from artifex_agent.client import CoordinatorError, CoordinatorUnavailable
from artifex_agent.config import ClusterConfig
from artifex_agent.errors import RequestError
from artifex_agent.jobspec import JobSpec
from artifex_agent.watcher import files
from artifex_agent.watcher.attempts import MAX_ATTEMPTS, classify
from artifex_agent.watcher.frames import MAX_FRAME_PIXELS
from artifex_agent.watcher.jobs import MAX_JOB_DEPTH
from artifex_agent.watcher.ledger import Ledger, Record
from artifex_agent.watcher.names import Layout
from tests.watcher.conftest import (
    RecordingSubmitter,
    Rig,
    drop_file,
    job_text,
    make_cluster,
    post_cluster,
    running,
    wait_for,
)

NOT_UTF8 = b"caf\xe9.toml".decode("utf-8", "surrogateescape")  # Latin-1, as os.listdir hands it over on Linux
# FIFOs, and names that are not UTF-8, can be dropped as such on Linux (APFS and NTFS refuse those names).
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="FIFOs and non-UTF-8 names: Linux")


def _note(layout: Layout, name: str) -> str:
    return (layout.failed / (name + ".error.txt")).read_text(encoding="utf-8")


def _rename_in(staging: Path, name: str, folder: Path) -> None:
    os.rename(staging / name, folder / name)


def _stage_poison(staging: Path) -> dict[str, str]:
    """Poison job files beside the inbox; returns name -> words their error note must hold."""
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "tags.toml").write_text(job_text("tagged") + "[tags]\nx = 1\n")
    deep = "[" * 100_000 + "]" * 100_000
    (staging / "deep.json").write_text('{"prompt": "x", "tags": ' + deep + "}")
    (staging / "deep.toml").write_text(f'prompt = "x"\nseed = {"[" * 5000}{"]" * 5000}\n')
    (staging / "nested.json").write_text(json.dumps({"prompt": "x", "tags": {"a": [[[[[[[[["x"]]]]]]]]]}}))
    (staging / NOT_UTF8).write_text(job_text("café"))
    os.mkfifo(staging / "pipe.toml")  # nobody writes it: open() would wait forever
    return {"tags.toml": "tags", "deep.json": "nested", "deep.toml": "nested", "nested.json": "nested",
            NOT_UTF8: "not valid UTF-8", "pipe.toml": "named pipe (FIFO)"}


@linux_only
def test_poison_job_files_leave_good_ones_alone_and_sigterm_still_stops(queue_only: Rig) -> None:
    rig = queue_only
    expected = _stage_poison(rig.work / "poison")
    drop = rig.stage(5)
    watcher = rig.start_watcher()
    for name in expected:
        _rename_in(rig.work / "poison", name, rig.layout.inbox)
    wait_for(lambda: not any((rig.layout.inbox / n).exists() for n in expected), what="the poison claimed")
    started = time.monotonic()
    drop()
    wait_for(lambda: len(rig.accepted_ids()) == 5, timeout=20, what="5 good files accepted")
    assert time.monotonic() - started < 10, "good files waited behind the poison ones"
    wait_for(lambda: all((rig.layout.failed / (n + ".error.txt")).exists() for n in expected), timeout=20,
             what="every poison file quarantined")
    for name, words in expected.items():
        assert words in _note(rig.layout, name), f"{name!r}: {words!r} not in {_note(rig.layout, name)!r}"
    assert "\\xe9" in _note(rig.layout, NOT_UTF8)  # the name as bytes, not a crash
    assert not list(rig.layout.processing.iterdir())
    with rig.client() as client:
        assert len(client.list(limit=100)) == 5
    stopping = time.monotonic()
    assert watcher.stop(timeout=10) == 0, watcher.log_tail()
    assert time.monotonic() - stopping < 5, "SIGTERM took too long"


@pytest.mark.parametrize("exc, verdict", [
    (CoordinatorUnavailable("coordinator at x is not reachable", grpc.StatusCode.UNAVAILABLE), "unavailable"),
    (CoordinatorError("coordinator: DEADLINE_EXCEEDED", grpc.StatusCode.DEADLINE_EXCEEDED), "unavailable"),
    (ConnectionRefusedError(111, "Connection refused"), "unavailable"),
    (files.Retry("post agent gone"), "unavailable"),
    (CoordinatorError("coordinator: INTERNAL", grpc.StatusCode.INTERNAL), "transient"),
    (OSError(5, "Input/output error"), "transient"),
    (RequestError("tags['x'] must be a string"), "refused"),
    (files.Refused("not valid TOML"), "refused"),
    (TypeError("bad argument type for built-in operation"), "broken"),
    (RecursionError("maximum recursion depth exceeded"), "broken"),
    (Image.DecompressionBombError("Image size (900000000 pixels) exceeds limit"), "broken"),
])
def test_only_availability_failures_wait_uncounted(exc: BaseException, verdict: str) -> None:
    assert classify(exc) == verdict


class Breaking(RecordingSubmitter):
    """The coordinator client failing on one input: `error` for the prompt "poison", fine for the rest."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
        self.poison_calls = 0

    def submit(self, spec: JobSpec, idempotency_key: str = "") -> str:
        if spec.prompts[0] == "poison":
            with self.lock:
                self.poison_calls += 1
            raise self.error
        return super().submit(spec, idempotency_key)


def _poison_first_then_good(layout: Layout, submitter: RecordingSubmitter, count: int = 5) -> float:
    drop_file(layout.inbox, "poison.toml", job_text("poison"))
    wait_for(lambda: not (layout.inbox / "poison.toml").exists(), what="the poison claimed")
    started = time.monotonic()
    for i in range(count):
        drop_file(layout.inbox, f"good{i}.toml", job_text(f"good {i}"))
    wait_for(lambda: len(list(layout.accepted.glob("good*.job"))) == count, timeout=10, what="good files accepted")
    return time.monotonic() - started


def test_an_unexpected_error_from_one_submit_quarantines_it_at_once(tmp_path: Path) -> None:
    # What spec_to_pb raised for `[tags] x = 1` before JobSpec refused it.
    submitter = Breaking(TypeError("bad argument type for built-in operation"))
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter):
        waited = _poison_first_then_good(layout, submitter)
        wait_for(lambda: (layout.failed / "poison.toml.error.txt").exists(), what="the poison quarantined")
    assert waited < 5
    assert submitter.poison_calls == 1
    assert "TypeError: bad argument type" in _note(layout, "poison.toml")


def test_one_input_that_looks_unavailable_while_others_pass_ends_in_quarantine(tmp_path: Path) -> None:
    submitter = Breaking(ConnectionError("connection reset by peer"))
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter, retry_s=0.05):
        waited = _poison_first_then_good(layout, submitter)
        wait_for(lambda: (layout.failed / "poison.toml.error.txt").exists(), timeout=20,
                 what="the poison quarantined after its tries")
        drop_file(layout.inbox, "late.toml", job_text("late"))
        wait_for(lambda: (layout.accepted / "late.toml.job").exists(), what="a file dropped afterwards")
    assert waited < 5
    note = _note(layout, "poison.toml")
    assert f"failed {MAX_ATTEMPTS} times" in note and "connection reset by peer" in note
    # Its first failure said nothing about the input (nothing else had got through yet): not counted.
    assert submitter.poison_calls == MAX_ATTEMPTS + 1


@pytest.mark.slow
def test_a_coordinator_down_for_everyone_quarantines_nothing(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    submitter.down = True
    with running(cluster, submitter, retry_s=0.01):
        drop_file(layout.inbox, "d0.toml", job_text("d 0"))
        wait_for(lambda: submitter.calls > MAX_ATTEMPTS + 1, what="more tries than the limit while down")
        for i in (1, 2):
            drop_file(layout.inbox, f"d{i}.toml", job_text(f"d {i}"))
        wait_for(lambda: submitter.calls > MAX_ATTEMPTS + 3, what="the new files tried too")
        assert not list(layout.failed.iterdir())
        submitter.down = False
        wait_for(lambda: len(list(layout.accepted.glob("*.job"))) == 3, timeout=10, what="all 3 after recovery")
    assert not list(layout.failed.iterdir())


def test_attempts_survive_a_restart(tmp_path: Path) -> None:
    submitter = Breaking(OSError(5, "Input/output error"))  # may pass next time: counted, retried
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter, retry_s=0.05):
        drop_file(layout.inbox, "poison.toml", job_text("poison"))
        wait_for(lambda: submitter.poison_calls >= 2, what="two tries")
    first_run = submitter.poison_calls
    assert first_run < MAX_ATTEMPTS and not list(layout.failed.iterdir())
    with running(cluster, submitter, retry_s=0.05):
        wait_for(lambda: (layout.failed / "poison.toml.error.txt").exists(), what="quarantined after the restart")
    assert submitter.poison_calls == MAX_ATTEMPTS
    assert "Input/output error" in _note(layout, "poison.toml")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; the pixels are never there (nothing may try to decode them)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _good_frames(folder: Path, n: int = 3) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / f"f{i}.png")


@linux_only
def test_poison_frame_folders_leave_good_ones_alone(post_agent: tuple[ClusterConfig, Path], tmp_path: Path,
                                                     submitter: RecordingSubmitter) -> None:
    cluster = post_cluster(post_agent, tmp_path)
    layout = Layout(cluster.watcher.root)
    layout.create()
    staging = tmp_path / "staging"
    expected = {"bomb": "at most", "wide": "12000x12000", "pipeframe": "named pipe (FIFO)",
                "pipesidecar": "named pipe (FIFO)", "pipe.mp4": "named pipe (FIFO)",
                b"shot\xff".decode("utf-8", "surrogateescape"): "not valid UTF-8"}
    _good_frames(staging / "bomb", 2)
    (staging / "bomb" / "f2.png").write_bytes(_png_header(30000, 30000))  # Pillow: DecompressionBombError
    (staging / "wide").mkdir(parents=True)
    for i in range(3):
        (staging / "wide" / f"f{i}.png").write_bytes(_png_header(12000, 12000))
    _good_frames(staging / "pipeframe", 2)
    os.mkfifo(staging / "pipeframe" / "f2.png")
    _good_frames(staging / "pipesidecar", 2)
    os.mkfifo(staging / "pipesidecar" / "_post.toml")
    os.mkfifo(staging / "pipe.mp4")
    _good_frames(staging / b"shot\xff".decode("utf-8", "surrogateescape"), 2)
    for i in range(3):
        _good_frames(staging / f"good{i}")
    with running(cluster, submitter) as w:
        for name in expected:
            _rename_in(staging, name, layout.frames)
        for i in range(3):
            _rename_in(staging, f"good{i}", layout.frames)
        wait_for(lambda: all((layout.done / f"good{i}.result.txt").exists() for i in range(3)), timeout=60,
                 what="3 good folders done")
        wait_for(lambda: all((layout.failed / (n + ".error.txt")).exists() for n in expected), timeout=20,
                 what="every poison input quarantined")
        # The last note is written just before the frame worker marks itself free: wait, don't race it.
        wait_for(w.idle, timeout=5, what="the watcher idle")
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5, "the watcher took too long to stop"
    for name, words in expected.items():
        assert words in _note(layout, name), f"{name!r}: {words!r} not in {_note(layout, name)!r}"
    assert f"{MAX_FRAME_PIXELS:,}" in _note(layout, "wide")
    assert "Why: pipe.mp4 is a named pipe" in _note(layout, "pipe.mp4")  # as dropped, not as claimed
    assert not list(layout.processing.iterdir())


@linux_only
def test_readers_refuse_non_regular_files_without_opening_them(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    errors: list[BaseException] = []

    def read() -> None:
        try:
            files.read_limited(tmp_path / "fifo", 100, "a job file")
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert isinstance(errors[0], files.Refused) and "named pipe" in str(errors[0])
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(files.Refused, match="at most 100 bytes"):
        files.read_limited(tmp_path / "big", 100, "a job file")
    (tmp_path / "ok").write_bytes(b"x" * 100)
    assert files.read_limited(tmp_path / "ok", 100, "a job file") == b"x" * 100


def test_job_depth_limit_is_stated_in_the_refusal() -> None:
    from artifex_agent.watcher.jobs import parse_job

    deep: object = "x"
    for _ in range(MAX_JOB_DEPTH):
        deep = [deep]
    with pytest.raises(files.Refused, match=f"more than {MAX_JOB_DEPTH} levels"):
        parse_job(json.dumps({"prompt": "x", "tags": deep}).encode(), "deep.json")


def test_ledger_keeps_names_that_are_not_utf8_and_counts_attempts_across_reopening(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "w.db")
    odd = "inbox/" + NOT_UTF8
    ledger.record(Record("k", odd, "", "job", "quarantined", location=str(tmp_path / NOT_UTF8), detail=odd))
    rec = ledger.get("k")
    assert rec is not None and rec.relpath == "inbox/caf\\xe9.toml" and rec.detail == rec.relpath
    assert ledger.add_attempt("tok", odd, "EIO") == 1 and ledger.add_attempt("tok", odd, "EIO") == 2
    ledger.close()
    again = Ledger(tmp_path / "w.db")
    assert again.attempt_tokens() == {"tok"} and again.add_attempt("tok", odd, "EIO") == 3
    again.clear_attempts("tok")
    assert again.attempt_tokens() == set()
    again.close()
