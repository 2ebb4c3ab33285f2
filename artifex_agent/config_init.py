"""`artifex-agent config init`: a cluster file that works as written, and the token it names."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from artifex_agent.certs import write_private
from artifex_agent.config import DEFAULT_AGENT_PORT, DEFAULT_COORDINATOR_PORT
from artifex_agent.errors import ArtifexError
from artifex_agent.newfile import replacing

LOCAL_HEADER = """\
# Written by `artifex-agent config init --local`: one agent, the coordinator and the drop-folder
# watcher, all on this machine over loopback (127.0.0.1). Every other key has a working default.
#   artifex-agent config check --config {config}
#   artifex-agent up --config {config}        # starts all three, then prints the health table
#   artifex-agent health --config {config}
"""

PAIR_HEADER = """\
# Written by `artifex-agent config init`: the seed's two PCs on a direct 10GbE link
# (PC1 Linux 10.0.0.1, PC2 Windows 10.0.0.2). Keep it on the share so both PCs read one file;
# adjust addresses, interfaces and paths, then:
#   artifex-agent config check  --config {config}
#   artifex-agent config render --config {config} --out rendered/   # netplan, sysctl, NFS, ufw, PowerShell
#   artifex-agent up --config {config}                              # on each PC
# Each PC needs the token file below (same contents on both; copy it, mode 0600).
"""


def _q(value: str | Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def nvidia_gpu_present() -> bool:
    """Whether NVML sees an NVIDIA GPU here (without importing torch, which costs seconds)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no package, no driver, no library: no GPU to use
        return False
    try:
        return bool(pynvml.nvmlDeviceGetCount())
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _device_lines(gpu: bool) -> str:
    if gpu:
        return '# auto: the GPU torch sees (an NVIDIA GPU was found when this file was written).\ndevice = "auto"'
    # health demands a GPU from every agent not set to the CPU: on a PC without one, say so here.
    return ('# No NVIDIA GPU was found when this file was written: the CPU (slow; fine for tiny models).\n'
            '# Set "auto" once a GPU and its driver are in.\ndevice = "cpu"')


def local_text(config: Path, home: Path, token_file: Path, gpu: bool = True) -> str:
    """A cluster file for this machine alone: agent `local`, coordinator and watcher on loopback."""
    return LOCAL_HEADER.format(config=config) + f"""
[security]
# Random, mode 0600; ARTIFEX_TOKEN in the environment wins over it.
token_file = {_q(token_file)}

[agents.local]
listen = "127.0.0.1:{DEFAULT_AGENT_PORT}"
{_device_lines(gpu)}
models_root = {_q(home / "models")}
output_root = {_q(home / "outputs")}
inputs_root = {_q(home / "inputs")}

[coordinator]
listen = "127.0.0.1:{DEFAULT_COORDINATOR_PORT}"
database = {_q(home / "coordinator.db")}
results_cache = {_q(home / "cache" / "results")}

[watcher]
root = {_q(home / "cache" / "drop")}
output_root = {_q(home / "outputs")}
ledger = {_q(home / "watcher.db")}
"""


def pair_text(config: Path, token_file: Path) -> str:
    """A cluster file for the seed's two PCs (paths as in the setup guide)."""
    return PAIR_HEADER.format(config=config) + f"""
[security]
token_file = {_q(token_file)}

[network]
mtu = 9000
subnet = "10.0.0.0/24"

[shares]
server = "pc1"
protocol = "nfs"

[agents.pc1]
platform = "linux"
listen = "10.0.0.1:{DEFAULT_AGENT_PORT}"
prefer = ["generate"]
models_root = "/data/models"
output_root = "/data/projects/outputs"
inputs_root = "/data/projects/inputs"

[agents.pc2]
platform = "windows"
listen = "10.0.0.2:{DEFAULT_AGENT_PORT}"
prefer = ["post"]
models_root = "C:/artifex/models"
output_root = "P:/outputs"
inputs_root = "P:/inputs"

[coordinator]
listen = "10.0.0.1:{DEFAULT_COORDINATOR_PORT}"
database = "/var/lib/artifex/coordinator.db"
results_cache = "/data/cache/results"

[watcher]
root = "/data/cache/drop"
output_root = "/data/projects/outputs"
ledger = "/var/lib/artifex/watcher.db"
"""


def write_token(path: Path) -> bool:
    """A random token at `path`, mode 0600, unless a non-empty one is there; True when written."""
    path = path.expanduser()
    if path.exists() and path.read_text(encoding="utf-8").strip():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # an empty file left with other modes: created again at 0600
    write_private(path, (secrets.token_urlsafe(32) + "\n").encode())
    return True


@dataclass
class Written:
    """What init wrote (or kept)."""

    config: Path
    token_file: Path
    token_created: bool
    folders: list[Path] = field(default_factory=list)


def init(config: Path, *, local: bool, home: Path, token_file: Path | None = None, force: bool = False) -> Written:
    """Write the cluster file and its token (an existing token is kept); --local also makes its folders."""
    config = config.expanduser().absolute()
    if config.exists() and not force:
        raise ArtifexError(f"{config} already exists; pass --force to replace it")
    token_file = (token_file or home / "token").expanduser().absolute()
    created = write_token(token_file)
    folders: list[Path] = []
    if local:
        # The agent, the coordinator and the watcher expect these to exist on this PC (`config check`).
        folders = [home / "models", home / "outputs", home / "inputs", home / "cache" / "drop"]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
    config.parent.mkdir(parents=True, exist_ok=True)
    text = local_text(config, home, token_file, nvidia_gpu_present()) if local else pair_text(config, token_file)
    with replacing(config) as f:
        f.write(text.encode())
    return Written(config, token_file, created, folders)
