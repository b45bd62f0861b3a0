"""The watcher: a long-running flow that records every change durably, then tells Prefect.

Each change is in the queue before anything else happens; an added file then raises a
`gfx.file.added` event (which triggers the realtime deployment), a modified one waits for the
batch deployment. Events carry the PC, path, size and mtime, never file content.
"""

from __future__ import annotations

import signal
import threading

from prefect import flow, get_run_logger, tags
from prefect.events import emit_event

from flows.hooks import announce_run_problem
from gfx_sync.watcher import DetectedChange, FolderWatcher, watch_targets
from tasks import runtime

FILE_ADDED_EVENT = "gfx.file.added"


def file_resource(change: DetectedChange, relative_path: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"gfx.file.{change.pc_id}.{relative_path}",
        "prefect.resource.name": change.path.name,
        "gfx.pc": change.pc_id,
        "gfx.path": str(change.path),
    }


def emit_added(changes: list[DetectedChange]) -> None:
    engine = runtime.engine()
    for change in changes:
        located = engine.locate(change.path, change.pc_id)
        emit_event(
            FILE_ADDED_EVENT,
            resource=file_resource(change, located.relative_path),
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
        on_added=emit_added,
        error_dir=engine.settings.error_dir,
        poll_delay_ms=engine.settings.poll_delay_ms,
        stop_event=stop_event,
    )
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: folder_watcher.stop())
    folder_watcher.run()
    logger.info("watcher stopped")
    return {"changes_seen": folder_watcher.counters.changes_seen}


def main() -> None:
    with tags("gfx-sync"):
        watcher()


if __name__ == "__main__":
    main()
