"""Long-running processes forked from the warm runner's forkserver, instead of started afresh.

The forkserver has Prefect, the flows and gfx-sync imported once, with its objects frozen
(deployments/warm/frozen.py); a process forked from it shares those pages with it and with the
runs' children, where a fresh interpreter would import and hold its own copy. `up`'s watcher
runs this way. A forked process:
- shows `title` as its command line (`ps`, `top`, the bench's and the fault suite's process
  labels), where it would otherwise show the forkserver's;
- stops (as on SIGTERM) when the process that started it goes, even by SIGKILL: its parent is
  the forkserver, which outlives it, so a parent-death signal would not tell;
- sends the logs and events Prefect still holds before it exits, for at most a bounded time
  (a forked child skips `atexit`).
It offers the part of `subprocess.Popen` that `up`'s supervision uses.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

from setproctitle import setproctitle


class ForkedProcess:
    """A process forked from the forkserver, seen through `subprocess.Popen`'s methods."""

    def __init__(self, process: BaseProcess) -> None:
        self._process = process  # held: its pipe to the child is how the child knows we live

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        return self._process.exitcode


def fork(entry: str, title: str, api_url: str | None = None) -> ForkedProcess:
    """Run `entry` ("module:function", called with no arguments) in a process forked from
    the forkserver. `api_url`: the Prefect API it talks to (the forkserver's environment may
    predate it)."""
    from deployments.warm.pool import forkserver_context

    process = forkserver_context().Process(
        target=_forked_main, args=(entry, title, api_url), name=title, daemon=True
    )
    process.start()
    return ForkedProcess(process)


def _forked_main(entry: str, title: str, api_url: str | None) -> None:
    """Exits once `entry` returned and what Prefect held was sent or given up on: Prefect's own
    exit hooks wait without a bound for a server that may be gone with our starter."""
    setproctitle(title)
    _stop_when_starter_goes()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    code = 0
    try:
        module, _, attribute = entry.partition(":")
        function = getattr(importlib.import_module(module), attribute)
        with temporary_settings(updates={PREFECT_API_URL: api_url} if api_url else {}):
            function()
    except BaseException:
        traceback.print_exc()
        code = 1
    flush_prefect_workers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stop_when_starter_goes() -> None:
    """SIGTERM this process once the one that started it is gone (its end of the pipe our
    sentinel reads from closes)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="starter-watch", daemon=True).start()


def flush_prefect_workers(timeout: float = 10.0) -> None:
    """Send the logs and events this process still holds: a forked child skips the `atexit`
    handlers that would."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)
