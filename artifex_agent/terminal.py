"""Consoles for tables, and wrapping that never splits a shell command.

Off a terminal (a pipe, a log, a file) rich would wrap at 80 columns and fold long paths over many lines; a
reader there (grep, a script, a bug report) wants each row whole, so the width is unlimited.
"""

from __future__ import annotations

import re
from typing import IO

from rich.console import Console

# Wider than any row: "no limit" for rich, which needs a number.
UNLIMITED = 10_000

# Words that start a shell command in the advice this project prints.
_COMMAND_WORDS = (r"(?:artifex-agent|sudo|sysctl|ip|ufw|timedatectl|pip|netsh|ethtool|systemctl|nvidia-smi"
                  r"|(?:Set|New)-\w+)")
# A command inside prose: `in backticks`; in parentheses that start with a command word, as in
# "(artifex-agent serve --name pc1)"; or a whole clause that does, as in "sysctl -w key=value (persist: ...)".
_COMMAND = re.compile(rf"`[^`]+`"
                      rf"|\((?:or |e\.g\. )?{_COMMAND_WORDS} [^()]*\)"
                      rf"|(?:^|(?<=[:;] )){_COMMAND_WORDS} [^(;,`]*[^(;,`\s]")


def table_console(file: IO[str] | None = None, *, stderr: bool = False) -> Console:
    """A console for tables: the terminal's width on a terminal, unlimited anywhere else."""
    console = Console(file=file, stderr=stderr)
    if not console.is_terminal:
        console = Console(file=file, stderr=stderr, width=UNLIMITED)
    return console


def wrap_keeping_commands(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width`, except that a command is never broken: one longer than `width`
    gets a line of its own (the terminal wraps it softly, and a copy of it stays one command)."""
    # Spaces inside a command become a placeholder, so splitting at whitespace keeps each command one word
    # (with the punctuation that touches it).
    kept = _COMMAND.sub(lambda m: m.group(0).replace(" ", "\0"), text)
    words = [word.replace("\0", " ") for word in kept.split()]
    lines: list[str] = []
    line = ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines
