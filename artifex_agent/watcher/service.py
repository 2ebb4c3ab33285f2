"""The watch loop: scan, claim what is complete, submit or post-process it, follow the jobs."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.observers.api import BaseObserver

from artifex_agent.config import ClusterConfig
from artifex_agent.errors import ConfigError
from artifex_agent.watcher import claim as claims
from artifex_agent.watcher import names
from artifex_agent.watcher.claim import Claim, Heartbeats
from artifex_agent.watcher.files import Retry, side_name, sidecar_of
from artifex_agent.watcher.frameworker import FrameWorker
from artifex_agent.watcher.jobs import JobFiles
from artifex_agent.watcher.ledger import Ledger, LedgerLock
from artifex_agent.watcher.names import Layout
from artifex_agent.watcher.observer import DropHandler, WatchMode, choose_mode, make_observer
from artifex_agent.watcher.scan import Entry, Stability, folder_signature, list_entries, looks_renamed_in
from artifex_agent.watcher.submitter import JobSubmitter, ModelLookup

logger = logging.getLogger(__name__)

# Events come in bursts (a copy of 100 files); one pass a little after the first sees them all.
DEBOUNCE_S = 0.02
BACKOFF_MAX_S = 60.0
NATIVE_RESCAN_S = 5.0


@dataclass
class _Backoff:
    delay: float = 0.0
    until: float = 0.0


@dataclass
class Watcher:
    """One watcher over one drop folder; run() until request_stop()."""

    cluster: ClusterConfig
    submitter: JobSubmitter | None
    force_polling: bool = False
    models: ModelLookup | None = None
    mode: WatchMode | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _busy: set[Path] = field(default_factory=set)
    _backoff: dict[Path, _Backoff] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _observer: BaseObserver | None = None
    _last_poll: float = 0.0
    _jobs_running: int = 0
    # When the coordinator is unreachable, job files wait in inbox/ instead of each timing out in turn.
    _jobs_paused_until: float = 0.0
    _last_summary: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        cfg = self.cluster.watcher
        if cfg.poll_interval_s <= 0:
            raise ConfigError("[watcher] poll_interval_s must be above 0")
        self.layout = Layout(Path(cfg.root).expanduser().absolute())
        self.owner = claims.default_owner(cfg.owner)
        self.settle_s = cfg.settle_s or cfg.poll_interval_s
        self.stability = Stability(self.settle_s)
        self.heartbeats = Heartbeats(self.layout, self.owner, cfg.claim_timeout_s)
        self._ledger_lock = LedgerLock(cfg.ledger)
        self.ledger: Ledger | None = None

    # ------------------------------------------------------------------ lifecycle

    def startup(self) -> None:
        cfg = self.cluster.watcher
        if not self._ledger_lock.acquire():
            raise ConfigError(f"another watcher already uses the ledger {cfg.ledger}")
        try:
            self.layout.create()
        except OSError as exc:
            raise ConfigError(f"cannot create the drop folders under {self.layout.root}: {exc}") from None
        self.ledger = Ledger(cfg.ledger)
        self.jobs = JobFiles(self.layout, self.ledger, self.submitter, self.owner, self.models) \
            if self.submitter is not None else None
        self.worker = FrameWorker(self.cluster, self.layout, self.ledger, self.owner, self._frames_finished)
        self.worker.start()
        self.mode = choose_mode(self.layout.root, cfg.mode, self.force_polling)
        self._observer = make_observer(self.mode.mode, cfg.poll_interval_s)
        handler = DropHandler({self.layout.inbox, self.layout.frames}, self._wake.set, self.stability.hint_complete)
        self._observer.schedule(handler, str(self.layout.inbox), recursive=False)
        # Native events are cheap, so frames/ is watched deep and a _READY marker wakes us at once;
        # polling stays at the top level and looks for markers itself (a 10,000-frame folder is not re-read).
        self._observer.schedule(handler, str(self.layout.frames), recursive=self.mode.mode == "native")
        self._observer.start()
        logger.info("watching %s as %r: %s (%s); settle %.2fs", self.layout.root, self.owner, self.mode.mode,
                    self.mode.reason, self.settle_s)
        if self.jobs is None:
            logger.warning("no coordinator client: job files in %s are left where they are", self.layout.inbox)

    def run(self) -> None:
        """startup(), passes until request_stop(), shutdown()."""
        self.startup()
        try:
            while not self._stop.is_set():
                try:
                    self.pass_once()
                except Exception:
                    # A share that hiccups (EIO, ESTALE, a dropped SMB session) must not end the service.
                    logger.exception("a watch pass failed; trying again")
                self._wait()
        finally:
            self.shutdown()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def shutdown(self, timeout: float = 30.0) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
        if getattr(self, "worker", None) is not None:
            # A frame stream still running after this is cut; its claim stays and the next start redoes it.
            self.worker.stop(timeout)
        if self.ledger is not None:
            self.ledger.close()
        self._ledger_lock.release()

    def idle(self) -> bool:
        """Nothing claimed is waiting for the frame worker."""
        with self._lock:
            return not self._busy

    def _wait(self) -> None:
        now = time.monotonic()
        cfg = self.cluster.watcher
        # Polling: a pass per poll interval. Native events wake us; the rescan is a safety net
        # (an overflowed inotify queue drops events), so it can be rare.
        timeout = cfg.poll_interval_s if self.mode is None or self.mode.mode == "polling" else \
            max(NATIVE_RESCAN_S, cfg.poll_interval_s)
        if self._jobs_running and self.jobs is not None:
            timeout = min(timeout, max(0.0, self._last_poll + cfg.status_interval_s - now))
        due = self.stability.next_due(now)
        if due is not None:
            timeout = min(timeout, due + 0.01)
        with self._lock:  # the frame worker's thread adds entries too
            pending = [b.until - now for b in self._backoff.values()]
        if pending:
            timeout = min(timeout, max(0.0, min(pending)))
        if self._wake.wait(timeout):
            self._wake.clear()
            time.sleep(DEBOUNCE_S)

    # ------------------------------------------------------------------ one pass

    def pass_once(self) -> None:
        now = time.monotonic()
        self.heartbeats.beat()
        self._resume_claims(now)
        present: set[Path] = set()
        if self.jobs is not None and self._jobs_paused_until <= now:
            for e in list_entries(self.layout.inbox, skip=(names.ACCEPTED,)):
                if self._jobs_paused_until > now:
                    break
                present.add(e.path)
                if self.stability.ready(e.path, e.signature, now):
                    self.stability.forget(e.path)
                    c = claims.claim(e.path, self.layout, self.owner, "job")
                    if c is not None:
                        self._handle(c)
        for e in list_entries(self.layout.frames):
            if names.is_video_sidecar(e.name):
                continue  # travels with its video
            present.add(e.path)
            if self._frames_ready(e, now):
                self.stability.forget(e.path)
                c = claims.claim(e.path, self.layout, self.owner, "frames")
                if c is not None:
                    side = e.path.with_name(side_name(e.name))
                    if not e.is_dir and side.exists():
                        side.rename(sidecar_of(c))
                    self._handle(c)
        self.stability.keep_only(present)
        if self.jobs is not None and self._jobs_paused_until <= now and \
                now - self._last_poll >= self.cluster.watcher.status_interval_s:
            self._last_poll = now
            self._jobs_running = self.jobs.poll()
        self._summarise()

    def _frames_ready(self, e: Entry, now: float) -> bool:
        if not e.is_dir:
            return self.stability.ready(e.path, e.signature, now)
        if (e.path / names.READY_MARKER).exists() or self.stability.take_hint(e.path):
            return True
        if looks_renamed_in(e):
            try:
                return self.stability.ready(e.path, folder_signature(e.path), now)
            except OSError:
                return False
        return False  # being filled in place: waits for its _READY marker

    def _resume_claims(self, now: float) -> None:
        """Our own claims left from before a restart (or waiting to retry), and dead watchers' claims."""
        for c in claims.list_claims(self.layout):
            if c.owner != self.owner:
                if not self.heartbeats.dead(c.owner):
                    continue
                taken = claims.take_over(c, self.owner)
                if taken is None:
                    continue
                c = taken
            with self._lock:
                if c.path in self._busy:
                    continue
                back = self._backoff.get(c.path)
            if back is not None and back.until > now:
                continue
            if c.kind == "job" and (self.jobs is None or self._jobs_paused_until > now):
                continue
            self._handle(c)

    def _handle(self, c: Claim) -> None:
        if c.kind == "frames":
            with self._lock:
                self._busy.add(c.path)
            self.worker.put(c)
            return
        assert self.jobs is not None
        try:
            self.jobs.process(c)
            with self._lock:
                self._backoff.pop(c.path, None)
            self._jobs_running += 1  # (an estimate until the next poll) keeps status lookups going
        except Retry as exc:
            back = self._retry_later(c, str(exc))
            self._jobs_paused_until = back.until
        except Exception:
            logger.exception("unexpected error with %s", c.relpath)
            self._retry_later(c, "unexpected error")

    def _frames_finished(self, c: Claim, retry: bool) -> None:
        if retry:
            self._retry_later(c, "post agent not reachable")
        with self._lock:
            self._busy.discard(c.path)
            if not retry:
                self._backoff.pop(c.path, None)
        self._wake.set()

    def _retry_later(self, c: Claim, why: str) -> _Backoff:
        with self._lock:
            back = self._backoff.setdefault(c.path, _Backoff())
            back.delay = min(BACKOFF_MAX_S, max(1.0, back.delay * 2))
            back.until = time.monotonic() + back.delay
        logger.warning("%s: %s; next try in %.0fs", c.relpath, why, back.delay)
        return back

    def _summarise(self) -> None:
        assert self.ledger is not None
        counts = self.ledger.counts()
        summary = (self.stability.waiting(), counts["claimed"], counts["submitted"], counts["done"],
                   counts["failed"] + counts["quarantined"])
        if summary != self._last_summary:
            self._last_summary = summary
            logger.info("pending %d (+%d claimed), running %d, done %d, failed %d", *summary)
