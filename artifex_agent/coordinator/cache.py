"""Results cache: finished outputs filed under the content hash of everything that made them.

An entry is a folder `<root>/<key[:2]>/<key>/` holding the output files and a manifest,
built beside it and renamed into place, so a reader sees a whole entry or none. Outputs
the coordinator cannot read (an agent's output folder that is not shared) are not cached.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass
class CacheHit:
    """A cached result: its files (in the cache folder) and their sha256."""

    outputs: list[str]
    sha256: list[str]


class ResultsCache:
    """Content-addressed outputs on the (shared) cache folder; a no-op without a folder."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root else None

    def _entry(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / key

    def lookup(self, key: str) -> CacheHit | None:
        """The entry for `key` when it is complete and its files are still there."""
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
        paths = [entry / name for name in names]
        if not paths or not all(p.is_file() for p in paths):
            return None
        return CacheHit([str(p) for p in paths], digests)

    def store(self, key: str, outputs: list[str], sha256: list[str]) -> bool:
        """File a job's outputs under `key`; False when they cannot be read from here (or already are)."""
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
            names = []
            for i, src in enumerate(sources):
                name = f"{i}{src.suffix}"
                _link_or_copy(src, tmp / name)
                names.append(name)
            (tmp / MANIFEST).write_text(json.dumps({"files": names, "sha256": list(sha256),
                                                    "sources": [str(s) for s in sources]}), encoding="utf-8")
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
