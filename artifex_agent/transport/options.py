"""Chunk size, message limits and channel options: one place, applied to both ends."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

MiB = 1 << 20

# One message per frame is fastest (bench/stream): 720p RGB is 2.76 MB, so 4 MiB carries
# one frame per message up to 1080p-ish; bigger frames are split into 4 MiB pieces.
# 64 KiB chunks were the slowest setting measured.
DEFAULT_CHUNK_BYTES = 4 * MiB
# A message may be a chunk plus its few bytes of framing; anything larger is refused.
MAX_MESSAGE_BYTES = 16 * MiB
# Control messages (specs, headers, trailers, requests) are small; i2v images ride in
# GenerateRequest, so leave room for a large PNG.
MAX_CONTROL_BYTES = 32 * MiB
# A single frame or latent larger than this is refused (8K RGB is 99.5 MB).
MAX_FRAME_BYTES = 128 * MiB
MAX_FRAME_COUNT = 10_000

_KEEPALIVE = [
    # Find a dead peer (cable pulled, PC asleep) within seconds, not at TCP's 2 hours.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES + MAX_CONTROL_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES + MAX_CONTROL_BYTES),
    # Reconnect quickly after the peer comes back (default backs off to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    # Despite its name, gRPC reads this as the minimum time one connection attempt gets (TCP, TLS and
    # the peer's HTTP/2 SETTINGS; default 20 s), not as a backoff. At 200 ms a live agent on a busy PC, or
    # one lost SYN (retransmitted after 1 s), failed calls with UNAVAILABLE "connection attempt timed out
    # before receiving SETTINGS frame". Calls keep their own deadlines; this bounds a black-holed peer.
    ("grpc.min_reconnect_backoff_ms", 5_000),
    # A new channel connects afresh: gRPC's process-wide subchannel pool would hand it the subchannel
    # of an earlier channel to the same address, still backing off from a peer that has since
    # restarted there (agents keep their port), and its first call would fail UNAVAILABLE at once.
    ("grpc.use_local_subchannel_pool", 1),
    *_KEEPALIVE,
]

SERVER_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES + MAX_CONTROL_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES + MAX_CONTROL_BYTES),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    # Two PCs, a handful of streams each: refuse floods instead of queueing them.
    ("grpc.max_concurrent_streams", 64),
    # A second agent on the same port must fail to start, not share it silently.
    ("grpc.so_reuseport", 0),
    *_KEEPALIVE,
]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Raise glibc's mmap/trim thresholds so multi-MB messages reuse heap memory.

    Without it every message over 128 KiB (glibc's default, adapted up to 32 MiB only
    after frees) is a fresh mmap faulted in page by page: measured here ~1.5 GB/s
    instead of ~2.5 GB/s on a frame stream. No-op off glibc (Windows, macOS, musl).
    """
    if not sys.platform.startswith("linux") or os.environ.get("ARTIFEX_NO_MALLOC_TUNING"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # 32 MiB is the largest mmap threshold glibc accepts on 64-bit.
    ok = bool(mallopt(_M_MMAP_THRESHOLD, 32 * MiB)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    logger.debug("malloc thresholds raised: %s", ok)
    return ok
