"""Rich progress bars for a job's stages: denoising steps, streaming, post-processing."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.timeleft import left_text
from artifex_agent.wire_enums import stage_from_pb

_LABELS = {"denoise": "denoising", "stream": "streaming", "receive": "receiving", "post": "upscale+encode"}


class StageProgress:
    """One bar per stage, created as the stage first reports; quiet when not a terminal.

    The display starts with the first bar: a job that fails before any progress prints its error alone,
    without the empty line a started-and-stopped rich display leaves.
    """

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        # The time left is the agent's estimate for its whole part (Progress.eta_s), not this bar's pace.
        self.progress = Progress(TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[left]}"), console=self.console,
                                 disable=not enabled, transient=False)
        self.tasks: dict[str, TaskID] = {}
        self._started = False

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._started:
            self.progress.__exit__(et, e, tb)

    def update(self, source: str, p: pb.Progress) -> None:
        stage = "post" if source == "post" else stage_from_pb(p.current_stage)
        if stage not in _LABELS:
            return
        if stage not in self.tasks:
            if not self._started:
                self.progress.start()
                self._started = True
            self.tasks[stage] = self.progress.add_task(_LABELS[stage], total=p.total or None, left="")
        task = self.tasks[stage]
        if p.total:
            self.progress.update(task, total=p.total)
        self.progress.update(task, completed=p.step)
        if p.eta_s > 0:
            # One estimate for the whole part: on the bar that moves now, not left behind on finished ones.
            for other in self.tasks.values():
                self.progress.update(other, left=left_text(p.eta_s) if other == task else "")
        if stage == "stream":
            # The generate side announces the stream; its bar completes when the post side has it all.
            self.progress.update(task, completed=p.total)

    def finish(self) -> None:
        """The job succeeded: every bar full. Progress events are thinned on the way (at most a few a second),
        so the last ones, the post side's in particular, often never arrive."""
        for task in self.progress.tasks:
            self.progress.update(task.id, completed=task.total or task.completed, left="")
