"""Small session files on disk, for the engine, standby and watcher tests.

The documents are `support.records.session_document`: the few keys the parser needs, so a
test shows at a glance what it wrote. Format-faithful files come from `gfx_synth`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from gfx_synth import session_file_name
from support.records import SESSION_ID, session_document

STABLE_AGE = 60.0  # seconds: past any settle period the tests configure


def write_session(
    folder: Path,
    session_id: int = SESSION_ID,
    hands: int = 1,
    *,
    age: float | None = None,
    name: str | None = None,
    **extra: object,
) -> Path:
    """Write a session file in `folder`, in place (the same inode), as PokerGFX does.

    `age`: set its mtime that many seconds back, so the engine treats it as settled; None
    leaves the mtime of the write (a watcher then sees one write, no attribute change).
    `name` overrides the real file name; `extra` adds top-level keys to the document."""
    path = folder / (name or session_file_name(session_id))
    path.write_bytes(orjson.dumps(session_document(session_id, hands, **extra)))
    if age is not None:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    return path
