"""Generation presets ("fast", "quality"): named job fields, plain data from presets.toml and the cluster file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from artifex_agent.errors import ConfigError, RequestError
from artifex_agent.jobspec import PRESET_FIELDS, JobSpec

Task = Literal["t2v", "i2v"]
TASKS: tuple[Task, ...] = ("t2v", "i2v")
# Encoder presets (x264/x265 names, NVENC p1..p7) that used to be JobSpec.preset: a job naming
# one as a generation preset gets told where it went.
ENCODER_PRESETS = frozenset({"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                             "veryslow", "placebo", *(f"p{i}" for i in range(1, 8))})


@dataclass(frozen=True)
class Preset:
    """Job fields a preset sets (a subset of PRESET_FIELDS), for every task and per task."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""

    def for_task(self, task: Task) -> dict[str, Any]:
        return {**self.values, **self.tasks.get(task, {})}


def builtin() -> dict[str, Preset]:
    """The presets shipped in artifex_agent/presets.toml."""
    text = resources.files("artifex_agent").joinpath("presets.toml").read_text(encoding="utf-8")
    return load(tomllib.loads(text).get("presets", {}))


def load(tables: Any, base: dict[str, Preset] | None = None) -> dict[str, Preset]:
    """`[presets.NAME]` tables over `base`, key by key; unknown keys and bad values refused with the table named."""
    if not isinstance(tables, dict):
        raise ConfigError("[presets.NAME] tables expected, e.g. [presets.fast]")
    out = dict(base or {})
    for name, table in tables.items():
        where = f"presets.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"[{where}] must be a table")
        old = out.get(name, Preset(name))
        values, tasks, description = dict(old.values), {t: dict(v) for t, v in old.tasks.items()}, old.description
        for key, value in table.items():
            if key in TASKS:
                if not isinstance(value, dict):
                    raise ConfigError(f"[{where}.{key}] must be a table")
                tasks[key] = {**tasks.get(key, {}), **_fields(value, f"{where}.{key}")}
            elif key == "description":
                if not isinstance(value, str):
                    raise ConfigError(f"[{where}] description must be a string")
                description = value
            else:
                values.update(_fields({key: value}, where))
        preset = Preset(name, values, tasks, description)
        for task in TASKS:
            _check(preset.for_task(task), where)
        out[name] = preset
    return out


def _fields(table: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(table) - set(PRESET_FIELDS))
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s): {', '.join(unknown)} "
                          f"(a preset sets {', '.join(PRESET_FIELDS)}, description, t2v, i2v)")
    _check(table, where)
    return dict(table)


def _check(values: dict[str, Any], where: str) -> None:
    try:
        JobSpec.from_dict({"prompt": "x", **values})
    except RequestError as exc:
        raise ConfigError(f"[{where}] {exc}") from None


def resolve(spec: JobSpec, presets: dict[str, Preset], task: Task | None = None) -> JobSpec:
    """The spec with its preset's values in the fields the client left unset (explicit values win); validated."""
    if not spec.preset:
        return spec.validate()
    preset = presets.get(spec.preset)
    if preset is None:
        hint = " (for the encoder's preset use encode_preset)" if spec.preset in ENCODER_PRESETS else ""
        raise RequestError(f"unknown preset {spec.preset!r}; known: {', '.join(sorted(presets)) or 'none'}{hint}")
    values = preset.for_task(task or ("i2v" if spec.i2v else "t2v"))
    changes = {k: v for k, v in values.items() if not spec.given(k)}
    return spec.with_fields(**changes).validate()
