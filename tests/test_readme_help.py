"""The README's ``--help`` excerpts are the real output in a wide terminal, marked for this test."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
# Any terminal this wide shows the same: click wraps help at min(columns, max_content_width=100) - 2.
COLUMNS = 120
# <!-- help: axis-exporter serve --help --> right above a fenced block holding that command's output.
MARKED = re.compile(
    r"^<!-- help: (?P<command>[^>]*?) -->\n```[a-z]*\n(?P<text>.*?)^```$", re.MULTILINE | re.DOTALL
)
# A line of click's option list: two spaces, the option, its metavar (--bind TEXT) or "-h, --help".
HELP_LINE = re.compile(r"^  (--[a-z][a-z-]* [A-Z]|-h, --help)", re.MULTILINE)
FENCED = re.compile(r"^```[a-z]*\n(?P<text>.*?)^```$", re.MULTILINE | re.DOTALL)


def excerpts() -> dict[str, str]:
    """Marked excerpts: command line -> the block's text."""
    found: dict[str, str] = {}
    for match in MARKED.finditer(README.read_text(encoding="utf-8")):
        assert match["command"] not in found, f"README shows {match['command']!r} twice"
        found[match["command"]] = match["text"]
    return found


def help_output(command: str) -> str:
    """What ``command`` (``axis-exporter ... --help``) prints in a terminal {COLUMNS} columns wide."""
    program, *args = shlex.split(command)
    assert program == "axis-exporter", f"a help marker names {program!r}, not axis-exporter"
    result = subprocess.run(
        [sys.executable, "-c", f"from exporter.cli import main; main(prog_name={program!r})", *args],
        env={**os.environ, "COLUMNS": str(COLUMNS)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed: {result.stderr}"
    return result.stdout


def test_the_readme_shows_serve_help() -> None:
    assert "axis-exporter serve --help" in excerpts(), "the README lost its marked `serve --help` excerpt"


@pytest.mark.parametrize("command", sorted(excerpts()))
def test_a_help_excerpt_is_the_real_output(command: str) -> None:
    shown = excerpts()[command]
    real = help_output(command)
    assert shown == real, (
        f"README's excerpt of `{command}` differs from the real output; replace the block with:\n{real}"
    )


def test_every_help_like_block_is_marked() -> None:
    """An unmarked copy of help output would go stale without any test noticing."""
    marked = set(excerpts().values())
    for match in FENCED.finditer(README.read_text(encoding="utf-8")):
        text = match["text"]
        if text.startswith("Usage: axis-exporter") or HELP_LINE.search(text):
            assert text in marked, f"a help excerpt without a <!-- help: ... --> marker:\n{text}"
