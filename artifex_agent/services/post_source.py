"""A post-only job's frames, read by the agent itself (PostSpec.source_path): a frame folder or a video file.

The path is relative to the agent's inputs root (the shared cache both PCs mount) and confined
to it, links included. The frames become the same wire messages a client would send (header,
chunks, trailer), so PostProcess checks and processes them exactly as a stream, one frame at a
time: memory stays bounded by the stream's rules, not by the input's length.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from artifex_agent.config import AgentConfig, WatcherConfig
from artifex_agent.engines.paths import confined_path
from artifex_agent.errors import NotFoundError, RequestError


def _plan(path: Path, root: Path) -> object:
    # The drop folder's checks (one size, PNG/JPEG by content, links inside the share, frame limits).
    from artifex_agent.watcher.files import Refused
    from artifex_agent.watcher.frames import plan_folder, plan_video
    from artifex_agent.watcher.names import VIDEO_SUFFIXES

    cfg = WatcherConfig(root=root)
    try:
        if path.is_dir():
            return plan_folder(path, root, cfg)
        if path.name.lower().endswith(VIDEO_SUFFIXES):
            return plan_video(path, root, cfg)
    except Refused as exc:
        raise RequestError(f"post input: {exc}") from None
    raise RequestError("a post input is a folder of numbered PNG/JPEG frames or a video file")


async def source_messages(cfg: AgentConfig, source_path: str, fps: float) -> AsyncIterator[bytes]:
    """Header, frame chunks and trailer for the frames at `source_path` under the inputs root."""
    from artifex_agent.watcher.files import Refused
    from artifex_agent.watcher.frames import FramePlan, plan_messages

    path = confined_path(cfg.inputs_root, source_path)
    if not path.exists():
        raise NotFoundError(f"post input {source_path!r} is not in the inputs folder")
    plan = await asyncio.to_thread(_plan, path, cfg.inputs_root.resolve())
    assert isinstance(plan, FramePlan)
    try:
        async for message in plan_messages(plan, fps=fps):
            yield message
    except Refused as exc:
        raise RequestError(f"post input: {exc}") from None
