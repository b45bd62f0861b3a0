"""Native events on Linux: a recursive inotify watch that sleeps in the kernel until a change.

Why not watchfiles for local folders: it sleeps `step` ms between looks at what its notify
thread collected, so detection latency is about one step and an idle watcher still wakes
1000/step times a second. Measured (ext4, real queue, `python -m bench --only detection,
idle_cpu`): step=1 -> p50 ~3 ms but ~3.3% of a core idle; step=5 -> 0.4% but p50 8.5 ms. The
targets (p50 <= 5 ms, <= 1% idle for all of gfx-sync) need both, which only a blocking read
gives: poll() on the inotify fd and a wake-up fd, no timeout, so zero wake-ups while nothing
changes; a batch ends as soon as the files written in it are closed (else after one quiet
millisecond). `inotify_simple` (a thin ctypes
wrapper) does the system calls; the recursion, the watch bookkeeping and overflow handling
live here. watchfiles stays the polling reader (SMB/NFS shares, which raise no events for
other hosts' writes) and the native reader where inotify is unavailable.

What it reports matches what the watcher got from watchfiles (sets of `(watchfiles.Change,
path)`), so the watcher classifies both alike; and it says when events were lost (the kernel
queue overflowed, IN_Q_OVERFLOW) so the watcher can rescan at once instead of waiting for the
periodic recovery run.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import watchfiles

try:
    from inotify_simple import INotify
    from inotify_simple import flags as F
except ImportError:  # not Linux, or not installed: the watcher uses watchfiles
    INotify = None  # type: ignore[assignment,misc]

AVAILABLE = sys.platform.startswith("linux") and INotify is not None

if INotify is not None:
    _ADDED = F.CREATE | F.MOVED_TO
    _GONE = F.DELETE | F.MOVED_FROM
    _SELF_GONE = F.DELETE_SELF | F.MOVE_SELF
    # A folder's names and its own place (not a link followed to somewhere else).
    ENTRIES_MASK = _ADDED | _GONE | F.ATTRIB | _SELF_GONE | F.ONLYDIR | F.DONT_FOLLOW
    # And content; EXCL_UNLINK: no events for files unlinked but still open.
    WATCH_MASK = ENTRIES_MASK | F.MODIFY | F.CLOSE_WRITE | F.EXCL_UNLINK

# A system call failing for one of these means the kernel will not give us (more) watches.
_LIMIT_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.ENOMEM})

log = logging.getLogger(__name__)


class WatchLimitError(OSError):
    """inotify refused a watch or an instance for lack of kernel resources (the per-user
    limits). The caller falls back to polling: missing a folder silently is not an option."""


class Wake(Protocol):
    """What wakes the reader: `fileno()` becomes readable when `is_set()` turns true."""

    def fileno(self) -> int: ...
    def is_set(self) -> bool: ...
    def drain(self) -> None: ...


@dataclass(slots=True)
class NativeBatch:
    """One batch of changes; `lost`: the kernel dropped events (queue overflow), so the
    batch is incomplete and the folders must be rescanned; `root_gone`: a watched folder was
    deleted, moved or unmounted, so the watch must be set up again."""

    changes: set[tuple[watchfiles.Change, str]] = field(default_factory=set)
    lost: bool = False
    root_gone: bool = False


class InotifyTree:
    """Recursive inotify watch of some folders; use as a context manager, then `batches()`.

    Sub-folders for which `skip_dir(path, name)` is true are not watched (their files are
    never session files). A folder that appears is watched at once and reported as added;
    the files it already held raise no event: the caller lists them (the watcher does, for
    every reader).
    """

    def __init__(
        self,
        roots: list[str],
        *,
        wake: Wake,
        skip_dir: Callable[[str, str], bool],
        quiet_ms: int = 1,
        max_batch_ms: int = 100,
        resume: threading.Event | None = None,
    ) -> None:
        if not AVAILABLE:
            raise RuntimeError("inotify is not available here (Linux with inotify_simple)")
        self.roots = [os.fspath(r) for r in roots]
        self.wake = wake
        self.skip_dir = skip_dir
        self.quiet_ms = quiet_ms
        self.max_batch_s = max_batch_ms / 1000
        self.resume = resume  # test hook: while cleared, events wait in the kernel queue
        self._ino: INotify | None = None
        self._paths: dict[int, str] = {}  # watch descriptor -> folder
        self._root_wds: set[int] = set()
        self._writing: set[str] = set()  # files of the batch being collected, not closed yet
        self._closed = False  # a file of that batch was closed after writing

    def __enter__(self) -> InotifyTree:
        try:
            self._ino = INotify()
        except OSError as exc:
            if exc.errno in _LIMIT_ERRNOS:
                raise WatchLimitError(
                    exc.errno,
                    f"cannot create an inotify instance ({exc.strerror}): the per-user limit "
                    f"fs.inotify.max_user_instances={sysctl('max_user_instances')} is used up "
                    f"by this user's processes; raise it with sysctl",
                ) from exc
            raise
        try:
            for root in self.roots:
                wd = self._add_tree(root)
                if wd is not None:
                    self._root_wds.add(wd)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ino is not None:
            self._ino.close()
            self._ino = None
        self._paths.clear()
        self._root_wds.clear()

    @property
    def watch_count(self) -> int:
        return len(self._paths)

    # -- reading ------------------------------------------------------------------------

    def batches(self) -> Iterator[NativeBatch]:
        """Yield batches until the wake is set or a watched root is gone. Blocks in poll()
        while nothing happens; see `_collect` for where a batch ends."""
        ino = self._require()
        ino_fd, wake_fd = ino.fileno(), self.wake.fileno()
        poller = select.poll()
        poller.register(ino_fd, select.POLLIN)
        poller.register(wake_fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self.wake.is_set():
                return
            if wake_fd in ready:
                self.wake.drain()  # a wake-up set and cleared again meanwhile: nothing to do
            if ino_fd not in ready:
                continue
            if self.resume is not None:
                while not self.resume.wait(0.05):
                    if self.wake.is_set():
                        return
            batch = self._collect(ino)
            if batch.lost:
                # Folders created while events were dropped have no watch yet.
                for root in self.roots:
                    self._add_tree(root)
            yield batch
            if batch.root_gone:
                return

    def _collect(self, ino: INotify) -> NativeBatch:
        """Events until a quiet `quiet_ms`, at most `max_batch_ms` while they keep coming (a
        bulk copy); sooner if every file written in the batch has been closed and nothing else
        is waiting (PokerGFX's write-and-close: the batch is complete, waiting longer only adds
        latency). Under load events are already waiting, so batches still grow."""
        batch = NativeBatch()
        self._writing.clear()
        self._closed = False
        deadline = time.monotonic() + self.max_batch_s
        events = ino.read(timeout=0)
        while events:
            for event in events:
                self._apply(event, batch)
            if time.monotonic() >= deadline:
                break
            events = ino.read(timeout=0)
            if not events and not (self._closed and not self._writing):
                events = ino.read(timeout=self.quiet_ms)
        return batch

    def _apply(self, event: object, batch: NativeBatch) -> None:
        wd, mask, _cookie, name = event  # type: ignore[misc]
        if mask & F.Q_OVERFLOW:
            batch.lost = True
            return
        if mask & F.IGNORED:  # the watch is gone (folder deleted, moved out, unmounted)
            self._paths.pop(wd, None)
            if wd in self._root_wds:
                batch.root_gone = True
            return
        folder = self._paths.get(wd)
        if folder is None:
            return  # an event queued before its watch was removed
        if not name:  # about the watched folder itself
            if mask & _SELF_GONE and wd in self._root_wds:
                batch.root_gone = True
            return
        path = os.path.join(folder, name)
        if mask & F.ISDIR:
            if mask & _ADDED:
                batch.changes.add((watchfiles.Change.added, path))
                if not self.skip_dir(path, name):
                    self._add_tree(path)
            elif mask & _GONE:
                batch.changes.add((watchfiles.Change.deleted, path))
                if mask & F.MOVED_FROM:  # its watches would report it under the old name
                    self._unwatch_tree(path)
            return
        if mask & _ADDED:
            kind = watchfiles.Change.added
        elif mask & _GONE:
            kind = watchfiles.Change.deleted
        else:
            kind = watchfiles.Change.modified
        batch.changes.add((kind, path))
        if mask & F.CLOSE_WRITE:
            self._writing.discard(path)
            self._closed = True
        elif mask & (F.CREATE | F.MODIFY):
            self._writing.add(path)

    # -- watches ------------------------------------------------------------------------

    def _add_tree(self, top: str) -> int | None:
        """Watch `top` and the folders below it (not following symlinks). Returns `top`'s
        watch descriptor (None: gone meanwhile)."""
        top_wd = None
        stack = [top]
        while stack:
            folder = stack.pop()
            wd = self._add(folder)
            if folder == top:
                top_wd = wd
            if wd is None:
                continue
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue  # gone meanwhile; its parent's events say so
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir and not self.skip_dir(entry.path, entry.name):
                    stack.append(entry.path)
        return top_wd

    def _add(self, folder: str) -> int | None:
        ino = self._require()
        try:
            wd = ino.add_watch(folder, WATCH_MASK)
        except OSError as exc:
            if exc.errno in _LIMIT_ERRNOS:
                raise WatchLimitError(
                    exc.errno,
                    f"inotify watch limit reached at {folder} ({exc.strerror}): this process "
                    f"holds {len(self._paths)} watch(es) and the per-user limit "
                    f"fs.inotify.max_user_watches={sysctl('max_user_watches')} is used up; "
                    f"raise it with sysctl",
                ) from exc
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                log.warning(
                    "cannot watch %s (%s): its changes are left to the rescans", folder, exc
                )
            return None
        self._paths[wd] = folder
        return wd

    def _unwatch_tree(self, top: str) -> None:
        prefix = top.rstrip(os.sep) + os.sep
        ino = self._require()
        for wd, folder in list(self._paths.items()):
            if folder == top or folder.startswith(prefix):
                del self._paths[wd]
                self._root_wds.discard(wd)
                with suppress(OSError):  # already gone
                    ino.rm_watch(wd)

    def _require(self) -> INotify:
        if self._ino is None:
            raise RuntimeError("InotifyTree used outside its `with` block")
        return self._ino


def sysctl(name: str) -> str:
    """An inotify limit from /proc/sys/fs/inotify, for messages ("?" if unreadable)."""
    try:
        return Path("/proc/sys/fs/inotify", name).read_text().strip()
    except OSError:
        return "?"


class FolderNotices:
    """Whether the entries of some folders may have changed since they were watched: one
    inotify watch per folder, not recursive, looked at without blocking. Telling that costs
    a `poll`, where listing and stat-ing the folders costs a syscall per entry. Only for
    local folders: a network share raises no events for other hosts' writes.

    Until `trusted` is false (a folder could not be watched) or `changed()` said yes, nothing
    happened in the watched folders since their watches were added."""

    def __init__(self) -> None:
        self.trusted = AVAILABLE
        self._ino: INotify | None = None
        if self.trusted:
            try:
                self._ino = INotify()
            except OSError:  # no instance left for this user: the caller looks itself
                self.trusted = False

    def watch(self, folder: str) -> None:
        """Watch `folder`'s entries from now on (before reading them, so no change slips
        between the read and the watch)."""
        if self._ino is None:
            return
        try:
            self._ino.add_watch(folder, ENTRIES_MASK)
        except OSError:  # gone (its parent's watch saw that), not a folder, or no watch left
            self.trusted = False

    def changed(self) -> bool:
        """Something happened in a watched folder (or events were lost) since the watches
        were added. Once true, stays true: watch again in a new instance."""
        if self._ino is None or not self.trusted:
            return True
        try:
            if self._ino.read(timeout=0):
                self.trusted = False
        except OSError:
            self.trusted = False
        return not self.trusted

    def close(self) -> None:
        if self._ino is not None:
            with suppress(OSError):
                self._ino.close()
            self._ino = None
        self.trusted = False
