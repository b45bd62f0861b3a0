"""Batch upsert: every `flush_interval` seconds, upsert what is pending and due.

Modified files and retries wait here; each batch is at most `batch_size` items within the byte
budget, sent in one request. Added files the realtime path has not taken yet are swept too.
"""

from __future__ import annotations

from prefect import flow

from flows.hooks import announce_run_problem
from tasks.sync import drain_queue


@flow(
    name="gfx-batch-upsert",
    on_failure=[announce_run_problem],
    on_crashed=[announce_run_problem],
    flow_run_name="batch upsert",
)
def batch_upsert(max_batches: int = 20) -> dict[str, int]:
    """Fails (and so alerts) when the target stays unreachable for `outage_wait` seconds; the
    queue keeps every change. A target that comes back within that is drained at once."""
    return drain_queue(
        sync_source="batch",
        max_batches=max_batches,
        sweep=True,
        fail_on_outage=True,
        wait_for_target=True,
    )
