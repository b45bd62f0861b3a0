"""Liveness and readiness, as files in the state folder, for `gfx-sync health` and the tests.

`up` rewrites `up.json` every few seconds (its heartbeat); the watcher process writes
`watcher.json` once its watches are in place and its start-up rescan is done, so a reader knows
from then on every change in the PC folders reaches the queue. The supervisor removes the
watcher's file before it starts a watcher. A container's HEALTHCHECK, a systemd check or a test
reads them with `read_health`; nobody has to parse logs or sleep.

Core package: no Prefect here (the Prefect server is probed over plain HTTP).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

UP_FILE = "up.json"
WATCHER_FILE = "watcher.json"
HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0  # a heartbeat older than this means `up` is hung or gone


def write_state(path: Path, document: dict[str, object]) -> None:
    """Replace `path` atomically: a reader sees the old document or the new one, never half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(orjson.dumps(document))
    os.replace(temporary, path)


def read_state(path: Path) -> dict[str, object] | None:
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def remove_state(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def probe_writable(folder: Path, size: int = 64 * 1024, *, fsync: bool = True) -> None:
    """Create, fill, fsync and remove a probe file: raises OSError (read-only, full disk,
    permissions) where the queue could not commit either."""
    probe = folder / f".gfx-sync-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(probe, "xb", buffering=0) as handle:
            handle.write(b"\0" * size)
            if fsync:
                os.fsync(handle.fileno())
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but alive
    return True


@functools.cache
def _http() -> httpx.Client:
    """One client for every probe: making one builds a TLS context (tens of ms of CPU), which
    a probe every few seconds would otherwise pay each time."""
    return httpx.Client()


def prefect_reachable(api_url: str, timeout: float = 2.0) -> bool:
    """The Prefect server answers its health check (so it can create and track runs)."""
    try:
        response = _http().get(f"{api_url.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    reason: str


def read_health(state_dir: Path, *, now: float | None = None) -> Health:
    """Healthy: an `up` is beating in this state folder and its watcher is watching."""
    now = time.time() if now is None else now
    up = read_state(state_dir / UP_FILE)
    if up is None:
        return Health(False, f"no gfx-sync up is running with state folder {state_dir}")
    if not pid_alive(up.get("pid")):
        return Health(False, f"gfx-sync up (pid {up.get('pid')}) is not running")
    beat = up.get("updated_at")
    age = now - beat if isinstance(beat, int | float) else float("inf")
    if age > STALE_AFTER_SECONDS:
        return Health(False, f"gfx-sync up has not written its heartbeat for {age:.0f} s")
    watcher = read_state(state_dir / WATCHER_FILE)
    if watcher is None or not pid_alive(watcher.get("pid")):
        return Health(False, "the watcher is starting (its watches are not in place yet)")
    notes = [f"watcher ready ({watcher.get('mode', '?')}, pid {watcher['pid']})"]
    if up.get("target") == "unreachable":
        notes.append("target unreachable: changes wait in the durable queue")
    if up.get("orchestrator") == "unreachable":
        notes.append("Prefect unreachable: draining without it")
    return Health(True, "; ".join(notes))
