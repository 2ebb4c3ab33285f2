"""Results cache: finished outputs filed under the content hash of everything that made them.

An entry is a folder `<root>/<key[:2]>/<key>/` holding the output files and a manifest,
built beside it and renamed into place, so a reader sees a whole entry or none. Outputs
the coordinator cannot read (an agent's output folder that is not shared) are not cached.

A job answered from the cache gets its files where a fresh run would have written them (the
output folder the first run wrote to, under the new job's output name), linked or copied
from the entry: users look for a job's output there, not inside the cache.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from artifex_agent.engines.paths import safe_output_path
from artifex_agent.engines.temp_files import TempFile
from artifex_agent.errors import RequestError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass
class CacheHit:
    """A cached result: its files (in the cache folder, or placed for the job asking) and their sha256."""

    outputs: list[str]
    sha256: list[str]
    # The output folder the first run wrote to (as the coordinator sees it), and what each file's
    # name added to the job's output name ("" or "_0", "_1"... per clip); empty for older entries.
    root: str = ""
    tails: list[str] = field(default_factory=list)
    # outputs are the placed copies (place()), not the cache's own files.
    placed: bool = False


class ResultsCache:
    """Content-addressed outputs on the (shared) cache folder; a no-op without a folder."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root else None

    def _entry(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / key

    def lookup(self, key: str, name: str = "") -> CacheHit | None:
        """The entry for `key` when it is complete and its files are still there.

        With `name` (the asking job's output name) its outputs are placed where a fresh run of that job
        would write them (see place).
        """
        if self.root is None:
            return None
        entry = self._entry(key)
        try:
            manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
            names, digests = list(manifest["files"]), list(manifest["sha256"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("results cache entry %s is unreadable (%s); ignoring it", entry, exc)
            return None
        paths = [entry / file for file in names]
        if not paths or not all(p.is_file() for p in paths):
            return None
        tails = manifest.get("tails")
        ok = isinstance(tails, list) and len(tails) == len(paths) and all(isinstance(t, str) for t in tails)
        hit = CacheHit([str(p) for p in paths], digests, str(manifest.get("root") or "") if ok else "",
                       list(tails) if ok else [])
        if name:
            placed = self.place(hit, name)
            hit.outputs, hit.placed = placed, placed != hit.outputs
        return hit

    def place(self, hit: CacheHit, name: str) -> list[str]:
        """Link or copy the hit's files to where a fresh run of a job with output `name` would write them;
        their paths (the cache's own, as before, when the entry is older or that folder cannot be written)."""
        if not hit.root:
            return hit.outputs
        placed: list[str] = []
        try:
            for src, tail in zip(hit.outputs, hit.tails, strict=True):
                suffix = Path(src).suffix
                dst = safe_output_path(Path(hit.root), _stem(name, suffix) + tail, suffix=suffix)
                # Linked already (the same name asked for twice): renaming a link onto itself would do nothing.
                if not (dst.exists() and os.path.samefile(src, dst)):
                    _place_file(Path(src), dst)
                placed.append(str(dst))
        except (OSError, RequestError) as exc:
            logger.warning("cannot place cached outputs as %s under %s (%s); the job names the cache's files",
                           name, hit.root, exc)
            remove_placed(placed)
            return hit.outputs
        return placed

    def store(self, key: str, outputs: list[str], sha256: list[str], name: str = "") -> bool:
        """File a job's outputs under `key` (`name`: the job's output name, so a hit can be placed like it);
        False when they cannot be read from here (or already are)."""
        if self.root is None or not outputs:
            return False
        entry = self._entry(key)
        if (entry / MANIFEST).is_file():
            return False
        sources = [Path(p) for p in outputs]
        if not all(p.is_file() for p in sources):
            logger.debug("outputs of %s are not visible to the coordinator; not cached", key[:12])
            return False
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".part", dir=entry.parent))
        try:
            files = []
            for i, src in enumerate(sources):
                file = f"{i}{src.suffix}"
                _link_or_copy(src, tmp / file)
                files.append(file)
            manifest = {"files": files, "sha256": list(sha256), "sources": [str(s) for s in sources],
                        **_layout(sources, name)}
            (tmp / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
            os.rename(tmp, entry)
        except OSError as exc:
            if not (entry / MANIFEST).is_file():  # losing a race to an identical job is fine
                logger.warning("cannot add %s to the results cache: %s", key[:12], exc)
            return False
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return True


def _link_or_copy(src: Path, dst: Path) -> None:
    # A hard link costs nothing and stays valid: agents replace outputs by rename, never in place.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _place_file(src: Path, dst: Path) -> None:
    """`src` at `dst` in an agents' output folder, replacing an older file of that name as a fresh run would.

    Hard-linked under a temporary name and renamed (neither os.link nor os.replace follows a link
    planted there); where a link cannot be made, copied through engines/temp_files (created
    exclusively in .tmp/, never through a link).
    """
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        os.link(src, tmp)
    except OSError:
        with TempFile(dst) as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out.file)
            out.publish()
        return
    os.replace(tmp, dst)


def remove_placed(paths: list[str]) -> None:
    """Remove files place() made (for a job that turned out not to be new)."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _stem(name: str, suffix: str) -> str:
    """An output name without the file suffix a post agent would add (`fox.mp4` and `fox` write the same file)."""
    return name[:-len(suffix)] if suffix and name.lower().endswith(suffix.lower()) else name


def _layout(sources: list[Path], name: str) -> dict[str, object]:
    """Where `sources` were written for output `name`: their output root and each one's tail after the name.

    Empty when they do not follow the post agents' layout (root/NAME.mp4, or root/NAME_0.mp4... per clip).
    """
    if not name:
        return {}
    parts = re.split(r"[\\/]", name)
    tails = []
    root = sources[0].parents[len(parts) - 1] if len(sources[0].parents) >= len(parts) else None
    for src in sources:
        if root is None or not src.is_relative_to(root):
            return {}
        rel = src.relative_to(root).with_suffix("").as_posix()
        stem = _stem("/".join(parts), src.suffix)
        if not rel.startswith(stem):
            return {}
        tails.append(rel[len(stem):])
    return {"root": str(root), "tails": tails}
