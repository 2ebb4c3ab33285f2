"""Rich progress bars for a job's stages: denoising steps, streaming, post-processing."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.wire_enums import stage_from_pb

_LABELS = {"denoise": "denoising", "stream": "streaming", "receive": "receiving", "post": "upscale+encode"}


class StageProgress:
    """One bar per stage, created as the stage first reports; quiet when not a terminal."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, disable=not enabled, transient=False)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> StageProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.__exit__(et, e, tb)

    def update(self, source: str, p: pb.Progress) -> None:
        stage = "post" if source == "post" else stage_from_pb(p.current_stage)
        if stage not in _LABELS:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(_LABELS[stage], total=p.total or None)
        task = self.tasks[stage]
        if p.total:
            self.progress.update(task, total=p.total)
        self.progress.update(task, completed=p.step)
        if stage == "stream":
            # The generate side announces the stream; its bar completes when the post side has it all.
            self.progress.update(task, completed=p.total)
