"""One of each per process: settings, queue, site and engine (with its sink) are opened once
and reused by every task; the watcher needs no engine and never opens the target."""

from __future__ import annotations

import functools
import threading

from gfx_sync.engine import SyncEngine
from gfx_sync.queue import DurableQueue
from gfx_sync.settings import Settings, load_settings
from gfx_sync.site import Site
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
def queue() -> DurableQueue:
    current = settings()
    return DurableQueue(current.resolved_queue_path, lease_seconds=current.lease_seconds)


@functools.cache
def site() -> Site:
    return Site(settings())


@functools.cache
def _engine() -> SyncEngine:
    current = settings()
    return SyncEngine(current, queue(), open_target(current))


def reset() -> None:
    """Close and forget what this process opened, so the next use builds it again from the
    environment (tests change settings between flows run in one process)."""
    with _lock:
        if _engine.cache_info().currsize:
            _engine().sink.close()
        if queue.cache_info().currsize:
            queue().close()
        for cached in (_engine, queue, site, settings):
            cached.cache_clear()
