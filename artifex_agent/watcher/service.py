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
from artifex_agent.lockfile import InstanceLock
from artifex_agent.watcher import claim as claims
from artifex_agent.watcher import names
from artifex_agent.watcher.attempts import Attempts
from artifex_agent.watcher.claim import Claim, Heartbeats
from artifex_agent.watcher.files import side_name, sidecar_of
from artifex_agent.watcher.frameworker import FrameWorker
from artifex_agent.watcher.jobs import JobFiles
from artifex_agent.watcher.ledger import Ledger
from artifex_agent.watcher.names import Layout
from artifex_agent.watcher.observer import DropHandler, WatchMode, choose_mode, make_observer
from artifex_agent.watcher.scan import Entry, Stability, folder_signature, list_entries, looks_renamed_in
from artifex_agent.watcher.submitter import JobSubmitter, ModelLookup

logger = logging.getLogger(__name__)

# Events come in bursts (a copy of 100 files); one pass a little after the first sees them all.
DEBOUNCE_S = 0.02
NATIVE_RESCAN_S = 5.0
# The longest the inbox waits between tries while the coordinator looks down: a dead coordinator
# costs one call per pause, and a new file waits at most this long behind one input that only
# looks unavailable (it tries first once the pause ends).
PAUSE_MAX_S = 15.0


@dataclass
class Watcher:
    """One watcher over one drop folder; run() until request_stop()."""

    cluster: ClusterConfig
    submitter: JobSubmitter | None
    force_polling: bool = False
    models: ModelLookup | None = None
    mode: WatchMode | None = None
    retry_s: float = 1.0  # the first retry's delay, doubling up to BACKOFF_MAX_S (tests shorten it)
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _busy: set[Path] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _observer: BaseObserver | None = None
    _last_poll: float = 0.0
    _jobs_running: int = 0
    # When the coordinator is unreachable, job files wait in inbox/ instead of each timing out in turn;
    # one try per pause (doubling while it stays down) finds out when it is back.
    _jobs_paused_until: float = 0.0
    _pause_s: float = 0.0
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
        self._ledger_lock = InstanceLock(Path(cfg.ledger), "watcher",
                                         "stop it first, or give this one its own [watcher] ledger")
        self.ledger: Ledger | None = None

    # ------------------------------------------------------------------ lifecycle

    def startup(self) -> None:
        cfg = self.cluster.watcher
        self._ledger_lock.acquire()  # ConfigError naming the watcher that holds the ledger
        try:
            self.layout.create()
        except OSError as exc:
            raise ConfigError(f"cannot create the drop folders under {self.layout.root}: {exc}") from None
        self.ledger = Ledger(cfg.ledger)
        self.attempts = Attempts(self.ledger, self.retry_s)
        self.jobs = JobFiles(self.layout, self.ledger, self.submitter, self.owner, self.attempts, self.models) \
            if self.submitter is not None else None
        self.worker = FrameWorker(self.cluster, self.layout, self.ledger, self.owner, self.attempts,
                                  self._frames_finished)
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
        """startup(), main_loop(), shutdown(); `artifex-agent watch` adds the signals (lifecycle.serve)."""
        self.startup()
        try:
            self.main_loop()
        finally:
            self.shutdown()

    def main_loop(self) -> None:
        """Passes until request_stop()."""
        while not self._stop.is_set():
            try:
                self.pass_once()
            except Exception:
                # A share that hiccups (EIO, ESTALE, a dropped SMB session) must not end the service.
                logger.exception("a watch pass failed; trying again")
            self._wait()

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
        for due in (self.stability.next_due(now), self.attempts.next_due(now),
                    self._jobs_paused_until - now if self._jobs_paused_until > now else None):
            if due is not None:
                timeout = min(timeout, due + 0.01)
        if self._wake.wait(timeout):
            self._wake.clear()
            time.sleep(DEBOUNCE_S)

    # ------------------------------------------------------------------ one pass

    def pass_once(self) -> None:
        now = time.monotonic()
        self.heartbeats.beat()
        # Claims never tried by this process go first (left by a restart or a dead watcher), then
        # new drops, then retries: one input that keeps failing never stands in front of the others.
        fresh, retries = self._own_claims(now)
        for left in fresh:
            self._handle(left)
        present: set[Path] = set()
        if self.jobs is not None and not self._jobs_paused():
            for e in list_entries(self.layout.inbox, skip=(names.ACCEPTED,)):
                if self._jobs_paused():
                    break
                if names.is_job_image(e.name) and not e.is_dir:
                    continue  # read with the job file that names it
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
        # Before the retries: a coordinator that answers lookups makes an "unavailable" retry count.
        if self.jobs is not None and not self._jobs_paused() and \
                now - self._last_poll >= self.cluster.watcher.status_interval_s:
            self._last_poll = now
            self._jobs_running = self.jobs.poll()
        for again in retries:
            self._handle(again)
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

    def _own_claims(self, now: float) -> tuple[list[Claim], list[Claim]]:
        """Our claims to try now (never tried here, retries due), dead watchers' taken over; see attempts.order."""
        listed = claims.list_claims(self.layout)
        self.attempts.keep_only({c.token for c in listed})
        ours: list[Claim] = []
        for c in listed:
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
            if c.kind == "job" and self.jobs is None:
                continue
            ours.append(c)
        return self.attempts.order(ours, now)

    def _jobs_paused(self) -> bool:
        return self._jobs_paused_until > time.monotonic()

    def _handle(self, c: Claim) -> None:
        if c.kind == "frames":
            with self._lock:
                self._busy.add(c.path)
            self.worker.put(c)
            return
        if self.jobs is None or self._jobs_paused():
            return
        try:
            result = self.jobs.process(c)
        except Exception:  # quarantining it failed (failed/ not writable?): not the input's fault
            logger.exception("cannot move %s out of processing/; trying again later", c.relpath)
            self.attempts.back_off(c)
            return
        if result == "submitted":
            self._pause_s = 0.0
            self._jobs_running += 1  # (an estimate until the next poll) keeps status lookups going
        elif result == "pause":
            self._pause_s = min(PAUSE_MAX_S, max(self.retry_s, self._pause_s * 2))
            self._jobs_paused_until = time.monotonic() + self._pause_s

    def _frames_finished(self, c: Claim, retry: bool) -> None:
        with self._lock:
            self._busy.discard(c.path)
        self._wake.set()

    def _summarise(self) -> None:
        assert self.ledger is not None
        counts = self.ledger.counts()
        summary = (self.stability.waiting(), counts["claimed"], counts["submitted"], counts["done"],
                   counts["failed"] + counts["quarantined"])
        if summary != self._last_summary:
            self._last_summary = summary
            logger.info("pending %d (+%d claimed), running %d, done %d, failed %d", *summary)
