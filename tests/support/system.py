"""Run the real `gfx-sync up` as a child process, and small helpers to wait on its effects."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg

from gfx_sync.health import WATCHER_FILE, pid_alive, read_health, read_state

T = TypeVar("T")
READY_LINE = "gfx-sync is up"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")
        time.sleep(interval)
        last = check()
    return last


def session_row(database_url: str, session_id: int) -> tuple | None:
    """(PC, hand count, sync source) of a session's row in the target, or None."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select gfx_pc_id, hand_count, sync_source from gfx_sessions where session_id = %s",
            (session_id,),
        ).fetchone()


@dataclass
class RunningSystem:
    process: subprocess.Popen[str]
    api_url: str
    env: dict[str, str]
    output: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.output)

    @property
    def console_url(self) -> str:
        """The operator console this `up` serves (a free port of its own per test)."""
        return f"http://127.0.0.1:{self.env['GFX_SYNC_CONSOLE_PORT']}"


@contextlib.contextmanager
def gfx_sync_up(
    env: dict[str, str],
    cwd: Path,
    timeout: float = 180.0,
    wrapper: Sequence[str] = (),
    *,
    until: str = "up",
    command: str = "up",
) -> Iterator[RunningSystem]:
    """Start `gfx-sync up` with its own Prefect server (or the one `env` names in
    PREFECT_API_URL); stop it with SIGTERM at the end.

    `wrapper` runs it under another command (e.g. `setpriv` dropping root's file overrides).
    `command`: "worker" runs a site's worker instead (PREFECT_API_URL must be in `env`).
    `until`: "up" waits for its ready line (the deployments are served); "watching" only for
    its health to say the watcher's watches are in place (all a start without a reachable
    Prefect server gets to).
    """
    port = free_port()
    full_env = {
        **os.environ,
        "GFX_SYNC_CONSOLE_PORT": str(free_port()),
        **env,
        "GFX_SYNC_PREFECT_PORT": str(port),
    }
    if "PREFECT_API_URL" not in env:
        full_env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(
        [*wrapper, sys.executable, "-m", "deployments.app", command],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    api_url = env.get("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    system = RunningSystem(process, api_url, full_env)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            system.output.append(line)
            if READY_LINE in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    state_dir = Path(full_env.get("GFX_SYNC_STATE_DIR", cwd / ".gfx-sync"))

    def started() -> bool:
        return ready.is_set() if until == "up" else watching(state_dir)

    try:
        deadline = time.monotonic() + timeout
        while not started() and process.poll() is None and time.monotonic() < deadline:
            ready.wait(0.1)
        if process.poll() is not None or not started():
            raise AssertionError(f"gfx-sync up did not start:\n{system.log()[-5000:]}")
        yield system
    finally:
        stop_child(process, grace=90)


def stop_child(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM (a clean stop), then SIGKILL to its whole session after `grace` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def watching(state_dir: Path) -> bool:
    """`gfx-sync up` runs on `state_dir` and its watcher's watches are in place."""
    return read_health(state_dir).healthy


def watcher_ready(state_dir: Path) -> dict[str, object] | None:
    """What a running watcher wrote once its watches were in place and its start-up rescan
    done (its pid among others), or None while none is: `up` removes the file before it
    starts a watcher."""
    state = read_state(state_dir / WATCHER_FILE)
    return state if state is not None and pid_alive(state.get("pid")) else None


class WebhookReceiver:
    """A loopback HTTP endpoint that records every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                receiver.bodies.append(orjson.loads(raw) if raw else {})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
