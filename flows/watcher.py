"""The watcher: a long-running flow that records every change durably, then tells Prefect.

Each change is in the queue before anything else happens; an added file then raises a
`gfx.file.added` event (which triggers the realtime deployment), a modified one waits for the
batch deployment. Events carry the PC, path, size and mtime, never file content.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prefect import flow, get_run_logger, tags
from prefect.events import emit_event

from flows.hooks import announce_run_problem
from flows.labels import SITE_LABEL, site_tags
from gfx_sync.health import WATCHER_FILE, prefect_reachable, write_state
from gfx_sync.signals import set_from_signal_handler
from gfx_sync.watcher import WATCHER_COUNTERS_KEY, DetectedChange, FolderWatcher
from tasks import runtime

log = logging.getLogger("gfx_sync.watcher")
PREFECT_CHECK_SECONDS = 2.0
FILE_ADDED_EVENT = "gfx.file.added"
RUN, COALESCED = "run", "coalesced"  # values of the `gfx.trigger` resource label


def file_resource(
    site: str, pc_id: str, path: Path, relative_path: str, starts_run: bool
) -> dict[str, str]:
    """The resource of a `gfx.file.added` event: what the site's realtime trigger matches
    (site, `gfx.trigger`) and passes to the run (path, PC)."""
    return {
        "prefect.resource.id": f"gfx.file.{site}.{pc_id}.{relative_path}",
        "prefect.resource.name": path.name,
        SITE_LABEL: site,
        "gfx.pc": pc_id,
        "gfx.path": str(path),
        "gfx.trigger": RUN if starts_run else COALESCED,
    }


class AddedFileAnnouncer:
    """Emits one `gfx.file.added` event per added file, marking which ones start a run.

    A burst (a PC reconnecting, a folder copied in) must not become a storm of flow runs:
    an event starts a run (`gfx.trigger=run`) only if none did in the last
    `realtime_rate_limit` seconds; the others say `coalesced`. Every run drains all pending
    added files, so a coalesced file is taken by the run its lead started, and the batch
    deployment sweeps anything left after `realtime_grace` seconds.
    """

    def __init__(self, rate_limit: float, site: str) -> None:
        self.rate_limit = rate_limit
        self.site = site
        self._last_run_event = float("-inf")

    def __call__(self, changes: list[DetectedChange]) -> None:
        site = runtime.site()
        for change in changes:
            located = site.locate(change.path, change.pc_id)
            now = time.monotonic()
            starts_run = now - self._last_run_event >= self.rate_limit
            if starts_run:
                self._last_run_event = now
            emit_event(
                FILE_ADDED_EVENT,
                resource=file_resource(
                    self.site, change.pc_id, change.path, located.relative_path, starts_run
                ),
                payload={
                    "path": located.relative_path,
                    "size": change.size,
                    "mtime": change.mtime,
                    "queue_item": change.item_id,
                },
            )


def build_watcher(
    stop_event: threading.Event | None,
    *,
    announce: bool,
    mode: str,
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> FolderWatcher:
    """The core watcher over the enabled PC folders. `announce`: emit `gfx.file.added`
    events (only where a Prefect server can receive them). Once its watches are in place it
    says so in the state folder (`gfx_sync.health`)."""
    settings = runtime.settings()
    targets = runtime.site().watch_targets()
    for target in targets:
        logger.info(
            "watching %s: %s (%s)",
            target.pc_id,
            target.folder,
            "polling" if target.polling else "native events",
        )
    state_file = WatcherStateFile(
        settings.state_dir / WATCHER_FILE, {"pid": os.getpid(), "mode": mode, "pcs": len(targets)}
    )
    folder_watcher = FolderWatcher(
        targets,
        runtime.queue(),
        on_added=AddedFileAnnouncer(settings.realtime_rate_limit, settings.site)
        if announce
        else None,
        on_ready=state_file.ready,
        on_counters=state_file.counters_changed,
        error_dir=settings.error_dir,
        poll_delay_ms=settings.poll_delay_ms,
        stop_event=stop_event,
    )
    state_file.counters = folder_watcher.reported_counters
    return folder_watcher


class WatcherStateFile:
    """`watcher.json`: written once the watches are in place (its presence means ready), then
    rewritten whenever a reported counter (lost events, rescans, polling fallbacks) changes,
    for the metrics. One lock: the watch threads report concurrently, and the last write
    always holds the latest figures."""

    def __init__(self, path: Path, document: dict[str, object]) -> None:
        self.path = path
        self.document = document
        self.counters: Callable[[], dict[str, int]] = dict
        self._lock = threading.Lock()
        self._ready_at: float | None = None

    def ready(self) -> None:
        with self._lock:
            self._ready_at = time.time()
            self._write()

    def counters_changed(self, _counters: dict[str, int]) -> None:
        with self._lock:
            if self._ready_at is not None:  # before, the file must not exist: not ready yet
                self._write()

    def _write(self) -> None:
        write_state(
            self.path,
            {**self.document, "ready_at": self._ready_at, WATCHER_COUNTERS_KEY: self.counters()},
        )


def watch(folder_watcher: FolderWatcher) -> dict[str, int]:
    folder_watcher.run()
    counters = folder_watcher.snapshot()
    log.info("watcher stopped: %s", counters)
    # Lost events, rescans and polling fallbacks show in the run's result, not only in logs.
    return {name: value for name, value in counters.items() if isinstance(value, int)}


@flow(
    name="gfx-watcher",
    on_failure=[announce_run_problem],
    on_crashed=[announce_run_problem],
    flow_run_name="watch PC folders",
)
def watcher(stop_event: threading.Event | None = None) -> dict[str, int]:
    """Watch every enabled PC folder until stopped (SIGTERM/SIGINT, or `stop_event`)."""
    folder_watcher = build_watcher(stop_event, announce=True, mode="flow", logger=get_run_logger())
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: folder_watcher.stop())
    return watch(folder_watcher)


def watch_until_prefect_answers(stop: threading.Event, api_url: str) -> None:
    """Record every change while the Prefect server is unreachable (no flow run, no events:
    `up`'s standby drainer syncs meanwhile); return when it answers, or on `stop`. The
    flow's watcher that follows rescans at its start, so the hand-over misses nothing."""
    log.warning("Prefect at %s is unreachable: watching without it until it answers", api_url)
    plain_stop = threading.Event()
    folder_watcher = build_watcher(plain_stop, announce=False, mode="without Prefect")
    thread = threading.Thread(target=watch, args=(folder_watcher,), name="plain-watcher")
    thread.start()
    while not stop.wait(PREFECT_CHECK_SECONDS) and not prefect_reachable(api_url):
        pass
    plain_stop.set()
    thread.join()


def main() -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: set_from_signal_handler(stop))
    api_url = os.environ.get("PREFECT_API_URL")
    if api_url and not prefect_reachable(api_url):
        watch_until_prefect_answers(stop, api_url)
    if stop.is_set():
        return
    with tags(*site_tags(runtime.settings().site)):
        watcher(stop_event=stop)


if __name__ == "__main__":
    main()
