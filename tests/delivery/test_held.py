"""The held payloads' bounds, and the cut of a batch's output into one part per delivery."""

from __future__ import annotations

import time

import numpy as np
import pytest

from artifex_agent.delivery.held import HeldPayloads, NotHeld
from artifex_agent.delivery.payload import Payload, cut
from artifex_agent.errors import RequestError


def _payload(clips: int, side: int = 4) -> Payload:
    rgb = np.arange(clips * 2 * side * side * 3, dtype=np.uint8).reshape(clips, 2, side, side, 3)
    return Payload(8.0, "m", side, side, rgb=rgb)


def test_the_oldest_is_dropped_first_to_make_room() -> None:
    one = _payload(1)
    held = HeldPayloads(limit_bytes=2 * one.nbytes, hold_s=60)
    assert held.put("a", one) and held.put("b", _payload(1))
    assert held.put("c", _payload(1))
    assert not held.has("a") and held.has("b") and held.has("c")
    assert held.bytes == 2 * one.nbytes


def test_a_payload_larger_than_the_limit_is_not_held() -> None:
    held = HeldPayloads(limit_bytes=10, hold_s=60)
    assert not held.put("a", _payload(1))
    with pytest.raises(NotHeld, match="no longer held"):
        held.get("a")


def test_held_payloads_expire_after_hold_s() -> None:
    held = HeldPayloads(limit_bytes=1 << 20, hold_s=0.05)
    payload = _payload(1)
    held.put("a", payload)
    assert held.get("a") is payload
    time.sleep(0.1)
    assert not held.has("a") and held.bytes == 0


def test_each_delivery_takes_the_next_clips_as_views() -> None:
    payload = _payload(3)
    parts = cut(payload, [1, 2])
    assert [p.clips for p in parts] == [1, 2]
    assert np.shares_memory(parts[1].array, payload.array)
    assert np.array_equal(parts[1].array, payload.array[1:])
    with pytest.raises(RequestError, match="take 2 clips; the generation made 3"):
        cut(payload, [1, 1])
    with pytest.raises(RequestError, match="at least one clip"):
        cut(payload, [0, 3])
