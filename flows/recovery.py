"""Recovery: rescan every PC folder for what the watcher missed, then drain the queue.

Runs on a schedule and once at start-up: catches changes made while gfx-sync was stopped,
SMB changes by other hosts, and overflowing watch queues.
"""

from __future__ import annotations

from prefect import flow

from flows.hooks import announce_run_problem
from gfx_sync.scan import needing_sync
from tasks.status import publish_status
from tasks.sync import drain_queue, enqueue, record_recovery, scan


@flow(
    name="gfx-recovery",
    on_failure=[announce_run_problem],
    on_crashed=[announce_run_problem],
    flow_run_name="recovery rescan",
)
def recovery(drain: bool = True) -> dict[str, int]:
    files = scan()
    missed = needing_sync(files)
    enqueued = enqueue(missed, "rescan")
    summary = {"scanned": len(files), "enqueued": enqueued}
    if drain:
        summary |= drain_queue(kinds=None, sync_source="recovery", fail_on_outage=True)
    record_recovery(summary)
    publish_status()
    return summary
