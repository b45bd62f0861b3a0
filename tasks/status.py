"""Per-PC status as a table artifact in the Prefect UI (refreshed by the recovery flow)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_table_artifact

from gfx_sync.queue import ItemState
from tasks import runtime

STATUS_ARTIFACT_KEY = "gfx-sync-pc-status"


def pc_status_rows() -> list[dict[str, object]]:
    """What the local queue knows per PC: synced files, last sync, backlog, errors."""
    engine = runtime.engine()
    queue = engine.queue
    stats = queue.stats()
    failed: dict[str, int] = {}
    synced_since = queue.file_states()
    for state in (ItemState.DEAD, ItemState.QUARANTINED):
        for item in queue.items(state, limit=100_000):
            latest = synced_since.get(item.path)
            if latest is not None and latest.outcome == "synced":
                continue  # the file was fixed and has synced since: no longer an error
            failed[item.pc_id] = failed.get(item.pc_id, 0) + 1
    rows = []
    for pc_id in engine.site.folders():
        states = queue.file_states(pc_id).values()
        synced = [s for s in states if s.outcome == "synced"]
        last = max((s.recorded_at for s in synced), default=None)
        rows.append(
            {
                "pc": pc_id,
                "files_synced": len(synced),
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
