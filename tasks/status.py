"""Per-PC status as a table artifact in the Prefect UI (refreshed by the recovery flow)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_table_artifact

from tasks import runtime

STATUS_ARTIFACT_KEY = "gfx-sync-pc-status"
FAILURES_COUNTED = 100_000


def pc_status_rows() -> list[dict[str, object]]:
    """What the local queue knows per PC: synced files, last sync, backlog, errors (failures
    whose file has not synced since), from the reads the console's PC cards use."""
    engine = runtime.engine()
    queue = engine.queue
    stats = queue.stats()
    summaries = queue.pc_summaries()
    failed = Counter(f.item.pc_id for f in queue.unresolved_failures(limit=FAILURES_COUNTED))
    rows = []
    for pc_id in [pc.id for pc in engine.site.enabled()]:  # ids: no folder resolved
        summary = summaries.get(pc_id)
        last = summary.last_sync_at if summary is not None else None
        rows.append(
            {
                "pc": pc_id,
                "files_synced": summary.files_synced if summary is not None else 0,
                "last_sync_utc": (
                    datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds")
                    if last
                    else "never"
                ),
                "queue_depth": stats.pending_by_pc.get(pc_id, 0),
                "errors": failed.get(pc_id, 0),
            }
        )
    return rows


def write_status_artifact(rows: list[dict[str, object]] | None = None) -> list[dict[str, object]]:
    """Publish the table as a new version of the artifact. Also called outside any run: `up`
    refreshes it every minute (deployments/alerting.py) without scheduling runs for it."""
    rows = pc_status_rows() if rows is None else rows
    create_table_artifact(
        rows, key=STATUS_ARTIFACT_KEY, description="gfx-sync: per-PC status (from the local queue)"
    )
    return rows


@task
def publish_status() -> list[dict[str, object]]:
    return write_status_artifact()
