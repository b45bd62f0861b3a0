"""What tests/test_up.py runs in processes forked from the forkserver."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from setproctitle import getproctitle, setproctitle

MARK_ENV = "GFX_TEST_FORKED_MARK"


def wait_for_sigterm() -> None:
    """Return on SIGTERM, after writing "<pid> stopped" to $GFX_TEST_FORKED_MARK if set. Its
    title ends with " ready" once SIGTERM is handled."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    setproctitle(f"{getproctitle()} ready")
    stopped.wait()
    if mark := os.environ.get(MARK_ENV):
        Path(mark).write_text(f"{os.getpid()} stopped")
