"""Recovery: rescan every PC folder for what the watcher missed, then drain the queue.

Runs on a schedule and once at start-up: catches changes made while gfx-sync was stopped,
SMB changes by other hosts, and overflowing watch queues.
"""

from __future__ import annotations

from prefect import flow

from flows.hooks import announce_run_problem
from tasks.status import publish_status
from tasks.sync import drain_queue, record_recovery, rescan


@flow(
    name="gfx-recovery",
    on_failure=[announce_run_problem],
    on_crashed=[announce_run_problem],
    flow_run_name="recovery rescan",
)
def recovery(drain: bool = True) -> dict[str, int]:
    summary = rescan()
    if drain:
        summary |= drain_queue(sync_source="recovery", fail_on_outage=True)
    record_recovery(summary)
    publish_status()
    return summary
