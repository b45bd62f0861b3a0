"""`up`'s watcher process: the watcher flow (flows/watcher.py), forked from the forkserver,
which imports this module ahead of it (deployments/warm/pool.py's preload)."""

from __future__ import annotations

import os

from deployments.forked import ForkedProcess, fork
from flows import watcher
from gfx_sync.health import WATCHER_FILE, remove_state
from gfx_sync.settings import Settings

TITLE = "gfx-sync watcher (flows.watcher)"  # its command line in `ps`


def start_watcher(settings: Settings) -> ForkedProcess:
    """The watcher flow runs in its own process so a stuck run never blocks it. Its readiness
    file is removed first: it is written anew once the new watcher's watches are in place."""
    remove_state(settings.state_dir / WATCHER_FILE)
    return fork(f"{watcher.__name__}:main", TITLE, os.environ.get("PREFECT_API_URL"))
