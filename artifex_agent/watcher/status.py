"""`watch --status`: what is pending, running, done and failed, from the folders and the ledger."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from artifex_agent.config import ClusterConfig
from artifex_agent.watcher import claim as claims
from artifex_agent.watcher import names
from artifex_agent.watcher.ledger import Ledger
from artifex_agent.watcher.names import Layout
from artifex_agent.watcher.observer import choose_mode
from artifex_agent.watcher.scan import list_entries


def _count_inputs(folder: Path) -> int:
    """Entries in done/ or failed/ other than the notes written beside them."""
    notes = (names.ERROR_SUFFIX, names.RESULT_SUFFIX, names.JOB_ID_SUFFIX, names.VIDEO_SIDECAR)
    try:
        with os.scandir(folder) as it:
            return sum(1 for d in it if not d.name.endswith(notes) and not names.is_ignored(d.name))
    except FileNotFoundError:
        return 0


def collect(cluster: ClusterConfig, *, recent: int = 10) -> dict[str, Any]:
    """Counts from the shared folders (every watcher's view) and this watcher's ledger."""
    cfg = cluster.watcher
    layout = Layout(Path(cfg.root).expanduser().absolute())
    # Printable: a name that is not UTF-8 must not break printing the status or its JSON.
    waiting_jobs = [names.printable(e.name) for e in list_entries(layout.inbox, skip=(names.ACCEPTED,))
                    if e.is_dir or not names.is_job_image(e.name)]
    waiting_frames = [names.printable(e.name) for e in list_entries(layout.frames)
                      if not names.is_video_sidecar(e.name)]
    in_progress = claims.list_claims(layout)
    mode = choose_mode(layout.root, cfg.mode)
    out: dict[str, Any] = {
        "root": str(layout.root),
        "mode": mode.mode, "filesystem": mode.fstype, "why": mode.reason,
        "folders": {
            "pending": len(waiting_jobs) + len(waiting_frames),
            "processing": len(in_progress),
            "done": _count_inputs(layout.done) + _count_accepted(layout.accepted),
            "failed": _count_inputs(layout.failed),
        },
        "pending": waiting_jobs + waiting_frames,
        "processing": [{"name": names.printable(c.name), "kind": c.kind, "owner": c.owner} for c in in_progress],
        "ledger": str(cfg.ledger),
    }
    if Path(cfg.ledger).exists():
        ledger = Ledger(Path(cfg.ledger))
        try:
            counts = ledger.counts()
            out["this_watcher"] = {
                "pending": counts["claimed"], "running": counts["submitted"], "done": counts["done"],
                "failed": counts["failed"] + counts["quarantined"],
            }
            out["recent"] = [
                {"input": r.relpath, "state": r.state, "job": r.job_id, "job_state": r.job_state,
                 "where": r.location, "detail": r.detail.splitlines()[0] if r.detail else "",
                 "updated": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.updated))}
                for r in ledger.recent(recent)
            ]
        finally:
            ledger.close()
    return out


def _count_accepted(folder: Path) -> int:
    # Accepted job files whose outcome was written beside them.
    try:
        with os.scandir(folder) as it:
            return sum(1 for d in it if d.name.endswith(names.RESULT_SUFFIX))
    except FileNotFoundError:
        return 0


def render(status: dict[str, Any]) -> str:
    f = status["folders"]
    lines = [f"drop folder {status['root']} ({status['mode']}: {status['why']})",
             f"  folders:       pending {f['pending']}  processing {f['processing']}  done {f['done']}  "
             f"failed {f['failed']}"]
    mine = status.get("this_watcher")
    if mine:
        lines.append(f"  this watcher:  pending {mine['pending']}  running {mine['running']}  done {mine['done']}  "
                     f"failed {mine['failed']}  (ledger {status['ledger']})")
    else:
        lines.append(f"  this watcher:  no ledger yet at {status['ledger']}")
    if status["pending"]:
        shown = ", ".join(status["pending"][:10]) + (" …" if len(status["pending"]) > 10 else "")
        lines.append(f"  waiting:       {shown}")
    for c in status["processing"][:10]:
        lines.append(f"  processing:    {c['name']} ({c['kind']}, taken by {c['owner']})")
    for r in status.get("recent", []):
        job = f" job {r['job']} {r['job_state']}" if r["job"] else ""
        detail = f" — {r['detail']}" if r["detail"] and r["state"] in ("failed", "quarantined") else ""
        lines.append(f"  {r['updated']}  {r['state']:<11} {r['input']}{job}{detail}")
    return "\n".join(lines)
