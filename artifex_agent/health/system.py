"""This PC's side of the link: interfaces, MTU and path MTU, kernel network settings, ports."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from artifex_agent.config import split_hostport
from artifex_agent.health.checks import CheckResult, HealthContext, check
from artifex_agent.health.processes import coordinator_expected
from artifex_agent.hosts import host_ip, is_local_host

logger = logging.getLogger(__name__)

# The seed's /etc/sysctl.conf lines: (key, how to compare, the value to compare, the seed's line).
SEED_SYSCTLS: tuple[tuple[str, str, int | str, str], ...] = (
    ("net.core.rmem_max", ">=", 134217728, "134217728"),
    ("net.core.wmem_max", ">=", 134217728, "134217728"),
    ("net.ipv4.tcp_rmem", "max>=", 134217728, "4096 87380 134217728"),
    ("net.ipv4.tcp_wmem", "max>=", 134217728, "4096 65536 134217728"),
    ("net.core.netdev_max_backlog", ">=", 5000, "5000"),
    ("net.ipv4.tcp_congestion_control", "==", "bbr", "bbr"),
    ("net.ipv4.tcp_mtu_probing", ">=", 1, "1"),
)
LINK_FIRST = "no route to it: fix the link first (see the link row)"
# IPv4 and ICMP headers: a ping payload of mtu - 28 fills one packet exactly.
_ICMP4_OVERHEAD = 28
_ICMP6_OVERHEAD = 48


@dataclass
class NetInterface:
    """One network interface of this machine."""

    name: str
    addresses: list[str]
    netmasks: list[str]
    mtu: int
    up: bool
    # Link detected (cable in, peer up); False on an interface that is up without carrier.
    carrier: bool
    speed_mbps: int
    loopback: bool

    def describe(self) -> str:
        state = "up" if self.up and self.carrier else ("DOWN" if not self.up else "up but NO CARRIER")
        speed = f", {self.speed_mbps} Mb/s" if self.speed_mbps > 0 else ""
        return f"{self.name} {state}{speed}, MTU {self.mtu}"


def interfaces() -> dict[str, NetInterface]:
    """Every interface psutil sees, with its IP addresses and state."""
    stats = psutil.net_if_stats()
    found: dict[str, NetInterface] = {}
    for name, addrs in psutil.net_if_addrs().items():
        st = stats.get(name)
        flags = set(getattr(st, "flags", "").split(",")) if st else set()
        ips = [a for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)]
        up = bool(st and st.isup)
        found[name] = NetInterface(
            name=name, addresses=[a.address.split("%")[0] for a in ips], netmasks=[a.netmask or "" for a in ips],
            mtu=st.mtu if st else 0, up=up or "up" in flags,
            # psutil reports IFF_RUNNING as "running" where it can (Linux, BSD); elsewhere trust isup.
            carrier=("running" in flags) if flags - {""} else up,
            speed_mbps=st.speed if st else 0, loopback="loopback" in flags or name.lower().startswith("lo"))
    return found


def interface_for(host: str) -> NetInterface | None:
    """The interface this machine uses to reach `host` (or that holds it, when it is ours)."""
    ip = host_ip(host)
    if ip is None:
        return None
    ifaces = interfaces()
    if ip.is_loopback:
        return next((i for i in ifaces.values() if i.loopback), None)
    # The subnet first: it still answers when the link is down and the route has gone,
    # which is exactly when health must name the interface.
    for iface in ifaces.values():
        for addr, mask in zip(iface.addresses, iface.netmasks, strict=True):
            try:
                if mask and ip in ipaddress.ip_network(f"{addr}/{mask}", strict=False):
                    return iface
            except ValueError:
                continue
    # Otherwise ask the routing table: a UDP "connect" picks a source address, sends nothing.
    try:
        with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((str(ip), 9))
            source = s.getsockname()[0]
    except OSError:
        return None
    return next((i for i in ifaces.values() if source in i.addresses), None)


def path_mtu_probe(host: str, mtu: int, timeout_s: float = 1.0) -> tuple[bool, str]:
    """Send `mtu`-sized packets to `host` that must not be fragmented; (ok, what happened)."""
    ip = host_ip(host)
    if ip is None:
        return False, f"{host} does not resolve"
    size = mtu - (_ICMP6_OVERHEAD if ip.version == 6 else _ICMP4_OVERHEAD)
    wait = max(1, round(timeout_s))
    if sys.platform == "win32":
        cmd = ["ping", "-f", "-l", str(size), "-n", "2", "-w", str(int(timeout_s * 1000)), str(ip)]
    elif sys.platform == "darwin":
        cmd = ["ping", "-D", "-s", str(size), "-c", "2", "-i", "0.2", "-t", str(wait), str(ip)]
    else:
        cmd = ["ping", "-M", "do", "-s", str(size), "-c", "2", "-i", "0.2", "-W", str(wait), str(ip)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 1.5)
    except FileNotFoundError:
        return _udp_mtu_probe(ip, size)
    except subprocess.TimeoutExpired:
        return False, f"no reply to {mtu}-byte packets within {timeout_s:.0f} s"
    out = (proc.stdout + proc.stderr).lower()
    if proc.returncode == 0 and "ttl=" in out:
        return True, f"{mtu}-byte packets get through unfragmented"
    if "too long" in out or "mtu=" in out or "needs to be fragmented" in out or "frag needed" in out:
        return False, f"this PC cannot send {mtu}-byte packets unfragmented (local MTU is smaller)"
    if "unreachable" in out:
        return False, f"{ip} is unreachable (no route: link down?)"
    if "operation not permitted" in out:
        return False, "ping is not permitted here"
    return False, f"{mtu}-byte packets get no reply (smaller MTU on the other PC or a switch?)"


def _udp_mtu_probe(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, size: int) -> tuple[bool, str]:
    # Without ping we can only learn this PC's own limit: a don't-fragment datagram over it
    # fails with EMSGSIZE; whether the far end accepts it needs an echo, which UDP lacks.
    dont_fragment = getattr(socket, "IP_MTU_DISCOVER", None)
    if dont_fragment is None or ip.version != 4:
        return False, "cannot test: no ping and no IP_MTU_DISCOVER here"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.IPPROTO_IP, dont_fragment, getattr(socket, "IP_PMTUDISC_DO", 2))
        s.connect((str(ip), 9))
        try:
            s.send(bytes(size))  # UDP's header is 8 bytes like ICMP's: the same packet size
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                return False, "this PC cannot send packets that large unfragmented (local MTU is smaller)"
            return False, f"probe failed: {exc.strerror}"
    return True, "this PC sends them unfragmented (no ping to check the far end)"


def read_sysctl(key: str) -> str | None:
    """A kernel setting from /proc/sys, or None where it does not exist (or not in this namespace)."""
    try:
        return Path("/proc/sys", *key.split(".")).read_text().strip()
    except OSError:
        return None


def sysctl_ok(current: str, how: str, want: int | str) -> bool:
    try:
        if how == "==":
            return current == str(want)
        if how == "max>=":
            return int(current.split()[-1]) >= int(want)
        return int(current) >= int(want)
    except (ValueError, IndexError):
        return False


def _shell_word(value: str) -> str:
    return f"'{value}'" if " " in value else value


def tcp_port_state(host: str, port: int, timeout_s: float) -> tuple[bool, str]:
    """Whether a TCP connection to host:port opens; (ok, why not)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True, "open"
    except ConnectionRefusedError:
        return False, "refused: nothing listens there"
    except TimeoutError:
        return False, f"no answer within {timeout_s:.1f} s (a firewall dropping it, or the PC is off)"
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return False, reason[0].lower() + reason[1:]


@check("link", "local")
async def link_state(ctx: HealthContext) -> list[CheckResult]:
    """The interface toward each other PC: up, with carrier, at the speed the targets need."""
    remote = await asyncio.to_thread(_remote_links, ctx)
    if not remote:
        return [CheckResult("link", ok=True, required=False, value="all agents on this machine: no link to check")]
    rows: list[CheckResult] = []
    # 9.4 Gbit/s of payload needs a 10 Gbit/s line (TCP/IP headers take ~6% at MTU 1500).
    need_mbps = ctx.cluster.network.bandwidth_target_gbit * 1000 / 0.94
    nic = configured_nic(ctx)
    for name, host, iface in remote:
        if iface is None:
            rows.append(CheckResult(f"link to {name}", ok=False, value=f"no interface reaches {host}",
                                    target="an interface in the link's subnet",
                                    fix=f"give this PC an address in {ctx.cluster.network.subnet} on the 10GbE NIC "
                                        "(netplan / New-NetIPAddress, see `config render`)"))
            continue
        wrong_nic = bool(nic) and iface.name != nic
        ok = iface.up and iface.carrier and not (0 < iface.speed_mbps < need_mbps) and not wrong_nic
        if wrong_nic:
            fix = (f"traffic to {name} leaves through {iface.name}, not the link NIC {nic} named in the config: "
                   f"give {nic} the address in {ctx.cluster.network.subnet} (and only it)")
        elif not iface.up:
            fix = f"link {iface.name} is down: bring it up (ip link set {iface.name} up) and check the cable"
        elif not iface.carrier:
            fix = f"link {iface.name} has no carrier: check the cable and that {name}'s NIC is up"
        else:
            fix = f"{iface.name} negotiated {iface.speed_mbps} Mb/s: check the Cat6a cable and both NICs' settings"
        rows.append(CheckResult(f"link {iface.name} → {name}", ok=ok, value=iface.describe(),
                                target="up, 10000 Mb/s", fix="" if ok else fix))
    return rows


def configured_nic(ctx: HealthContext) -> str:
    """The link NIC the config names for this PC ("" when none, or when it is not on this machine)."""
    names = [a.interface for a in ctx.cluster.agents
             if a.interface and is_local_host(split_hostport(a.dial_address)[0])]
    names.append(ctx.cluster.network.interface)
    present = interfaces()
    # The file is shared by both PCs: a name that does not exist here is the other PC's.
    return next((n for n in names if n and n in present), "")


@check("mtu", "local")
async def local_mtu(ctx: HealthContext) -> list[CheckResult]:
    """This PC's MTU on the link, and whether packets that size reach each other PC unfragmented."""
    mtu = ctx.cluster.network.mtu
    rows: list[CheckResult] = []
    seen: set[str] = set()
    for name, host, iface in await asyncio.to_thread(_remote_links, ctx):
        if iface is None:
            continue  # the link check already says that nothing reaches it
        if iface.name not in seen:
            seen.add(iface.name)
            ok = iface.mtu == mtu
            rows.append(CheckResult(f"MTU {iface.name}", ok=ok, value=str(iface.mtu), target=f"{mtu} ([network] mtu)",
                                    fix="" if ok else f"set MTU {mtu} on {iface.name} (ip link set {iface.name} mtu "
                                                      f"{mtu}; netplan `mtu: {mtu}`) and on the other PC"))
        ok, what = await asyncio.to_thread(path_mtu_probe, host, mtu, ctx.connect_timeout)
        fix = (LINK_FIRST if "unreachable" in what else
               f"set MTU {mtu} on both ends of the link (Windows: Jumbo Packet 9014) and on any switch between them")
        rows.append(CheckResult(f"path MTU → {name}", ok=ok, value=what, target=f"{mtu} bytes unfragmented",
                                fix="" if ok else fix))
    return rows


def _remote_links(ctx: HealthContext) -> list[tuple[str, str, NetInterface | None]]:
    """(agent name, host, interface toward it) for every agent on another machine."""
    out = []
    for a in ctx.cluster.agents:
        host = split_hostport(a.dial_address)[0]
        if not is_local_host(host):
            out.append((a.name, host, interface_for(host)))
    return out


@check("ports", "local")
async def ports(ctx: HealthContext) -> list[CheckResult]:
    """Each agent's gRPC port (required), and metrics/coordinator ports where configured."""
    targets: list[tuple[str, str, int, bool]] = []
    for a in ctx.cluster.agents:
        host, port = split_hostport(a.dial_address)
        targets.append((f"port {a.name}", host, port, True))
        if a.metrics_port:
            targets.append((f"metrics port {a.name}", host, a.metrics_port, False))
    coord = ctx.cluster.coordinator
    if coordinator_expected(ctx.cluster):
        host, port = split_hostport(coord.dial_address)
        targets.append(("port coordinator", host, port, False))
    states = await asyncio.gather(*(asyncio.to_thread(tcp_port_state, h, p, ctx.connect_timeout)
                                    for _, h, p, _ in targets))
    def fix(host: str, port: int, what: str) -> str:
        if "unreachable" in what.lower():
            return LINK_FIRST
        if is_local_host(host):
            # No firewall stands between a process and this PC's own addresses.
            return "start the process (artifex-agent up --config FILE)"
        return (f"start the process, or open {port}/tcp in the firewall "
                f"(ufw allow from {ctx.cluster.network.subnet} to any port {port} proto tcp)")

    return [CheckResult(name, ok=ok, required=required, value=f"{host}:{port} {what}", target="open",
                        fix="" if ok else fix(host, port, what))
            for (name, host, port, required), (ok, what) in zip(targets, states, strict=True)]


@check("sysctl", "local")
async def sysctls(ctx: HealthContext) -> list[CheckResult]:
    """Socket buffers and congestion control against the seed's values (Linux; advice, not required)."""
    if not sys.platform.startswith("linux"):
        return [CheckResult("network tuning", ok=True, required=False, value=f"not checked on {sys.platform}",
                            fix="", target="`config render` writes the PowerShell tuning")]
    if not await asyncio.to_thread(_remote_links, ctx):
        return [CheckResult("network tuning", ok=True, required=False, target="the seed's sysctl values",
                            value="all agents on this machine: no link to tune")]
    rows = []
    for key, how, want, seed in SEED_SYSCTLS:
        current = read_sysctl(key)
        ok = current is not None and sysctl_ok(current, how, want)
        shown = " ".join(current.split()) if current is not None else "not available here"
        target = f"{'max ' if how == 'max>=' else ''}{'≥ ' if '>=' in how else ''}{want}"
        rows.append(CheckResult(key, ok=ok, required=False, value=shown, target=target,
                                fix="" if ok else f"sysctl -w {key}={_shell_word(seed)} (persist: `config render`)"))
    return rows
