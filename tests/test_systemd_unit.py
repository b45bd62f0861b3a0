"""deploy/systemd/gfx-sync.service: the unit that runs `gfx-sync up` on a plain Linux host.

Its stop contract is checked key by key (SIGTERM to `up` alone, then time to drain), and the
whole file by `systemd-analyze verify`, in a scratch root that holds the system's units and a
stand-in for the venv's gfx-sync, so the check needs no installation on this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "systemd" / "gfx-sync.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def directives(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values in order (systemd keys may repeat)."""
    found: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        found.setdefault((section, key.strip()), []).append(value.strip())
    return found


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def one(found: dict[tuple[str, str], list[str]], key: str) -> str:
    values = found.get(("Service", key), [])
    assert len(values) == 1, f"[Service] {key}: expected one value, found {values}"
    return values[0]


def test_runs_gfx_sync_up_as_a_dedicated_user() -> None:
    found = directives(UNIT.read_text())
    exec_start = one(found, "ExecStart")
    assert exec_start.startswith("/") and exec_start.endswith("/bin/gfx-sync up"), exec_start
    assert one(found, "Type") in {"simple", "exec"}
    assert one(found, "User") not in {"root", "0"}
    assert one(found, "WorkingDirectory").startswith("/")
    assert "-/etc/gfx-sync/gfx-sync.env" in found[("Service", "EnvironmentFile")]
    assert one(found, "Restart") == "on-failure"
    assert seconds(one(found, "RestartSec")) > 0
    assert ("Install", "WantedBy") in found


def test_state_and_prefect_ui_folders_belong_to_the_user() -> None:
    """The venv is root's: Prefect's server must copy its UI's files to a folder of the
    user's, one systemd creates (StateDirectory=), or it serves no UI."""
    found = directives(UNIT.read_text())
    state = {f"/var/lib/{name}" for name in one(found, "StateDirectory").split()}
    environment = dict(value.split("=", 1) for value in found[("Service", "Environment")])
    assert environment["GFX_SYNC_STATE_DIR"] in state
    assert environment["PREFECT_SERVER_UI_STATIC_DIRECTORY"] in state


def test_stop_is_sigterm_to_up_alone_with_time_to_drain() -> None:
    found = directives(UNIT.read_text())
    assert one(found, "KillSignal") == "SIGTERM"
    # mixed: SIGTERM to the main process only; `up` stops its children itself, in order.
    assert one(found, "KillMode") == "mixed"
    assert seconds(one(found, "TimeoutStopSec")) >= 60


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not SYSTEM_UNITS.is_dir():
        reason = "systemd-analyze not installed (apt-get install systemd; .ci/deps does)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must verify the unit: {reason}")
        pytest.skip(reason)
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    installed = root / "etc/systemd/system" / UNIT.name
    installed.parent.mkdir(parents=True)
    shutil.copy(UNIT, installed)
    # verify checks that ExecStart's program exists: a stand-in where the unit says it is.
    program = Path(directives(UNIT.read_text())[("Service", "ExecStart")][0].split()[0])
    stand_in = root / program.relative_to("/")
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)

    result = subprocess.run(
        [analyze, "verify", f"--root={root}", f"/etc/systemd/system/{UNIT.name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Unknown keys and bad values are only warnings (exit 0): any line about the unit fails.
    complaints = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not complaints, result.stderr
