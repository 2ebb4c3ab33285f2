"""Upscale and encode a clip a batch of frames at a time, in one worker thread (services/postprocess.py feeds it).

Every frame byte held is charged to a budget (services/admission.Ticket): the frames as they
arrived (released here once written), and the upscale's working memory while it runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from artifex_agent.engines.encode import EncodeResult, VideoEncoder
from artifex_agent.engines.upscale import Upscaler
from artifex_agent.vocabulary import Codec, EncoderChoice


class Budget(Protocol):
    """Where held bytes are charged; hold() raises when it is full."""

    def hold(self, nbytes: int) -> None: ...

    def release(self, nbytes: int) -> None: ...


@dataclass(frozen=True)
class Encoding:
    """What to write: the output (None: nothing, a transport benchmark) and how."""

    output: Path | None
    fps: float
    codec: Codec = "h264"
    encoder: EncoderChoice = "auto"
    crf: int = 18
    preset: str = ""
    # One file per clip (name_0.mp4, name_1.mp4...), when the stream holds several.
    split_clips: bool = False


@dataclass
class PostJob:
    """One clip stream's upscale and encode, owned by the worker thread once frames flow."""

    upscaler: Upscaler
    width: int
    height: int
    per_clip: int
    encoding: Encoding
    budget: Budget
    encoders: list[VideoEncoder] = field(default_factory=list)
    results: list[EncodeResult] = field(default_factory=list)
    frames_done: int = 0
    upscale_s: float = 0.0
    encode_s: float = 0.0

    def out_size(self) -> tuple[int, int]:
        return self.upscaler.out_size(self.width, self.height)

    def clip_path(self, clip: int) -> Path:
        output = self.encoding.output
        assert output is not None
        if not self.encoding.split_clips:
            return output
        return output.with_name(f"{output.stem}_{clip}{output.suffix}")

    def process(self, batch: list[np.ndarray]) -> None:
        """Upscale and encode `batch` (charged to the budget as it arrived; released here)."""
        # The upscale's working memory is charged here.
        work = self.upscaler.work_bytes(len(batch), self.width, self.height)
        if self.upscaler.name != "none":
            work += sum(f.nbytes for f in batch)  # np.stack's copy
        self.budget.hold(work)
        try:
            with self._naming_output():
                self._process(batch)
        finally:
            self.budget.release(work + sum(f.nbytes for f in batch))

    @contextlib.contextmanager
    def _naming_output(self) -> Iterator[None]:
        # A write to a full disk raises OSError without a file name; the caller is told where
        # space is missing ("disk full on <folder>", services/errors.py), so name the output.
        try:
            yield
        except OSError as exc:
            if exc.filename is None and self.encoding.output is not None:
                exc.filename = str(self.encoding.output)
            raise

    def _process(self, batch: list[np.ndarray]) -> None:
        t0 = time.perf_counter()
        # Nothing to scale: hand the received frames on as they are (np.stack would copy them).
        out = batch if self.upscaler.name == "none" else self.upscaler(np.stack(batch))
        t1 = time.perf_counter()
        self.upscale_s += t1 - t0
        if self.encoding.output is not None:
            for frame in out:
                self._encoder_for(self.frames_done).write(frame)
                self.frames_done += 1
        else:
            self.frames_done += len(out)
        self.encode_s += time.perf_counter() - t1

    def _encoder_for(self, index: int) -> VideoEncoder:
        enc = self.encoding
        clip = index // self.per_clip if enc.split_clips else 0
        while len(self.encoders) <= clip:
            if self.encoders:
                self.results.append(self.encoders[-1].close())
            ow, oh = self.out_size()
            self.encoders.append(VideoEncoder(self.clip_path(len(self.encoders)), ow, oh, enc.fps, codec=enc.codec,
                                              crf=enc.crf, preset=enc.preset, encoder=enc.encoder))
        return self.encoders[clip]

    def finish(self) -> None:
        """Close the last output (renamed into place)."""
        if self.encoders and len(self.results) < len(self.encoders):
            with self._naming_output():
                self.results.append(self.encoders[-1].close())

    def abort(self) -> None:
        """Leave nothing behind: no temporary, and no output of a call that failed as a whole."""
        for enc in self.encoders[len(self.results):]:
            enc.abort()
        for res in self.results:
            Path(res.path).unlink(missing_ok=True)
