"""Stopping from a signal handler without deadlocking the main thread."""

from __future__ import annotations

import threading


def set_from_signal_handler(event: threading.Event) -> None:
    """Set `event` from a signal handler. `Event.set` takes a non-reentrant lock, and a handler
    runs in the main thread between two bytecodes: a second signal arriving while the first
    handler is inside `set` (a supervisor's SIGTERM and the parent-death SIGTERM together)
    would wait on that lock forever. A short-lived thread sets it instead."""
    if not event.is_set():
        threading.Thread(target=event.set, name="set-from-signal", daemon=True).start()
