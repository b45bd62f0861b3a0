"""A real full file system for tests: a small tmpfs, and a filler file that takes the rest.

Mounting needs root (CAP_SYS_ADMIN); where that is refused the test skips, saying why.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(where: Path, size: int, keep: Path | None = None) -> Iterator[Path]:
    """Mount a `size`-byte tmpfs at `where`; on exit copy its files to `keep` (post-mortem)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root: the queue's unit tests cover SQLITE_FULL")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "gfx-test-disk", str(where)],
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
