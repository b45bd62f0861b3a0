"""Flows for the warm runner tests, importable by its forked children (module:attribute)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
from prefect import flow, task


@flow(name="runner-test-pid")
def report_pid(hold: float = 0.0, out: str = "", until: str = "") -> int:
    """Writes "pid start-time" of the process that ran it to `out`; `hold`: keep running;
    `until`: keep running until that file exists."""
    time.sleep(hold)
    while until and not Path(until).exists():
        time.sleep(0.05)
    if out:
        Path(out).write_text(f"{os.getpid()} {psutil.Process().create_time()}")
    return os.getpid()


@flow(name="runner-test-exit")
def exit_abruptly(how: str = "exit") -> None:
    """Dies without a word to Prefect: os._exit (no cleanup) or SIGKILL."""
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


@flow(name="runner-test-hang")
def hang(seconds: float = 600.0) -> None:
    time.sleep(seconds)


@task
def tick() -> None:
    time.sleep(0.1)


@flow(name="runner-test-ticks")
def ticks(count: int = 3000, out: str = "") -> int:
    """Many small tasks (each task start is where an external suspension takes effect),
    counting them in `out`."""
    for done in range(count):
        tick()
        if out:
            Path(out).write_text(str(done + 1))
    return count
