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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from gfx_sync import inotify_tree
from gfx_sync.queue import Change, DurableQueue, ItemState
from gfx_sync.settings import PcConfig, Settings
from gfx_sync.watcher import (
    DetectedChange,
    FolderWatcher,
    WatchTarget,
    is_session_file,
    watch_targets,
)

WAIT = 10.0  # generous: a bound for waiting, never a latency assertion


# -- helpers ---------------------------------------------------------------------------


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def session_name(game_id: int) -> str:
    return f"PGFX_live_data_export GameID={game_id}.json"


def write_session(folder: Path, game_id: int, hands: int = 1) -> Path:
    """A small invented session file, written the way PokerGFX does: in place."""
    path = folder / session_name(game_id)
    document = {
        "ID": game_id,
        "Type": "FEATURE_TABLE",
        "Hands": [{"HandNum": n, "Events": []} for n in range(1, hands + 1)],
    }
    path.write_bytes(orjson.dumps(document))
    return path


def pending(queue: DurableQueue) -> list:
    return list(queue.items(ItemState.PENDING))


def pending_paths(queue: DurableQueue) -> dict[str, Change]:
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
    for pc in ("PC01", "PC02"):
        (tmp_path / "nas" / pc / "hands").mkdir(parents=True)
    return tmp_path / "nas"


@pytest.fixture
def settings(tmp_path: Path, base: Path) -> Settings:
    return Settings(
        base_path=base, state_dir=tmp_path / "state", registry_path=tmp_path / "none.json"
    )


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
    """Start a FolderWatcher in a thread and return once each target folder is watched."""
    running: list[tuple[FolderWatcher, threading.Thread]] = []

    def _start(
        targets: list[WatchTarget], *, wait_for: list[Path] | None = None, **options: object
    ) -> tuple[FolderWatcher, threading.Thread]:
        options.setdefault("error_dir", settings.error_dir)
        options.setdefault("poll_delay_ms", 100)
        options.setdefault("native_reader", native_reader)
        watcher = FolderWatcher(targets, queue, **options)  # type: ignore[arg-type]
        thread = threading.Thread(target=watcher.run, name="test-watcher", daemon=True)
        thread.start()
        running.append((watcher, thread))
        for folder in wait_for if wait_for is not None else [t.folder for t in targets]:
            wait_until_watched(folder, debug_log)
        return watcher, thread

    yield _start
    for watcher, thread in running:
        watcher.stop()
        thread.join(WAIT)


def wait_until_watched(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A watch has no 'ready' signal: rewrite a probe (ignored: not JSON) until the watcher
    reports seeing it. The probe's size changes each time, so polling sees it too."""
    probe = folder / "probe.txt"
    deadline = time.monotonic() + WAIT
    for n in range(1, 10_000):
        probe.write_text("x" * n)
        try:
            wait_until(lambda: any(str(probe) in m for m in caplog.messages), "probe", 0.3)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{folder} was never watched") from None


def targets_for(settings: Settings, **modes: str) -> list[WatchTarget]:
    pcs = [PcConfig(id=pc, watch_path=f"{pc}/hands", watch_mode=mode) for pc, mode in modes.items()]  # type: ignore[arg-type]
    return watch_targets(settings, pcs)


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
    assert is_session_file(base / relative, base / "_error") is expected


# -- which folders are watched -------------------------------------------------------------


def test_enabled_pcs_are_watched_and_a_missing_folder_is_created(
    settings: Settings, base: Path
) -> None:
    pcs = [
        PcConfig(id="PC01", watch_path="PC01/hands", watch_mode="native"),
        PcConfig(id="PC02", watch_path="PC02/hands", enabled=False),
        PcConfig(id="PC03", watch_path="PC03/hands", watch_mode="polling"),
    ]
    targets = watch_targets(settings, pcs)
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
    assert (change.pc_id, change.path, change.kind) == ("PC02", path, Change.ADDED)
    assert change.size is not None  # as stat'ed then: may be before the last chunk landed
    assert queued_when_told == [True]
    # Later chunks of the same write may follow as MODIFIED; the queue keeps one item.
    [item] = pending(queue)
    assert (item.id, item.pc_id, item.path, item.kind) == (
        change.item_id,
        "PC02",
        str(path),
        Change.ADDED,
    )
    assert watcher.counters.enqueued >= 1
    assert watcher.counters.last_change_at is not None


def test_rewriting_a_session_file_is_queued_as_modified_once(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    [target] = targets_for(settings, PC01="native")
    path = write_session(target.folder, 71, hands=1)  # before the watch: not a new file
    modified = Recorder()
    start([target], on_modified=modified)

    for hands in (2, 3):  # PokerGFX rewrites the file as hands are played
        size = write_session(target.folder, 71, hands=hands).stat().st_size
        wait_until(lambda s=size: s in modified.sizes(path), f"the rewrite with {hands} hands")

    assert {(c.pc_id, c.kind) for c in modified.changes} == {("PC01", Change.MODIFIED)}
    # Still pending after two rewrites: the queue coalesces them into one item.
    assert pending_paths(queue) == {str(path): Change.MODIFIED}


def test_a_rename_queues_the_new_name_and_a_deletion_queues_nothing(
    settings: Settings, queue: DurableQueue, start: Callable
) -> None:
    [target] = targets_for(settings, PC01="native")
    old = write_session(target.folder, 71)
    gone = write_session(target.folder, 72)
    added = Recorder()
    start([target], on_added=added)

    new = old.rename(target.folder / session_name(73))
    gone.unlink()
    wait_until(lambda: added.changes, "on_added for the new name")
    sentinel = write_session(target.folder, 74)
    wait_until(lambda: str(sentinel) in pending_paths(queue), "the sentinel file")

    assert pending_paths(queue) == {str(new): Change.ADDED, str(sentinel): Change.ADDED}


def test_what_is_not_a_session_file_is_ignored(
    settings: Settings, base: Path, queue: DurableQueue, start: Callable
) -> None:
    # A PC folder that holds the quarantine folder too (a flat layout): `_error/` stays out.
    pc = PcConfig(id="PC01", watch_path=".", watch_mode="native")
    [target] = watch_targets(settings, [pc])
    watcher, _ = start([target])

    hands = target.folder / "PC01" / "hands"
    quarantined = target.folder / "_error" / "PC01"
    quarantined.mkdir(parents=True)
    (quarantined / session_name(70)).write_bytes(b'{"ID": 70}')
    (hands / "PGFX_live_data_export.txt").write_text("live export beside the session files")
    (hands / session_name(71)).mkdir()  # a directory with a session file's name
    (hands / f".{session_name(72)}").write_bytes(b"{}")
    (hands / f"{session_name(73)}.tmp").write_bytes(b"{}")
    (hands / ".sync").mkdir()
    (hands / ".sync" / session_name(74)).write_bytes(b"{}")
    sentinel = write_session(hands, 75)  # written last: once it is queued, all were seen
    wait_until(lambda: str(sentinel) in pending_paths(queue), "the sentinel file")

    assert pending_paths(queue) == {str(sentinel): Change.ADDED}
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
        ("PC02", Change.MODIFIED)
    }
    assert pending_paths(queue)[str(on_share)] in (Change.ADDED, Change.MODIFIED)


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
    assert pending_paths(queue) == {str(first): Change.ADDED, str(second): Change.ADDED}


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
    watcher, _ = start([late], wait_for=[], root_check_seconds=0.05)

    wait_until(lambda: any("does not exist" in m for m in debug_log.messages), "the warning")

    late.folder.mkdir(parents=True)  # e.g. a share mounted after gfx-sync started
    wait_until(lambda: watcher.counters.restarts >= 1, "the watch to restart")
    wait_until_watched(late.folder, debug_log)
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
