"""The NAS as gfx-sync sees it: its PCs, their folders, which files are session files, which
PC owns a path, and what changed there since it was last synced.

One place for each of these answers: the watcher, the engine, the standby drainer, the
recovery and backfill flows and the doctor all ask here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatch
from functools import lru_cache
from pathlib import Path

from gfx_sync.queue import ChangeKind, DurableQueue, NewChange, Origin
from gfx_sync.settings import (
    PcConfig,
    RegistryReader,
    Settings,
    SettingsError,
    checked_pc_id,
    ensure_under_base,
    uses_polling,
)

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (
    "~",
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".swp",
    ".crdownload",
    ".download",
)
# Hidden folders (sync tools' state) and `_`-prefixed ones (`_error`, the quarantine).
SKIPPED_DIR_PREFIXES = (".", "_")
RESCAN_CHUNK = 500  # changes per queue transaction when a rescan finds many files


# -- the file-name rules -------------------------------------------------------------------


class SessionFiles:
    """Which paths are PokerGFX session files: one filter for the watcher and every scan, so
    a file the watcher ignores is one the rescan ignores too. Name checks only (no I/O on
    the file): the watcher also rejects non-regular files when it stats them."""

    def __init__(self, error_dir: Path) -> None:
        self.error_dir = error_dir

    def __call__(self, path: str | os.PathLike[str], folder: Path | None = None) -> bool:
        """`*.json` (any case), not hidden, not a temp or lock name, never under the
        quarantine folder, nor (given the PC `folder`) in a hidden or `_` sub-folder of it."""
        path = Path(path)
        name = path.name
        lower = name.lower()
        if not lower.endswith(".json") or name.startswith((".", "~")):
            return False
        if lower.endswith(TEMP_SUFFIXES):
            return False
        if self.is_quarantine(os.path.abspath(path)):
            return False
        if folder is None:
            return True
        return not any(skips_dir_name(part) for part in path.relative_to(folder).parts[:-1])

    def skips_dir(self, parent: str, name: str) -> bool:
        """A sub-folder whose files are never session files (never watched, never scanned)."""
        return skips_dir_name(name) or self.is_quarantine(os.path.join(parent, name))

    def is_quarantine(self, absolute: str) -> bool:
        return any(_is_under(absolute, root) for root in _error_roots(os.fspath(self.error_dir)))

    def walk(self, folder: Path) -> Iterator[Path]:
        """Files below `folder` (any name), not following directory symlinks (no loops, no
        escaping), nor entering the folders `skips_dir` names."""
        for root, dirs, files in os.walk(folder, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not self.skips_dir(root, d))
            for name in sorted(files):
                yield Path(root) / name


def skips_dir_name(name: str) -> bool:
    return name.startswith(SKIPPED_DIR_PREFIXES)


@lru_cache(maxsize=16)
def _error_roots(error_dir: str) -> tuple[str, ...]:
    """The quarantine folder as given and as resolved (the base may sit behind a symlink)."""
    return tuple({os.path.abspath(error_dir), os.path.realpath(error_dir)})


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# -- which PC owns a path --------------------------------------------------------------------


class FolderOwners:
    """Which PC folder holds a path: the deepest one, so a nested PC folder wins over its
    parent. A prefix table, looked up once per path on the watcher's hot path."""

    def __init__(self, folders: Iterable[tuple[str, Path]]) -> None:
        self._prefixes = sorted(
            ((_prefix(folder), pc_id, folder) for pc_id, folder in folders),
            key=lambda entry: len(entry[0]),
            reverse=True,
        )

    def __call__(self, path: str) -> tuple[str, Path] | None:
        for prefix, pc_id, folder in self._prefixes:
            if path.startswith(prefix):
                return pc_id, folder
        return None


def _prefix(folder: Path) -> str:
    """What every path inside `folder` starts with (a relative "." holds everything)."""
    text = os.fspath(folder).rstrip(os.sep)
    return "" if text in ("", ".") else text + os.sep


@dataclass(frozen=True, slots=True)
class LocatedFile:
    pc_id: str
    path: Path  # absolute
    relative_path: str  # to the base; the absolute path for a file outside it
    within_base: bool  # a file under the base must stay in it (a symlink out is refused)


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """One enabled PC folder and how it is watched."""

    pc_id: str
    folder: Path
    polling: bool


# -- what a scan finds -----------------------------------------------------------------------


class FileStatus:
    NEW = "new"  # never synced
    CHANGED = "changed"  # size or mtime differ from the last sync
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class ScannedFile:
    pc_id: str
    path: Path
    size: int
    mtime: float
    status: str

    def change(self, origin: Origin) -> NewChange:
        """As a queue change: a file never synced was added, any other one modified."""
        kind = ChangeKind.ADDED if self.status == FileStatus.NEW else ChangeKind.MODIFIED
        return NewChange(self.pc_id, os.fspath(self.path), kind, self.size, self.mtime, origin)


def needing_sync(files: Iterable[ScannedFile]) -> list[ScannedFile]:
    """What a scan found new or changed since its last sync (or quarantine)."""
    return [f for f in files if f.status != FileStatus.UNCHANGED]


def scan_folders(
    queue: DurableQueue,
    folders: dict[str, Path],
    files: SessionFiles,
    *,
    pattern: str = "*.json",
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[ScannedFile]:
    """Every session file under the PC folders (matching `pattern`, relative to the PC
    folder, and modified within [since, until)), with its sync status against the queue's
    record of its last sync. A file under nested PC folders is reported once, for the
    deepest."""
    lower = since.timestamp() if since else None
    upper = until.timestamp() if until else None
    owners = FolderOwners(folders.items())
    for pc_id, folder in folders.items():
        states = queue.file_states(pc_id)
        for path in files.walk(folder):
            owner = owners(os.fspath(path))
            if owner is not None and owner[0] != pc_id:
                continue  # its nested PC folder's walk reports it
            if not files(path, folder):
                continue
            relative = path.relative_to(folder).as_posix()
            if not fnmatch(relative, pattern) and not fnmatch(path.name, pattern):
                continue
            try:
                stat = path.stat()
            except OSError:
                continue  # vanished or unreadable since listing: the next scan sees it
            if (lower is not None and stat.st_mtime < lower) or (
                upper is not None and stat.st_mtime >= upper
            ):
                continue
            state = states.get(str(path))
            if state is None:
                status = FileStatus.NEW
            elif state.size != stat.st_size or state.mtime != stat.st_mtime:
                status = FileStatus.CHANGED
            else:
                status = FileStatus.UNCHANGED
            yield ScannedFile(pc_id, path, stat.st_size, stat.st_mtime, status)


Record = Callable[[list[NewChange]], object]


@dataclass(frozen=True, slots=True)
class RescanReport:
    scanned: int  # session files looked at
    queued: int  # of those, new or changed since their last sync: recorded
    forgotten: int = 0  # records of files gone from disk, dropped

    def summary(self) -> dict[str, int]:
        return {"scanned": self.scanned, "enqueued": self.queued, "forgotten": self.forgotten}


def rescan(
    queue: DurableQueue,
    folders: dict[str, Path],
    files: SessionFiles,
    origin: Origin,
    *,
    record: Record | None = None,
    forget_vanished: bool = False,
) -> RescanReport:
    """Find what changed unseen under the folders and record it (`record`, the queue's
    `enqueue_many` by default) in chunks of RESCAN_CHUNK; with `forget_vanished`, also drop
    the records of files gone from disk (`forget_vanished_files`)."""
    scanned = list(scan_folders(queue, folders, files))
    found = [f.change(origin) for f in needing_sync(scanned)]
    write = record or queue.enqueue_many
    for start in range(0, len(found), RESCAN_CHUNK):
        write(found[start : start + RESCAN_CHUNK])
    forgotten = forget_vanished_files(queue, folders, scanned) if forget_vanished else 0
    return RescanReport(len(scanned), len(found), forgotten)


def forget_vanished_files(
    queue: DurableQueue, folders: dict[str, Path], scanned: Iterable[ScannedFile]
) -> int:
    """Drop the queue's records of files that a full scan did not see and that are gone
    (the path itself is not found), once their record is older than the queue's retention.
    A PC folder that is not there (an unmounted NAS) forgets nothing, nor does a path that
    cannot be looked at for another reason."""
    seen = {os.fspath(f.path) for f in scanned}
    gone: list[str] = []
    for pc_id, folder in folders.items():
        if not folder.is_dir():
            continue
        gone += [p for p in queue.stale_file_paths(pc_id) if p not in seen and _not_found(p)]
    return queue.forget_file_states(gone)


def _not_found(path: str) -> bool:
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


# -- the site -------------------------------------------------------------------------------


class Site:
    """One NAS: its base folder, its PCs (from the registry, or the `<base>/<PC>/hands/`
    folders), and the rules above applied to them."""

    def __init__(self, settings: Settings, *, pcs: list[PcConfig] | None = None) -> None:
        self.settings = settings
        self.files = SessionFiles(settings.error_dir)
        self._fixed_pcs = pcs
        self._last_pcs = pcs
        self._registry = RegistryReader.shared(settings)
        _ = self.pcs  # a bad registry stops the start, naming the file and the field

    @property
    def base_path(self) -> Path:
        return self.settings.base_path

    @property
    def pcs(self) -> list[PcConfig]:
        """The PCs now. The registry (or the folders) is read again when it changed
        (`RegistryReader`), so a long-lived process covers a PC that joined after it started;
        a registry that turns unreadable keeps the last good one (loudly)."""
        if self._fixed_pcs is not None:
            return self._fixed_pcs
        try:
            self._last_pcs = self._registry()
        except SettingsError as exc:
            if self._last_pcs is None:
                raise
            log.warning("keeping the last good list of PCs: %s", exc)
        return self._last_pcs

    def enabled(self, only: Collection[str] | None = None) -> list[PcConfig]:
        """The enabled PCs, or those of them in `only`."""
        return [pc for pc in self.pcs if pc.enabled and (not only or pc.id in only)]

    def folders(self, only: Collection[str] | None = None) -> dict[str, Path]:
        """The enabled PCs' folders (resolved, confined to the base), or those of `only`."""
        return {pc.id: ensure_under_base(self.base_path, pc) for pc in self.enabled(only)}

    def watch_targets(self) -> list[WatchTarget]:
        """The enabled PCs' folders and how each is watched. A missing folder is created (a
        PC that has not written yet is watched from its first file on), unless the base
        folder itself is missing (a NAS not mounted yet: nothing is made under its mount
        point); either way it is kept, and watched once it exists."""
        targets: list[WatchTarget] = []
        seen: dict[Path, str] = {}
        for pc in self.pcs:
            if not pc.enabled:
                log.info("PC %s is disabled: not watched", pc.id)
                continue
            folder = ensure_under_base(self.base_path, pc)
            if folder in seen:
                log.warning(
                    "PC %s: folder %s already watched for PC %s", pc.id, folder, seen[folder]
                )
                continue
            seen[folder] = pc.id
            if not folder.is_dir() and not self.base_path.is_dir():
                log.warning(
                    "PC %s: the base folder %s is missing (NAS not mounted?); %s watched once "
                    "it exists",
                    pc.id,
                    self.base_path,
                    folder,
                )
            elif not folder.is_dir():
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    log.info("PC %s: created missing folder %s", pc.id, folder)
                except OSError as exc:
                    log.warning(
                        "PC %s: cannot create %s (%s); watched once it exists", pc.id, folder, exc
                    )
            targets.append(WatchTarget(pc.id, folder, uses_polling(pc, folder)))
        return targets

    def relative(self, path: str) -> str | None:
        """Relative to the base as given or as resolved (watches report resolved paths, and
        the base may sit behind a symlink); None outside both."""
        for root in self._base_roots():
            if path != root and _is_under(path, root):
                return Path(path).relative_to(root).as_posix()
        return None

    def _base_roots(self) -> Iterator[str]:
        """The base as given, then as resolved if that differs: resolving costs a syscall per
        path part, so it happens only for a path not under the base as given."""
        given = os.path.abspath(self.base_path)
        yield given
        resolved = os.path.realpath(given)
        if resolved != given:
            yield resolved

    def locate(self, path: str | os.PathLike[str], pc_id: str | None = None) -> LocatedFile:
        """The PC and base-relative path of a file: `pc_id` if given, else the PC whose folder
        (as the registry writes it) holds it, else the path's first folder."""
        absolute = Path(os.path.abspath(path))
        relative = self.relative(str(absolute))
        if relative is None:
            if pc_id is None:
                raise SettingsError(
                    f"{path}: not under the base folder {os.path.abspath(self.base_path)}"
                    "; pass --pc or set GFX_SYNC_BASE_PATH"
                )
            return LocatedFile(checked_pc_id(pc_id), absolute, absolute.as_posix(), False)
        if pc_id is None:
            owners = FolderOwners((pc.id, Path(os.path.normpath(pc.watch_path))) for pc in self.pcs)
            owner = owners(relative)
            pc_id = owner[0] if owner else relative.split("/", 1)[0]
        return LocatedFile(checked_pc_id(pc_id), absolute, relative, True)

    def enqueue(
        self,
        queue: DurableQueue,
        paths: Iterable[str | os.PathLike[str]],
        kind: ChangeKind,
        origin: Origin = Origin.WATCH,
        *,
        pc_id: str | None = None,
    ) -> list[int]:
        """Record changes to named files (located, with their size and mtime now) in one
        transaction, before anything reads them; their item ids."""
        changes = []
        for path in paths:
            located = self.locate(path, pc_id)
            size, mtime = stat_or_none(located.path)
            changes.append(NewChange(located.pc_id, str(located.path), kind, size, mtime, origin))
        return queue.enqueue_many(changes)

    def scan(
        self,
        queue: DurableQueue,
        *,
        pcs: Collection[str] | None = None,
        pattern: str = "*.json",
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[ScannedFile]:
        """`scan_folders` over the enabled PCs (or those of `pcs`)."""
        return scan_folders(
            queue, self.folders(pcs), self.files, pattern=pattern, since=since, until=until
        )

    def rescan(self, queue: DurableQueue, origin: Origin) -> RescanReport:
        """Queue what changed unseen in every enabled PC folder (see `rescan`)."""
        return rescan(queue, self.folders(), self.files, origin, forget_vanished=True)


def stat_or_none(path: Path) -> tuple[int | None, float | None]:
    try:
        stat = path.stat()
    except OSError:
        return None, None
    return stat.st_size, stat.st_mtime
