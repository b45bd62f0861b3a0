"""Rescans: find files that are new or changed since they were last synced.

A watcher misses things (overflowing event queues, SMB changes made by other hosts, anything
while gfx-sync was stopped), so recovery and backfill walk the folders and compare each file's
size and mtime with what the queue recorded at its last sync.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatch
from pathlib import Path

from gfx_sync.files import is_session_file, skips_dir
from gfx_sync.queue import DurableQueue


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


def scan_folders(
    queue: DurableQueue,
    folders: dict[str, Path],
    *,
    error_dir: Path,
    pattern: str = "*.json",
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[ScannedFile]:
    """Every session file under the PC folders (matching `pattern`, relative to the PC
    folder, and modified within [since, until)), with its sync status."""
    lower = since.timestamp() if since else None
    upper = until.timestamp() if until else None
    for pc_id, folder in folders.items():
        states = queue.file_states(pc_id)
        for path in walk_files(folder):
            if not is_session_file(path, error_dir):
                continue
            if not fnmatch(path.relative_to(folder).as_posix(), pattern) and not fnmatch(
                path.name, pattern
            ):
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


def walk_files(folder: Path) -> Iterator[Path]:
    """Files below `folder`, not following directory symlinks (no loops, no escaping), nor
    entering hidden or `_`-prefixed folders."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not skips_dir(d))
        for name in sorted(files):
            yield Path(root) / name


def needing_sync(files: list[ScannedFile]) -> list[ScannedFile]:
    """What a scan found new or changed since its last sync (or quarantine)."""
    return [f for f in files if f.status != FileStatus.UNCHANGED]
