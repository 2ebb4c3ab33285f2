"""A cluster of agents on this machine's loopback: the demo, the tests and the benchmarks use it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from artifex_agent.config import ClusterConfig
from artifex_agent.launcher import ChildProcess, start_agent, wait_serving

DEMO_MODEL = "wan2.2-tiny-t2v-a14b"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_cluster_toml(path: Path, agents: dict[str, dict[str, Any]], **sections: dict[str, Any]) -> Path:
    """Write a cluster file with [agents.NAME] tables and other [sections]."""
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    for name, table in agents.items():
        lines.append(f"[agents.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a process to bind at the address its config names."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """Build the tiny checkpoint once, start agents on 127.0.0.1, stop them on exit."""

    def __init__(self, workdir: Path, *, agents: dict[str, dict[str, Any]] | None = None,
                 variant: str = "t2v-a14b", model: str = DEMO_MODEL, token: str = "",
                 log: Callable[[str], None] | None = None, checkpoint_options: dict[str, Any] | None = None,
                 sections: dict[str, dict[str, Any]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.model = model
        self.variant = variant
        self.token = token
        self.log = log or (lambda _msg: None)
        self.checkpoint_options = checkpoint_options or {}
        self.agent_tables = agents or {
            "gen": {"prefer": ["generate"]},
            "post": {"prefer": ["post"]},
        }
        self.sections = sections or {}
        self.children: dict[str, ChildProcess] = {}
        self.config = ClusterConfig()
        self.config_path = self.workdir / "cluster.toml"

    @property
    def models_root(self) -> Path:
        return self.workdir / "models"

    def address(self, name: str) -> str:
        return self.config.agent(name).dial_address

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        from artifex_agent.engines.checkpoint import ensure_tiny_checkpoint

        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        built = not (self.models_root / self.model).exists()
        ensure_tiny_checkpoint(self.models_root, name=self.model, variant=cast(Any, self.variant),
                               **self.checkpoint_options)
        self.log(f"checkpoint {self.model}: {'built' if built else 'cached'} in {time.monotonic() - t0:.1f}s "
                 f"({self.models_root / self.model})")
        tables = {}
        for name, table in self.agent_tables.items():
            # A fixed port, not 0: each agent dials the others by the addresses in this file (Deliver).
            tables[name] = {"listen": f"127.0.0.1:{free_port()}", "models_root": str(self.models_root),
                            "output_root": str(self.workdir / "outputs" / name),
                            "inputs_root": str(self.workdir / "inputs"), "torch_threads": 1, **table}
        sections = dict(self.sections)
        if self.token:
            sections["security"] = {"token": self.token, **sections.get("security", {})}
        write_cluster_toml(self.config_path, tables, **sections)
        self.config = ClusterConfig.load(self.config_path)
        try:
            for name in tables:
                self.start_agent(name)
        except BaseException:
            self.stop()
            raise

    def start_agent(self, name: str) -> ChildProcess:
        """Start (or restart) one agent and wait until it serves."""
        t0 = time.monotonic()
        child = start_agent(self.config_path, name, self.workdir)
        self.children[name] = child
        self.config.agent(name).address = f"127.0.0.1:{child.port}"
        asyncio.run(wait_serving(self.address(name), self.token))
        self.log(f"agent {name} serving on {self.address(name)} ({time.monotonic() - t0:.1f}s)")
        return child

    def stop(self) -> None:
        for child in self.children.values():
            child.stop()
        self.children.clear()
