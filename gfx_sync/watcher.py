"""The watcher loop: PC folder changes -> durable queue -> callbacks.

Every change a watch reports is written to the queue (one transaction per batch) before anyone
is told about it, so a crash or a failing callback never loses a change the watcher saw.

Two readers. Local folders on Linux: inotify read directly (`gfx_sync.inotify_tree`), blocking
until something changes: no wake-ups while idle, and a batch ends as soon as its files are
closed (the queue's fsync'd commit is then most of the detection latency). Network shares
(SMB/NFS: other hosts' writes raise no events) and systems without inotify: watchfiles, polling
or native, as before. Why not watchfiles everywhere: its sleep-per-step loop cannot give both
the latency and the idle targets (numbers below and in inotify_tree.py).

When events are known to be lost (the inotify queue overflowed; a watch restarted after its
folder changed) the watcher rescans those folders at once, with the recovery flow's scan
(`gfx_sync.site`). If the kernel refuses watches (fs.inotify.max_user_watches used up) it
says so loudly and polls those folders instead. What no signal reveals (SMB writes between
polls, anything while stopped) is the periodic recovery rescan's job.

Core package: no Prefect here. The caller turns `on_added` into Prefect events.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import watchfiles

from gfx_sync import inotify_tree
from gfx_sync.inotify_tree import InotifyTree, WatchLimitError
from gfx_sync.queue import ChangeKind, DurableQueue, NewChange, Origin
from gfx_sync.signals import set_from_signal_handler
from gfx_sync.site import FolderOwners, SessionFiles, WatchTarget, rescan, skips_dir_name

log = logging.getLogger(__name__)

# watchfiles sleeps `step` between looks and yields after one quiet step. Measured here (ext4,
# real queue, native events): step=1 -> close to in-queue p50 2.6-3.1 ms, idle ~2.2-3.3% of one
# core (~1000 wakeups/s); step=2 -> p50 4.2 ms, idle ~1%; step=5 -> p50 8.5 ms, idle 0.4%.
# Hence the inotify reader on Linux (blocks: idle 0 wake-ups; a batch ends when its files are
# closed, else after one quiet `step_ms`); with it, idle CPU of the whole watcher process fell
# from ~2.2% to ~0.03-0.08% and in-queue p50 to ~1-2 ms on a quiet machine (mostly the queue's
# fsync). watchfiles' native mode is only the fallback where inotify is missing.
# The debounce only caps a batch while distinct changes keep arriving (a bulk copy): a single
# file is not delayed by it.
DEFAULT_DEBOUNCE_MS = 100
DEFAULT_STEP_MS = 1
# Polling: latency is dominated by poll_delay_ms, so a 1 ms step would only burn CPU.
DEFAULT_POLLING_STEP_MS = 50
# With a stop_event, watchfiles checks it every step, so stop() takes about one step whatever
# rust_timeout is. 0 = no timeout: watchfiles clears its pending set on a timeout, which could
# drop a change arriving in that instant; roots are checked from our own loop instead.
RUST_TIMEOUT_MS = 0
ROOT_CHECK_SECONDS = 5.0  # how often run() checks that watched folders still are the same
# Polling sees a rewrite only if the file's mtime moved to a later whole second (notify's
# PollWatcher compares seconds, not size): a polled file is looked at once more this long
# after each change, by which time any rewrite invisible to the poll has happened.
RECHECK_SECONDS = 1.5
TICK_SECONDS = 0.25  # run()'s loop period while polled files wait for their second look
RESTART_DELAY_SECONDS = 1.0  # pause before restarting a watch that raised
# After falling back to polling, rescan once the poll has taken its first snapshot (it does so
# as it starts): what changed before is found by the rescan, what changed after by the poll.
FALLBACK_RESCAN_DELAY_SECONDS = 1.0
STARTED, RESTARTED = "the watch started", "the watch restarted"  # reasons for a rescan
# Counters reported to `on_counters` whenever one of them changes (rare events, so the
# watcher's state file is rewritten seldom) and exposed as metrics; the key they sit under.
REPORTED_COUNTERS = ("events_lost", "rescans", "polling_fallbacks", "restarts")
WATCHER_COUNTERS_KEY = "counters"

NativeReader = Literal["auto", "inotify", "watchfiles"]

__all__ = [
    "REPORTED_COUNTERS",
    "WATCHER_COUNTERS_KEY",
    "DetectedChange",
    "FolderWatcher",
    "NativeReader",
    "WatchTarget",
    "WatcherCounters",
]

ChangeCallback = Callable[[list["DetectedChange"]], None]


@dataclass(frozen=True, slots=True)
class DetectedChange:
    """A change already persisted in the queue (`item_id`), as handed to the callbacks."""

    pc_id: str
    path: Path
    kind: ChangeKind
    size: int | None
    mtime: float | None
    item_id: int


@dataclass(slots=True)
class WatcherCounters:
    """For health and metrics. Every change seen (reported by a watch, or found by a polled
    file's second look) ends up enqueued, ignored, or (queue write failed) not_persisted;
    what the watcher's own rescans find counts in `rescanned` and `enqueued`."""

    changes_seen: int = 0  # paths reported by a watch (once per path per batch)
    enqueued: int = 0  # changes persisted in the queue
    rechecked: int = 0  # polled files found changed by their second look (polling misses)
    ignored: int = 0  # not session files, deletions, vanished before stat, directories
    not_persisted: int = 0  # session-file changes lost to a failed queue write (rescan's job)
    errors: int = 0  # failed queue writes, failed callbacks, crashed watches
    restarts: int = 0  # watches restarted (after an error or a folder change)
    events_lost: int = 0  # lost-event signals (inotify queue overflow), each followed by a rescan
    rescans: int = 0  # rescans the watcher ran itself (events lost, watch restarted, fallback)
    rescanned: int = 0  # files those rescans found new or changed, and queued
    polling_fallbacks: int = 0  # native watches the kernel refused (watch limit): polled instead
    last_change_at: float | None = None  # wall-clock time the last change was persisted
    last_error: str | None = None


class _Wake:
    """A threading.Event that can also end a blocking poll(): set() makes `fileno()` readable
    (an eventfd). watchfiles checks `is_set()` every step; the inotify reader polls the fd."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._fd: int | None = None
        if hasattr(os, "eventfd"):
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def set(self) -> None:
        self._event.set()
        if self._fd is not None:
            os.eventfd_write(self._fd, 1)

    def clear(self) -> None:
        self._event.clear()
        self.drain()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def fileno(self) -> int:
        if self._fd is None:
            raise OSError("no eventfd on this system")
        return self._fd

    def drain(self) -> None:
        if self._fd is not None:
            with suppress(BlockingIOError):
                os.eventfd_read(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Group:
    """The targets sharing one watch (one mode).

    run() sets `wake` to stop the watch, or to restart it when a watched folder appeared,
    vanished or was replaced. `fallback` is set while a native group polls because the
    kernel refused its watches."""

    def __init__(self, polling: bool, targets: list[WatchTarget]) -> None:
        self.polling = polling
        self.targets = targets
        self.mode = "polling" if polling else "native"
        self.wake = _Wake()
        self.roots: dict[Path, tuple[int, int] | None] = {}
        self.fallback = False
        self.ready = False  # its first watch is in place and the rescan after it has run

    @property
    def polls(self) -> bool:
        return self.polling or self.fallback

    def current_roots(self) -> dict[Path, tuple[int, int] | None]:
        return {t.folder: _identity(t.folder) for t in self.targets}


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = folder.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class FolderWatcher:
    """Watches PC folders and records each session-file change in the queue.

    One thread per watch mode: native targets share one inotify reader (watchfiles where
    inotify is unavailable), polling targets (network shares) one watchfiles call with
    `force_polling`. Callbacks run in those threads, after the batch is durable: keep them
    quick, a slow callback delays the next batch (no change is lost meanwhile: the kernel, or
    watchfiles, keeps collecting)."""

    def __init__(
        self,
        targets: list[WatchTarget],
        queue: DurableQueue,
        *,
        on_added: ChangeCallback | None = None,
        on_modified: ChangeCallback | None = None,
        on_ready: Callable[[], None] | None = None,
        on_counters: Callable[[dict[str, int]], None] | None = None,
        error_dir: Path,
        poll_delay_ms: int = 500,
        stop_event: threading.Event | None = None,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        step_ms: int = DEFAULT_STEP_MS,
        polling_step_ms: int = DEFAULT_POLLING_STEP_MS,
        root_check_seconds: float = ROOT_CHECK_SECONDS,
        restart_delay_seconds: float = RESTART_DELAY_SECONDS,
        recheck_seconds: float = RECHECK_SECONDS,
        native_reader: NativeReader = "auto",
    ) -> None:
        if native_reader == "inotify" and not inotify_tree.AVAILABLE:
            raise ValueError("native_reader='inotify' needs Linux and inotify_simple")
        self.targets = list(targets)
        self.queue = queue
        self.on_added = on_added
        self.on_modified = on_modified
        self.on_ready = on_ready
        self.on_counters = on_counters
        self.error_dir = error_dir
        self.files = SessionFiles(error_dir)
        self.poll_delay_ms = poll_delay_ms
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.polling_step_ms = polling_step_ms
        self.root_check_seconds = root_check_seconds
        self.restart_delay_seconds = restart_delay_seconds
        self.recheck_seconds = recheck_seconds
        self.uses_inotify = native_reader != "watchfiles" and inotify_tree.AVAILABLE
        self.counters = WatcherCounters()
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._counter_lock = threading.Lock()
        self._rechecks: dict[str, tuple[float, NewChange]] = {}  # path -> (due, as queued)
        self._recheck_lock = threading.Lock()
        self._rescans_due: dict[int, tuple[float, _Group, str]] = {}  # id(group) -> when, why
        self._rescan_lock = threading.Lock()
        self._groups: list[_Group] = []
        self._ready_lock = threading.Lock()
        self._announced_ready = False
        # Test hook: cleared, the inotify reader leaves events in the kernel queue (overflow).
        self._native_reads = threading.Event()
        self._native_reads.set()
        self._owner_of = FolderOwners((t.pc_id, t.folder) for t in self.targets)

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> None:
        """Watch until stop() (or the stop_event) is set. Also checks every few seconds that
        each watched folder is still the same directory (an SMB share mounted late, a folder
        recreated) and restarts that mode's watch if not, gives polled files their second
        look and runs delayed rescans (callbacks for those run in this thread)."""
        groups = [
            _Group(polling, members)
            for polling in (False, True)
            if (members := [t for t in self.targets if t.polling is polling])
        ]
        self._groups = groups
        if not groups:
            log.warning("no PC folders to watch; waiting for stop")
            self._mark_ready(None)
        threads = {id(g): self._start(g) for g in groups}
        next_root_check = time.monotonic() + self.root_check_seconds
        while not self._stop.wait(self._tick(groups)):
            if any(g.polls for g in groups):
                self._run_rechecks()
            self._run_due_rescans()
            if time.monotonic() < next_root_check:
                continue
            next_root_check = time.monotonic() + self.root_check_seconds
            for group in groups:
                if not threads[id(group)].is_alive():
                    log.error("%s watch thread died; starting it again", group.mode)
                    self._count(errors=1, restarts=1)
                    threads[id(group)] = self._start(group)
                elif group.roots and group.current_roots() != group.roots:
                    log.warning("%s watch: a watched folder changed; restarting", group.mode)
                    group.wake.set()
        for group in groups:
            group.wake.set()
        for group in groups:
            thread = threads[id(group)]
            thread.join(timeout=10)
            if thread.is_alive():
                log.warning("%s did not stop within 10 s", thread.name)
            else:
                group.wake.close()

    def _mark_ready(self, group: _Group | None) -> None:
        """Call `on_ready` once, when every group watches and has rescanned what changed
        before its watch was in place: from then on no change can go unrecorded."""
        with self._ready_lock:
            if group is not None:
                group.ready = True
            if self._announced_ready or not all(g.ready for g in self._groups):
                return
            self._announced_ready = True
        log.info("every watch is in place and the folders are rescanned")
        if self.on_ready is None:
            return
        try:
            self.on_ready()
        except Exception as exc:
            log.exception("on_ready failed")
            self._count(errors=1, last_error=f"on_ready: {exc!r}")

    def _tick(self, groups: list[_Group]) -> float:
        """run()'s loop period: short only while something needs it (second looks at polled
        files, a rescan due); otherwise the root check's, so an idle watcher sleeps."""
        with self._rescan_lock:
            busy = bool(self._rescans_due)
        if busy or any(g.polls for g in groups):
            return min(self.root_check_seconds, TICK_SECONDS)
        return self.root_check_seconds

    def stop(self) -> None:
        """Ask run() to return; safe from a signal handler, however many signals arrive."""
        set_from_signal_handler(self._stop)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> dict[str, object]:
        """The counters, consistently read, for a health endpoint or a flow's result."""
        with self._counter_lock:
            return asdict(self.counters)

    def _start(self, group: _Group) -> threading.Thread:
        thread = threading.Thread(
            target=self._watch_group, args=(group,), name=f"gfx-watch-{group.mode}", daemon=True
        )
        thread.start()
        return thread

    # -- one mode's watch -------------------------------------------------------------

    def _watch_group(self, group: _Group) -> None:
        """Watch the group's existing folders; restart after an error or a restart request,
        until stopped. Each time a watch is in place, rescan: changes made while no watch ran
        raised no event (files written while the watcher was stopped or restarting, a
        recreated folder's first files), whatever their age."""
        first = True
        while True:
            group.wake.clear()  # before the stop check: a stop set meanwhile is seen
            if self._stop.is_set():
                return
            restarted = not first
            if restarted:
                self._count(restarts=1)
            first = False
            group.roots = group.current_roots()
            folders = [os.fspath(f) for f, ident in group.roots.items() if ident is not None]
            missing = [f for f, ident in group.roots.items() if ident is None]
            for folder in missing:
                log.warning("%s watch: %s does not exist; watched once it does", group.mode, folder)
            if not folders:
                self._mark_ready(group)  # nothing to miss: a folder that appears is rescanned
                group.wake.wait()  # run() sets it when one appears, or to stop
                continue
            reason = RESTARTED if restarted else STARTED
            try:
                if group.polling or not self.uses_inotify:
                    self._schedule_rescan(group, reason)
                    self._watch_with_watchfiles(group, folders, polling=group.polling)
                    continue
                try:
                    self._watch_with_inotify(group, folders, rescan_reason=reason)
                except WatchLimitError as exc:
                    self._fall_back_to_polling(group, folders, exc)
            except Exception as exc:  # the service keeps running: log, pause, watch again
                log.exception(
                    "%s watch failed; restarting in %.1f s", group.mode, self.restart_delay_seconds
                )
                self._count(errors=1, last_error=f"watch: {exc!r}")
                self._stop.wait(self.restart_delay_seconds)

    def _watch_with_watchfiles(self, group: _Group, folders: list[str], *, polling: bool) -> None:
        log.info(
            "%s watch: watchfiles (%s) on %s",
            group.mode,
            "polling" if polling else "native",
            ", ".join(folders),
        )
        for batch in watchfiles.watch(
            *folders,
            watch_filter=None,  # filtered here, so ignored changes are counted
            debounce=self.debounce_ms,
            step=self.polling_step_ms if polling else self.step_ms,
            stop_event=group.wake,
            rust_timeout=RUST_TIMEOUT_MS,
            raise_interrupt=False,
            force_polling=polling,
            poll_delay_ms=self.poll_delay_ms,
            recursive=True,
        ):
            self._handle_batch(batch, polling=polling)

    def _watch_with_inotify(self, group: _Group, folders: list[str], *, rescan_reason: str) -> None:
        with InotifyTree(
            folders,
            wake=group.wake,
            skip_dir=self.files.skips_dir,
            quiet_ms=self.step_ms,
            max_batch_ms=self.debounce_ms,
            resume=self._native_reads,
        ) as tree:
            log.info("%s watch: inotify, %d folder(s) watched", group.mode, tree.watch_count)
            self._rescan(group, rescan_reason)
            for batch in tree.batches():
                if batch.lost:
                    # The batch is incomplete; the disk is not: the rescan finds every file
                    # that is new or changed since its last sync, these ones included.
                    log.warning(
                        "%s watch: the inotify event queue overflowed (more than "
                        "fs.inotify.max_queued_events=%s waiting): events were lost; rescanning",
                        group.mode,
                        inotify_tree.sysctl("max_queued_events"),
                    )
                    self._count(events_lost=1)
                    self._rescan(group, "inotify events were lost")
                    continue
                self._handle_batch(batch.changes, polling=False)

    def _fall_back_to_polling(self, group: _Group, folders: list[str], exc: OSError) -> None:
        """The kernel refused watches: poll these folders until the watch restarts, rather
        than silently miss the folders left unwatched."""
        log.error(
            "%s watch: %s. FALLING BACK TO POLLING for %s (every %d ms) until the watch "
            "restarts; detection is slower and costs more CPU meanwhile",
            group.mode,
            exc.strerror or exc,
            ", ".join(folders),
            self.poll_delay_ms,
        )
        self._count(errors=1, polling_fallbacks=1, last_error=f"watch limit: {exc.strerror}")
        group.fallback = True
        try:
            self._schedule_rescan(group, "fell back to polling")
            self._watch_with_watchfiles(group, folders, polling=True)
        finally:
            group.fallback = False

    # -- rescans --------------------------------------------------------------------------

    def _schedule_rescan(self, group: _Group, reason: str) -> None:
        """Rescan from run()'s loop shortly: after the watch that is starting now has taken
        its first look, so nothing falls between the rescan and the watch."""
        with self._rescan_lock:
            due = time.monotonic() + FALLBACK_RESCAN_DELAY_SECONDS
            self._rescans_due[id(group)] = (due, group, reason)

    def _run_due_rescans(self) -> None:
        now = time.monotonic()
        with self._rescan_lock:
            due = [(g, why) for key, (when, g, why) in self._rescans_due.items() if when <= now]
            for group, _ in due:
                del self._rescans_due[id(group)]
        for group, reason in due:
            self._rescan(group, reason)

    def _rescan(self, group: _Group, reason: str) -> None:
        """Queue every session file in the group's folders that is new or changed since its
        last sync (the recovery flow's scan), then announce them as the watch would have.
        Never raises: a failed rescan is logged, and the periodic recovery run remains."""
        try:
            queued = self._rescan_folders(group)
        except Exception as exc:
            log.exception("%s watch: rescan (%s) failed", group.mode, reason)
            self._count(errors=1, last_error=f"rescan: {exc!r}")
            return
        finally:
            self._mark_ready(group)
        starting = reason == STARTED
        if not starting:  # the counters say how often something was missed
            self._count(rescans=1, rescanned=queued)
        log.log(
            logging.INFO if starting else logging.WARNING,
            "%s watch: rescanned because %s: %d file(s) new or changed, queued",
            group.mode,
            reason,
            queued,
        )

    def _rescan_folders(self, group: _Group) -> int:
        folders = {t.pc_id: t.folder for t in group.targets if t.folder.is_dir()}
        return rescan(self.queue, folders, self.files, Origin.WATCH, record=self._persist).queued

    # -- one batch ----------------------------------------------------------------------

    def _handle_batch(self, batch: set[tuple[watchfiles.Change, str]], *, polling: bool) -> None:
        """Never raises: a bad batch must not restart the watch (that would drop the changes
        watchfiles is collecting meanwhile)."""
        try:
            self._record(batch, polling=polling)
        except Exception as exc:
            log.exception("could not handle a batch of %d change(s)", len(batch))
            self._count(errors=1, last_error=f"batch: {exc!r}")

    def _record(self, batch: set[tuple[watchfiles.Change, str]], *, polling: bool) -> None:
        kinds: dict[str, set[watchfiles.Change]] = {}
        for raw_kind, raw_path in batch:
            kinds.setdefault(raw_path, set()).add(raw_kind)
        self._add_files_of_new_folders(kinds)
        changes: list[NewChange] = []
        ignored = 0
        for raw_path in sorted(kinds):
            change = self._change_for(raw_path, kinds[raw_path])
            if change is None:
                ignored += 1
            else:
                changes.append(change)
        self._count(changes_seen=len(kinds), ignored=ignored)
        if changes and self._persist(changes) and polling:
            self._schedule_rechecks(changes)

    def _add_files_of_new_folders(self, kinds: dict[str, set[watchfiles.Change]]) -> None:
        """A folder that appears may already hold files when its watch is set up (mkdir, then
        a write at once; a folder moved in): they raise no event, so they count as added
        here, even if the watch saw a later write to them (but not their creation)."""
        new_folders = [
            raw_path
            for raw_path, seen in kinds.items()
            if watchfiles.Change.added in seen
            and self._owner_of(raw_path) is not None
            and os.path.isdir(raw_path)
            and not os.path.islink(raw_path)
        ]
        for folder in new_folders:
            owner = self._owner_of(folder)
            inner = Path(folder).relative_to(owner[1]).parts if owner else ()
            if any(skips_dir_name(part) for part in inner):
                continue
            for path in self.files.walk(Path(folder)):  # new with their folder, whatever was seen
                kinds.setdefault(os.fspath(path), set()).add(watchfiles.Change.added)

    def _persist(self, changes: list[NewChange]) -> bool:
        """Enqueue in one transaction, then (only then) tell the callbacks."""
        try:
            ids = self.queue.enqueue_many(changes)  # thread-safe: both mode threads use it
        except Exception as exc:
            # Loud: these changes exist nowhere but in this log until the next rescan.
            log.error(
                "could not record %d change(s) in the queue, NOT persisted (the periodic "
                "rescan will pick them up): %s: %s; first: %s",
                len(changes),
                type(exc).__name__,
                exc,
                changes[0].path,
                exc_info=exc,
            )
            self._count(errors=1, not_persisted=len(changes), last_error=f"enqueue: {exc!r}")
            return False
        detected = [
            DetectedChange(c.pc_id, Path(c.path), c.kind, c.size, c.mtime, item_id)
            for c, item_id in zip(changes, ids, strict=True)
        ]
        self._count(enqueued=len(detected), last_change_at=time.time())
        added = [d for d in detected if d.kind is ChangeKind.ADDED]
        modified = [d for d in detected if d.kind is not ChangeKind.ADDED]
        self._notify("on_added", self.on_added, added)
        self._notify("on_modified", self.on_modified, modified)
        return True

    # -- polled files' second look --------------------------------------------------------

    def _schedule_rechecks(self, changes: list[NewChange]) -> None:
        due = time.monotonic() + self.recheck_seconds
        with self._recheck_lock:
            for change in changes:
                self._rechecks[change.path] = (due, change)

    def _run_rechecks(self) -> None:
        """Queue a polled file again (MODIFIED) if it changed since it was queued without the
        poll noticing. Never raises: it runs in run()'s loop."""
        try:
            now = time.monotonic()
            with self._recheck_lock:
                due = [c for when, c in self._rechecks.values() if when <= now]
                for change in due:
                    del self._rechecks[change.path]
            changed = []
            for change in due:
                try:
                    st = os.stat(change.path)
                except OSError:
                    continue  # gone: nothing to look at; the rescan covers other errors
                if stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime) != (
                    change.size,
                    change.mtime,
                ):
                    log.debug("%s changed unseen by the poll: queued again", change.path)
                    changed.append(
                        NewChange(
                            change.pc_id, change.path, ChangeKind.MODIFIED, st.st_size, st.st_mtime
                        )
                    )
            if not changed:
                return
            self._count(rechecked=len(changed))
            if self._persist(changed):
                self._schedule_rechecks(changed)
        except Exception as exc:
            log.exception("second look at polled files failed")
            self._count(errors=1, last_error=f"recheck: {exc!r}")

    def _change_for(self, raw_path: str, seen: set[watchfiles.Change]) -> NewChange | None:
        """The queue change for one path of a batch, or None (logged at debug) if ignored."""
        owner = self._owner_of(raw_path)
        if owner is None or not self.files(raw_path, owner[1]):
            log.debug("ignored %s (not a session file)", raw_path)
            return None
        if watchfiles.Change.added in seen:  # added then modified (chunked write): still new
            kind = ChangeKind.ADDED
        elif watchfiles.Change.modified in seen:
            kind = ChangeKind.MODIFIED
        else:
            log.debug("deleted %s: ignored, its row stays (a rename shows as added)", raw_path)
            return None
        try:
            st = os.stat(raw_path)
        except FileNotFoundError:
            log.debug("%s vanished before it could be recorded", raw_path)
            return None
        except OSError as exc:
            log.warning("cannot stat %s (%s): left to the rescan", raw_path, exc)
            return None
        if not stat.S_ISREG(st.st_mode):
            log.debug("ignored %s (not a regular file)", raw_path)
            return None
        return NewChange(owner[0], raw_path, kind, st.st_size, st.st_mtime)

    def _notify(
        self, name: str, callback: ChangeCallback | None, changes: list[DetectedChange]
    ) -> None:
        """A failing callback costs a notification, never a change: it is already queued."""
        if callback is None or not changes:
            return
        try:
            callback(changes)
        except Exception as exc:
            log.exception(
                "%s failed for %d change(s); they are queued and will be synced by the "
                "batch/recovery runs",
                name,
                len(changes),
            )
            self._count(errors=1, last_error=f"{name}: {exc!r}")

    def _count(self, **deltas: object) -> None:
        with self._counter_lock:
            for name, value in deltas.items():
                if name in ("last_change_at", "last_error"):
                    setattr(self.counters, name, value)
                else:
                    setattr(self.counters, name, getattr(self.counters, name) + value)
        if self.on_counters is not None and not deltas.keys().isdisjoint(REPORTED_COUNTERS):
            try:
                self.on_counters(self.reported_counters())
            except Exception:  # a report must never stop a watch
                log.exception("on_counters failed")

    def reported_counters(self) -> dict[str, int]:
        """The REPORTED_COUNTERS, consistently read."""
        with self._counter_lock:
            return {name: getattr(self.counters, name) for name in REPORTED_COUNTERS}
