"""Test agents started once and stopped fast: what the session fixtures share."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from artifex_agent.launcher import ChildProcess
from artifex_agent.local_cluster import LocalCluster
from artifex_agent.proto.artifex.v1 import agent_pb2 as pb
from artifex_agent.transport.channel import AgentStub, open_channel

# A test agent that has not exited this long after SIGTERM is killed: a healthy one takes about two seconds
# (unloading its model), and the launcher's own 15 s would only make a hung teardown slower.
STOP_TIMEOUT_S = 5.0
_STOP_SIGNAL = getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM) if sys.platform == "win32" else signal.SIGTERM

# Processes already asked to stop: a second signal would make them exit at once, skipping the graceful stop.
_signalled: set[subprocess.Popen[bytes]] = set()
# What the session fixtures hold, so the session's last teardown can ask all of them to stop at once.
_holders: list[Callable[[], Iterable[ChildProcess]]] = []
_ending = False


def session_ending() -> bool:
    """True once `ask_all_to_stop` ran: a teardown must not restart an agent that is stopping on purpose."""
    return _ending


def _ask_to_stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc not in _signalled and proc.poll() is None:
            proc.send_signal(_STOP_SIGNAL)
            _signalled.add(proc)


def stop_together(children: Iterable[ChildProcess], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop child processes in parallel: signal all, then wait for each (killed after `timeout`)."""
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    _ask_to_stop(running)
    for proc in running:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _signalled.discard(proc)


def ask_all_to_stop() -> None:
    """Signal every process the session fixtures hold; their own teardowns then wait for all of them at once."""
    global _ending
    _ending = True
    for holder in _holders:
        _ask_to_stop(c.proc for c in holder() if c.proc is not None)


@contextlib.contextmanager
def held(holder: Callable[[], Iterable[ChildProcess]]) -> Iterator[None]:
    """Register a fixture's processes for `ask_all_to_stop`, and stop them together on the way out."""
    _holders.append(holder)
    try:
        yield
    finally:
        _holders.remove(holder)
        stop_together(holder())


@contextlib.contextmanager
def started(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """Start `cluster`'s agents; on the way out stop them together (LocalCluster.stop goes one by one)."""
    cluster.start()
    try:
        with held(lambda: list(cluster.children.values())):
            yield cluster
    finally:
        cluster.stop()


def link_models(workdir: Path, models_root: Path) -> Path:
    """`workdir/models` as a link to the session's tiny checkpoints: a LocalCluster there builds nothing.

    Only for agents that read their models root; a test that adds files (LoRAs, upscalers) needs its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "models").symlink_to(models_root, target_is_directory=True)
    return workdir


async def deliver_events(address: str, token: str, request: pb.DeliverRequest, *, timeout: float = 60,
                         on_event: Callable[[pb.DeliverEvent], None] | None = None) -> list[pb.DeliverEvent]:
    """Every event of one Deliver to the agent at `address` (`on_event` sees each as it comes)."""
    async with open_channel(address) as channel:
        events = []
        async for event in AgentStub(channel, token).deliver(request, timeout=timeout):
            events.append(event)
            if on_event is not None:
                on_event(event)
        return events
