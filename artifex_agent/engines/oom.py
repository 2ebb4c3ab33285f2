"""A CUDA out-of-memory during a job: its memory goes back to the driver, the caller gets ResourceError with advice.

The one place that turns an OOM into RESOURCE_EXHAUSTED (services/errors.py), for whole
generations, model placement and split jobs alike, so the agent keeps serving after one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from artifex_agent.engines.gpu import is_oom, release_memory
from artifex_agent.errors import ResourceError

logger = logging.getLogger(__name__)

T = TypeVar("T")


def guarded(work: Callable[[], T], advice: str, *, cleanup: Callable[[], None] | None = None,
            on_oom: Callable[[str], None] | None = None) -> T:
    """`work()`; a CUDA OOM becomes ResourceError(`advice`) once memory is released.

    `cleanup` runs on any failure, before memory is released; `on_oom` gets the OOM's first line after.
    """
    try:
        return work()
    except Exception as exc:
        if not is_oom(exc):
            if cleanup is not None:
                cleanup()
            raise
        what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # Outside the except block, so the traceback's frames (holding activations) are gone first.
    if cleanup is not None:
        cleanup()
    release_memory()
    logger.warning("out of GPU memory: %s", what)
    if on_oom is not None:
        on_oom(what)
    raise ResourceError(advice)
