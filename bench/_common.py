"""Shared by the bench scripts: a scratch folder, one-thread torch, JSON or text output."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# Two processes on two cores: one thread each, or they fight (see the brief).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"artifex-bench-{name}-"))


def emit(results: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return
    for key, value in results.items():
        if isinstance(value, float):
            value = f"{value:.3f}"
        print(f"{key:40} {value}")
