"""The watcher's kernel event queue overflows: events are lost, the rescan catches up.

The kernel keeps at most `fs.inotify.max_queued_events` events per inotify instance (read when
the instance is made); past that it drops events and says so once (IN_Q_OVERFLOW). The scenario
lowers that limit while `gfx-sync up` starts its watcher, waits until the watcher says its
watches are in place (files written before that raise no event: its start-up rescan finds
them), then drops 2,000 files into the PC folders at once, with the watcher paused (SIGSTOP)
so it cannot read while they land: far more events than fit, whatever the machine's load.
Every file must still arrive, through the rescan the watcher runs when it learns events were
lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.faults import PCS, Producer, Rig, Verdict
from support.processes import find_in_tree
from support.system import wait_for, watcher_ready

MAX_QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")
SMALL_QUEUE = 64
FILES = 2000
LOST_LINE = "the inotify event queue overflowed"


@contextlib.contextmanager
def small_inotify_queue(events: int) -> Iterator[None]:
    """The limit is global (not per user namespace): lowered only for this scenario."""
    try:
        original = MAX_QUEUED_EVENTS.read_text()
        MAX_QUEUED_EVENTS.write_text(str(events))
    except OSError as exc:
        pytest.skip(f"cannot lower fs.inotify.max_queued_events (needs root): {exc}")
    try:
        yield
    finally:
        MAX_QUEUED_EVENTS.write_text(original)


def test_a_watch_queue_overflow_is_caught_up_by_a_rescan(rig: Rig, report: list[Verdict]) -> None:
    staging = rig.state.parent / "staging"
    producer = Producer(staging, PCS, seed=23, scenario=23, chunked_share=0)
    for _ in range(FILES):
        producer.new_session(hands=producer.rng.randint(0, 2))
    with small_inotify_queue(SMALL_QUEUE), rig.up() as system, rig.watch() as watch:
        ready = wait_for(lambda: watcher_ready(rig.state), 120)
        (watcher,) = find_in_tree(system.process.pid, "flows.watcher")
        assert watcher.pid == ready["pid"], (watcher, ready)  # the watcher that is watching
        started = time.monotonic()
        watcher.send_signal(signal.SIGSTOP)  # a starved reader: a busy machine, made certain
        try:
            for pc in PCS:
                for path in list(producer.folder(pc).iterdir()):
                    os.rename(path, rig.base / pc / "hands" / path.name)
        finally:
            watcher.send_signal(signal.SIGCONT)
        producer.base = rig.base
        producer.new_session()  # one more after the overflow
        verdict = rig.converge(
            f"watch queue overflow ({FILES} files, queue {SMALL_QUEUE})",
            producer,
            watch=watch,
            started=started,
            timeout=180,
        )
        overflows = system.log().count(LOST_LINE)
        verdict.notes = f"overflows seen {overflows}"
    report.append(verdict)
    assert overflows >= 1, "the kernel queue never overflowed: the scenario tested nothing"
    assert verdict.clean, verdict
