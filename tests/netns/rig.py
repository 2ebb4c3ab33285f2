"""Two hosts on one machine: network namespaces A and B joined by a veth pair, an agent in each.

    with TwoHosts(tmp_path, models_root=...) as rig:
        rig.run_in("a", ["ping", "-c1", rig.b.ip])
        rig.link_down("a"); rig.shape("10gbit"); rig.set_mtu("b", 1500)
        with rig.packet_loss("b", 5): ...
        with rig.blackhole(): ...              # every packet on the link dropped, no carrier loss
        rig.link_bytes("a"); rig.link_bytes("a", "lo")   # the kernel's byte counters
        proc, config = rig.start_coordinator("a", {"a": ["generate"], "b": ["post"]})
        rig.cli_in("a", ["submit", ...], config=config)

Names (namespaces, interfaces) and the 10.77.N.0/24 subnet are unique per rig, and
everything is removed on close, on failure, and at interpreter exit. Traffic stays in
the two namespaces: nothing is added to the machine's own network namespace.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from artifex_agent.launcher import ChildProcess, start_agent
from artifex_agent.local_cluster import write_cluster_toml
from tests.processes import stop_together

logger = logging.getLogger(__name__)

PREFIX = "artx"
AGENT_PORT = 50051
# Inside a namespace nothing else listens: fixed ports cannot clash with another rig's.
COORDINATOR_PORT = 50061
TOKEN = "netns-rig-token-5b9e"
ROOT = Path(__file__).resolve().parents[2]


def unavailable() -> str:
    """Why the rig cannot run here ('' when it can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root; try sudo)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed (scripts/system-deps.sh installs it as root)"
    name = f"{PREFIX}probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def sweep_stale() -> list[str]:
    """Delete rig namespaces left by processes that no longer exist (a killed test run)."""
    removed = []
    listing = _ip("netns", "list", check=False).stdout.split()
    for name in listing:
        if not name.startswith(PREFIX) or "-" not in name:
            continue
        pid = name[len(PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass
class Host:
    """One side of the rig."""

    key: str  # "a" or "b": also the agent's name
    ns: str
    iface: str
    ip: str

    @property
    def address(self) -> str:
        return f"{self.ip}:{AGENT_PORT}"


class TwoHosts:
    """Namespaces A and B, a veth link with MTU 9000, and an `artifex-agent serve` in each."""

    def __init__(self, workdir: Path, *, models_root: Path | None = None, token: str = TOKEN, mtu: int = 9000,
                 agents: dict[str, dict[str, Any]] | None = None, network: dict[str, Any] | None = None,
                 start_agents: bool = True) -> None:
        self.workdir = Path(workdir)
        self.token = token
        self.mtu = mtu
        self.models_root = models_root or self.workdir / "models"
        self.agent_tables = agents or {}
        self.network = network or {}
        self.start_agents_on_enter = start_agents
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        # 10.77.N.0/24: the subnet only exists inside the two new namespaces, so it cannot
        # clash with the machine's networks; random N keeps parallel rigs' logs apart.
        subnet = secrets.randbelow(254) + 1
        self.subnet = f"10.77.{subnet}.0/24"
        iface_tag = tag.split("-")[1]
        self.a = Host("a", f"{PREFIX}{tag}-A", f"vA{iface_tag}", f"10.77.{subnet}.1")
        self.b = Host("b", f"{PREFIX}{tag}-B", f"vB{iface_tag}", f"10.77.{subnet}.2")
        self.config_path = self.workdir / "cluster.toml"
        self.agents: dict[str, ChildProcess] = {}
        self.coordinators: list[ChildProcess] = []
        self._built = False

    def host(self, key: str) -> Host:
        return {"a": self.a, "b": self.b}[key]

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> TwoHosts:
        atexit.register(self.close)
        try:
            self.build()
            self.write_config()
            if self.start_agents_on_enter:
                self.start_agents()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def build(self) -> None:
        sweep_stale()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._built = True
        for h in (self.a, self.b):
            _ip("netns", "add", h.ns)
        # Both ends are created straight inside their namespaces: the machine's own never sees them.
        _ip("link", "add", self.a.iface, "netns", self.a.ns, "type", "veth", "peer", "name", self.b.iface,
            "netns", self.b.ns)
        for h in (self.a, self.b):
            _ip("-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", h.iface)
            _ip("-n", h.ns, "link", "set", h.iface, "mtu", str(self.mtu), "up")
            _ip("-n", h.ns, "link", "set", "lo", "up")
        # The kernel turns the link on asynchronously (linkwatch, up to a second later on a busy
        # machine) and drops what is sent before: wait until both ends say UP.
        deadline = time.monotonic() + 10.0
        while not all("state UP" in _ip("-n", h.ns, "link", "show", h.iface, check=False).stdout
                      for h in (self.a, self.b)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the veth link {self.a.iface} <-> {self.b.iface} did not come up")
            time.sleep(0.02)
        logger.info("rig %s <-> %s on %s", self.a.ns, self.b.ns, self.subnet)

    def write_config(self, path: Path | None = None, **network: Any) -> Path:
        """The cluster file (both agents read it); another `path` with [network] overrides for a client."""
        tables = {}
        for h in (self.a, self.b):
            tables[h.key] = {"listen": h.address, "models_root": str(self.models_root),
                             "output_root": str(self.workdir / "outputs" / h.key),
                             "inputs_root": str(self.workdir / "inputs"), "device": "cpu", "torch_threads": 1,
                             **self.agent_tables.get(h.key, {})}
        sections: dict[str, dict[str, Any]] = {"security": {"token": self.token}}
        sections["network"] = {"subnet": self.subnet, "mtu": self.mtu, **self.network, **network}
        return write_cluster_toml(path or self.config_path, tables, **sections)

    def start_agents(self) -> None:
        """Start (or restart) both agents; returns once each serves."""
        env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        for h in (self.a, self.b):
            if h.key in self.agents:
                self.agents[h.key].stop()
            self.agents[h.key] = start_agent(self.config_path, h.key, self.workdir, env=env,
                                             prefix=["ip", "netns", "exec", h.ns])

    def close(self) -> None:
        """Stop the agents and remove both namespaces (the veth pair goes with them). Idempotent."""
        with contextlib.suppress(Exception):
            stop_together([*self.coordinators, *self.agents.values()])
        self.agents.clear()
        self.coordinators.clear()
        if self._built:
            for h in (self.a, self.b):
                _ip("netns", "del", h.ns, check=False)
            self._built = False
        atexit.unregister(self.close)

    # ------------------------------------------------------------------ running things inside

    def command(self, key: str, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.host(key).ns, *args]

    def run_in(self, key: str, args: list[str], *, timeout: float = 60.0, check: bool = False,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `args` inside host `key`'s namespace."""
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
        return subprocess.run(self.command(key, args), capture_output=True, text=True, timeout=timeout,
                              check=check, env=full_env, cwd=ROOT)

    def popen_in(self, key: str, args: list[str]) -> subprocess.Popen[str]:
        """Start `python ARGS` inside host `key` without waiting: text pipes for its stdout and stderr."""
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        return subprocess.Popen(self.command(key, [sys.executable, *args]), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def python_in(self, key: str, args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """`python -m ...` / `python -c ...` with this interpreter, inside host `key`."""
        return self.run_in(key, [sys.executable, *args], **kw)

    def cli_in(self, key: str, args: list[str], *, config: Path | None = None,
               **kw: Any) -> subprocess.CompletedProcess[str]:
        """`artifex-agent ARGS --config <rig config>` inside host `key`."""
        return self.python_in(key, ["-m", "artifex_agent", *args, "--config", str(config or self.config_path)], **kw)

    def reset(self) -> None:
        """Undo what fault tests do: link up, MTU back, no shaping (nft tables go with their context)."""
        for h in (self.a, self.b):
            _ip("-n", h.ns, "link", "set", h.iface, "mtu", str(self.mtu), "up", check=False)
        self.unshape()
        self.link_up("a")

    # ------------------------------------------------------------------ faults and shaping

    def link_down(self, key: str = "a") -> None:
        h = self.host(key)
        _ip("-n", h.ns, "link", "set", h.iface, "down")

    def link_up(self, key: str = "a") -> None:
        h = self.host(key)
        _ip("-n", h.ns, "link", "set", h.iface, "up")
        # Agents dial by address: wait until the kernel has the connected route back.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if "scope link" in _ip("-n", h.ns, "route", "show", "dev", h.iface, check=False).stdout:
                return
            time.sleep(0.05)

    def set_mtu(self, key: str, mtu: int) -> None:
        h = self.host(key)
        _ip("-n", h.ns, "link", "set", h.iface, "mtu", str(mtu))

    def shape(self, rate: str = "10gbit", *, burst: str = "1mb", latency: str = "1ms") -> None:
        """A line of `rate` on both ends (tc tbf): what a 10GbE cable allows."""
        for h in (self.a, self.b):
            subprocess.run(["tc", "-n", h.ns, "qdisc", "replace", "dev", h.iface, "root", "tbf", "rate", rate,
                            "burst", burst, "latency", latency], check=True, capture_output=True, text=True)

    def unshape(self) -> None:
        for h in (self.a, self.b):
            subprocess.run(["tc", "-n", h.ns, "qdisc", "del", "dev", h.iface, "root"], capture_output=True)

    @contextlib.contextmanager
    def packet_loss(self, key: str, percent: int) -> Iterator[Callable[[], int]]:
        """Drop `percent`% of packets arriving at host `key` (nftables ingress hook; netem is absent).

        Yields a function that returns how many packets were dropped so far."""
        with self._ingress_drop(key, f"numgen random mod 100 < {int(percent)} ") as dropped:
            yield dropped

    @contextlib.contextmanager
    def blackhole(self) -> Iterator[Callable[[], int]]:
        """Drop every packet arriving at either end of the link: the peer stays "up" but never answers.

        Unlike `link_down`, no side sees a carrier loss or a reset: only timeouts and keepalives
        can notice. Yields a function that returns how many packets were dropped so far."""
        with self._ingress_drop("a") as dropped_a, self._ingress_drop("b") as dropped_b:
            yield lambda: dropped_a() + dropped_b()

    @contextlib.contextmanager
    def _ingress_drop(self, key: str, match: str = "") -> Iterator[Callable[[], int]]:
        """An nftables table on host `key`'s link ingress dropping the packets `match` selects (all: "")."""
        h = self.host(key)
        table = f"artx_drop_{secrets.token_hex(2)}"
        rules = (f"table netdev {table} {{\n  chain ingress {{\n"
                 f"    type filter hook ingress device \"{h.iface}\" priority 0; policy accept;\n"
                 f"    {match}counter drop\n  }}\n}}\n")
        subprocess.run(self.command(key, ["nft", "-f", "-"]), input=rules, check=True, capture_output=True,
                       text=True)

        def dropped() -> int:
            out = subprocess.run(self.command(key, ["nft", "list", "table", "netdev", table]),
                                 capture_output=True, text=True).stdout
            found = re.search(r"counter packets (\d+)", out)
            return int(found.group(1)) if found else 0

        try:
            yield dropped
        finally:
            subprocess.run(self.command(key, ["nft", "delete", "table", "netdev", table]), capture_output=True)

    # ------------------------------------------------------------------ counting bytes

    def link_bytes(self, key: str, iface: str = "") -> int:
        """Bytes received plus sent so far on host `key`'s link interface (or `iface`, e.g. "lo").

        The kernel's own counters (/sys/class/net/IF/statistics, as `ip -s` reads them): every
        byte that crossed, whichever process sent it. On "lo" each byte is counted once each way."""
        h = self.host(key)
        out = _ip("-n", h.ns, "-s", "-j", "link", "show", "dev", iface or h.iface).stdout
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])

    # ------------------------------------------------------------------ a coordinator inside

    def start_coordinator(self, key: str, agents: dict[str, list[str]], name: str = "coordinator",
                          **settings: Any) -> tuple[ChildProcess, Path]:
        """`artifex-agent coordinator` inside host `key` over the rig's agents `agents` (name -> prefer).

        Returns the process (stopped by `close`) and its cluster file, for `cli_in(key, ["submit", ...])`.
        It listens on loopback inside `key`: only processes in that namespace reach it."""
        # A folder (database, results cache) of its own: a cached result would move no bytes at all.
        folder = self.workdir / f"{name}-{secrets.token_hex(3)}"
        folder.mkdir(parents=True)
        tables = {k: {"address": self.host(k).address, "prefer": prefer} for k, prefer in agents.items()}
        coordinator = {"listen": f"127.0.0.1:{COORDINATOR_PORT}", "database": str(folder / "jobs.db"),
                       "results_cache": str(folder / "cache"), "batch_size": 1, "batch_timeout_s": 0.0,
                       "health_interval_s": 0.5, **settings}
        config = write_cluster_toml(folder / "coordinator.toml", tables, coordinator=coordinator,
                                    security={"token": self.token}, web={"listen": ""})
        log = folder / "coordinator.log"
        child = ChildProcess(["coordinator", "--config", str(config), "--port-file", str(folder / "port")], log,
                             folder / "port", env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                             prefix=self.command(key, [])).start()
        self.coordinators.append(child)
        child.wait_port()
        # Its first health checks decide where jobs go: a job submitted before them would wait.
        deadline = time.monotonic() + 30
        while log.read_text(errors="replace").count(" is up (") < len(agents):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the coordinator did not see its agents up:\n{child.log_tail()}")
            time.sleep(0.05)
        return child, config

    def stop_coordinators(self) -> None:
        stop_together(self.coordinators)
        self.coordinators.clear()
