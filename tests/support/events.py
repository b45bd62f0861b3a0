"""What landed in `sync_events`, for the tests of the sinks' promise to record their events."""

from __future__ import annotations

import psycopg


def event_rows(database_url: str) -> list[tuple]:
    """(event_type, gfx_pc_id, file_count, error, details) of every event, oldest first."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select event_type, gfx_pc_id, file_count, error, details from sync_events order by id"
        ).fetchall()
