"""One engine per process: settings, queue and sink are opened once and reused by every task."""

from __future__ import annotations

import functools
import threading

from gfx_sync.engine import SyncEngine
from gfx_sync.queue import DurableQueue
from gfx_sync.settings import Settings, load_settings
from gfx_sync.target import open_target

_lock = threading.Lock()


@functools.cache
def settings() -> Settings:
    return load_settings()


def engine() -> SyncEngine:
    """The process's engine (the target is started and migrated on first use if embedded)."""
    with _lock:
        return _engine()


@functools.cache
def _engine() -> SyncEngine:
    current = settings()
    queue = DurableQueue(current.resolved_queue_path, lease_seconds=current.lease_seconds)
    return SyncEngine(current, queue, open_target(current))
