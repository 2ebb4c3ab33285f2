"""Whose fault a failure is, and per-input retries that end in quarantine instead of going on forever.

The rule (docs/watcher.md, "Retries and quarantine"):

- A refused input goes to failed/ at once (Refused, or the coordinator or agent refusing it).
- An exception that trying again cannot change (TypeError, RecursionError, a decoder's
  error: anything but an OSError or a gRPC status) was raised by the input's own bytes:
  failed/ at once, naming the exception.
- "Not there" (UNAVAILABLE, DEADLINE_EXCEEDED, a refused connection; see AVAILABILITY_CODES)
  is retried with backoff and, for job files, pauses the inbox. It counts against the input
  only when the same service answered for something else since the input's previous try
  (another input got through, or the coordinator answered a status lookup): then the service
  is up and this input is what fails. A coordinator down for everyone never fails a good file;
  an input that looks unavailable while nothing else happens is retried, uncounted, until
  something else shows the service is up.
- Anything else (an OSError on the share, INTERNAL, UNKNOWN...) may pass next time: retried
  with backoff, and counted.
- MAX_ATTEMPTS counted failures quarantine the input. Counts are kept in the ledger under
  the claim's token, so restarts do not reset them.

Retries never hold up other inputs: each has its own backoff, and the longest-waiting goes
first, after inputs that were never tried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import grpc

from artifex_agent.watcher.claim import Claim, ClaimKind
from artifex_agent.watcher.files import Refused, Retry
from artifex_agent.watcher.ledger import Ledger
from artifex_agent.watcher.submitter import describe, is_refusal, status_code

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF_MAX_S = 60.0

# Answers that are the same for every input: the peer is down, hung, at its limit of streams,
# or does not take our token (the operator's to fix, not a reason to fail a drop).
AVAILABILITY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAUTHENTICATED})

Verdict = Literal["refused", "broken", "unavailable", "transient"]


def classify(exc: BaseException) -> Verdict:
    """refused / broken: the input's, quarantine now; unavailable: the service's; transient: may pass."""
    if isinstance(exc, Refused) or is_refusal(exc):
        return "refused"
    if isinstance(exc, (Retry, ConnectionError, TimeoutError)):
        return "unavailable"
    code = status_code(exc)
    if code is not None:
        return "unavailable" if code in AVAILABILITY_CODES else "transient"
    if isinstance(exc, (OSError, MemoryError)):
        return "transient"
    return "broken"


@dataclass
class _Tries:
    delay: float = 0.0
    until: float = 0.0  # not before (monotonic); 0 while it is being tried
    last: float = 0.0  # when it was last tried
    seen: int = -1  # inputs of its kind through when it was last tried
    before: int = -1  # ... and the time before that


@dataclass(frozen=True)
class Outcome:
    """After a failed try: quarantine with `reason`, or try again later (`pause`: the service looks down)."""

    reason: str = ""
    pause: bool = False


class Attempts:
    """Retry state of every claimed input (thread-safe: the frame worker reports from its own thread)."""

    def __init__(self, ledger: Ledger, first_delay_s: float = 1.0, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.ledger = ledger
        self.first_delay_s = first_delay_s
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        self._tries: dict[str, _Tries] = {}  # by claim token
        self._through: dict[ClaimKind, int] = {"job": 0, "frames": 0}  # answers seen from each service
        self._counted = ledger.attempt_tokens()

    def started(self, c: Claim) -> None:
        with self._lock:
            t = self._tries.setdefault(c.token, _Tries())
            through = self._through[c.kind]
            t.before = t.seen if t.seen >= 0 else through
            t.seen, t.until, t.last = through, 0.0, time.monotonic()

    def answered(self, kind: ClaimKind) -> None:
        """The service behind `kind` (coordinator, post agent) answered a call: it is up."""
        with self._lock:
            self._through[kind] += 1

    def finished(self, c: Claim, *, through: bool) -> None:
        """It left processing/; `through`: the coordinator or agent took it (so that service is up)."""
        with self._lock:
            self._tries.pop(c.token, None)
            if through:
                self._through[c.kind] += 1
            counted = c.token in self._counted
            self._counted.discard(c.token)
        if counted:
            self.ledger.clear_attempts(c.token)

    def failed(self, c: Claim, exc: BaseException) -> Outcome:
        """Record a failed try of `c`; quarantine or retry, as the rule above says."""
        verdict, why = classify(exc), describe(exc)
        if verdict == "refused":
            return Outcome(reason=why)
        if verdict == "broken":
            logger.warning("%s: %s while handling it; quarantined", c.relpath, type(exc).__name__, exc_info=exc)
            return Outcome(reason=f"the watcher cannot handle it: {type(exc).__name__}: {exc}")
        with self._lock:
            t = self._tries.setdefault(c.token, _Tries())
            counted = verdict == "transient" or self._through[c.kind] > t.before
            if counted:
                self._counted.add(c.token)
        if counted:
            n = self.ledger.add_attempt(c.token, c.relpath, why)
            if n >= self.max_attempts:
                return Outcome(reason=f"it failed {n} times (the limit is {self.max_attempts}); the last time: {why}")
            note = f"try {n} of {self.max_attempts}"
        else:
            note = "not counted: nothing else got through since its last try"
        delay = self.back_off(c)
        logger.warning("%s: %s (%s); next try in %.1fs", c.relpath, why, note, delay)
        return Outcome(pause=not counted)

    def back_off(self, c: Claim) -> float:
        """Double `c`'s delay (first_delay_s up to BACKOFF_MAX_S); returns it."""
        with self._lock:
            t = self._tries.setdefault(c.token, _Tries())
            t.delay = min(BACKOFF_MAX_S, max(self.first_delay_s, t.delay * 2))
            t.until = time.monotonic() + t.delay
            return t.delay

    def order(self, claims: Iterable[Claim], now: float) -> tuple[list[Claim], list[Claim]]:
        """(never tried, retries due now longest-waiting first); inputs waiting out their backoff are left out."""
        fresh: list[Claim] = []
        due: list[tuple[float, Claim]] = []
        with self._lock:
            for c in claims:
                t = self._tries.get(c.token)
                if t is None:
                    fresh.append(c)
                elif t.until <= now:
                    due.append((t.last, c))
        return fresh, [c for _, c in sorted(due, key=lambda pair: pair[0])]

    def next_due(self, now: float) -> float | None:
        """Seconds until the next retry is due; None when none waits."""
        with self._lock:
            waits = [t.until - now for t in self._tries.values() if t.until > now]
        return min(waits) if waits else None

    def keep_only(self, tokens: set[str]) -> None:
        """Forget claims that left processing/ some other way (taken over, deleted by a person)."""
        with self._lock:
            for token in [t for t in self._tries if t not in tokens]:
                del self._tries[token]
            gone = self._counted - tokens
            self._counted -= gone
        for token in gone:
            self.ledger.clear_attempts(token)
