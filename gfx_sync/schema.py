"""The `gfx_sessions` columns a sink writes, and the one upsert statement built from them.

Which snapshot wins is decided in the database (trigger `gfx_sessions_keep_newest` in
supabase/migrations), so the Postgres sink's statement below and PostgREST's upsert share it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gfx_sync.pokergfx import SessionRecord
from gfx_sync.settings import DEFAULT_SITE

SESSIONS_TABLE = "gfx_sessions"
EVENTS_TABLE = "sync_events"
# A session is one PC's table session at one site (every venue has a PC01).
CONFLICT_COLUMNS = ("site_id", "gfx_pc_id", "session_id")
SESSION_COLUMNS = (
    "site_id",
    "gfx_pc_id",
    "session_id",
    "file_name",
    "file_path",
    "file_hash",
    "file_size",
    "file_mtime",
    "raw_json",
    "table_type",
    "event_title",
    "software_version",
    "hand_count",
    "session_created_at",
    "sync_source",
    "sync_status",
)
UPDATED_COLUMNS = tuple(c for c in SESSION_COLUMNS if c not in CONFLICT_COLUMNS)


def upsert_sessions_sql(source: str) -> str:
    """INSERT ... SELECT from `source` ... ON CONFLICT DO UPDATE: the shape PostgREST also runs."""
    columns = ", ".join(SESSION_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in UPDATED_COLUMNS)
    return (
        f"insert into public.{SESSIONS_TABLE} ({columns}) select {columns} from {source} "
        f"on conflict ({', '.join(CONFLICT_COLUMNS)}) do update set {updates}"
    )


def session_row(
    record: SessionRecord, sync_source: str, site: str = DEFAULT_SITE
) -> dict[str, Any]:
    """A record as column values (raw_json still as the file's JSON text bytes), at `site`:
    the writing sink's site, the same for every row it writes."""
    return {
        "site_id": site,
        "gfx_pc_id": record.gfx_pc_id,
        "session_id": record.session_id,
        "file_name": record.file_name,
        "file_path": record.file_path,
        "file_hash": record.file_hash,
        "file_size": record.file_size,
        "file_mtime": record.file_mtime,
        "raw_json": record.raw_json,
        "table_type": record.table_type,
        "event_title": record.event_title,
        "software_version": record.software_version,
        "hand_count": record.hand_count,
        "session_created_at": record.session_created_at,
        "sync_source": sync_source,
        "sync_status": "synced",
    }


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
