"""The committed dashboards and alert rule are exactly what grafana/build_dashboards.py generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from grafana import build_dashboards

ROOT = Path(__file__).resolve().parent.parent


def test_generated_files_are_up_to_date() -> None:
    stale = [path.relative_to(ROOT).as_posix() for path in build_dashboards.iter_changes()]
    assert not stale, f"run `python grafana/build_dashboards.py` and commit: {stale} are out of date"


def test_generator_covers_every_dashboard_file() -> None:
    generated = set(build_dashboards.rendered())
    on_disk = set((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert on_disk <= generated, f"hand-made dashboards the generator would not keep: {on_disk - generated}"


def test_check_mode_reports_success_from_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "grafana/build_dashboards.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
