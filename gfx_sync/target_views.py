"""Reading the target for operators: its per-PC view, its newest sessions, its schema, and
when it last committed something. One reader per kind of target, same answers:

* `PostgresReader`: a direct connection (the embedded server, a plain Postgres, Supabase's
  connection string). It can also LISTEN for commits (`listen`).
* `RestReader`: Supabase's REST API (PostgREST) with the service key; it cannot LISTEN, so
  whoever wants to follow commits polls `latest_event_id`.

A reader reads one site's rows (the agent's GFX_SYNC_SITE): its PCs and its sessions. The
newest event id is the whole target's (any commit wakes a follower; it reads its site after).

Readers open their connection lazily and open it again after a failure: a target that is
down makes each call raise, and the next call after it is back succeeds.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from gfx_sync.migrate import pending_migrations
from gfx_sync.settings import DEFAULT_SITE, Settings, Target

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "gfx_sync_events"  # supabase/migrations/20261204000000_console_notify.sql
LISTEN_CHECK_STOP = 1.0  # seconds a listener waits on its socket before looking at the stop flag
SESSION_COLUMNS = "gfx_pc_id, session_id, file_name, table_type, hand_count, updated_at"


class TargetReader(Protocol):
    def pc_status(self) -> list[dict[str, Any]]:
        """The site's rows of the `pc_status` view: site_id, gfx_pc_id, session_count,
        hand_count, last_sync, errors_last_hour, last_error_at, status."""
        ...

    def recent_sessions(self, limit: int = 20) -> list[dict[str, Any]]:
        """The site's newest-updated sessions: SESSION_COLUMNS."""
        ...

    def pending_migrations(self) -> list[str] | None:
        """Migrations the target lacks ([] current); None if this target cannot tell."""
        ...

    def latest_event_id(self) -> int | None:
        """The id of the newest sync event (it changes with every commit)."""
        ...

    def close(self) -> None: ...


class PostgresReader:
    """Reads over one kept connection (autocommit), opened again after a failure."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0, site: str = DEFAULT_SITE) -> None:
        self.url = url
        self.site = site
        self.connect_timeout = max(1, round(connect_timeout))
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()  # the console reads from several threads

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                with self._conn.cursor(row_factory=dict_row) as cursor:
                    return cursor.execute(sql, params).fetchall()  # type: ignore[arg-type]
            except psycopg.Error:
                self._drop()
                raise

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=self.connect_timeout,
            prepare_threshold=None,
            application_name="gfx-sync console",
        )

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def pc_status(self) -> list[dict[str, Any]]:
        return self._query(
            "select * from public.pc_status where site_id = %s order by gfx_pc_id", (self.site,)
        )

    def recent_sessions(self, limit: int = 20) -> list[dict[str, Any]]:
        return self._query(
            f"select {SESSION_COLUMNS} from public.gfx_sessions where site_id = %s "
            "order by updated_at desc limit %s",
            (self.site, limit),
        )

    def pending_migrations(self) -> list[str] | None:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                return pending_migrations(self._conn)
            except psycopg.Error:
                self._drop()
                raise

    def latest_event_id(self) -> int | None:
        rows = self._query("select max(id) as id from public.sync_events")
        return rows[0]["id"] if rows else None

    def listen(self, on_notify: Callable[[], None], stopping: threading.Event) -> None:
        """Call `on_notify` at each commit a writer makes (NOTIFY), until `stopping` is set.
        Raises when the connection fails (the caller reconnects).

        Waits on the socket itself, waking once a second to look at `stopping`
        (psycopg's `notifies()` wakes ten times a second while it waits); when the socket
        has something, a trivial query lets psycopg read it and call the handler."""
        with psycopg.connect(
            self.url, autocommit=True, connect_timeout=self.connect_timeout
        ) as conn:
            conn.add_notify_handler(lambda _: on_notify())
            conn.execute(f"listen {NOTIFY_CHANNEL}")
            on_notify()  # whatever happened while nobody listened
            while not stopping.is_set():
                readable, _, _ = select.select([conn.fileno()], [], [], LISTEN_CHECK_STOP)
                if readable:
                    conn.execute("select 1")

    def close(self) -> None:
        with self._lock:
            self._drop()


class RestReader:
    """Reads the views through PostgREST with supabase-py (the service key's role)."""

    def __init__(
        self, url: str, key: str, *, timeout: float = 10.0, site: str = DEFAULT_SITE
    ) -> None:
        from supabase import ClientOptions, create_client

        self.site = site
        self._client = create_client(
            url, key, options=ClientOptions(postgrest_client_timeout=timeout)
        )

    def pc_status(self) -> list[dict[str, Any]]:
        query = self._client.table("pc_status").select("*").eq("site_id", self.site)
        rows = query.order("gfx_pc_id").execute().data
        return [_parse_times(row, "last_sync", "last_error_at") for row in rows]

    def recent_sessions(self, limit: int = 20) -> list[dict[str, Any]]:
        query = self._client.table("gfx_sessions").select(SESSION_COLUMNS.replace(" ", ""))
        query = query.eq("site_id", self.site)
        rows = query.order("updated_at", desc=True).limit(limit).execute().data
        return [_parse_times(row, "updated_at") for row in rows]

    def pending_migrations(self) -> list[str] | None:
        return None  # the REST API does not expose the ledger: `supabase db push` owns it

    def latest_event_id(self) -> int | None:
        query = self._client.table("sync_events").select("id").order("id", desc=True)
        rows = query.limit(1).execute().data
        return rows[0]["id"] if rows else None

    def close(self) -> None:
        pass


def _parse_times(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    """PostgREST sends timestamps as ISO text; the Postgres reader gives datetimes."""
    for column in columns:
        value = row.get(column)
        if isinstance(value, str):
            row[column] = datetime.fromisoformat(value)
    return row


def open_reader(settings: Settings, database_url: str | None) -> TargetReader:
    """The reader for the configured target (`database_url`: the resolved Postgres URL)."""
    if settings.target is Target.SUPABASE:
        assert settings.supabase_url and settings.supabase_service_key
        return RestReader(
            settings.supabase_url,
            settings.supabase_service_key.get_secret_value(),
            timeout=settings.request_timeout,
            site=settings.site,
        )
    if database_url is None:
        raise ValueError("no Postgres URL for the target")
    return PostgresReader(
        database_url, connect_timeout=min(5.0, settings.request_timeout), site=settings.site
    )
