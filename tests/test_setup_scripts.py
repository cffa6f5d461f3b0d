"""./scripts/run installs only what running needs; ./scripts/setup, the test command's, installs all."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
SETUP = ROOT / "scripts" / "setup"


def setup_list(*args: str) -> list[str]:
    """What ./scripts/setup would install in a mode, one "debian X" or "pip Y" per line."""
    result = subprocess.run(
        [str(SETUP), "--list", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_run_only_needs_the_package_without_test_extras_and_the_local_influxdb() -> None:
    assert setup_list("--run-only") == ["debian influxdb", "debian nginx-light", "pip ."]


def test_the_test_setup_still_installs_everything() -> None:
    full = setup_list()
    assert full[-1] == "pip .[test]", full
    assert set(setup_list("--run-only")[:-1]) < set(full), "the test setup lacks a package running needs"
    for package in (
        "prometheus",
        "shellcheck",
        "wrk",
        "docker-compose",
        "util-linux",
        "chromium",
        "chromium-driver",
    ):
        assert f"debian {package}" in full, f"the test setup no longer installs {package}"


def test_setup_refuses_an_unknown_argument() -> None:
    result = subprocess.run(
        [str(SETUP), "--runonly"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2 and "usage:" in result.stderr, result.stderr


def test_run_sets_up_for_running_only_then_serves_with_the_arguments(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "run", tmp_path / "scripts" / "run")
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for stub in (tmp_path / "scripts" / "setup", bin_dir / "axis-exporter"):
        stub.write_text(f'#!/bin/sh\necho "{stub.name} $*" >> "{calls}"\n')
        stub.chmod(0o755)
    result = subprocess.run(
        [str(tmp_path / "scripts" / "run"), "--workers", "3"],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == ["setup --run-only", "axis-exporter serve --workers 3"]


def third_party_imports() -> set[str]:
    """Top-level modules the exporter package imports that are neither its own nor the standard library."""
    found: set[str] = set()
    for path in (ROOT / "exporter").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name != "exporter" and name not in sys.stdlib_module_names}


def distribution_name(requirement: str) -> str:
    """``flask>=3.0`` -> ``flask`` (normalised as packaging does)."""
    name = re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_package_without_extras_brings_everything_it_imports() -> None:
    """What ``pip install .`` installs (dependencies and theirs, no extras) covers every import."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reachable: set[str] = set()
    pending = [distribution_name(requirement) for requirement in project["dependencies"]]
    while pending:
        name = pending.pop()
        if name in reachable:
            continue
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (a marker excludes it): it provides nothing to import
        reachable.add(name)
        for requirement in requires:
            _, _, marker = requirement.partition(";")
            if "extra" not in marker:  # what an extra brings is not installed without it
                pending.append(distribution_name(requirement))
    providers = importlib.metadata.packages_distributions()
    missing = {
        module: providers.get(module)
        for module in third_party_imports()
        if not {distribution_name(dist) for dist in providers.get(module, [])} & reachable
    }
    assert not missing, f"imported by exporter/ but not installed without the test extras: {missing}"


def declared_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {distribution_name(requirement) for requirement in project["dependencies"]}


def test_every_imported_module_is_a_declared_dependency_not_only_a_dependency_of_one() -> None:
    providers = importlib.metadata.packages_distributions()
    undeclared = {
        module: providers.get(module)
        for module in third_party_imports()
        if not {distribution_name(dist) for dist in providers.get(module, [])} & declared_dependencies()
    }
    assert not undeclared, f"imported by exporter/ but not in pyproject.toml's dependencies: {undeclared}"


def test_every_declared_dependency_is_imported() -> None:
    providers = importlib.metadata.packages_distributions()
    imported = {
        distribution_name(dist) for module in third_party_imports() for dist in providers.get(module, [])
    }
    unused = declared_dependencies() - imported
    assert not unused, f"declared in pyproject.toml but never imported by exporter/: {sorted(unused)}"
