"""The architecture as tests: import-linter's contracts (pyproject.toml), and three rules it cannot express."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnfit"
MAX_FUNCTION_LINES = 80  # DESIGN.md section 3: a function a reader holds in their head


def _modules() -> list[tuple[str, ast.Module]]:
    return [(".".join(("cnnfit", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"),
             ast.parse(p.read_text(), str(p))) for p in sorted(SRC.rglob("*.py"))]


def test_import_contracts_hold():
    """Layers from cli down to files/errors, no cycles, data/models/engine/eval never reading the config."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([exe, "--no-cache"], cwd=SRC.parents[1], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_no_function_is_over_80_lines():
    long = [f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines" for name, tree in _modules()
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])  # cnnfit.pipeline, cnnfit.cli, ...


def test_no_module_takes_another_packages_private_names():
    """`from cnnfit.x import _name` and `x._name` only within the package that defines it."""
    found = []
    for name, tree in _modules():
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnfit"):
                other = _package(node.module)
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    if alias.name.startswith("_") and other != _package(name):
                        found.append(f"{name}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("cnnfit"):
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id in aliases:
                target = aliases[node.value.id]
                if target.startswith("cnnfit") and _package(target) != _package(name):
                    found.append(f"{name}: {node.value.id}.{node.attr}")
    assert not found, found


def test_only_the_cli_renders():
    """Library code logs; the command line alone prints and draws with rich (DESIGN.md section 3)."""
    found = []
    for name, tree in _modules():
        if name == "cnnfit.cli":
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if mod and mod.split(".")[0] == "rich":
                    found.append(f"{name} imports {mod}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append(f"{name} calls print (line {node.lineno})")
    assert not found, found
