"""`artifex-agent config`: render host files from the cluster file, show it resolved, check it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from artifex_agent.cli.options import add_config, env
from artifex_agent.config import ClusterConfig, is_loopback, split_hostport
from artifex_agent.errors import ArtifexError, ExitCode


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "config", help="render host files (netplan, sysctl, NFS, ufw, PowerShell), show or check the cluster file")
    verbs = p.add_subparsers(dest="config_command", metavar="VERB", required=True)
    render = verbs.add_parser("render", help="write each PC's host files from the cluster file",
                              description="Writes, per PC, the files the seed guide writes by hand: netplan, "
                                          "sysctl, an ethtool script and its boot unit, NFS exports, smb.conf "
                                          "blocks, ufw rules, and the Windows PowerShell. Each file says what it "
                                          "is for and how to apply it; OUT/README.txt says which goes where.")
    add_config(render)
    render.add_argument("--out", type=Path, required=env("--out") is None, default=env("--out"),
                        help="folder to write into (created) [ARTIFEX_OUT]")
    show = verbs.add_parser("show", help="print the cluster file with every default filled in")
    add_config(show)
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    check = verbs.add_parser("check", help="load the cluster file and report what would not work")
    add_config(check)


def run(args: argparse.Namespace) -> int:
    cluster = ClusterConfig.load(args.config)
    if args.config_command == "render":
        return _render(cluster, args.out)
    if args.config_command == "show":
        data = to_dict(cluster)
        print(json.dumps(data, indent=2) if args.json else _text(data))
        return int(ExitCode.OK)
    return _check(cluster)


def _render(cluster: ClusterConfig, out: Path) -> int:
    from artifex_agent.render import render_to

    written = render_to(cluster, out)
    print((out / "README.txt").read_text(encoding="utf-8"))
    print(f"wrote {len(written)} files under {out}")
    return int(ExitCode.OK)


def to_dict(cluster: ClusterConfig) -> dict[str, Any]:
    """The resolved config as plain data (paths as strings), agents keyed by name."""
    def plain(obj: Any) -> Any:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(obj).items()}

    out: dict[str, Any] = {section: plain(getattr(cluster, section))
                           for section in ("security", "network", "shares", "coordinator", "watcher")}
    if out["security"].get("token"):
        out["security"]["token"] = "(set)"
    out["agents"] = {a.name: {k: v for k, v in plain(a).items() if k != "name"} for a in cluster.agents}
    out["source"] = str(cluster.source) if cluster.source else None
    return out


def _text(data: dict[str, Any]) -> str:
    lines = [f"# {data.pop('source') or 'built-in defaults'}"]
    agents = data.pop("agents")
    for section, table in [*data.items(), *((f"agents.{n}", t) for n, t in agents.items())]:
        lines.append(f"\n[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    return "\n".join(lines)


def problems(cluster: ClusterConfig) -> list[str]:
    """What would stop the cluster from working, as messages a user can act on."""
    from artifex_agent.render.plan import build_plan

    found: list[str] = []
    try:
        token = cluster.security.secrets.token
    except ArtifexError as exc:
        found.append(str(exc))
        token = "?"
    listens = [("coordinator", cluster.coordinator.listen)] + [(f"agents.{a.name}", a.listen) for a in cluster.agents]
    if not token and not cluster.security.insecure:
        found += [f"{where}: listens on {addr} without a token (set [security] token_file)"
                  for where, addr in listens if not is_loopback(addr)]
    seen: dict[tuple[str, int], str] = {}
    ports = [(w, split_hostport(addr)) for w, addr in listens]
    ports += [(f"agents.{a.name} metrics", (split_hostport(a.listen)[0], a.metrics_port))
              for a in cluster.agents if a.metrics_port]
    if cluster.coordinator.metrics_port:
        ports.append(("coordinator metrics", (split_hostport(cluster.coordinator.listen)[0],
                                              cluster.coordinator.metrics_port)))
    for where, key in ports:
        if key[1] and key in seen:
            found.append(f"{where} and {seen[key]} both use {key[0]}:{key[1]}")
        seen.setdefault(key, where)
    try:
        build_plan(cluster)
    except ArtifexError as exc:
        found.append(f"config render would fail: {exc}")
    return found


def _check(cluster: ClusterConfig) -> int:
    found = problems(cluster)
    where = cluster.source or "built-in defaults"
    if not found:
        print(f"{where}: ok ({len(cluster.agents)} agent(s): "
              f"{', '.join(f'{a.name} {a.listen}' for a in cluster.agents)})")
        return int(ExitCode.OK)
    print(f"{where}: {len(found)} problem(s)")
    for message in found:
        print(f"  - {message}")
    return int(ExitCode.FAILURE)
