"""The names of the memory settings (offload, weight storage, attention), torch-free for config checks."""

from __future__ import annotations

from artifex_agent.errors import ConfigError

# Fastest first: what `offload = "auto"` tries in this order.
POLICIES: tuple[str, ...] = ("none", "model", "group", "sequential")
OFFLOAD_CHOICES: tuple[str, ...] = ("auto", *POLICIES)
STORAGE_CHOICES: tuple[str, ...] = ("auto", "native", "fp8")
ATTENTION_CHOICES: tuple[str, ...] = ("auto", "native", "flash", "sage")


def check_choice(key: str, value: object, choices: tuple[str, ...], where: str = "") -> None:
    """Refuse a setting outside `choices`, naming the key and the allowed values."""
    if value not in choices:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{key} must be one of {', '.join(choices)}, not {value!r}")
