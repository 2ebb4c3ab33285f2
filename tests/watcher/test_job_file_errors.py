"""A bad job file's .error.txt lists every problem in it at once, and the fields a job file may use."""

from __future__ import annotations

from pathlib import Path

from artifex_agent.watcher.names import Layout
from tests.watcher.conftest import RecordingSubmitter, drop_file, job_text, make_cluster, running, wait_for


def test_every_problem_in_a_job_file_is_in_its_error_note(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    text = job_text().replace('size = "32x32"', 'size = "250x256"').replace("frames = 5", "frames = 18")
    with running(cluster, submitter):
        drop_file(layout.inbox, "two.toml", text + "colr = 3\n")
        note_path = layout.failed / "two.toml.error.txt"
        wait_for(note_path.exists, what="the error note")
    note = note_path.read_text()
    assert "3 problems" in note
    assert "width must be a multiple of 16" in note and "(try 240 or 256)" in note
    assert "frames must be 4k+1, e.g. 17; got 18" in note
    assert "unknown field(s): colr" in note
    assert submitter.calls == 0


def test_the_known_fields_list_names_prompt_and_size(tmp_path: Path, submitter: RecordingSubmitter) -> None:
    cluster = make_cluster(tmp_path)
    layout = Layout(cluster.watcher.root)
    with running(cluster, submitter):
        drop_file(layout.inbox, "typo.toml", job_text() + "sise = \"64x64\"\n")
        note_path = layout.failed / "typo.toml.error.txt"
        wait_for(note_path.exists, what="the error note")
    note = note_path.read_text()
    known = note.split("known: ", 1)[1].split(")", 1)[0].split(", ")
    assert "prompt" in known and "size" in known and "prompts" in known
    assert "did you mean 'size' for 'sise'?" in note
