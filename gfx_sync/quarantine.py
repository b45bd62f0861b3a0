"""Quarantine: a stable file that still fails is copied aside with its reason, never moved.

PokerGFX may still own the file, so the original stays where it is; if it changes later, the
watcher or the rescan sees new size/mtime and the file is tried again.
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
    folder = error_dir / pc_id
    folder.mkdir(parents=True, exist_ok=True)
    flat_name = relative_path.replace("\\", "/").strip("/").replace("/", "__") or source.name
    target = folder / flat_name
    reason_file = folder / f"{flat_name}.reason.txt"
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
