"""Which failures are worth another attempt, and how long to wait before it.

A refusal is final: the request itself is wrong or not allowed, and another attempt would
fail the same way. Agents send their status in-band before ending a stream
(transport/post_call.py), so a refusal arrives as what it is, not as the INTERNAL that grpc
may report to a client still writing. Only an agent that went away or broke, a broken
frame stream or the coordinator's own failure is worth another attempt.
"""

from __future__ import annotations

import logging

import grpc

from artifex_agent.errors import ArtifexError, StreamError
from artifex_agent.transport.post_call import RemoteError

logger = logging.getLogger(__name__)

# The request itself is wrong (or not allowed): never retried. The one list of refusals; the
# watcher takes it less the codes it waits out instead (watcher/submitter.REFUSAL_CODES).
REFUSALS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.ALREADY_EXISTS,
})


def classify(exc: BaseException) -> tuple[str, bool, str]:
    """(message for the job's events, retryable, name of an agent that looks dead or "")."""
    if isinstance(exc, RemoteError):
        dead = exc.agent if exc.code == grpc.StatusCode.UNAVAILABLE else ""
        if dead:
            return f"agent {exc.agent} went away ({exc.details or 'unavailable'})", True, dead
        return str(exc), exc.code not in REFUSALS, ""
    if isinstance(exc, StreamError):
        return f"frame stream broken: {exc}", True, ""
    if isinstance(exc, ArtifexError):
        return str(exc), False, ""
    logger.error("unexpected error in a run", exc_info=exc)
    return f"internal error in the coordinator ({type(exc).__name__}); see its log", True, ""


def reason(exc: BaseException) -> str:
    """A short, stable name for why an attempt failed: a metrics label (a few values, never a message)."""
    if isinstance(exc, RemoteError):
        return "agent_unavailable" if exc.code == grpc.StatusCode.UNAVAILABLE else exc.code.name.lower()
    if isinstance(exc, StreamError):
        return "stream_broken"
    if isinstance(exc, ArtifexError):
        return "refused"
    return "coordinator_error"


def backoff_s(attempts: int, initial_s: float, max_s: float) -> float:
    """Capped exponential backoff after `attempts` failed attempts (1, 2, 4... times initial_s)."""
    return min(initial_s * 2 ** max(attempts - 1, 0), max_s)
