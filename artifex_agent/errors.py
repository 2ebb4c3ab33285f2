"""The one domain exception family, and the named exit codes."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes, so a service manager can tell a crash from a bad config.

    The README's "Exit codes" table lists each with when it happens; tests/cli/test_exit_codes.py makes each.
    """

    # Did what was asked (a cancel that cancelled included); also when a pipe's reader has gone.
    OK = 0
    # The job failed or was cancelled, no such job, a peer refused or is unreachable.
    FAILURE = 1
    # argparse refused the command line, or an ARTIFEX_<FLAG> value that flag cannot take.
    USAGE = 2
    # Could not start: bad config, port in use, refused insecure bind (do not restart).
    STARTUP_FAILURE = 3
    # A health check failed.
    UNHEALTHY = 4
    # Ctrl+C (128 + SIGINT, as a shell reports it).
    INTERRUPTED = 130


class ArtifexError(Exception):
    """An error a user can act on; printed without a traceback."""

    exit_code: ExitCode = ExitCode.FAILURE


class ConfigError(ArtifexError):
    """The configuration cannot work."""

    exit_code = ExitCode.STARTUP_FAILURE


class RequestError(ArtifexError):
    """A request is malformed or asks for something the agent cannot do (INVALID_ARGUMENT)."""


class NotFoundError(ArtifexError):
    """A named model or file does not exist (NOT_FOUND)."""


class ResourceError(ArtifexError):
    """Out of GPU memory or over a limit (RESOURCE_EXHAUSTED)."""


class StreamError(ArtifexError):
    """A bulk stream broke its header/trailer contract (DATA_LOSS or INVALID_ARGUMENT)."""


class MalformedMessage(StreamError):
    """A message that does not parse: the sender is broken or hostile, nothing was lost (INVALID_ARGUMENT)."""


class DeadlineError(ArtifexError):
    """A stream stalled past its idle timeout or ran past its deadline (DEADLINE_EXCEEDED)."""
