"""Long-running processes forked from the warm runner's forkserver, instead of started afresh.

The forkserver has Prefect, the flows and gfx-sync imported once, with its objects frozen
(deployments/warm/frozen.py); a process forked from it shares those pages with it and with the
runs' children, where a fresh interpreter would import and hold its own copy. `up`'s watcher
runs this way. A forked process:
- shows `title` as its command line (`ps`, `top`, the bench's and the fault suite's process
  labels), where it would otherwise show the forkserver's;
- stops (as on SIGTERM) when the process that started it goes, even by SIGKILL: its parent is
  the forkserver, which outlives it, so a parent-death signal would not tell; and when the
  forkserver goes (its starter sees it exit once it is gone, not before);
- sends the logs and events Prefect still holds before it exits, for at most a bounded time
  (a forked child skips `atexit`).
It offers the part of `subprocess.Popen` that `up`'s supervision uses.
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from setproctitle import setproctitle


class ForkedProcess:
    """A process forked from the forkserver, seen through `subprocess.Popen`'s methods.

    Its exit is told by the forkserver, which reaps it; a forkserver that died tells nothing
    more (multiprocessing then says 255), so the process is also looked up by pid and start
    time: it has not exited while it is still there."""

    def __init__(self, process: BaseProcess) -> None:
        self._process = process  # held: its pipe to the child is how the child knows we live
        self._started = _start_time(self.pid)

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def poll(self) -> int | None:
        code = self._process.exitcode
        if code is None or self._started is None:
            return code
        return None if _start_time(self.pid) == self._started else code  # the forkserver went

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._process.join(timeout)
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.05)  # the forkserver is gone: no one reaps and tells us
        return code


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat), or None if it
    is gone or a zombie (it exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name, in parentheses, may hold spaces
    return None if fields[0] == "Z" else int(fields[19])


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
    die_with_parent()  # the forkserver
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


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGTERM this process when the thread that started it dies (Linux; in a `Popen` child,
    as its `preexec_fn`).

    A SIGKILLed `up` otherwise leaves its Prefect server (in a session of its own) running:
    the next `up` then finds the port taken and talks to the orphan."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
