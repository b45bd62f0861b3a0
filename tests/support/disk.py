"""A real full file system for tests: a small tmpfs, and a filler file that takes the rest.

Mounting needs root (CAP_SYS_ADMIN); where that is refused the test skips, saying why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gfx_sync import inotify_tree


@contextmanager
def tmpfs(where: Path, options: str, keep: Path | None = None) -> Iterator[Path]:
    """Mount a tmpfs with `options` at `where`; on exit copy its files to `keep`."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: the queue's unit tests cover SQLITE_FULL")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "gfx-test-disk", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield where
    finally:
        if keep is not None:
            skip_filler = shutil.ignore_patterns("filler")
            shutil.copytree(where, keep, ignore=skip_filler, dirs_exist_ok=True)
        subprocess.run(["umount", "-l", str(where)], check=False)


def small_disk(
    where: Path, size: int, keep: Path | None = None
) -> contextlib.AbstractContextManager[Path]:
    """A `size`-byte tmpfs at `where`; on exit its files are copied to `keep` (post-mortem)."""
    return tmpfs(where, f"size={size}", keep)


def read_only_disk(where: Path) -> contextlib.AbstractContextManager[Path]:
    """A read-only tmpfs at `where`: root's writes fail there too (EROFS), unlike chmod."""
    return tmpfs(where, "ro,size=2g")


def can_lower_inotify_limits() -> bool:
    """inotify, and a user namespace of our own whose inotify limits we may lower."""
    unshare = shutil.which("unshare")
    if unshare is None or not inotify_tree.AVAILABLE:
        return False
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "sh", "-c",
         "test -w /proc/sys/user/max_inotify_watches"],
        capture_output=True,
        check=False,
    )  # fmt: skip
    return probe.returncode == 0


def fill(path: Path) -> int:
    """Write zeros until the file system says ENOSPC; returns the bytes written.

    Unbuffered: a buffered file would keep the part of a chunk that did not fit and fail
    again on close, flushing it."""
    written = 0
    chunk = b"\0" * 65536
    try:
        handle = path.open("wb", buffering=0)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return 0  # already full
        raise
    with handle:
        while True:
            try:
                written += handle.write(chunk) or 0
                os.fsync(handle.fileno())
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return written
