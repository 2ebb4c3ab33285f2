"""Structured logging: text or one JSON object per line, each record carrying its job id.

The job id lives in a contextvar, set while a stage runs (services.activity), so every log
line written under it (ours, grpc's, diffusers') names the job without passing it around.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
from collections.abc import Iterator
from typing import Literal

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")

job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("artifex_job_id", default="")
# The process's own name (agent name, "coordinator", "watcher"), set once at start-up.
component_var: contextvars.ContextVar[str] = contextvars.ContextVar("artifex_component", default="")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(job_tag)s: %(message)s"
# Attributes every LogRecord has; anything else came in through `extra=` and is kept in JSON.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "job_id",
                                                                          "job_tag", "component"}


class JobFilter(logging.Filter):
    """Adds job_id (and, for text, job_tag) to every record from the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = getattr(record, "job_id", "") or job_id_var.get()
        record.job_id = job
        record.job_tag = f" [job {job}]" if job else ""
        record.component = getattr(record, "component", "") or component_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, job_id, component, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("job_id", "component"):
            value = getattr(record, key, "")
            if value:
                entry[key] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def setup(level: int = logging.INFO, fmt: LogFormat = "text", stream: object = None) -> None:
    """Configure the root logger for this process (replacing the handler an earlier call added)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(JobFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler._artifex = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    # Only our own earlier handler goes: others (pytest's capture, an embedding app's) stay.
    for old in [h for h in root.handlers if getattr(h, "_artifex", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def set_job(job_id: str) -> contextvars.Token[str]:
    """Make `job_id` the current job; pass the token to reset_job."""
    return job_id_var.set(job_id)


def reset_job(token: contextvars.Token[str]) -> None:
    try:
        job_id_var.reset(token)
    except ValueError:
        # An async generator closed from another task (a client gone) runs its finally there:
        # the token belongs to the first context, so clear this one instead.
        job_id_var.set("")


@contextlib.contextmanager
def job(job_id: str) -> Iterator[None]:
    """Log lines inside name `job_id`."""
    token = set_job(job_id)
    try:
        yield
    finally:
        reset_job(token)
