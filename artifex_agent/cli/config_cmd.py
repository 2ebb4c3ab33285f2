"""`artifex-agent config`: render host files from the cluster file, show it resolved, check it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from artifex_agent.cli.options import add_config, env
from artifex_agent.config import AgentConfig, ClusterConfig, default_home, is_loopback, split_hostport
from artifex_agent.errors import ArtifexError, ExitCode
from artifex_agent.hosts import is_local_host


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "config", help="write a starter cluster file; render host files (netplan, sysctl, NFS, ufw, PowerShell); "
                       "show or check the cluster file")
    verbs = p.add_subparsers(dest="config_command", metavar="VERB", required=True)
    render = verbs.add_parser("render", help="write each PC's host files from the cluster file",
                              description="Writes, per PC, the files the seed guide writes by hand: netplan, "
                                          "sysctl, an ethtool script and its boot unit, NFS exports, smb.conf "
                                          "blocks, share mounts for the other Linux PCs, ufw rules, and the "
                                          "Windows PowerShell. Each file says what it is for and how to apply "
                                          "it; OUT/README.txt says which goes where (and, with [network] "
                                          "topology = \"switch\", what the switch needs).")
    add_config(render)
    render.add_argument("--out", type=Path, required=env("--out") is None, default=env("--out"),
                        help="folder to write into (created) [ARTIFEX_OUT]")
    show = verbs.add_parser("show", help="print the cluster file with every default filled in")
    add_config(show)
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    check = verbs.add_parser("check", help="load the cluster file and report everything that would not work",
                             description="Lists every problem in one run: unknown keys and sections (with the "
                                         "likely meant name), values out of range, token and TLS files that "
                                         "cannot be read, folders missing on this PC, ports and addresses used "
                                         "twice, MTUs that differ between the PCs, and what `config render` "
                                         "would refuse. Exit 0 only when there is none.")
    add_config(check)
    init = verbs.add_parser("init", help="write a working cluster file and a token file (mode 0600)",
                            description="Writes a cluster file and, unless one exists, a random token file. "
                                        "--local: one agent, the coordinator and the watcher on this machine's "
                                        "loopback (device auto), so `config check`, `up` and `health` pass "
                                        "here; without it: the seed's two PCs on 10.0.0.1/10.0.0.2.")
    init.add_argument("--local", action="store_true", default=env("--local", False),
                      help="everything on this machine over 127.0.0.1 [ARTIFEX_LOCAL]")
    init.add_argument("--out", type=Path, default=env("--out", Path("cluster.toml")),
                      help="the cluster file to write (default cluster.toml) [ARTIFEX_OUT]")
    init.add_argument("--token-file", type=Path, default=env("--token-file"),
                      help="where the token goes (default: ARTIFEX_HOME/token, ~/.artifex/token); "
                           "an existing one is kept [ARTIFEX_TOKEN_FILE]")
    init.add_argument("--force", action="store_true", help="replace an existing cluster file")


def run(args: argparse.Namespace) -> int:
    if args.config_command == "init":
        return _init(args)
    if args.config_command == "check":
        return _check(*ClusterConfig.load_checked(args.config), args.config)
    cluster = ClusterConfig.load(args.config)
    if args.config_command == "render":
        return _render(cluster, args.out)
    if args.config_command == "show":
        data = to_dict(cluster)
        print(json.dumps(data, indent=2) if args.json else _text(data))
        return int(ExitCode.OK)
    raise AssertionError(args.config_command)  # argparse allows only the verbs above


def _init(args: argparse.Namespace) -> int:
    from artifex_agent.config_init import init

    written = init(args.out, local=args.local, home=default_home(), token_file=args.token_file, force=args.force)
    print(f"wrote {written.config}")
    print(f"token: {written.token_file} ({'created, mode 0600' if written.token_created else 'kept the existing one'})")
    for folder in written.folders:
        print(f"folder: {folder}")
    if args.local:
        print(f"next: put a Wan2.2 model folder (diffusers layout) under {written.folders[0]}, then "
              f"artifex-agent config check --config {written.config}; artifex-agent up --config {written.config}")
    else:
        print(f"next: edit addresses and paths, copy {written.token_file} to the other PC (mode 0600), then "
              f"artifex-agent config check --config {written.config}")
    return int(ExitCode.OK)


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
    from artifex_agent.render.members import member_problems
    from artifex_agent.render.plan import build_plan

    found = cluster.security.file_problems()
    try:
        token = cluster.security.read_token()
    except ArtifexError:
        token = "?"  # listed above
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
    for a in cluster.agents:
        found += _path_problems(a)
    found += member_problems(cluster)
    # Agents on loopback only have no link to render (and no subnet to be in).
    if any(not is_loopback(a.dial_address) for a in cluster.agents):
        try:
            build_plan(cluster)
        except ArtifexError as exc:
            # The same refusal is already listed when it comes from a value the file itself got wrong.
            if not any(part in found for part in str(exc).split("; ")):
                found.append(f"config render would fail: {exc}")
    return found


def _path_problems(a: AgentConfig) -> list[str]:
    """Folders an agent on this PC needs; another PC's paths cannot be checked from here."""
    if not is_local_host(split_hostport(a.dial_address)[0]):
        return []
    found = []
    if not a.models_root.is_dir():
        found.append(f"agents.{a.name}: models_root {a.models_root} does not exist on this PC: create it and put "
                     "model folders there (diffusers layout), or fix the path")
    if not a.output_root.is_dir():
        found.append(f"agents.{a.name}: output_root {a.output_root} does not exist on this PC: check the path "
                     f"(mkdir -p {a.output_root} if it is right)")
    return found


def _check(cluster: ClusterConfig | None, found: list[str], path: str | Path | None) -> int:
    if cluster is not None:
        try:
            found = found + [p for p in problems(cluster) if p not in found]
        except ArtifexError as exc:  # an address the file got wrong (listed already) stops the rest
            found = found + [p for p in [str(exc)] if p not in found]
    where = (cluster.source if cluster else None) or path or "built-in defaults"
    if not found and cluster is not None:
        print(f"{where}: ok ({len(cluster.agents)} agent(s): "
              f"{', '.join(f'{a.name} {a.listen}' for a in cluster.agents)})")
        return int(ExitCode.OK)
    print(f"{where}: {len(found)} problem(s)")
    for message in found:
        print(f"  - {message}")
    return int(ExitCode.FAILURE)
