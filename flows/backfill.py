"""Backfill, run by hand: (re)send files matching PCs, a glob and a time window.

`dry_run` reports what would be sent and changes nothing; `force` re-sends unchanged files too
(the database still writes nothing for identical content). Progress and a per-PC summary show
in the UI as artifacts.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.hooks import announce_run_problem
from gfx_sync.engine import Outcome
from gfx_sync.queue import REALTIME_LANE, Lane, Origin
from gfx_sync.site import FileStatus, ScannedFile, needing_sync
from tasks import runtime
from tasks.sync import enqueue, log_report, scan

SUMMARY_COLUMNS = ["pc", "seen", "to_send", "synced", "unchanged", "failed"]
BACKFILL_LANES = [Lane(origins=frozenset({Origin.BACKFILL})), REALTIME_LANE]


@flow(
    name="gfx-backfill",
    on_failure=[announce_run_problem],
    on_crashed=[announce_run_problem],
    flow_run_name="backfill {pattern}",
)
def backfill(
    pcs: list[str] | None = None,
    pattern: str = "*.json",
    since: datetime | None = None,
    until: datetime | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> list[dict[str, object]]:
    logger = get_run_logger()
    files = scan(pcs, pattern, since, until)
    to_send = files if force else needing_sync(files)
    logger.info("%d files match, %d to send%s", len(files), len(to_send), " (dry run)" * dry_run)
    synced: dict[str, int] = {}
    failed: dict[str, int] = {}
    if to_send and not dry_run:
        synced, failed = _send(to_send)
    summary = summarize(files, to_send, synced, failed)
    create_table_artifact(summary, key="gfx-backfill-summary", description="backfill per PC")
    return summary


def _send(files: list[ScannedFile]) -> tuple[dict[str, int], dict[str, int]]:
    """Enqueue first (durable), then drain batch by batch, updating the progress bar."""
    enqueue(files, Origin.BACKFILL.value)
    engine = runtime.engine()
    progress = create_progress_artifact(0.0, description="backfill progress")
    synced: dict[str, int] = {}
    failed: dict[str, int] = {}
    settled = 0
    while True:
        # The realtime lane too: a file whose realtime item is still pending was merged into it.
        report = engine.drain_once(lanes=BACKFILL_LANES, sync_source="backfill")
        if not report.outcomes:
            break
        log_report(report)
        for outcome in report.outcomes:
            bucket = synced if outcome.status == Outcome.SYNCED else failed
            bucket[outcome.pc_id] = bucket.get(outcome.pc_id, 0) + 1
        settled += report.claimed
        update_progress_artifact(progress, min(100.0, 100.0 * settled / len(files)))
        if report.target_failing:
            break  # the rest stays queued for the batch runs
    return synced, failed


def summarize(
    files: list[ScannedFile],
    to_send: list[ScannedFile],
    synced: dict[str, int],
    failed: dict[str, int],
) -> list[dict[str, object]]:
    if not files:
        return []
    import pandas as pd  # here, in the run that uses it: not in every process importing flows

    sending = {id(f) for f in to_send}
    table = (
        pd.DataFrame(
            {
                "pc": f.pc_id,
                "unchanged": f.status == FileStatus.UNCHANGED,
                "to_send": id(f) in sending,
            }
            for f in files
        )
        .groupby("pc")
        .agg(seen=("pc", "size"), unchanged=("unchanged", "sum"), to_send=("to_send", "sum"))
    )
    table["synced"] = pd.Series(synced, dtype="int64").reindex(table.index, fill_value=0)
    table["failed"] = pd.Series(failed, dtype="int64").reindex(table.index, fill_value=0)
    table = table.reset_index().astype({c: "int64" for c in SUMMARY_COLUMNS[1:]})
    return table[SUMMARY_COLUMNS].to_dict("records")
