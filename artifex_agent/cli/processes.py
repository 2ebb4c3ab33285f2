"""The status table `up` and `down` print: one row per process they started or stopped."""

from __future__ import annotations

from rich.table import Table

from artifex_agent.terminal import table_console


def print_table(rows: list[dict[str, str]], title: str = "artifex-agent up") -> None:
    """One row per process, ✓ or ✗ by its state, then the log tail of each that failed."""
    table = Table(title=title)
    for column in ("process", "pid", "address", "state", "log"):
        table.add_column(column, overflow="fold")
    for row in rows:
        ok = row["state"] in ("ready", "already running", "stopped", "not running")
        mark = "[green]✓[/green] " if ok else "[red]✗[/red] "
        table.add_row(row["process"], row["pid"], row["address"], mark + row["state"], row.get("log", ""))
    console = table_console()  # off a terminal (a log, a pipe): every row whole
    console.print(table)
    for row in rows:
        if row.get("detail"):
            console.print(f"[bold]{row['process']}[/bold], last lines of {row.get('log', 'its log')}:")
            console.print(row["detail"], markup=False, highlight=False)
