"""Which files in a PC folder are session files, and which sub-folders are never looked into.

One rule for everyone who looks at the folders (the watcher's readers, the rescan), so a file
the watcher ignores is one the rescan ignores too.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

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


def is_session_file(path: Path, error_dir: Path) -> bool:
    """A PokerGFX session file by its name: `*.json` (any case), not hidden, not a temp or
    lock name, never under the quarantine folder. A name check only (no I/O on `path`): the
    watcher also rejects non-regular files when it stats them."""
    name = path.name
    lower = name.lower()
    if not lower.endswith(".json") or name.startswith((".", "~")):
        return False
    if lower.endswith(TEMP_SUFFIXES):
        return False
    absolute = os.path.abspath(path)
    return not is_under_error_dir(absolute, error_dir)


def skips_dir(name: str) -> bool:
    """A sub-folder (by its name) whose files are never session files."""
    return name.startswith(SKIPPED_DIR_PREFIXES)


def is_under_error_dir(absolute: str, error_dir: Path) -> bool:
    return any(_is_under(absolute, root) for root in _error_roots(os.fspath(error_dir)))


@lru_cache(maxsize=16)
def _error_roots(error_dir: str) -> tuple[str, ...]:
    """The quarantine folder as given and as resolved (the base may sit behind a symlink)."""
    return tuple({os.path.abspath(error_dir), os.path.realpath(error_dir)})


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
