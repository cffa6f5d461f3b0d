"""The benchmark runs end to end (quick mode) and prints its table; it measures nothing here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_mode_runs_and_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"bench failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    out = result.stdout
    assert "cores" in out and "influxd" in out, f"machine and versions missing:\n{out}"
    assert "| measurement | receiver | reference (same run) | ratio | goal | met |" in out
    rows = (
        "| (a) conversion",
        "| (b) backfill",
        "| (c) steady state",
        "| (c) p99 at half",
        "| (d) worker",
        "| (e) 1 receiver x 2 workers",
        "| (e) 2 receivers x 1 worker",
        "| (e) 2 receivers x 2 workers",
        "| (e) 3 receivers x 2 workers",
        "| (f) capacity, counters sending every 1 min",
        "| (f) capacity, counters sending every 5 min",
        "| (f) capacity, counters sending every 15 min",
        "| (g) one pod's memory",
        "| (g) SIGTERM while",
    )
    for row in rows:
        assert row in out, f"row {row!r} missing from the table:\n{out}"
