"""N hosts on one machine: a network namespace per host, an agent in each.

Two hosts (`TwoHosts`, the N=2 case) are joined by one veth pair, as two PCs by a cable; more
(`Hosts(tmp, n=4)`: hosts a, b, c, d) hang off one Linux bridge in a namespace of its own, as
PCs on a switch, each by its own veth (MTU 9000 everywhere).

    with TwoHosts(tmp_path, models_root=...) as rig:
        rig.run_in("a", ["ping", "-c1", rig.b.ip])
        rig.link_down("a"); rig.shape("10gbit"); rig.set_mtu("b", 1500)
        with rig.packet_loss("b", 5): ...
        with rig.blackhole(): ...              # every packet on the link dropped, no carrier loss
        rig.link_bytes("a"); rig.link_bytes("a", "lo")   # the kernel's byte counters
        proc, config = rig.start_coordinator("a", {"a": ["generate"], "b": ["post"]})
        rig.cli_in("a", ["submit", ...], config=config)
    with Hosts(tmp_path, n=4, models_root=...) as rig:
        rig.shape("200mbit", key="d")          # only d's link (both ways) is slow
        rig.set_coordinator_agents(config, {...}); os.kill(proc.proc.pid, signal.SIGHUP)

Names (namespaces, interfaces) and the 10.77.N.0/24 subnet are unique per rig, and
everything is removed on close, on failure, and at interpreter exit. Traffic stays in
the rig's namespaces: nothing is added to the machine's own network namespace.
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
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

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
# Host keys, in order: also the agents' names.
KEYS = "abcdefgh"


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

    key: str  # "a", "b", ...: also the agent's name
    ns: str
    iface: str
    ip: str
    port: str = ""  # the veth's other end, a port of the bridge (N > 2); "" on a direct link

    @property
    def address(self) -> str:
        return f"{self.ip}:{AGENT_PORT}"


class Hosts:
    """`n` namespaces with an `artifex-agent serve` in each: a veth pair for two, a bridge for more."""

    def __init__(self, workdir: Path, *, n: int = 2, models_root: Path | None = None, token: str = TOKEN,
                 mtu: int = 9000, agents: dict[str, dict[str, Any]] | None = None,
                 network: dict[str, Any] | None = None, start_agents: bool = True) -> None:
        if not 2 <= n <= len(KEYS):
            raise ValueError(f"a rig has 2 to {len(KEYS)} hosts, not {n}")
        self.workdir = Path(workdir)
        self.token = token
        self.mtu = mtu
        self.models_root = models_root or self.workdir / "models"
        self.agent_tables = agents or {}
        self.network = network or {}
        self.start_agents_on_enter = start_agents
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        # 10.77.N.0/24: the subnet only exists inside the new namespaces, so it cannot
        # clash with the machine's networks; random N keeps parallel rigs' logs apart.
        subnet = secrets.randbelow(254) + 1
        self.subnet = f"10.77.{subnet}.0/24"
        iface_tag = tag.split("-")[1]
        bridged = n > 2
        self.hosts = [Host(k, f"{PREFIX}{tag}-{k.upper()}", f"v{k.upper()}{iface_tag}", f"10.77.{subnet}.{i + 1}",
                           f"p{k.upper()}{iface_tag}" if bridged else "")
                      for i, k in enumerate(KEYS[:n])]
        self.a, self.b = self.hosts[0], self.hosts[1]
        # The switch: a bridge alone in its own namespace, so no host sees its ports.
        self.bridge_ns = f"{PREFIX}{tag}-BR" if bridged else ""
        self.bridge = f"br{iface_tag}" if bridged else ""
        self.config_path = self.workdir / "cluster.toml"
        self.agents: dict[str, ChildProcess] = {}
        self.agent_configs: dict[str, Path] = {}
        self.coordinators: list[ChildProcess] = []
        self._built = False

    def host(self, key: str) -> Host:
        for h in self.hosts:
            if h.key == key:
                return h
        raise KeyError(key)

    @property
    def keys(self) -> list[str]:
        return [h.key for h in self.hosts]

    def _namespaces(self) -> list[str]:
        return [h.ns for h in self.hosts] + ([self.bridge_ns] if self.bridge_ns else [])

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
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
        for ns in self._namespaces():
            _ip("netns", "add", ns)
        # Both ends of each veth are created straight inside their namespaces: the machine's own never sees them.
        if self.bridge_ns:
            _ip("-n", self.bridge_ns, "link", "add", self.bridge, "type", "bridge")
            _ip("-n", self.bridge_ns, "link", "set", self.bridge, "mtu", str(self.mtu), "up")
            for h in self.hosts:
                _ip("link", "add", h.iface, "netns", h.ns, "type", "veth", "peer", "name", h.port,
                    "netns", self.bridge_ns)
                _ip("-n", self.bridge_ns, "link", "set", h.port, "master", self.bridge, "mtu", str(self.mtu), "up")
        else:
            _ip("link", "add", self.a.iface, "netns", self.a.ns, "type", "veth", "peer", "name", self.b.iface,
                "netns", self.b.ns)
        for h in self.hosts:
            _ip("-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", h.iface)
            _ip("-n", h.ns, "link", "set", h.iface, "mtu", str(self.mtu), "up")
            _ip("-n", h.ns, "link", "set", "lo", "up")
        # The kernel turns the link on asynchronously (linkwatch, up to a second later on a busy
        # machine) and drops what is sent before: wait until every end says UP.
        deadline = time.monotonic() + 10.0
        while not all("state UP" in _ip("-n", h.ns, "link", "show", h.iface, check=False).stdout
                      for h in self.hosts):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the rig's links ({', '.join(h.iface for h in self.hosts)}) did not come up")
            time.sleep(0.02)
        logger.info("rig %s on %s%s", " <-> ".join(h.ns for h in self.hosts), self.subnet,
                    f" (bridge {self.bridge} in {self.bridge_ns})" if self.bridge_ns else "")

    def write_config(self, path: Path | None = None, agents: dict[str, dict[str, Any]] | None = None, /,
                     **network: Any) -> Path:
        """The cluster file (every agent reads it); another `path` with [network] (and `agents` table) overrides."""
        tables = {}
        for h in self.hosts:
            tables[h.key] = {"listen": h.address, "models_root": str(self.models_root),
                             "output_root": str(self.workdir / "outputs" / h.key),
                             "inputs_root": str(self.workdir / "inputs"), "device": "cpu", "torch_threads": 1,
                             **self.agent_tables.get(h.key, {}), **(agents or {}).get(h.key, {})}
        sections: dict[str, dict[str, Any]] = {"security": {"token": self.token}}
        sections["network"] = {"subnet": self.subnet, "mtu": self.mtu, **self.network, **network}
        return write_cluster_toml(path or self.config_path, tables, **sections)

    def start_agents(self, keys: list[str] | None = None) -> None:
        """Start (or restart) every agent (those of `keys`), all at once; returns once each serves."""
        started = [self.start_agent(k, wait=False) for k in keys or self.keys]
        for child in started:
            child.wait_port()

    def start_agent(self, key: str, config: Path | None = None, *, wait: bool = True) -> ChildProcess:
        """Start (or restart) host `key`'s agent from the rig's cluster file (or `config`); returns once it serves."""
        if key in self.agents:
            self.agents[key].stop()
        env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.agent_configs[key] = config or self.config_path
        self.agents[key] = start_agent(self.agent_configs[key], key, self.workdir, env=env,
                                       prefix=["ip", "netns", "exec", self.host(key).ns], wait=wait)
        return self.agents[key]

    def agents_to_restart(self) -> list[str]:
        """Hosts whose agent a test stopped, or started from another cluster file than the rig's."""
        return [h.key for h in self.hosts if not self._serving(h.key) or self.agent_configs[h.key] != self.config_path]

    def _serving(self, key: str) -> bool:
        child = self.agents.get(key)
        return child is not None and child.proc is not None and child.proc.poll() is None

    def close(self) -> None:
        """Stop the agents and remove every namespace (the veths and the bridge go with them). Idempotent."""
        with contextlib.suppress(Exception):
            stop_together([*self.coordinators, *self.agents.values()])
        self.agents.clear()
        self.coordinators.clear()
        if self._built:
            for ns in self._namespaces():
                _ip("netns", "del", ns, check=False)
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
        for h in self.hosts:
            _ip("-n", h.ns, "link", "set", h.iface, "mtu", str(self.mtu), "up", check=False)
        self.unshape()
        for h in self.hosts:
            self.link_up(h.key)

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

    def _link_ends(self, key: str | None) -> list[tuple[str, str]]:
        """(namespace, interface) of each end of host `key`'s link (of every link: None)."""
        # Two hosts share their one cable: its ends are both hosts'.
        hosts = self.hosts if key is None or not self.bridge_ns else [self.host(key)]
        ends = [(h.ns, h.iface) for h in hosts]
        return ends + [(self.bridge_ns, h.port) for h in hosts if h.port]

    def shape(self, rate: str = "10gbit", *, key: str | None = None, burst: str = "1mb", latency: str = "1ms") -> None:
        """A line of `rate` (tc tbf) on host `key`'s link, both ways (every link: None): what a cable allows."""
        # tbf shapes what leaves an interface: the host's end shapes its uploads, the bridge port its downloads.
        for ns, iface in self._link_ends(key):
            subprocess.run(["tc", "-n", ns, "qdisc", "replace", "dev", iface, "root", "tbf", "rate", rate,
                            "burst", burst, "latency", latency], check=True, capture_output=True, text=True)

    def unshape(self) -> None:
        for ns, iface in self._link_ends(None):
            subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", iface, "root"], capture_output=True)

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

    def start_coordinator(self, key: str, agents: dict[str, list[str] | dict[str, Any]], name: str = "coordinator",
                          **settings: Any) -> tuple[ChildProcess, Path]:
        """`artifex-agent coordinator` inside host `key` over the rig's agents `agents` (name -> prefer, or a table).

        Returns the process (stopped by `close`) and its cluster file, for `cli_in(key, ["submit", ...])`.
        It listens on loopback inside `key`: only processes in that namespace reach it."""
        # A folder (database, results cache) of its own: a cached result would move no bytes at all.
        folder = self.workdir / f"{name}-{secrets.token_hex(3)}"
        folder.mkdir(parents=True)
        coordinator = {"listen": f"127.0.0.1:{COORDINATOR_PORT}", "database": str(folder / "jobs.db"),
                       "results_cache": str(folder / "cache"), "batch_size": 1, "batch_timeout_s": 0.0,
                       "health_interval_s": 0.5, **settings}
        config = self._write_coordinator_config(folder / "coordinator.toml", agents, coordinator)
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

    def _write_coordinator_config(self, path: Path, agents: dict[str, list[str] | dict[str, Any]],
                                  coordinator: dict[str, Any]) -> Path:
        tables = {k: {"address": self.host(k).address,
                      **({"prefer": v} if isinstance(v, list) else v)} for k, v in agents.items()}
        return write_cluster_toml(path, tables, coordinator=coordinator, security={"token": self.token},
                                  web={"listen": ""})

    def set_coordinator_agents(self, config: Path, agents: dict[str, list[str] | dict[str, Any]]) -> Path:
        """Rewrite a coordinator's cluster file (from `start_coordinator`) with these agents, all else kept.

        The file only: send the coordinator SIGHUP to have it read again."""
        coordinator = tomllib.loads(config.read_text(encoding="utf-8"))["coordinator"]
        return self._write_coordinator_config(config, agents, coordinator)

    def stop_coordinators(self) -> None:
        stop_together(self.coordinators)
        self.coordinators.clear()


class TwoHosts(Hosts):
    """Namespaces A and B, a veth link with MTU 9000, and an `artifex-agent serve` in each: the N=2 rig."""

    def __init__(self, workdir: Path, **kw: Any) -> None:
        super().__init__(workdir, n=2, **kw)
