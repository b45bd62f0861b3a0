"""Process faults: a Prefect server the test stops and restarts, and `gfx-sync up`'s tree.

`gfx-sync up` normally runs its own Prefect server; a scenario that takes the orchestrator
away runs one here instead (its own home and SQLite database, a fixed port, so a restart
comes back at the same address) and points `up` at it with PREFECT_API_URL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from deployments.up import wait_until_healthy

from .system import RunningSystem, free_port, wait_for


@dataclass
class PrefectServer:
    """`prefect server start` on a fixed port and home, stoppable by any signal."""

    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout: float = 120.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / "server.log").open("ab")
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "prefect", "server", "start",
                "--host", "127.0.0.1", "--port", str(self.port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self.starts += 1
        wait_until_healthy(self.api_url, self.process, timeout)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the whole server (uvicorn and its services) with `sig`."""
        if self.process is None:
            return
        if self.process.poll() is None:
            kill_tree(self.process.pid, sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                kill_tree(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> PrefectServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(signal.SIGKILL)


def tree(pid: int) -> list[psutil.Process]:
    """`pid` and all its descendants, including those in other sessions or groups."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal a whole process tree at once, children first seen, so none is left orphaned."""
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


def find_in_tree(pid: int, marker: str) -> list[psutil.Process]:
    """Descendants of `pid` whose command line contains `marker` (e.g. `flows.watcher`)."""
    found = []
    for process in tree(pid)[1:]:
        try:
            if marker in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def kill_everything(system: RunningSystem) -> None:
    """A power cut: SIGKILL `up` and every descendant (runner children, forkserver, watcher,
    the Prefect server it started in a session of its own), all at once."""
    kill_tree(system.process.pid, signal.SIGKILL)
    system.process.wait(30)
    wait_for(lambda: not tree(system.process.pid), timeout=30)
