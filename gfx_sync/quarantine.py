"""Quarantine: a stable file that still fails is copied aside with its reason, never moved.

PokerGFX may still own the file, so the original stays where it is; if it changes later, the
watcher or the rescan sees new size/mtime and the file is tried again. Once a later version of
it commits, its quarantine entry is cleared: `_error/` lists what is broken now, not history.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path


def quarantine_copy(
    error_dir: Path,
    pc_id: str,
    source: Path,
    relative_path: str,
    reason: str,
    *,
    copy: bool = True,
) -> Path:
    """Copy `source` to `<error_dir>/<pc>/<flattened relative path>` with a `.reason.txt` beside.

    `copy=False` writes only the reason (a file that must not be read, e.g. a symlink out).
    """
    target, reason_file = _entry(error_dir, pc_id, relative_path, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    copied = False
    if copy and source.is_file():
        try:
            shutil.copy2(source, target)
            copied = True
        except OSError as exc:
            reason = f"{reason} (the copy failed too: {exc.strerror or exc})"
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    reason_file.write_text(
        f"file: {source}\nquarantined at: {stamp}\nreason: {reason}\n"
        f"copied: {'yes' if copied else 'no'}\n"
        "The original was left in place; it is tried again when it changes.\n",
        encoding="utf-8",
    )
    return reason_file


def clear_quarantine(error_dir: Path, pc_id: str, source: Path, relative_path: str) -> bool:
    """Remove the entry of a file that has since committed; True if there was one."""
    target, reason_file = _entry(error_dir, pc_id, relative_path, source)
    if not reason_file.exists():
        return False
    target.unlink(missing_ok=True)
    reason_file.unlink(missing_ok=True)
    return True


def quarantine_entry(error_dir: Path, pc_id: str, source: Path, relative_path: str) -> Path:
    """Where a quarantined file's copy lies (it may be absent: see its `.reason.txt`)."""
    return _entry(error_dir, pc_id, relative_path, source)[0]


def _entry(error_dir: Path, pc_id: str, relative_path: str, source: Path) -> tuple[Path, Path]:
    """Where a file's copy and reason live: `<error_dir>/<pc>/<flattened relative path>`."""
    flat_name = relative_path.replace("\\", "/").strip("/").replace("/", "__") or source.name
    folder = error_dir / pc_id
    return folder / flat_name, folder / f"{flat_name}.reason.txt"
