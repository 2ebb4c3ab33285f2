"""`artifex-agent certs`: a small CA and one certificate per agent for mutual TLS."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from artifex_agent.cli.options import add_config, env
from artifex_agent.config import ClusterConfig, split_hostport
from artifex_agent.errors import ArtifexError


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "certs", help="make a CA and one TLS certificate per agent (mutual TLS on the link)",
        description="Writes ca.pem/ca.key (reused when present) and NAME.pem/NAME.key per agent into --out. "
                    "Each certificate names 'artifex-agent' and the agent's IPs. Copy ca.pem and that PC's "
                    "pair to each PC; ca.key stays with whoever issues certificates.")
    add_config(p)
    p.add_argument("--out", type=Path, required=True, help="folder for the CA and the certificates")
    p.add_argument("--agents", default=env("--agents"),
                   help="comma-separated agent names, optionally with IPs: pc1=10.0.0.1,pc2=10.0.0.2 "
                        "(default: every agent in --config, with the IPs of its addresses)")
    p.add_argument("--force", action="store_true", help="replace existing agent certificates")


def parse_agents(spec: str | None, cluster: ClusterConfig | None) -> dict[str, list[str]]:
    """'pc1=10.0.0.1,pc2' -> {pc1: [10.0.0.1], pc2: [IPs from the config]}."""
    from_config: dict[str, list[str]] = {}
    if cluster is not None:
        for a in cluster.agents:
            hosts = {split_hostport(a.listen)[0], split_hostport(a.dial_address)[0]}
            from_config[a.name] = sorted(h for h in hosts if _is_ip(h) and h not in ("0.0.0.0", "::"))
    if not spec:
        return from_config
    agents: dict[str, list[str]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, ips = item.partition("=")
        if not name:
            raise ArtifexError(f"--agents: empty agent name in {item!r}")
        extra = [ip for ip in ips.split("+") if ip] if ips else []
        agents[name] = sorted(set(from_config.get(name, [])) | set(extra))
    return agents


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from artifex_agent.certs import make_certs, security_snippet

    cluster = ClusterConfig.load(args.config) if args.config else None
    agents = parse_agents(args.agents, cluster)
    ca, created, issued = make_certs(args.out, agents, force=args.force)
    print(f"CA: {ca} ({'created' if created else 'reused'}; keep {ca.with_name('ca.key')} private)")
    for item in issued:
        print(f"{item.name}: {item.cert}, {item.key} (names artifex-agent, {item.name}"
              f"{', ' + ', '.join(item.ips) if item.ips else ''})")
    if issued:
        print("\nOn each PC, in its config (paths as copied there):\n")
        print(security_snippet(args.out, issued[0].name))
    return 0
