"""The data path runs one way: the stage modules are leaves that import none of each other, and only
``convert`` (the conversion) and ``app`` (one request) compose them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"
# The stages a push passes through, and the stores beside them.
STAGES = ("payload", "jsonslices", "lineprotocol", "localday", "writer", "deadletter", "metrics")
COMPOSERS = {"convert": {"payload", "jsonslices", "lineprotocol", "localday", "writer"}}


def imported(module: str) -> set[str]:
    """The exporter modules ``module`` imports (at any level of its code)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("exporter"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(name.split(".")[1] for name in names if name.count(".") >= 1)
            if node.module == "exporter":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("exporter."))
    return found - {"__init__"}


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage_and_nothing_that_composes_them(stage: str) -> None:
    others = (set(STAGES) - {stage}) | set(COMPOSERS) | {"app", "server", "cli"}
    assert not imported(stage) & others, f"{stage} imports {sorted(imported(stage) & others)}"


def test_lineprotocol_knows_neither_pushes_nor_the_writer() -> None:
    assert not imported("lineprotocol"), f"lineprotocol imports {sorted(imported('lineprotocol'))}"


def test_convert_composes_the_conversion_stages_and_nothing_downstream_but_the_chunk_type() -> None:
    assert imported("convert") - {"config"} == COMPOSERS["convert"]


def test_the_writer_knows_nothing_about_parsing() -> None:
    assert not imported("writer") & {"payload", "jsonslices", "convert", "lineprotocol", "ahead"}
