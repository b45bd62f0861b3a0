"""The installed `gfx-sync` is the core's command line with `up` added by deployments/app.py,
and the core (gfx_sync/) imports nothing from Prefect or from the layers above it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

GFX_SYNC = Path(sys.executable).parent / "gfx-sync"
CORE = Path(__file__).resolve().parents[1] / "gfx_sync"
ABOVE_THE_CORE = {"prefect", "deployments", "flows", "tasks"}


def test_the_installed_command_lists_up_among_the_core_commands() -> None:
    result = subprocess.run([GFX_SYNC, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^ {4}(\S+)", result.stdout, flags=re.MULTILINE)  # not wrapped lines
    assert listed == [
        "migrate", "sync", "up", "console", "worker", "deploy", "server",
        "health", "doctor", "status", "requeue",
    ]  # fmt: skip


def test_the_core_imports_nothing_from_prefect_or_the_layers_above() -> None:
    offending = [
        f"{path.relative_to(CORE.parent)}:{node.lineno} imports {name}"
        for path in sorted(CORE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        for name in imported_modules(node)
        if name.split(".")[0] in ABOVE_THE_CORE
    ]
    assert offending == []


def imported_modules(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []
