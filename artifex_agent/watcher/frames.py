"""Frame folders and video files: check them, then stream them one frame at a time to a post agent.

Nothing is held beyond the frame in flight: images are decoded one by one (Pillow), a video
frame by frame (PyAV), and the agent upscales and encodes as they arrive, writing the
result under its own output_root (the only place an agent writes; see docs/watcher.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import tomllib
from collections.abc import AsyncGenerator, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from artifex_agent.config import WatcherConfig
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport import frames as tf
from artifex_agent.transport import wire
from artifex_agent.transport.options import MAX_FRAME_BYTES, MAX_FRAME_COUNT
from artifex_agent.vocabulary import CODEC_NAMES, ENCODERS
from artifex_agent.watcher import names
from artifex_agent.watcher.files import Refused, check_regular, open_regular, read_limited, resolve_input, side_name
from artifex_agent.wire_enums import ENCODER_CHOICE, codec_to_pb

logger = logging.getLogger(__name__)

_HASH_BLOCK = 1 << 20
# What a post agent takes in one stream (transport/options.py): 128 MiB of RGB per frame
# (44.7 Mpx; 8K UHD is 33.2 Mpx) and 10,000 frames. Checked from headers before anything is
# decoded, so a PNG that claims 30000x30000 costs a few bytes of reading.
MAX_FRAME_PIXELS = MAX_FRAME_BYTES // 3
MAX_FRAMES = MAX_FRAME_COUNT
MAX_SIDECAR_BYTES = 64 << 10


def check_frame_size(name: str, width: int, height: int) -> None:
    """Refused when a frame of width x height is more than a post agent takes."""
    if width * height > MAX_FRAME_PIXELS:
        raise Refused(f"{name} is {width}x{height} ({width * height:,} pixels); a frame may have at most "
                      f"{MAX_FRAME_PIXELS:,} pixels (8K UHD 7680x4320 is 33,177,600)")


def _too_many(name: str, count: int) -> None:
    if count > MAX_FRAMES:
        raise Refused(f"{name} holds {count:,} frames; a post agent takes at most {MAX_FRAMES:,} in one stream "
                      "(split it into shorter parts)")


@dataclass
class PostOptions:
    """What a _post.toml (or NAME.post.toml beside a video) may say; unset fields take the config's defaults."""

    upscale: int = 1
    upscale_model: str = ""
    codec: str = "h264"
    crf: int = 18
    preset: str = ""
    encoder: str = "auto"
    fps: float = 0.0  # 0: the video's own rate, or watcher.frames_fps for images
    output: str = ""  # name under the post agent's output_root/<output_subdir>; default: the dropped name

    @classmethod
    def load(cls, path: Path | None, cfg: WatcherConfig, name: str = "") -> PostOptions:
        """The options a sidecar sets (`name`: how to call it in a refusal; default its file name)."""
        opts = cls(upscale=cfg.frames_upscale, codec=cfg.frames_codec, crf=cfg.frames_crf)
        if path is None:
            return opts
        name = name or path.name
        data = read_limited(path, MAX_SIDECAR_BYTES, "a sidecar", label=name)
        try:
            raw = tomllib.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise Refused(f"{name} is not valid TOML: {exc}") from None
        except RecursionError:
            raise Refused(f"{name} nests too deeply; a sidecar is one table of options") from None
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise Refused(f"{name} has unknown field(s): {', '.join(unknown)} (known: {', '.join(known)})")
        for key, value in raw.items():
            want = type(getattr(opts, key))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or isinstance(value, bool):
                raise Refused(f"{name}: {key} must be {want.__name__}; got {value!r}")
            setattr(opts, key, value)
        opts.check(name)
        return opts

    def check(self, where: str) -> None:
        if not 1 <= self.upscale <= 8:
            raise Refused(f"{where}: upscale must be within 1..8")
        if self.codec not in CODEC_NAMES:
            raise Refused(f"{where}: codec {self.codec!r} is not one of {', '.join(CODEC_NAMES)}")
        if self.encoder not in ENCODERS:
            raise Refused(f"{where}: encoder {self.encoder!r} is not one of {', '.join(ENCODERS)}")
        if not 0 <= self.crf <= 63:
            raise Refused(f"{where}: crf must be within 0..63")
        if self.fps and not 1 <= self.fps <= 240:
            raise Refused(f"{where}: fps must be within 1..240")
        for value in (self.output, self.upscale_model):
            if ".." in value.replace("\\", "/").split("/") or value.startswith(("/", "\\")) or ":" in value:
                raise Refused(f"{where}: {value!r} must be a relative name without '..'")


@dataclass
class FramePlan:
    """A checked input: what will be streamed, in which order, at which size."""

    source: Path
    kind: str  # "images" or "video"
    width: int
    height: int
    count: int
    fps: float
    options: PostOptions
    content_hash: str
    images: list[Path] = field(default_factory=list)
    name: str = ""  # as dropped (a claimed video's own path carries the claim's name)

    @property
    def label(self) -> str:
        return self.name or self.source.name

    def frames(self) -> Generator[np.ndarray, None, None]:
        """(H, W, 3) uint8 frames, one at a time."""
        if self.kind == "images":
            from PIL import Image

            for path in self.images:
                try:
                    with open_regular(path) as f, Image.open(f) as img:
                        if img.size != (self.width, self.height):
                            raise Refused(f"{path.name} changed size while being read")
                        yield np.asarray(img.convert("RGB"))
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                    raise Refused(f"frame {path.name} cannot be decoded: {exc}") from None
            return
        import av

        try:
            with open_regular(self.source) as f, av.open(f, "r") as container:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise Refused(f"{self.label} cannot be decoded: {exc}") from None


def plan_folder(folder: Path, root: Path, cfg: WatcherConfig) -> FramePlan:
    """Check a claimed frame folder: images only (PNG/JPEG by content), one size, links inside the share."""
    from PIL import Image, UnidentifiedImageError

    images: list[Path] = []
    videos: list[Path] = []
    sidecar: Path | None = None
    for entry in sorted(os.scandir(folder), key=lambda e: names.natural_key(e.name)):
        name = entry.name
        if name == names.READY_MARKER or names.is_ignored(name):
            continue
        problem = names.name_problem(name)
        if problem:
            raise Refused(problem)
        path = resolve_input(Path(entry.path), folder, root)
        if path.is_dir():
            raise Refused(f"it holds a folder ({name}); a frame folder holds only numbered PNG/JPEG frames")
        check_regular(path, name)
        if name == names.FOLDER_SIDECAR:
            sidecar = path
        elif name.lower().endswith(names.VIDEO_SUFFIXES):
            videos.append(path)
        else:
            images.append(path)
    options = PostOptions.load(sidecar, cfg)
    if videos:
        if images or len(videos) > 1:
            raise Refused("a folder holds either numbered frames or one video file, not both or several videos")
        return plan_video(videos[0], root, cfg, options=options, extra=[sidecar] if sidecar else [])
    if not images:
        raise Refused("it holds no frames (PNG or JPEG)")
    _too_many("it", len(images))
    size: tuple[int, int] | None = None
    first = ""
    for path in images:
        try:
            # Pillow reads only the header here; the pixels are decoded one frame at a time while streaming.
            with open_regular(path) as f, Image.open(f, formats=("PNG", "JPEG")) as img:
                check_frame_size(path.name, *img.size)
                if size is None:
                    size, first = img.size, path.name
                elif img.size != size:
                    raise Refused(f"frames differ in size: {first} is {size[0]}x{size[1]}, "
                                  f"{path.name} is {img.size[0]}x{img.size[1]}; all frames must be the same size")
        except UnidentifiedImageError:
            raise Refused(f"{path.name} is not a PNG or JPEG image; a frame folder holds only frames") from None
        except Image.DecompressionBombError as exc:  # Pillow's own limit, far above ours
            raise Refused(f"{path.name} claims more than a frame may have (at most {MAX_FRAME_PIXELS:,} pixels): "
                          f"{exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports broken headers these ways
            raise Refused(f"{path.name} cannot be read as an image: {exc}") from None
    assert size is not None
    return FramePlan(folder, "images", size[0], size[1], len(images), options.fps or cfg.frames_fps, options,
                     content_hash([*images, *([sidecar] if sidecar else [])]), images)


def plan_video(path: Path, root: Path, cfg: WatcherConfig, *, options: PostOptions | None = None,
               sidecar: Path | None = None, extra: list[Path] | None = None, name: str = "") -> FramePlan:
    """Check a video file: one video stream PyAV can decode; frames counted by demuxing (no decode).

    `name`: the video as dropped, for refusals (a claimed video sits in processing/ under the claim's name).
    """
    import av

    name = name or path.name
    if options is None:
        options = PostOptions.load(sidecar, cfg, name=side_name(name))
        extra = [sidecar] if sidecar else []
    try:
        with open_regular(path, name) as f, av.open(f, "r") as container:
            if not container.streams.video:
                raise Refused(f"{name} has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            check_frame_size(name, width, height)
            rate = float(stream.average_rate or stream.guessed_rate or 0) or cfg.frames_fps
            count = sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as exc:
        raise Refused(f"{name} is not a video PyAV can read: {exc}") from None
    if count < 1 or width < 1 or height < 1:
        raise Refused(f"{name} holds no frames")
    _too_many(name, count)
    fps = options.fps or (rate if math.isfinite(rate) and 1 <= rate <= 240 else cfg.frames_fps)
    return FramePlan(path, "video", width, height, count, fps, options, content_hash([path, *(extra or [])]), name=name)


def content_hash(paths: list[Path]) -> str:
    """xxh3-128 over names and bytes: cheap next to decoding, and exact about what was dropped."""
    h = xxhash.xxh3_128()
    for path in paths:
        h.update(path.name.encode("utf-8", "surrogateescape") + b"\0")
        with open_regular(path) as f:
            while block := f.read(_HASH_BLOCK):
                h.update(block)
    return h.hexdigest()


def post_spec(plan: FramePlan, stem: str, cfg: WatcherConfig, job_id: str) -> pb.PostSpec:
    """The PostSpec for `plan`: output under the agent's output_root/<output_subdir>/, named after the drop."""
    stem = plan.options.output or stem
    output = f"{cfg.output_subdir.strip('/')}/{stem}" if cfg.output_subdir.strip("/") else stem
    o = plan.options
    return pb.PostSpec(output_name=output, upscale=o.upscale, upscale_model=o.upscale_model,
                       video_codec=codec_to_pb(o.codec), crf=o.crf, preset=o.preset, fps=plan.fps,
                       encoder_choice=ENCODER_CHOICE.to_pb(o.encoder), encode=True, job_id=job_id)


async def plan_messages(plan: FramePlan, *, fps: float = 0.0, chunk_bytes: int = 0) -> AsyncGenerator[bytes, None]:
    """Header, frame chunks and trailer for `plan`, decoded one frame at a time.

    A frame of another size, or a count that differs from the plan's, raises Refused before
    the trailer: a receiver never takes what it got for the whole clip.
    """
    loop = asyncio.get_running_loop()
    # One thread owns the decoder (PyAV and Pillow objects stay on it); frames are pulled one at a time.
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frames")
    source = plan.frames()
    sender = tf.FrameSender(tf.rgb_header(plan.width, plan.height, plan.count, fps or plan.fps), chunk_bytes)
    try:
        yield sender.header_message()
        while (frame := await loop.run_in_executor(reader, next, source, None)) is not None:
            if frame.shape != (plan.height, plan.width, 3):
                raise Refused(f"frame {sender.frames} is {frame.shape[1]}x{frame.shape[0]}, "
                              f"not {plan.width}x{plan.height}")
            for message in sender.frame_messages(np.ascontiguousarray(frame)):
                yield message
        if sender.frames != plan.count:
            raise Refused(f"{plan.label} decoded to {sender.frames} frames, not the {plan.count} counted")
        yield sender.trailer_message()
    finally:
        await loop.run_in_executor(reader, source.close)
        reader.shutdown(wait=False)


async def stream_plan(stub: Any, plan: FramePlan, spec: pb.PostSpec, *, chunk_bytes: int = 0,
                      timeout: float | None = None) -> pb.PostResult:
    """Send `plan`'s frames to a PostProcess stream; returns the agent's result.

    A frame that fails to decode ends the stream without its trailer, so the agent discards
    what it got; the decode error is raised here, not the agent's "truncated".
    """
    messages = plan_messages(plan, chunk_bytes=chunk_bytes)
    failure: list[BaseException] = []

    async def requests() -> Any:
        yield wire.encode_spec(spec)
        try:
            async for message in messages:
                yield message
        except Exception as exc:  # noqa: BLE001 - reported below, after the agent has given up
            failure.append(exc)

    result: pb.PostResult | None = None
    try:
        call = stub.post_process(requests(), timeout=timeout)
        try:
            async for event in call:
                if event.HasField("result"):
                    result = event.result
        except Exception:
            if failure:
                raise failure[0] from None
            raise
        if failure:
            raise failure[0]
    finally:
        with contextlib.suppress(RuntimeError):  # still being read by gRPC: it is closed when collected
            await messages.aclose()
    if result is None:
        raise Refused("the agent ended the stream without a result")
    return result
