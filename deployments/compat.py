"""Private APIs of the libraries `up` runs on, in one place, each behind a version check.

Where the installed version is not one this was written against, the function does nothing
and says so in the log: the behaviour it adds is a nicety, never needed for correctness.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading

log = logging.getLogger(__name__)

STOP_WAIT_SECONDS = 2.0


def stop_multiprocessing_servers() -> None:
    """Stop the forkserver and the resource tracker this process started.

    Both would exit by themselves a moment after this process (their pipe to it closes), but
    a service manager stops a unit by killing whatever is left once the main process exits
    (systemd's KillMode=mixed): each would be logged as a stray killed with SIGKILL. CPython
    3.11-3.13 stop them with the private `_stop()` its own tests use; it waits for the
    process, so it runs on a thread that is waited for only briefly."""
    if not (3, 11) <= sys.version_info[:2] <= (3, 13):
        log.info("multiprocessing helpers are left to exit with this process (Python %s)",
                 sys.version.split()[0])  # fmt: skip
        return
    from multiprocessing import forkserver, resource_tracker

    for server in (forkserver._forkserver, resource_tracker._resource_tracker):
        stop = getattr(server, "_stop", None)
        if stop is None:
            continue
        thread = threading.Thread(target=_quietly, args=(stop,), daemon=True)
        thread.start()
        thread.join(STOP_WAIT_SECONDS)


def _quietly(stop: object) -> None:
    with contextlib.suppress(Exception):
        stop()  # type: ignore[operator]
