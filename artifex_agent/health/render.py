"""The health report as one rich table, or as JSON."""

from __future__ import annotations

import json
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from artifex_agent.health.checks import CheckResult, HealthReport
from artifex_agent.terminal import UNLIMITED, table_console, wrap_keeping_commands


def mark(result: CheckResult) -> Text:
    """✓ passed, ✗ a required check failed, ! advice not followed (does not fail health)."""
    if result.ok:
        return Text("✓", style="green")
    return Text("✗", style="bold red") if result.required else Text("!", style="yellow")


def table(report: HealthReport, *, fixes: bool = True) -> Table:
    """The report as one table; without the "what to do" column when `fixes` is False (render lists them)."""
    t = Table(title="artifex-agent health", title_justify="left", show_lines=False, expand=False)
    t.add_column("", no_wrap=True, width=1)
    t.add_column("check", no_wrap=True)
    t.add_column("figure", overflow="fold")
    t.add_column("target", overflow="fold")
    if fixes:
        t.add_column("what to do", overflow="fold")
    for r in report.results:
        # Text, not str: values such as "[shares]" must not be read as rich markup.
        cells = [mark(r), Text(r.name), Text(r.value), Text(r.target)]
        if fixes:
            cells.append(Text(r.fix, style="red" if r.required else "yellow"))
        t.add_row(*cells)
    return t


def print_fixes(console: Console, report: HealthReport) -> None:
    """What to do, one check at a time, below a table too narrow to hold it: wrapped to the terminal, but a
    shell command is never split (one too long for a line gets a line of its own)."""
    rows = [r for r in report.results if r.fix]
    if rows:
        console.print(Text("what to do:", style="bold"))
    for r in rows:
        console.print(Text.assemble("  ", mark(r), f" {r.name}:"))
        for line in wrap_keeping_commands(r.fix, max(20, console.width - 4)):
            console.print(Text("    " + line, style="red" if r.required else "yellow"), soft_wrap=True)


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
    console = table_console(file)  # off a terminal: unlimited width, every row whole
    full = table(report)
    # Measured as if unlimited: rich clamps a measurement to the width it is given.
    if console.measure(full, options=console.options.update_width(UNLIMITED)).maximum <= console.width:
        console.print(full)
    else:
        # A narrow terminal: folding "what to do" would break its commands mid-word; list it below instead.
        console.print(table(report, fixes=False))
        print_fixes(console, report)
    console.print(summary(report))
