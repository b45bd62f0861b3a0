"""The watcher: every session-file change a watch reports is in the durable queue before anyone
is told about it; everything else in the PC folders is ignored; the loop survives failures;
what the kernel drops or refuses is found by a rescan.

Real inotify and real watchfiles on real temporary folders, a real queue. Every watch test runs
with both native readers (inotify, and watchfiles where inotify is missing). No fixed sleeps:
every wait polls a condition with a generous timeout, and nothing asserts on wall-clock time.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from gfx_sync import inotify_tree
from gfx_sync.queue import ChangeKind, DurableQueue, ItemState
from gfx_sync.settings import PcConfig, Settings
from gfx_sync.site import SessionFiles, Site
from gfx_sync.watcher import (
    DetectedChange,
    FolderWatcher,
    WatchTarget,
)
from gfx_synth import session_file_name
from support.disk import can_lower_inotify_limits
from support.nas import make_nas, nas_settings
from support.sessions import write_session

WAIT = 10.0  # generous: a bound for waiting, never a latency assertion


# -- helpers ---------------------------------------------------------------------------


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def mark_synced(queue: DurableQueue, path: Path, pc_id: str = "PC01") -> Path:
    """As if synced before the watcher started: its start-up rescan leaves it alone."""
    st = path.stat()
    queue.record_file_state(str(path), pc_id, st.st_size, st.st_mtime, "hash", "synced")
    return path


def pending(queue: DurableQueue) -> list:
    return list(queue.items(ItemState.PENDING))


def pending_paths(queue: DurableQueue) -> dict[str, ChangeKind]:
    return {item.path: item.kind for item in pending(queue)}


class Recorder:
    """Collects what a callback was given (callbacks run in the watcher's threads)."""

    def __init__(self) -> None:
        self.calls: list[list[DetectedChange]] = []
        self.lock = threading.Lock()

    def __call__(self, changes: list[DetectedChange]) -> None:
        with self.lock:
            self.calls.append(list(changes))

    @property
    def changes(self) -> list[DetectedChange]:
        with self.lock:
            return [c for call in self.calls for c in call]

    def sizes(self, path: Path) -> list[int | None]:
        return [c.size for c in self.changes if c.path == path]


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_nas(tmp_path)


@pytest.fixture
def settings(tmp_path: Path, base: Path) -> Settings:
    return nas_settings(tmp_path)


@pytest.fixture
def queue(settings: Settings) -> Iterator[DurableQueue]:
    with DurableQueue(settings.resolved_queue_path) as queue:
        yield queue


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="gfx_sync.watcher")
    return caplog


needs_inotify = pytest.mark.skipif(
    not inotify_tree.AVAILABLE, reason="inotify needs Linux (and inotify_simple)"
)


@pytest.fixture(
    params=[pytest.param("inotify", marks=needs_inotify), "watchfiles"],
)
def native_reader(request: pytest.FixtureRequest) -> str:
    """Which reader watches native (local) folders; polled folders always use watchfiles."""
    return request.param


@pytest.fixture
def start(
    settings: Settings,
    queue: DurableQueue,
    debug_log: pytest.LogCaptureFixture,
    native_reader: str,
) -> Iterator[Callable[..., tuple[FolderWatcher, threading.Thread]]]:
    """Start a FolderWatcher in a thread and return once it says its watches are in place
    (`on_ready`: every folder that exists is watched and rescanned)."""
    running: list[tuple[FolderWatcher, threading.Thread]] = []

    def _start(
        targets: list[WatchTarget], **options: object
    ) -> tuple[FolderWatcher, threading.Thread]:
        ready = threading.Event()
        options.setdefault("error_dir", settings.error_dir)
        options.setdefault("poll_delay_ms", 100)
        options.setdefault("native_reader", native_reader)
        watcher = FolderWatcher(targets, queue, on_ready=ready.set, **options)  # type: ignore[arg-type]
        thread = threading.Thread(target=watcher.run, name="test-watcher", daemon=True)
        thread.start()
        running.append((watcher, thread))
        assert ready.wait(WAIT), f"the watcher was not ready within {WAIT} s"
        return watcher, thread

    yield _start
    for watcher, thread in running:
        watcher.stop()
        thread.join(WAIT)


def wait_until_rewatched(watcher: FolderWatcher) -> None:
    """After a restart: the watch is back in place once the rescan that follows it has run
    (`on_ready` is said once, at start; a restart's rescan is counted)."""
    wait_until(lambda: watcher.counters.rescans >= 1, "the rescan after the watch restarted")


def targets_for(settings: Settings, **modes: str) -> list[WatchTarget]:
    pcs = [PcConfig(id=pc, watch_path=f"{pc}/hands", watch_mode=mode) for pc, mode in modes.items()]  # type: ignore[arg-type]
    return Site(settings, pcs=pcs).watch_targets()


# -- which files are session files -------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("PC01/hands/PGFX_live_data_export GameID=71.json", True),
        ("PC01/hands/PGFX_live_data_export GameID=71.JSON", True),
        ("PC01/hands/PGFX_live_data_export.txt", False),
        ("PC01/hands/.PGFX_live_data_export GameID=71.json", False),
        ("PC01/hands/~$PGFX_live_data_export GameID=71.json", False),
        ("PC01/hands/PGFX_live_data_export GameID=71.json~", False),
        ("PC01/hands/PGFX_live_data_export GameID=71.json.tmp", False),
        ("PC01/hands/PGFX_live_data_export GameID=71.json.part", False),
        ("_error/PC01/PGFX_live_data_export GameID=71.json", False),
    ],
)
def test_session_files_are_json_names_outside_the_quarantine(
    base: Path, relative: str, expected: bool
) -> None:
    assert SessionFiles(base / "_error")(base / relative) is expected


# -- which folders are watched -------------------------------------------------------------


def test_enabled_pcs_are_watched_and_a_missing_folder_is_created(
    settings: Settings, base: Path
) -> None:
    pcs = [
        PcConfig(id="PC01", watch_path="PC01/hands", watch_mode="native"),
        PcConfig(id="PC02", watch_path="PC02/hands", enabled=False),
        PcConfig(id="PC03", watch_path="PC03/hands", watch_mode="polling"),
    ]
    targets = Site(settings, pcs=pcs).watch_targets()
    assert targets == [
        WatchTarget("PC01", (base / "PC01" / "hands").resolve(), polling=False),
        WatchTarget("PC03", (base / "PC03" / "hands").resolve(), polling=True),
    ]
    assert (base / "PC03" / "hands").is_dir()


# -- the watch loop --------------------------------------------------------------------------


def test_a_new_session_file_is_queued_as_added_before_on_added_is_told(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    queued_when_told: list[bool] = []
    recorder = Recorder()

    def on_added(changes: list[DetectedChange]) -> None:
        # Another connection sees the items: they were committed before we were called.
        with DurableQueue(settings.resolved_queue_path) as other:
            ids = {item.id for item in other.items(ItemState.PENDING)}
        queued_when_told.extend(change.item_id in ids for change in changes)
        recorder(changes)

    targets = targets_for(settings, PC01="native", PC02="native")
    watcher, _ = start(targets, on_added=on_added)

    path = write_session(targets[1].folder, 71, hands=2)
    wait_until(lambda: recorder.changes, "on_added")

    [change] = recorder.changes
    assert (change.pc_id, change.path, change.kind) == ("PC02", path, ChangeKind.ADDED)
    assert change.size is not None  # as stat'ed then: may be before the last chunk landed
    assert queued_when_told == [True]
    # Later chunks of the same write may follow as MODIFIED; the queue keeps one item.
    [item] = pending(queue)
    assert (item.id, item.pc_id, item.path, item.kind) == (
        change.item_id,
        "PC02",
        str(path),
        ChangeKind.ADDED,
    )
    assert watcher.counters.enqueued >= 1
    assert watcher.counters.last_change_at is not None


def test_rewriting_a_session_file_is_queued_as_modified_once(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    [target] = targets_for(settings, PC01="native")
    path = mark_synced(queue, write_session(target.folder, 71, hands=1))  # not a new file
    modified = Recorder()
    start([target], on_modified=modified)

    for hands in (2, 3):  # PokerGFX rewrites the file as hands are played
        size = write_session(target.folder, 71, hands=hands).stat().st_size
        wait_until(lambda s=size: s in modified.sizes(path), f"the rewrite with {hands} hands")

    assert {(c.pc_id, c.kind) for c in modified.changes} == {("PC01", ChangeKind.MODIFIED)}
    # Still pending after two rewrites: the queue coalesces them into one item.
    assert pending_paths(queue) == {str(path): ChangeKind.MODIFIED}


def test_a_slow_chunked_write_is_queued_early_and_ends_with_its_final_size(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    """A file still open for writing is queued from its first chunk (the engine retries a
    truncated file until it settles); the last chunk updates the same queue item."""
    [target] = targets_for(settings, PC01="native")
    added, modified = Recorder(), Recorder()
    start([target], on_added=added, on_modified=modified)

    path = target.folder / session_file_name(151)
    with path.open("wb") as handle:
        handle.write(b'{"ID": 151, "Hands": [')
        handle.flush()
        wait_until(lambda: added.changes, "the file, while it is still open")
        handle.write(b'{"HandNum": 1, "Events": []}]}')
    size = path.stat().st_size
    wait_until(lambda: size in modified.sizes(path), "the last chunk")

    assert added.sizes(path)[0] != size  # seen before the write finished
    [item] = pending(queue)
    assert (item.path, item.kind, item.size) == (str(path), ChangeKind.ADDED, size)


def test_a_rename_queues_the_new_name_and_a_deletion_queues_nothing(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    [target] = targets_for(settings, PC01="native")
    old = mark_synced(queue, write_session(target.folder, 71))
    gone = mark_synced(queue, write_session(target.folder, 72))
    added = Recorder()
    start([target], on_added=added)

    new = old.rename(target.folder / session_file_name(73))
    gone.unlink()
    wait_until(lambda: added.changes, "on_added for the new name")
    sentinel = write_session(target.folder, 74)
    wait_until(lambda: str(sentinel) in pending_paths(queue), "the sentinel file")

    assert pending_paths(queue) == {str(new): ChangeKind.ADDED, str(sentinel): ChangeKind.ADDED}


def test_what_is_not_a_session_file_is_ignored(
    settings: Settings, base: Path, queue: DurableQueue, start: Callable
) -> None:
    # A PC folder that holds the quarantine folder too (a flat layout): `_error/` stays out.
    pc = PcConfig(id="PC01", watch_path=".", watch_mode="native")
    [target] = Site(settings, pcs=[pc]).watch_targets()
    watcher, _ = start([target])

    hands = target.folder / "PC01" / "hands"
    quarantined = target.folder / "_error" / "PC01"
    quarantined.mkdir(parents=True)
    (quarantined / session_file_name(70)).write_bytes(b'{"ID": 70}')
    (hands / "PGFX_live_data_export.txt").write_text("live export beside the session files")
    (hands / session_file_name(71)).mkdir()  # a directory with a session file's name
    (hands / f".{session_file_name(72)}").write_bytes(b"{}")
    (hands / f"{session_file_name(73)}.tmp").write_bytes(b"{}")
    (hands / ".sync").mkdir()
    (hands / ".sync" / session_file_name(74)).write_bytes(b"{}")
    sentinel = write_session(hands, 75)  # written last: once it is queued, all were seen
    wait_until(lambda: str(sentinel) in pending_paths(queue), "the sentinel file")

    assert pending_paths(queue) == {str(sentinel): ChangeKind.ADDED}
    assert watcher.counters.ignored >= 6


def test_polling_targets_see_changes_beside_native_ones(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    native, polled = targets_for(settings, PC01="native", PC02="polling")
    assert polled.polling and not native.polling
    added, modified = Recorder(), Recorder()
    start([native, polled], on_added=added, on_modified=modified, poll_delay_ms=100)

    on_share = write_session(polled.folder, 81, hands=1)
    local = write_session(native.folder, 82, hands=1)
    wait_until(lambda: len(added.changes) >= 2, "both new files")
    size = write_session(polled.folder, 81, hands=2).stat().st_size
    wait_until(lambda: size in modified.sizes(on_share), "the rewrite on the polled share")

    assert {(c.pc_id, c.path) for c in added.changes} == {("PC02", on_share), ("PC01", local)}
    # Seen by the poll, by the second look, or both (a harmless duplicate: the queue coalesces).
    assert {(c.pc_id, c.kind) for c in modified.changes if c.path == on_share} == {
        ("PC02", ChangeKind.MODIFIED)
    }
    assert pending_paths(queue)[str(on_share)] in (ChangeKind.ADDED, ChangeKind.MODIFIED)


def test_a_polled_rewrite_within_the_same_second_is_still_queued(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    """Polling compares whole-second mtimes only: a rewrite that keeps the second is invisible
    to it, so each polled change gets a second look that compares size and mtime."""
    [polled] = targets_for(settings, PC02="polling")
    added, modified = Recorder(), Recorder()
    start([polled], on_added=added, on_modified=modified, recheck_seconds=0.2)

    path = write_session(polled.folder, 83, hands=1)
    wait_until(lambda: added.changes, "the new file")
    mtime = added.changes[0].mtime
    assert mtime is not None
    write_session(polled.folder, 83, hands=5)
    os.utime(path, (mtime, mtime))  # same mtime as queued: only the size tells
    size = path.stat().st_size
    wait_until(lambda: size in modified.sizes(path), "the second look")

    [item] = pending(queue)
    assert item.path == str(path)


def test_a_failing_on_added_costs_the_notification_not_the_change(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    told: list[Path] = []

    def on_added(changes: list[DetectedChange]) -> None:
        told.extend(c.path for c in changes)
        if len(told) == 1:
            raise RuntimeError("Prefect is unreachable")

    [target] = targets_for(settings, PC01="native")
    watcher, thread = start([target], on_added=on_added)

    first = write_session(target.folder, 91)
    wait_until(lambda: watcher.counters.errors >= 1, "the callback failure")
    second = write_session(target.folder, 92)
    wait_until(lambda: second in told, "the next file, after the failure")

    assert thread.is_alive()
    assert pending_paths(queue) == {str(first): ChangeKind.ADDED, str(second): ChangeKind.ADDED}


def test_a_change_the_queue_did_not_persist_is_not_announced(
    settings: Settings, queue: DurableQueue, start: Callable, debug_log: pytest.LogCaptureFixture
) -> None:
    added = Recorder()
    [target] = targets_for(settings, PC01="native")
    watcher, thread = start([target], on_added=added)

    queue.close()  # every write now fails, as on a full or broken disk
    write_session(target.folder, 93)
    wait_until(lambda: watcher.counters.not_persisted >= 1, "the failed queue write")

    assert added.changes == []
    assert thread.is_alive()
    errors = [r for r in debug_log.records if r.levelno == logging.ERROR]
    assert errors and "NOT persisted" in errors[0].getMessage()


def test_a_folder_that_appears_later_is_watched_from_then_on(
    settings: Settings,
    base: Path,
    queue: DurableQueue,
    start: Callable,
    debug_log: pytest.LogCaptureFixture,
) -> None:
    late = WatchTarget("PC03", (base / "PC03" / "hands").resolve(), polling=False)
    watcher, _ = start([late], root_check_seconds=0.05)  # ready at once: nothing to watch yet

    wait_until(lambda: any("does not exist" in m for m in debug_log.messages), "the warning")

    late.folder.mkdir(parents=True)  # e.g. a share mounted after gfx-sync started
    wait_until(lambda: watcher.counters.restarts >= 1, "the watch to restart")
    wait_until_rewatched(watcher)
    path = write_session(late.folder, 95)
    wait_until(lambda: str(path) in pending_paths(queue), "the file in the new folder")


@pytest.mark.parametrize("how", ["stop()", "the caller's stop_event"])
def test_stopping_ends_run_promptly(settings: Settings, start: Callable, how: str) -> None:
    stop_event = threading.Event()
    targets = targets_for(settings, PC01="native", PC02="polling")
    watcher, thread = start(targets, stop_event=stop_event)

    if how == "stop()":
        watcher.stop()
    else:
        stop_event.set()
    thread.join(WAIT)

    assert not thread.is_alive()
    assert not [t for t in threading.enumerate() if t.name.startswith("gfx-watch-")]


# -- folders, renames, idle ---------------------------------------------------------------------


def test_a_new_sub_folder_is_watched_with_the_files_already_in_it(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    [target] = targets_for(settings, PC01="native")
    start([target])

    day = target.folder / "2026-11-27"
    day.mkdir()
    first = write_session(day, 101)  # at once: quite possibly before the folder's watch exists
    wait_until(lambda: str(first) in pending_paths(queue), "the file in the new folder")
    nested = day / "table-2"
    nested.mkdir()
    second = write_session(nested, 102)
    wait_until(lambda: str(second) in pending_paths(queue), "the file in the nested folder")

    assert pending_paths(queue) == {str(first): ChangeKind.ADDED, str(second): ChangeKind.ADDED}


def test_an_atomic_rename_from_a_temp_name_or_another_folder_is_queued_as_added(
    settings: Settings, base: Path, queue: DurableQueue, start: Callable
) -> None:
    [target] = targets_for(settings, PC01="native")
    start([target])

    final = target.folder / session_file_name(111)
    temp = target.folder / f"{session_file_name(111)}.tmp"
    temp.write_bytes(b'{"ID": 111}')  # ignored: a temp name
    temp.rename(final)
    incoming = base / "incoming"  # outside every watched folder, same file system
    incoming.mkdir()
    moved = write_session(incoming, 112).rename(target.folder / session_file_name(112))
    wait_until(lambda: len(pending_paths(queue)) >= 2, "both renamed files")

    assert pending_paths(queue) == {str(final): ChangeKind.ADDED, str(moved): ChangeKind.ADDED}


@pytest.mark.parametrize("how", ["moved away", "deleted"])
def test_a_replaced_folder_is_watched_again_and_caught_up(
    settings: Settings,
    base: Path,
    queue: DurableQueue,
    start: Callable,
    native_reader: str,
    how: str,
) -> None:
    if how == "deleted" and native_reader == "watchfiles":
        pytest.skip(
            "a folder deleted and made again may get the same inode number: only inotify "
            "tells (its watch ends); watchfiles' native reader never does (polling is unaffected)"
        )
    [target] = targets_for(settings, PC01="native")
    watcher, _ = start([target], root_check_seconds=0.05)

    if how == "deleted":
        shutil.rmtree(target.folder)
    else:
        target.folder.rename(base / "PC01" / "hands-old")
    target.folder.mkdir()
    early = write_session(target.folder, 121)  # quite possibly before the watch is back
    wait_until(lambda: watcher.counters.restarts >= 1, "the watch to restart")
    wait_until(lambda: str(early) in pending_paths(queue), "the file written while re-watching")
    wait_until_rewatched(watcher)
    later = write_session(target.folder, 122)
    wait_until(lambda: str(later) in pending_paths(queue), "a file in the watched new folder")

    assert pending_paths(queue) == {str(early): ChangeKind.ADDED, str(later): ChangeKind.ADDED}


def test_a_moved_sub_folder_is_reported_under_its_new_path_only(
    settings: Settings, base: Path, queue: DurableQueue, start: Callable
) -> None:
    """Watches follow a folder's inode: after a move they must report its new path, and a
    folder moved out of the PC folder must report nothing any more."""
    [target] = targets_for(settings, PC01="native")
    (target.folder / "day-1" / "table-1").mkdir(parents=True)
    (target.folder / "day-2").mkdir()
    start([target])

    archived = (target.folder / "day-1").rename(target.folder / "archive")
    away = (target.folder / "day-2").rename(base / "elsewhere")
    inside = write_session(archived / "table-1", 141)
    outside = write_session(away, 142)
    sentinel = write_session(target.folder, 143)  # written last: once queued, all were seen
    wait_until(lambda: str(sentinel) in pending_paths(queue), "the sentinel file")
    wait_until(lambda: str(inside) in pending_paths(queue), "the file in the moved folder")

    assert pending_paths(queue) == {str(inside): ChangeKind.ADDED, str(sentinel): ChangeKind.ADDED}
    assert str(outside) not in pending_paths(queue)


def _voluntary_context_switches(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    [line] = [s for s in status.splitlines() if s.startswith("voluntary_ctxt_switches:")]
    return int(line.split()[1])


@needs_inotify
@pytest.mark.parametrize("native_reader", ["inotify"])
def test_an_idle_inotify_watch_sleeps_until_something_changes(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    """The point of the inotify reader: no wake-ups while idle (watchfiles with a 1-ms step
    wakes ~1000 times a second). Counted by the kernel, not timed."""
    [target] = targets_for(settings, PC01="native")
    start([target])
    [reader] = [t for t in threading.enumerate() if t.name == "gfx-watch-native"]
    assert reader.native_id is not None

    before = _voluntary_context_switches(reader.native_id)
    time.sleep(1.0)  # an observation window, not a wait for something
    after = _voluntary_context_switches(reader.native_id)
    path = write_session(target.folder, 131)
    wait_until(lambda: str(path) in pending_paths(queue), "a change after the idle second")

    assert after - before <= 10  # watchfiles: ~900


# -- lost events and kernel limits ---------------------------------------------------------------


@needs_inotify
@pytest.mark.parametrize("native_reader", ["inotify"])
def test_an_overflowing_event_queue_is_caught_up_by_a_rescan(
    settings: Settings,
    queue: DurableQueue,
    start: Callable,
    debug_log: pytest.LogCaptureFixture,
) -> None:
    """More changes than the kernel queues (fs.inotify.max_queued_events) while the reader is
    held: the kernel drops events and says so; every file still ends up queued."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 50_000:
        pytest.skip(f"max_queued_events={limit}: overflowing it would take too many files")
    added = Recorder()
    [target] = targets_for(settings, PC01="native")
    watcher, _ = start([target], on_added=added)

    watcher._native_reads.clear()  # test hook: events wait in the kernel queue
    day = target.folder / "day-2"
    day.mkdir()  # its creation event is dropped too: the watcher must find the folder itself
    # Each write raises CREATE, MODIFY and CLOSE_WRITE: this overflows the queue ~1.5 times.
    written = [write_session(target.folder, 10_000 + n) for n in range(limit // 2)]
    written += [write_session(day, 90_000 + n) for n in range(3)]
    watcher._native_reads.set()

    expected = {str(p) for p in written}
    wait_until(lambda: pending_paths_all(queue) >= expected, "every file written, queued")
    assert pending_paths_all(queue) == expected
    assert watcher.counters.events_lost >= 1
    assert {str(c.path) for c in added.changes} >= {str(p) for p in written}  # announced
    assert watcher.counters.rescans >= 1
    assert watcher.counters.rescanned >= len(written)  # none synced yet: all "new" to it
    assert any("overflowed" in m for m in debug_log.messages)
    # The folder created while events were dropped is watched from then on.
    after = write_session(day, 99_999)
    wait_until(lambda: str(after) in pending_paths_all(queue), "a file in the new folder")


def pending_paths_all(queue: DurableQueue) -> set[str]:
    return {item.path for item in queue.items(ItemState.PENDING, limit=100_000)}


@pytest.mark.skipif(
    not can_lower_inotify_limits(),
    reason="needs inotify and `unshare --user` with a writable /proc/sys/user (own user namespace)",
)
def test_running_out_of_inotify_watches_falls_back_to_polling_loudly(
    settings: Settings, tmp_path: Path
) -> None:
    """ENOSPC from inotify_add_watch, for real: in a user namespace of its own (limits are per
    namespace, so nothing else on the machine is affected) with room for 2 watches, a watcher
    over 4 folders says so at ERROR level, polls instead, and misses no file."""
    [target] = targets_for(settings, PC01="native")
    for n in range(3):
        (target.folder / f"sub{n}").mkdir()
    before = target.folder / "sub0" / "before.json"  # there before the watcher: never synced
    before.write_bytes(b'{"ID": 1, "Hands": []}')
    child = Path(__file__).parent / "support" / "watch_limit_child.py"
    completed = subprocess.run(
        [
            shutil.which("unshare") or "unshare",
            "--user",
            "--map-root-user",
            sys.executable,
            str(child),
            "2",
            str(target.folder),
            str(tmp_path / "child-queue.sqlite3"),
            str(settings.error_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = orjson.loads(completed.stdout.strip().splitlines()[-1])

    assert report["counters"]["polling_fallbacks"] == 1
    assert set(report["expected"]) <= set(report["pending"])
    assert len(report["expected"]) == 4  # before.json and one file per sub-folder
    assert report["counters"]["rescans"] >= 1  # what changed while switching
    [message] = [m for m in report["errors"] if "FALLING BACK TO POLLING" in m]
    assert "max_user_watches" in message
    assert report["stopped"]
