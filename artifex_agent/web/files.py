"""Output files the page may serve: only inside the configured output roots, and their poster frames.

A job's outputs are paths the post agent wrote. The page serves one only when, resolved (symlinks followed),
it lies inside an output root this coordinator's cluster file names: the agents' output_root and [web]
output_roots. URLs never carry paths (a job id and an output index), so `..` or an absolute path in a URL
has nothing to reach; this is the second wall, against a stored path that points elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from artifex_agent.config import ClusterConfig
from artifex_agent.newfile import replacing

logger = logging.getLogger(__name__)

POSTER_WIDTH = 480


def output_roots(cluster: ClusterConfig) -> list[Path]:
    """Every folder the page may serve files from, resolved, without duplicates."""
    roots = [a.output_root for a in cluster.agents] + [Path(p).expanduser() for p in cluster.web.output_roots]
    seen: list[Path] = []
    for root in roots:
        resolved = Path(root).resolve()
        if resolved not in seen:
            seen.append(resolved)
    return seen


class OutputFiles:
    """Confines paths to the output roots and makes (and caches) poster frames."""

    def __init__(self, roots: list[Path], poster_dir: Path) -> None:
        self.roots = roots
        self.poster_dir = poster_dir
        self._lock = threading.Lock()

    def confined(self, path: str) -> Path | None:
        """`path` resolved when it is an existing file inside an output root; None otherwise."""
        if not path or "\x00" in path:
            return None
        try:
            resolved = Path(path).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, a symlink loop
            return None
        if not resolved.is_file():
            return None
        if not any(resolved.is_relative_to(root) for root in self.roots):
            logger.warning("web: refused %s: outside the output roots", path)
            return None
        return resolved

    def poster(self, video: Path) -> Path | None:
        """A JPEG of the video's first frame (made once per file version); None when it has no frame."""
        st = video.stat()
        key = hashlib.sha256(f"{video}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:32]
        target = self.poster_dir / f"{key}.jpg"
        if target.exists():
            return target
        with self._lock:  # two page loads asking at once decode once
            if target.exists():
                return target
            image = first_frame(video)
            if image is None:
                return None
            self.poster_dir.mkdir(parents=True, exist_ok=True)
            with replacing(target) as f:
                image.save(f, "JPEG", quality=82)
        return target


def first_frame(video: Path):  # type: ignore[no-untyped-def]
    """The video's first frame as a PIL image scaled to POSTER_WIDTH wide (None: no video frame in it)."""
    import av

    try:
        with av.open(str(video)) as container:
            for frame in container.decode(video=0):
                image = frame.to_image()
                if image.width > POSTER_WIDTH:
                    image = image.resize((POSTER_WIDTH, max(1, round(image.height * POSTER_WIDTH / image.width))))
                return image
    except (av.FFmpegError, IndexError, ValueError) as exc:
        logger.warning("web: no poster for %s: %s", video, exc)
    return None
