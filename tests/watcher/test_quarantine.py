"""Bad input goes to failed/ with a reason a person can act on; the watcher keeps running."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from artifex_agent.watcher.names import Layout
from tests.watcher.conftest import RecordingSubmitter, drop_file, job_text, make_cluster, running, wait_for

# (file name, how to make it, words the .error.txt must contain)
Maker = Callable[[Path], None]


def _text(content: str | bytes) -> Maker:
    def make(path: Path) -> None:
        part = path.with_name(path.name + ".part")
        part.write_bytes(content if isinstance(content, bytes) else content.encode())
        part.rename(path)
    return make


def _link(target: str) -> Maker:
    return lambda path: path.symlink_to(target)


def _folder(path: Path) -> None:
    staging = path.parent.parent / "staging-dir"
    staging.mkdir(exist_ok=True)
    (staging / "x.toml").write_text(job_text())
    staging.rename(path)


CASES: list[tuple[str, Maker, str]] = [
    ("syntax.toml", _text('prompt = "unclosed\n'), "not valid TOML"),
    ("syntax.json", _text('{"prompt": "a fox",}'), "not valid JSON"),
    ("array.json", _text('["a fox"]'), "one object"),
    ("unknown.toml", _text(job_text() + "colour = 3\n"), "unknown field(s): colour"),
    ("type.toml", _text('prompt = "x"\nsteps = "many"\n'), "steps"),
    ("noprompt.toml", _text('model = "wan2.2-tiny-t2v-a14b"\n'), "prompt"),
    ("frames.toml", _text(job_text().replace("frames = 5", "frames = 6")), "4k+1"),
    ("model.toml", _text(job_text().replace("wan2.2-tiny-t2v-a14b", "wan9-huge")),
     "no agent has the model 'wan9-huge'"),
    ("escape.toml", _text(job_text(output="../../etc/x")), "without '..'"),
    ("binary.toml", _text(os.urandom(64) + b"\xff\xfe"), "not UTF-8"),
    ("empty.json", _text(""), "not valid JSON"),
    ("notes.txt", _text("please render a fox"), "only .toml and .json"),
    ("a..b.toml", _text(job_text()), "contains '..'"),
    ("outside.toml", _link("/etc/hostname"), "points outside the shared folder"),
    ("big.json", _text(json.dumps({"prompt": "x" * (3 << 20)})), "at most"),
    ("long.json", _text(json.dumps({"prompt": "x" * (1 << 20)})), "the limit is 8,192"),
    ("folder.toml", _folder, "it is a folder"),
]


def test_fifty_malformed_files_are_quarantined_with_reasons(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    layout.create()
    expected: dict[str, str] = {}
    with running(cluster, submitter):
        for i in range(50):
            name, make, words = CASES[i % len(CASES)]
            stem, dot, ext = name.partition(".")
            target = layout.inbox / f"{stem}-{i:02d}{dot}{ext}"
            make(target)
            expected[target.name] = words
        wait_for(lambda: len(list(layout.failed.glob("*.error.txt"))) == 50, timeout=30, what="50 error notes")
        # Still alive: a good file dropped afterwards is submitted.
        drop_file(layout.inbox, "good.toml", job_text())
        wait_for(lambda: (layout.accepted / "good.toml").exists(), what="good.toml accepted")
    assert submitter.calls == 1
    for name, words in expected.items():
        assert (layout.failed / name).exists() or (layout.failed / name).is_symlink(), name
        note = (layout.failed / (name + ".error.txt")).read_text()
        assert words in note, f"{name}: {words!r} not in {note!r}"
        assert "What to do:" in note and f"inbox/{name}" in note
    assert not list(layout.inbox.glob("*-*"))
    assert not list(layout.processing.iterdir())


def test_status_reports_failed_and_done(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    from artifex_agent.watcher.status import collect, render

    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter):
        drop_file(layout.inbox, "ok.toml", job_text())
        drop_file(layout.inbox, "broken.toml", "prompt = \n")
        wait_for(lambda: (layout.accepted / "ok.toml").exists() and (layout.failed / "broken.toml.error.txt").exists())
        (layout.inbox / "wip.toml.part").write_text("x")
        (layout.inbox / "later.toml").write_text("still being written")  # not yet stable when we look
        status = collect(cluster)
    assert status["this_watcher"] == {"pending": 0, "running": 1, "done": 0, "failed": 1}
    assert status["folders"]["failed"] == 1
    text = render(status)
    assert "running 1" in text and "failed 1" in text and "broken.toml" in text
