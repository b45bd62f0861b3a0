"""`gfx-sync up`'s process supervision, with real processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from deployments.forked import fork
from deployments.up import WatcherSupervisor
from support.forked_target import MARK_ENV
from support.system import wait_for


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


FORKED_ENTRY = "support.forked_target:wait_for_sigterm"


def exited(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def ready(pid: int, title: str) -> psutil.Process:
    """The forked target `pid`, once its title says SIGTERM is handled."""
    process = psutil.Process(pid)
    wait_for(lambda: process.cmdline()[0] == f"{title} ready", 60)
    return process


def test_a_killed_watcher_is_started_again_and_a_rescan_asked_for() -> None:
    recoveries: list[int] = []
    supervisor = WatcherSupervisor(
        sleeper, lambda: recoveries.append(1), check_seconds=0.05, max_delay=0.2
    )
    try:
        first = supervisor.process
        first.send_signal(signal.SIGKILL)
        wait_for(lambda: supervisor.restarts == 1 and recoveries == [1], timeout=30)
        assert supervisor.process.pid != first.pid
        assert supervisor.process.poll() is None  # the new watcher runs
        supervisor.process.send_signal(signal.SIGKILL)  # and again: not a one-off
        wait_for(lambda: supervisor.restarts == 2 and recoveries == [1, 1], timeout=30)
    finally:
        supervisor.stop()
    assert supervisor.process.poll() is not None  # stop() stops the watcher too


def test_a_failing_recovery_request_does_not_stop_the_supervision() -> None:
    def no_server() -> None:
        raise ConnectionError("the Prefect server is down")

    supervisor = WatcherSupervisor(sleeper, no_server, check_seconds=0.05, max_delay=0.2)
    try:
        for restarts in (1, 2):
            supervisor.process.send_signal(signal.SIGKILL)
            wait_for(lambda r=restarts: supervisor.restarts == r, timeout=30)
        assert supervisor.process.poll() is None
    finally:
        supervisor.stop()


def test_children_of_a_sigkilled_up_do_not_outlive_it() -> None:
    """What `up` starts with `die_with_parent` is stopped when `up` is SIGKILLed alone."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "from deployments.forked import die_with_parent\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],\n"
            "                         start_new_session=True, preexec_fn=die_with_parent)\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    assert child.is_running()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    wait_for(lambda: exited(child), 30)


def test_a_watcher_that_cannot_be_started_is_tried_again() -> None:
    """A start that raises (no forkserver could be started, no memory) is retried with the
    same backoff as a watcher that died, and the supervision goes on."""
    outcomes: list[OSError | None] = [None, OSError("Cannot allocate memory")]  # then fine

    def start() -> subprocess.Popen[bytes]:
        if outcomes and (failure := outcomes.pop(0)) is not None:
            raise failure
        return sleeper()

    supervisor = WatcherSupervisor(start, lambda: None, check_seconds=0.05, max_delay=0.2)
    try:
        supervisor.process.send_signal(signal.SIGKILL)
        wait_for(lambda: supervisor.restarts == 1, timeout=30)  # after the failed start
        assert outcomes == [] and supervisor.process.poll() is None
        supervisor.process.send_signal(signal.SIGKILL)
        wait_for(lambda: supervisor.restarts == 2, timeout=30)
    finally:
        supervisor.stop()


def test_a_forked_process_says_what_it_is_and_stops_cleanly_when_up_is_sigkilled(
    tmp_path: Path,
) -> None:
    """The watcher is forked from the forkserver, whose child it is, not `up`'s: it watches
    `up` itself, and goes through its SIGTERM path (the flow ends as on Ctrl-C) once `up` is
    gone; the forkserver then exits too."""
    mark = tmp_path / "mark"
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "sys.path.insert(0, 'tests')\n"
            "from deployments.forked import fork\n"
            f"forked = fork({FORKED_ENTRY!r}, 'gfx-sync test (forked)')\n"
            "print(forked.pid, flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, MARK_ENV: str(mark)},
    )
    assert starter.stdout is not None
    forked = ready(int(starter.stdout.readline()), "gfx-sync test (forked)")  # its title
    forkserver = forked.parent()
    assert forkserver is not None and forkserver.ppid() == starter.pid
    assert "forkserver" in " ".join(forkserver.cmdline())
    assert not mark.exists()
    starter.send_signal(signal.SIGKILL)
    starter.wait()
    forked.wait(timeout=60)  # not our child: its exit code is the forkserver's to read
    assert mark.read_text() == f"{forked.pid} stopped"
    forkserver.wait(timeout=60)


def test_the_supervisor_restarts_and_stops_a_forked_watcher() -> None:
    """`ForkedProcess` answers the supervisor as `subprocess.Popen` does."""
    recoveries: list[int] = []
    supervisor = WatcherSupervisor(
        lambda: fork(FORKED_ENTRY, "gfx-sync test (supervised)"),
        lambda: recoveries.append(1),
        check_seconds=0.05,
        max_delay=0.2,
    )
    try:
        first = supervisor.process
        assert first.poll() is None
        first.send_signal(signal.SIGKILL)
        wait_for(lambda: supervisor.restarts == 1 and recoveries == [1], timeout=60)
        assert first.poll() == -signal.SIGKILL
        assert supervisor.process.pid != first.pid and supervisor.process.poll() is None
        ready(supervisor.process.pid, "gfx-sync test (supervised)")
    finally:
        supervisor.stop()
    assert supervisor.process.poll() == 0  # stopped with SIGTERM, and it ended cleanly


def test_a_forked_watcher_whose_forkserver_died_stops_before_another_is_started() -> None:
    """The forkserver reaps the watcher and tells `up` it exited; once it is gone, that
    report cannot come, so the watcher stops with it and is seen to exit only when gone."""
    supervisor = WatcherSupervisor(
        lambda: fork(FORKED_ENTRY, "gfx-sync test (orphaned)"),
        lambda: None,
        check_seconds=0.05,
        max_delay=0.2,
    )
    try:
        first = ready(supervisor.process.pid, "gfx-sync test (orphaned)")
        forkserver = first.parent()
        assert forkserver is not None and "forkserver" in " ".join(forkserver.cmdline())
        forkserver.kill()
        wait_for(lambda: supervisor.restarts == 1, 60)
        assert exited(first)  # before its successor was started
        again = ready(supervisor.process.pid, "gfx-sync test (orphaned)")
        assert again.parent() not in (None, forkserver)  # from a new forkserver
    finally:
        supervisor.stop()
    assert supervisor.process.poll() == 0


def test_the_watcher_is_restarted_to_watch_pcs_that_appear() -> None:
    """A PC folder made after start (a GFX PC joining, or the README's quick start) is
    watched: the watcher restarts with it, and a rescan covers what came meanwhile."""
    pcs = ["PC01"]
    looks: list[int] = []  # one entry each time the supervisor reads the PCs

    def current_pcs() -> list[str]:
        looks.append(1)
        return list(pcs)

    recoveries: list[int] = []
    supervisor = WatcherSupervisor(
        sleeper,
        lambda: recoveries.append(1),
        pcs=current_pcs,
        check_seconds=0.05,
        pcs_check_seconds=0.1,
    )
    try:
        first = supervisor.process
        # Read at start, then twice more: the first of those checks has been acted on.
        wait_for(lambda: len(looks) >= 3, timeout=30)
        assert supervisor.restarts == 0  # the same PCs: left alone
        pcs.append("PC02")
        wait_for(lambda: supervisor.restarts == 1 and recoveries == [1], timeout=30)
        assert first.poll() is not None and supervisor.process.poll() is None
    finally:
        supervisor.stop()


BUSY_SERVING = """
import asyncio, signal, sys
import anyio
from deployments import up

async def serving():
    print("serving", flush=True)
    while True:  # hands work to anyio's worker threads, as Prefect's runner does
        await anyio.to_thread.run_sync(lambda: None)

up._interrupt_on_signals()
try:
    asyncio.run(up._until_stopped(serving()))
except KeyboardInterrupt:
    pass
print("stopped", flush=True)
"""


def test_a_stop_signal_never_lands_inside_a_worker_thread_hand_off() -> None:
    """SIGTERM while the event loop hands work to threads: raised from the signal handler,
    KeyboardInterrupt can land inside `Condition.notify`, the worker never wakes and `up`
    hangs while stopping (seen as a CI failure of the stock runner's test; with the signal
    raising, loops like this one hung 2 times in 10). Through the loop, every stop ends."""
    root = Path(__file__).resolve().parents[1]
    rng = random.Random(15)
    for _ in range(25):
        process = subprocess.Popen(
            [sys.executable, "-c", BUSY_SERVING], cwd=root, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        assert process.stdout.readline() == "serving\n"
        time.sleep(rng.uniform(0.01, 0.2))  # a different moment of the hand-off each time
        process.send_signal(signal.SIGTERM)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError("the serving loop did not stop on SIGTERM") from None
        assert (rest, process.returncode) == ("stopped\n", 0)
