"""Streamed video encoding with PyAV: NVENC when it opens, software otherwise; the file appears only when complete."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import av
import numpy as np
from av.video.reformatter import Colorspace

from artifex_agent.engines.temp_files import TempFile
from artifex_agent.errors import RequestError
from artifex_agent.vocabulary import CODEC_ENCODERS, CODECS, VIDEO_ENCODERS, CodecName, EncoderChoice, canonical_codec

logger = logging.getLogger(__name__)

# SVT-AV1 prints a banner to stderr on every open; keep its warnings, unless the user chose a level.
os.environ.setdefault("SVT_LOG", "2")

# Codec names, aliases and their encoders are vocabulary (artifex_agent/vocabulary.py).
# suffix -> (container format, codecs it may hold)
CONTAINERS: dict[str, tuple[str, frozenset[str]]] = {
    ".mp4": ("mp4", frozenset(CODECS)),
    ".mkv": ("matroska", frozenset(CODECS)),
    ".webm": ("webm", frozenset({"vp9", "av1"})),
}
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
# Every preset name maps to a speed level 1 (fastest) .. 7 (slowest) that each encoder translates.
_LEVEL = {name: lvl for name, lvl in zip(X264_PRESETS, (1, 1, 2, 3, 3, 4, 5, 6, 7, 7), strict=True)}
_LEVEL.update({f"p{i}": i for i in range(1, 8)})
_X264_OF_LEVEL = {1: "ultrafast", 2: "veryfast", 3: "faster", 4: "medium", 5: "slow", 6: "slower", 7: "veryslow"}
_SVT_OF_LEVEL = {1: 12, 2: 10, 3: 9, 4: 7, 5: 5, 6: 4, 7: 2}
_VP9_CPU_OF_LEVEL = {1: 8, 2: 6, 3: 5, 4: 4, 5: 2, 6: 1, 7: 0}
# Quality scale of each encoder (crf is passed in the encoder's own scale, not converted).
_CRF_RANGE = {
    "libx264": (0, 51),
    "libx265": (0, 51),
    "libsvtav1": (1, 63),
    "libvpx-vp9": (0, 63),
    "h264_nvenc": (0, 51),
    "hevc_nvenc": (0, 51),
    "av1_nvenc": (0, 51),
}
# Formats with halved chroma width (and for 4:2:0 height) need even sizes.
_EVEN_WIDTH = ("yuv420p", "yuv422p", "nv12", "p010le", "yuv420p10le", "nv16")
_EVEN_HEIGHT = ("yuv420p", "nv12", "p010le", "yuv420p10le")
_CHUNK = 1 << 20


@functools.cache
def _probe() -> tuple[str, ...]:
    found = []
    for name in VIDEO_ENCODERS:
        try:
            ctx: Any = av.CodecContext.create(name, "w")  # a VideoCodecContext; PyAV's stubs say CodecContext
            ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
            ctx.time_base, ctx.framerate = Fraction(1, 25), Fraction(25)
            if name == "libx265":
                ctx.options = {"x265-params": "log-level=error"}
            ctx.open()
            found.append(name)
        except Exception as exc:  # NVENC without a driver, or an encoder missing from this build
            logger.debug("encoder %s does not open here: %s", name, exc)
    logger.info("usable encoders: %s", ", ".join(found) or "none")
    return tuple(found)


def available_encoders() -> list[str]:
    """Encoders that actually open a tiny encode on this machine (probed once per process)."""
    return list(_probe())


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as f:
        return _sha256(f)


def _sha256(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    f.seek(0)
    while block := f.read(_CHUNK):
        digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EncodeResult:
    """A finished video file."""

    path: Path
    bytes: int
    frames: int
    width: int
    height: int
    codec: str
    encoder: str
    sha256: str


def _encoder_options(name: str, crf: int, preset: str) -> dict[str, str]:
    """The libavcodec options that mean `crf` and `preset` for encoder `name`."""
    lo, hi = _CRF_RANGE[name]
    if not lo <= crf <= hi:
        raise RequestError(f"crf {crf} is outside {lo}..{hi}, the quality scale of {name}")
    level = _LEVEL.get(preset)
    numeric = preset.isdigit()
    if preset and level is None and not (numeric and name in ("libsvtav1", "libvpx-vp9")):
        raise RequestError(f"unknown preset {preset!r} (use {', '.join(X264_PRESETS)} or p1..p7)")
    opts: dict[str, str] = {}
    if name in ("libx264", "libx265"):
        opts["crf"] = str(crf)
        if preset:
            opts["preset"] = preset if preset in X264_PRESETS else _X264_OF_LEVEL[level or 4]
        if name == "libx265":
            opts["x265-params"] = "log-level=error"
    elif name.endswith("_nvenc"):
        opts.update(rc="vbr", cq=str(crf))
        if level:
            opts["preset"] = f"p{level}"
    elif name == "libsvtav1":
        opts["crf"] = str(crf)
        if preset:
            opts["preset"] = preset if numeric else str(_SVT_OF_LEVEL[level or 4])
    elif name == "libvpx-vp9":
        opts.update(crf=str(crf), **{"row-mt": "1"})
        if preset:
            opts["cpu-used"] = preset if numeric else str(_VP9_CPU_OF_LEVEL[level or 4])
    return opts


def _as_fraction(fps: float | Fraction) -> Fraction:
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    if not 0 < rate <= 1000:
        raise RequestError(f"fps must be within 0..1000 (got {fps})")
    return rate


class VideoEncoder:
    """Writes uint8 RGB frames one at a time into `path` (via a temporary in .tmp/ beside it, renamed on close)."""

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float | Fraction,
        *,
        codec: CodecName = "h264",
        crf: int = 18,
        preset: str = "",
        encoder: EncoderChoice = "auto",
        pix_fmt: str = "yuv420p",
    ) -> None:
        self.path = Path(path)
        self.temp: TempFile | None = None
        self.codec = canonical_codec(codec)
        suffix = self.path.suffix.lower()
        if suffix not in CONTAINERS:
            raise RequestError(f"output {self.path.name!r}: unsupported container (use {', '.join(CONTAINERS)})")
        self.format, allowed = CONTAINERS[suffix]
        if self.codec not in allowed:
            raise RequestError(f"{suffix} cannot hold {self.codec}; use .mp4 or .mkv")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise RequestError(f"frame size must be positive integers (got {width}x{height})")
        # Padding would hand back a size nobody asked for; the caller picks even sizes instead.
        if (pix_fmt in _EVEN_WIDTH and width % 2) or (pix_fmt in _EVEN_HEIGHT and height % 2):
            raise RequestError(f"{pix_fmt} needs an even width and height (got {width}x{height})")
        self.width, self.height = width, height
        self.rate = _as_fraction(fps)
        self.pix_fmt = pix_fmt
        self.frames = 0
        self.result: EncodeResult | None = None
        self._container: Any = None
        self._stream: Any = None
        self._closed = False
        candidates = self._candidates(encoder)
        for i, name in enumerate(candidates):
            try:
                self._open(name, crf, preset)
            except (av.FFmpegError, RequestError) as exc:
                self._discard()
                if i + 1 < len(candidates):
                    logger.warning("%s did not open (%s); falling back to %s", name, exc, candidates[i + 1])
                    continue
                if isinstance(exc, RequestError):
                    raise
                logger.warning("%s refused the settings: %s", name, exc)
                raise RequestError(
                    f"encoder {name} refused the settings (crf={crf}, preset={preset or 'default'}, {pix_fmt})"
                ) from None
            self.encoder = name
            break
        logger.info(
            "encoding %s: %s %dx%d @ %s fps with %s", self.path.name, self.codec, width, height, self.rate, self.encoder
        )

    def _candidates(self, choice: EncoderChoice) -> list[str]:
        nvenc, software = CODEC_ENCODERS[self.codec]
        if choice == "software":
            return [software]
        usable = available_encoders()
        if choice == "nvenc":
            if nvenc is None:
                raise RequestError(f"NVENC cannot encode {self.codec}; use encoder software or auto")
            if nvenc not in usable:
                raise RequestError(
                    f"{nvenc} is not usable here (no NVIDIA GPU or driver); use encoder software or auto"
                )
            return [nvenc]
        if choice != "auto":
            raise RequestError(f"unknown encoder choice {choice!r} (use auto, software or nvenc)")
        return [nvenc, software] if nvenc and nvenc in usable else [software]

    def _open(self, name: str, crf: int, preset: str) -> None:
        """Open the container and the encoder `name`, writing the header so failures show now."""
        options = _encoder_options(name, crf, preset)
        formats = {f.name for f in av.Codec(name, "w").video_formats or ()}
        if self.pix_fmt not in formats:
            raise RequestError(f"{name} cannot encode {self.pix_fmt} (it takes {', '.join(sorted(formats))})")
        container_opts = {"movflags": "+faststart"} if self.format == "mp4" else {}
        # Create the file first so a missing folder or a permission problem surfaces as the
        # OSError it is, rather than as an encoder refusing its settings.
        try:
            self.temp = TempFile(self.path)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot create a temporary file for {self.path}: {exc.strerror}") from None
        # PyAV gets the exclusively created file, never a name to open: a name could be swapped
        # for a link. The mp4 faststart pass reads the output back through `reopen`.
        self._container = av.open(self.temp.file, "w", format=self.format, options=container_opts,
                                  io_open=self.temp.reopen)
        stream = self._container.add_stream(name, rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, self.pix_fmt
        ctx = stream.codec_context
        # Quality is set by crf/cq alone; a leftover target bitrate would cap it.
        ctx.bit_rate = 0
        ctx.options = options
        # Tag BT.709, limited range: what the frames are converted with, and what players assume for HD.
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1
        ctx.color_range = 1
        if self.codec == "hevc" and self.format == "mp4":
            ctx.codec_tag = "hvc1"  # QuickTime and Windows' player want hvc1, not the default hev1
        self._stream = stream
        self._container.start_encoding()

    def write(self, frame: np.ndarray) -> None:
        """Encode one uint8 (H, W, 3) RGB frame."""
        if self._closed:
            raise RuntimeError("write() after close() or abort()")
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise RequestError(f"frame {self.frames} must be uint8 (H, W, 3), got {got}")
        h, w = frame.shape[:2]
        if (w, h) != (self.width, self.height):
            raise RequestError(f"frame {self.frames} is {w}x{h}, expected {self.width}x{self.height}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf = vf.reformat(format=self.pix_fmt, dst_colorspace=Colorspace.ITU709)
        vf.pts = self.frames
        vf.time_base = 1 / self.rate
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def write_frames(self, frames: np.ndarray) -> None:
        """Encode each frame of a uint8 (N, H, W, 3) array."""
        for frame in frames:
            self.write(frame)

    def close(self) -> EncodeResult:
        """Flush, make the file durable, rename it into place and describe it."""
        if self.result is not None:
            return self.result
        if self._closed:
            raise RuntimeError("close() after abort()")
        if self.frames == 0:
            self.abort()
            raise RequestError(f"no frames were written to {self.path.name!r}")
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            self._closed = True
            assert self.temp is not None
            size = os.fstat(self.temp.file.fileno()).st_size
            digest = _sha256(self.temp.file)
            self.temp.publish()
        except BaseException:
            self.abort()
            raise
        self.result = EncodeResult(
            path=self.path,
            bytes=size,
            frames=self.frames,
            width=self.width,
            height=self.height,
            codec=self.codec,
            encoder=self.encoder,
            sha256=digest,
        )
        logger.info("wrote %s: %d frames, %d bytes, %s", self.path, self.frames, size, self.encoder)
        return self.result

    def abort(self) -> None:
        """Stop and delete the unfinished file; safe to call more than once."""
        self._closed = True
        if self.result is None:
            self._discard()

    def _discard(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception as exc:  # already broken; the file goes anyway
                logger.debug("closing the aborted container failed: %s", exc)
            self._container = None
        self._stream = None
        if self.temp is not None:
            self.temp.discard()

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()
