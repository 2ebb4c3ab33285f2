"""Round trips and bandwidth between pairs of agents, measured by the agents themselves (Probe), a pair at a time.

The split policy needs to know which two agents are closest: on a rig of three or four PCs one
may sit behind a slower switch port or a shaped link. The coordinator never measures a link
itself (it is not on the path between two agents); it asks one agent of the pair to probe the
other with a few echoes, the same Probe `artifex-agent health` uses, and keeps the last figure.
Small echoes barely see a link's rate (a rate-limited port passes them at once), so with a
choice of pairs to make (three agents or more) a pair's first probe, and every few after, also
streams for a moment each way; with two agents nothing but the echoes crosses the link.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from artifex_agent.proto.artifex.v1 import agent_pb2 as pb

# Echoes per probe: enough for a p50 that ranks links, cheap enough to repeat every few seconds.
PROBE_ECHOES = 20
# Seconds of streaming each way in a bandwidth probe: enough to tell 1 from 10 Gbit/s, and no more.
BANDWIDTH_SECONDS = 0.05
# A bandwidth probe every this many probes of a pair (its first one included).
BANDWIDTH_EVERY = 10
# What a split exchanges at a time: CFG-parallel's noise predictions per step (docs/split.md), about 18 MiB.
EXCHANGE_BYTES = 18 << 20


@dataclass(frozen=True)
class Link:
    """The last measurement of one pair."""

    rtt_ms: float  # p50 of the probe's round trips (inf when unreachable)
    ok: bool  # the probing agent reached its peer
    error: str
    measured: float  # time.monotonic()
    gbit: float = 0.0  # the slower direction of the last bandwidth probe (0: none yet)
    probes: int = 1  # probes since the last bandwidth probe

    @property
    def cost_ms(self) -> float:
        """What one split exchange costs on this link: a round trip, and the exchange at its bandwidth if known."""
        if not self.ok:
            return math.inf
        return self.rtt_ms + (EXCHANGE_BYTES * 8 / (self.gbit * 1e9) * 1000 if self.gbit else 0.0)


def pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


class LinkMatrix:
    """The last RTT of every pair of agents; a pair never measured is usable but ranks after measured ones."""

    def __init__(self) -> None:
        self.links: dict[tuple[str, str], Link] = {}
        # When each pair was last asked for, answered or not (an older agent without Probe is not asked every round).
        self.asked: dict[tuple[str, str], float] = {}

    def record(self, a: str, b: str, result: pb.ProbeResult, now: float | None = None) -> Link:
        """Keep what agent `a` measured to `b`."""
        now = time.monotonic() if now is None else now
        was = self.links.get(pair(a, b))
        gbit, probes = (was.gbit, was.probes + 1) if was is not None else (0.0, 1)
        if result.download_gbit and result.upload_gbit:
            gbit, probes = min(result.download_gbit, result.upload_gbit), 1
        if result.reachable:
            link = Link(result.rtt_p50_ms, True, "", now, gbit, probes)
        else:
            link = Link(math.inf, False, result.error or "unreachable", now, gbit, probes)
        self.links[pair(a, b)] = link
        return link

    def bandwidth_due(self, a: str, b: str) -> bool:
        """Whether the pair's next probe should stream too: never measured so, or BANDWIDTH_EVERY probes ago."""
        link = self.get(a, b)
        return link is None or not link.gbit or link.probes >= BANDWIDTH_EVERY

    def get(self, a: str, b: str) -> Link | None:
        return self.links.get(pair(a, b))

    def usable(self, a: str, b: str) -> bool:
        """False only for a pair whose last probe failed: a split must never lean on it."""
        link = self.get(a, b)
        return link is None or link.ok

    def rtt_ms(self, a: str, b: str) -> float:
        """The pair's last RTT (inf: never measured or unreachable)."""
        link = self.get(a, b)
        return link.rtt_ms if link is not None else math.inf

    def cost_ms(self, a: str, b: str) -> float:
        """How long one split exchange takes between them (inf: never measured or unreachable); lower is faster."""
        link = self.get(a, b)
        return link.cost_ms if link is not None else math.inf

    def rank(self, a: str, b: str) -> tuple[bool, float]:
        """Sort key, fastest first: pairs whose bandwidth is known, by cost; then those with a round trip only."""
        link = self.get(a, b)
        return (link is None or not link.gbit, self.cost_ms(a, b))

    def stalest(self, names: Iterable[str], older_than_s: float, now: float | None = None) -> tuple[str, str] | None:
        """The pair among `names` asked for longest ago (never first), if that was more than `older_than_s` ago."""
        now = time.monotonic() if now is None else now
        best: tuple[float, tuple[str, str]] | None = None
        for a, b in itertools.combinations(sorted(set(names)), 2):
            link = self.links.get((a, b))
            when = max(link.measured if link is not None else -math.inf, self.asked.get((a, b), -math.inf))
            if now - when > older_than_s and (best is None or when < best[0]):
                best = (when, (a, b))
        return best[1] if best is not None else None

    def ask(self, a: str, b: str, now: float | None = None) -> None:
        """A probe of the pair is starting: it is not chosen again until it is stale once more."""
        self.asked[pair(a, b)] = time.monotonic() if now is None else now

    def forget(self, name: str) -> None:
        """An agent left the cluster file: its links no longer say anything."""
        self.links = {k: v for k, v in self.links.items() if name not in k}
        self.asked = {k: v for k, v in self.asked.items() if name not in k}
