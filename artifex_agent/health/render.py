"""The health report as one rich table, or as JSON."""

from __future__ import annotations

import json
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from artifex_agent.health.checks import CheckResult, HealthReport


def mark(result: CheckResult) -> Text:
    """✓ passed, ✗ a required check failed, ! advice not followed (does not fail health)."""
    if result.ok:
        return Text("✓", style="green")
    return Text("✗", style="bold red") if result.required else Text("!", style="yellow")


def table(report: HealthReport) -> Table:
    t = Table(title="artifex-agent health", title_justify="left", show_lines=False, expand=False)
    t.add_column("", no_wrap=True, width=1)
    t.add_column("check", no_wrap=True)
    t.add_column("figure", overflow="fold")
    t.add_column("target", overflow="fold")
    t.add_column("what to do", overflow="fold")
    for r in report.results:
        # Text, not str: values such as "[shares]" must not be read as rich markup.
        t.add_row(mark(r), Text(r.name), Text(r.value), Text(r.target),
                  Text(r.fix, style="red" if r.required else "yellow"))
    return t


def summary(report: HealthReport) -> Text:
    required = [r for r in report.results if r.required]
    if report.ok:
        return Text(f"healthy: all {len(required)} required checks pass ({report.elapsed_s:.1f} s)", style="green")
    names = ", ".join(r.name for r in report.failed)
    return Text(f"UNHEALTHY: {len(report.failed)} of {len(required)} required checks fail: {names} "
                f"({report.elapsed_s:.1f} s)", style="bold red")


def render(report: HealthReport, *, as_json: bool = False, file: IO[str] | None = None) -> None:
    """Print the report: a table and a summary line, or one JSON object."""
    if as_json:
        out = file
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), file=out)
        return
    console = Console(file=file)
    if not console.is_terminal:
        # Piped or in a log: rich would wrap at 80 columns, which shreds the table.
        console.width = max(console.width, 160)
    console.print(table(report))
    console.print(summary(report))
