"""Run one measurement per pair of agents: at once for pairs that share no PC, all within a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def run_disjoint(items: Sequence[T], keys: Callable[[T], frozenset[Hashable]],
                       measure: Callable[[T], Awaitable[R]], deadline: float) -> list[R | None]:
    """`measure(item)` for each item, never two at once whose keys meet, in order of `items` as keys free up.

    Returns the results in the order of `items`; None for an item that did not finish by `deadline`
    (time.monotonic()): those still running then are cancelled, those not started never start.
    """
    results: list[R | None] = [None] * len(items)
    waiting = list(range(len(items)))
    busy: set[Hashable] = set()
    running: dict[asyncio.Future[R], int] = {}
    try:
        while waiting or running:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for i in list(waiting):
                if not keys(items[i]) & busy:
                    busy |= keys(items[i])
                    waiting.remove(i)
                    running[asyncio.ensure_future(measure(items[i]))] = i
            done, _ = await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                i = running.pop(task)
                busy -= keys(items[i])
                results[i] = task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return results
