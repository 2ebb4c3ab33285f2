"""One TOML file describes the cluster; every value has a default that works on one machine."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from artifex_agent.config_problems import MTU_RANGE as MTU_RANGE
from artifex_agent.config_problems import STAGES as STAGES
from artifex_agent.config_problems import TOPOLOGIES as TOPOLOGIES
from artifex_agent.config_problems import Stage as Stage
from artifex_agent.config_problems import cluster_problems
from artifex_agent.errors import ConfigError
from artifex_agent.hosts import is_loopback as is_loopback
from artifex_agent.hosts import split_hostport as split_hostport
from artifex_agent.presets import Preset
from artifex_agent.presets import builtin as presets_builtin
from artifex_agent.presets import load as load_presets

DEFAULT_AGENT_PORT = 50051
DEFAULT_COORDINATOR_PORT = 50050
# Where `config init` puts the token and where error messages say to create it.
TOKEN_HINT = ("create it, the same random text on every PC, mode 0600: (umask 077; python -c \"import secrets; "
              "print(secrets.token_urlsafe(32))\" > {path}); `artifex-agent config init` writes a cluster file "
              "with a new token")


def default_home() -> Path:
    """Where state lives when the config names no path (ARTIFEX_HOME or ~/.artifex)."""
    return Path(os.environ.get("ARTIFEX_HOME", Path.home() / ".artifex")).expanduser()


@dataclass
class AgentConfig:
    """One agent process (one GPU)."""

    name: str = "local"
    # Where this agent listens; loopback unless the config says otherwise.
    listen: str = f"127.0.0.1:{DEFAULT_AGENT_PORT}"
    # How the others reach it (defaults to `listen`).
    address: str = ""
    # Stages it can run, and those it prefers (a preference, not a wall).
    roles: list[Stage] = field(default_factory=lambda: list(STAGES))
    prefer: list[Stage] = field(default_factory=list)
    models_root: Path = field(default_factory=lambda: default_home() / "models")
    output_root: Path = field(default_factory=lambda: default_home() / "outputs")
    # i2v images named by path must lie under this folder.
    inputs_root: Path = field(default_factory=lambda: default_home() / "inputs")
    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Fraction of the GPU's memory this process may take (the seed's set_fraction); 0: no cap.
    gpu_memory_fraction: float = 0.0
    # Where weights live (engines/placement.py): "auto" picks, per job, the fastest placement the memory
    # plan says fits; or one of none, model, group, sequential. cpu_offload = true is the older "model".
    offload: str = "auto"
    cpu_offload: bool = False
    # Expert weights stored as "native" (bf16), "fp8" (computed in bf16, half the memory) or "auto".
    weight_storage: str = "auto"
    # Attention kernel: auto (PyTorch SDPA), native, flash (flash-attn), sage (sageattention).
    attention: str = "auto"
    # true, false, or "auto": tile the VAE decode exactly when the untiled one would not fit.
    vae_tiling: bool | str = "auto"
    # GiB this agent may plan with (0: the GPU's total under gpu_memory_fraction, less what others use).
    vram_budget_gib: float = 0.0
    # MiB of LoRA weights kept resident between jobs (least recently used dropped first; 0: the engine's default).
    lora_budget_mib: int = 0
    # torch intra-op threads; 0 leaves torch's default.
    torch_threads: int = 0
    # Upper bounds on what one request may ask for.
    max_width: int = 1920
    max_height: int = 1920
    max_frames: int = 241
    max_batch: int = 8
    # Streams (Generate, PostProcess, Split) working on this agent at once, all connections together;
    # four times as many may be open, waiting for their first frames.
    max_streams: int = 32
    # Frame bytes all streams together may hold in memory (received, queued, being upscaled); a stream
    # that would go past it is refused with RESOURCE_EXHAUSTED.
    stream_memory_mib: int = 256
    # A stream inside its frames (after its header) or a client that stops reading is ended after this long.
    stream_idle_s: float = 60.0
    # The longest a stream may take to deliver its messages, including the wait for its header while
    # the upstream agent generates (hours for A14B on an RTX 3090).
    stream_deadline_s: float = 14_400.0
    # A Deliver's generated frames (or latents) are kept after their deliveries failed, so a post stage
    # can be retried without generating again: at most hold_mib in all (oldest dropped first), each
    # for hold_s seconds. 0 keeps nothing.
    hold_mib: int = 2048
    hold_s: float = 600.0
    # Models loaded at start-up; health says SERVING only once they are resident.
    preload: list[str] = field(default_factory=list)
    # Prometheus metrics port; 0: off.
    metrics_port: int = 0
    # The PC's OS and its link NIC (netplan/ethtool name, or the Windows InterfaceAlias);
    # `config render` writes that PC's host files from them. "" falls back to [network] interface.
    platform: Literal["linux", "windows"] = "linux"
    interface: str = ""
    # This PC's link MTU when its NIC cannot take [network] mtu; 0: [network] mtu. Every member of one
    # link must agree (`config check` says so), but render writes what each PC is given.
    mtu: int = 0

    @property
    def dial_address(self) -> str:
        """The address others use to reach this agent."""
        return self.address or self.listen


@dataclass(frozen=True)
class Secrets:
    """The token and the TLS files' bytes a SecurityConfig names, as read at one moment."""

    token: str = ""
    tls_key: bytes = b""
    tls_cert: bytes = b""
    tls_ca: bytes = b""


@dataclass
class SecurityConfig:
    """Shared token and optional mutual TLS on the link."""

    token: str = ""
    token_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    # Allow a non-loopback listen address without a token.
    insecure: bool = False

    def __post_init__(self) -> None:
        # Both PCs read one cluster file, but each has its own certificate (`artifex-agent certs`):
        # ARTIFEX_TLS_CERT / ARTIFEX_TLS_KEY / ARTIFEX_TLS_CA on a PC override the file's paths.
        for key in ("tls_cert", "tls_key", "tls_ca"):
            value = os.environ.get(f"ARTIFEX_{key.upper()}", "")
            if value:
                setattr(self, key, value)
        self._secrets: Secrets | None = None

    def resolve(self) -> Secrets:
        """Read the token (ARTIFEX_TOKEN, then token, then token_file) and the TLS files now, and keep them.

        ClusterConfig.load calls it; after that only a reload (SIGHUP to an agent or coordinator)
        reads again, so a file edited on disk is picked up then and not by chance.
        """
        tls = {key: _read_secret(getattr(self, key), key) for key in ("tls_key", "tls_cert", "tls_ca")} \
            if self.tls else {}
        self._secrets = Secrets(self.read_token(), **tls)
        return self._secrets

    @property
    def secrets(self) -> Secrets:
        """What the last resolve() read; resolved now when nothing has been (a config built in code)."""
        return self._secrets if self._secrets is not None else self.resolve()

    def read_token(self) -> str:
        """The token now: ARTIFEX_TOKEN, then token, then token_file's contents ("" for none)."""
        env = os.environ.get("ARTIFEX_TOKEN", "")
        if env:
            return env
        if self.token:
            return self.token
        if self.token_file:
            try:
                return _read_secret(self.token_file, "token_file").decode().strip()
            except ConfigError as exc:
                if not Path(self.token_file).expanduser().exists():
                    raise ConfigError(f"{exc}; {TOKEN_HINT.format(path=self.token_file)}") from None
                raise
        return ""

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    def file_problems(self) -> list[str]:
        """Every token or TLS setting that cannot work, each on its own (`config check`)."""
        found = []
        try:
            self.read_token()
        except ConfigError as exc:
            found.append(str(exc))
        for key in ("tls_cert", "tls_key", "tls_ca"):
            if getattr(self, key):
                try:
                    _read_secret(getattr(self, key), key)
                except ConfigError as exc:
                    found.append(f"{exc} (`artifex-agent certs` writes a CA and each PC's pair)")
        if bool(self.tls_cert) != bool(self.tls_key):
            found.append("[security] tls_cert and tls_key go together: set both, or neither (TLS is off meanwhile)")
        elif self.tls_ca and not self.tls:
            found.append("[security] tls_ca is set without tls_cert and tls_key: TLS is off; set this PC's pair too")
        return found


def _read_secret(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path!r}: {exc.strerror}") from None


@dataclass
class NetworkConfig:
    """Link settings checked by `health` and written by `config render`."""

    interface: str = ""
    mtu: int = 9000
    subnet: str = "10.0.0.0/24"
    # "direct": two PCs on one cable; "switch": any number of PCs, each on its own port of one switch.
    topology: str = "direct"
    # Bytes per frame chunk on the wire; 0 picks transport.options.DEFAULT_CHUNK_BYTES.
    chunk_bytes: int = 0
    rtt_target_ms: float = 0.5
    bandwidth_target_gbit: float = 9.4
    # NIC tuning `config render` writes (seed: ethtool -G rx/tx 4096, -L combined 8; RSS queues 8).
    ring_buffers: int = 4096
    queues: int = 8


@dataclass
class CoordinatorConfig:
    """The job queue."""

    listen: str = f"127.0.0.1:{DEFAULT_COORDINATOR_PORT}"
    address: str = ""
    database: Path = field(default_factory=lambda: default_home() / "coordinator.db")
    batch_size: int = 4
    # 0: an idle agent starts a job at once; jobs that queue while agents are busy still share a batch.
    batch_timeout_s: float = 0.0
    max_attempts: int = 4
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    health_interval_s: float = 1.0
    results_cache: Path = field(default_factory=lambda: default_home() / "cache" / "results")
    metrics_port: int = 0

    @property
    def dial_address(self) -> str:
        return self.address or self.listen


@dataclass
class WatcherConfig:
    """Drop-folder automation on the shared cache."""

    root: Path = field(default_factory=lambda: default_home() / "cache" / "drop")
    output_root: Path = field(default_factory=lambda: default_home() / "outputs")
    ledger: Path = field(default_factory=lambda: default_home() / "watcher.db")
    # "auto": poll on network filesystems, inotify on local disks.
    mode: Literal["auto", "polling", "native"] = "auto"
    poll_interval_s: float = 1.0
    # A file counts once its size and mtime stayed the same this long (0: one poll interval).
    settle_s: float = 0.0
    # Names this watcher's claims carry in processing/ ("" : the host name); one watcher per owner.
    owner: str = ""
    # Another watcher's claims are taken over once its heartbeat has not moved for this long.
    claim_timeout_s: float = 300.0
    # How often running jobs are looked up at the coordinator.
    status_interval_s: float = 2.0
    # Frame folders: the agent that post-processes them ("" : the first whose roles include post),
    # the folder under that agent's output_root that results go to, and defaults a _post.toml overrides.
    post_agent: str = ""
    output_subdir: str = "drop"
    frames_fps: float = 16.0
    frames_upscale: int = 1
    frames_codec: str = "h264"
    frames_crf: int = 18


@dataclass
class SharesConfig:
    """Shared folders (seed: /data/models ro, /data/projects, /data/cache; P: and Z: on Windows)."""

    models: str = "/data/models"
    projects: str = "/data/projects"
    cache: str = "/data/cache"
    # Which agent's PC exports them (default: the first linux agent), and how.
    server: str = ""
    protocol: Literal["nfs", "smb"] = "nfs"
    export_root: str = "/exports"
    # Windows drive letters for projects and cache.
    projects_drive: str = "P:"
    cache_drive: str = "Z:"
    # The Linux owner of the shares; the Windows NFS client writes as this uid/gid ("anon").
    anon_uid: int = 1000
    anon_gid: int = 1000


@dataclass
class WebConfig:
    """The coordinator's web page (artifex_agent/web, docs/web.md)."""

    # "" : no page. Beyond loopback it needs [web] password(_file) or the cluster token, like the agents.
    listen: str = "127.0.0.1:8265"
    # The login password; "" : the cluster token ([security]).
    password: str = ""
    password_file: str = ""
    # How long a login lasts.
    session_hours: float = 12.0
    # The largest i2v image the submit form accepts.
    upload_mib: int = 16
    # Folders besides the agents' output_root whose files the page may serve (a share's mount point here).
    output_roots: list[str] = field(default_factory=list)

    def read_password(self, token: str) -> str:
        """The login secret now: password, then password_file's first line, then the cluster `token`."""
        if self.password:
            return self.password
        if self.password_file:
            return _read_secret(self.password_file, "[web] password_file").decode().strip()
        return token


@dataclass
class ClusterConfig:
    """Everything the cluster file says."""

    agents: list[AgentConfig] = field(default_factory=lambda: [AgentConfig()])
    security: SecurityConfig = field(default_factory=SecurityConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    shares: SharesConfig = field(default_factory=SharesConfig)
    web: WebConfig = field(default_factory=WebConfig)
    # Generation presets: the built-in ones (artifex_agent/presets.toml) under the file's [presets.NAME].
    presets: dict[str, Preset] = field(default_factory=presets_builtin)
    source: Path | None = None
    # The top-level tables the file itself names: `up` and `health` expect a coordinator and a
    # watcher only where the file configures them (every section has defaults).
    sections: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> ClusterConfig:
        """Read the TOML file at `path` (or $ARTIFEX_CONFIG); no file gives the defaults."""
        path = path or os.environ.get("ARTIFEX_CONFIG") or None
        if path is None:
            return cls()
        p, raw = _read_toml(path)
        cfg = cls.from_dict(raw, base=p.parent)
        cfg.source = p
        with contextlib.suppress(ConfigError):  # raised again where it is needed: `config check` lists it
            cfg.security.resolve()
        return cfg

    @classmethod
    def load_checked(cls, path: str | os.PathLike[str] | None = None) -> tuple[ClusterConfig | None, list[str]]:
        """Like load, but every problem of the file listed instead of the first one raised (`config check`).

        The config comes back (with defaults where a value was refused) unless the file cannot be read.
        """
        path = path or os.environ.get("ARTIFEX_CONFIG") or None
        if path is None:
            return cls(), []
        try:
            p, raw = _read_toml(path)
        except ConfigError as exc:
            return None, [str(exc)]
        found: list[str] = []
        cfg = cls.from_dict(raw, base=p.parent, problems=found)
        cfg.source = p
        with contextlib.suppress(ConfigError):
            cfg.security.resolve()
        return cfg, found

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path | None = None,
                  problems: list[str] | None = None) -> ClusterConfig:
        """Build from a parsed TOML table; unknown keys are errors, not silently ignored.

        With `problems` given, each problem is appended there and the build goes on with the
        default in place of what was refused; without it the first one raises ConfigError.
        """
        raw = dict(raw)
        named = frozenset(raw)
        agents_raw = raw.pop("agents", None)
        sections = {name: _build(kind, raw.pop(name, {}), name, base, problems)
                    for name, kind in _SECTIONS.items()}
        try:
            presets = load_presets(raw.pop("presets", {}), presets_builtin())
        except ConfigError as exc:
            _refuse(problems, str(exc))
            presets = presets_builtin()
        cfg = cls(**sections, presets=presets, sections=named)
        known = [*_SECTIONS, "agents", "presets"]
        for unknown in sorted(raw):
            _refuse(problems, f"unknown config section [{unknown}]{_did_you_mean(unknown, known, '[{}]')}")
        if agents_raw is not None:
            if not isinstance(agents_raw, dict) or not agents_raw:
                _refuse(problems, "[agents.NAME] tables expected, e.g. [agents.pc1]")
            else:
                cfg.agents = [
                    _build(AgentConfig, {"name": name, **table} if isinstance(table, dict) else table,
                           f"agents.{name}", base, problems)
                    for name, table in agents_raw.items()
                ]
        if problems is None:
            cfg.validate()
        else:
            problems += cfg.problems()
        return cfg

    def validate(self) -> None:
        """Refuse settings that cannot work, with the reasons (all of them, one per clause)."""
        found = self.problems()
        if found:
            raise ConfigError("; ".join(found))

    def problems(self) -> list[str]:
        """Every setting that cannot work, each with its reason."""
        return cluster_problems(self)

    def agent(self, name: str | None = None) -> AgentConfig:
        """The agent called `name` ($ARTIFEX_AGENT); the only one when there is one."""
        name = name or os.environ.get("ARTIFEX_AGENT") or None
        if name is None:
            if len(self.agents) == 1:
                return self.agents[0]
            raise ConfigError(f"several agents are configured ({', '.join(a.name for a in self.agents)}): pass --name")
        for a in self.agents:
            if a.name == name:
                return a
        raise ConfigError(f"no agent named {name!r} in the config ({', '.join(a.name for a in self.agents)})")


_SECTIONS: dict[str, type] = {"security": SecurityConfig, "network": NetworkConfig,
                              "coordinator": CoordinatorConfig, "watcher": WatcherConfig, "shares": SharesConfig,
              "web": WebConfig}


def _read_toml(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    p = Path(path).expanduser()
    try:
        return p, tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist (`artifex-agent config init --local` writes one "
                          "that works on this machine)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None


def _refuse(problems: list[str] | None, message: str) -> None:
    if problems is None:
        raise ConfigError(message)
    problems.append(message)


def _did_you_mean(word: str, known: list[str], shape: str = "{}") -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {shape.format(close[0])}?)" if close else ""


def _build(kind: type, table: Any, where: str, base: Path | None, problems: list[str] | None = None) -> Any:
    if not isinstance(table, dict):
        _refuse(problems, f"[{where}] must be a table")
        return kind(**({"name": where.removeprefix("agents.")} if kind is AgentConfig else {}))
    fields = {f.name: f for f in dataclasses.fields(kind)}
    for key in sorted(set(table) - set(fields)):
        _refuse(problems, f"[{where}] unknown key {key!r}{_did_you_mean(key, list(fields))}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            continue
        default = getattr(kind(), key)
        wrong = ""
        if isinstance(default, Path):
            value = Path(str(value)).expanduser()
            if base is not None and not value.is_absolute():
                value = base / value
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                wrong = "true or false"
        elif isinstance(default, (int, float)) and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            wrong = "a number"
        elif isinstance(default, list) and not isinstance(value, list):
            wrong = "a list"
        if wrong:
            _refuse(problems, f"[{where}] {key} must be {wrong}, not {value!r}")
            continue
        values[key] = value
    return kind(**values)
