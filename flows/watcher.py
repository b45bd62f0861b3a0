"""The watcher: a long-running flow that records every change durably, then tells Prefect.

Each change is in the queue before anything else happens; an added file then raises a
`gfx.file.added` event (which triggers the realtime deployment), a modified one waits for the
batch deployment. Events carry the PC, path, size and mtime, never file content.
"""

from __future__ import annotations

import signal
import threading
import time

from prefect import flow, get_run_logger, tags
from prefect.events import emit_event

from flows.hooks import announce_run_problem
from gfx_sync.watcher import DetectedChange, FolderWatcher, watch_targets
from tasks import runtime

FILE_ADDED_EVENT = "gfx.file.added"
RUN, COALESCED = "run", "coalesced"  # values of the `gfx.trigger` resource label


def file_resource(change: DetectedChange, relative_path: str, starts_run: bool) -> dict[str, str]:
    return {
        "prefect.resource.id": f"gfx.file.{change.pc_id}.{relative_path}",
        "prefect.resource.name": change.path.name,
        "gfx.pc": change.pc_id,
        "gfx.path": str(change.path),
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

    def __init__(self, rate_limit: float) -> None:
        self.rate_limit = rate_limit
        self._last_run_event = float("-inf")

    def __call__(self, changes: list[DetectedChange]) -> None:
        engine = runtime.engine()
        for change in changes:
            located = engine.locate(change.path, change.pc_id)
            now = time.monotonic()
            starts_run = now - self._last_run_event >= self.rate_limit
            if starts_run:
                self._last_run_event = now
            emit_event(
                FILE_ADDED_EVENT,
                resource=file_resource(change, located.relative_path, starts_run),
                payload={
                    "path": located.relative_path,
                    "size": change.size,
                    "mtime": change.mtime,
                    "queue_item": change.item_id,
                },
            )


@flow(
    name="gfx-watcher",
    on_failure=[announce_run_problem],
    on_crashed=[announce_run_problem],
    flow_run_name="watch PC folders",
)
def watcher(stop_event: threading.Event | None = None) -> dict[str, int]:
    """Watch every enabled PC folder until stopped (SIGTERM/SIGINT, or `stop_event`)."""
    logger = get_run_logger()
    engine = runtime.engine()
    targets = watch_targets(engine.settings, engine.pcs)
    for target in targets:
        mode = "polling" if target.polling else "native events"
        logger.info("watching %s: %s (%s)", target.pc_id, target.folder, mode)
    folder_watcher = FolderWatcher(
        targets,
        engine.queue,
        on_added=AddedFileAnnouncer(engine.settings.realtime_rate_limit),
        error_dir=engine.settings.error_dir,
        poll_delay_ms=engine.settings.poll_delay_ms,
        stop_event=stop_event,
    )
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: folder_watcher.stop())
    folder_watcher.run()
    counters = folder_watcher.snapshot()
    logger.info("watcher stopped: %s", counters)
    # Lost events, rescans and polling fallbacks show in the run's result, not only in logs.
    return {name: value for name, value in counters.items() if isinstance(value, int)}


def main() -> None:
    with tags("gfx-sync"):
        watcher()


if __name__ == "__main__":
    main()
