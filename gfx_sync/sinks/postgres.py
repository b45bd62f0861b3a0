"""Postgres sink: COPY a batch into a temporary table, then one INSERT ... ON CONFLICT.

Works through Supabase's transaction pooler: no prepared statements, no session state kept
between transactions (the temporary table is dropped at commit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Sequence

import orjson
import psycopg

from gfx_sync.pokergfx import SessionRecord
from gfx_sync.redact import redact_url, scrub
from gfx_sync.schema import EVENTS_TABLE, SESSION_COLUMNS, session_row, upsert_sessions_sql
from gfx_sync.sinks.base import (
    FailureKind,
    SinkError,
    SyncEvent,
    WriteResult,
    write_batch_splitting,
)

log = logging.getLogger(__name__)

INCOMING = "gfx_sessions_incoming"
OUTAGE_SQLSTATE_CLASSES = ("08", "25", "40", "42", "53", "55", "57", "58", "XX", "0A")
TOO_BIG_SQLSTATES = ("54000", "54001")  # program limits: the batch itself is too big
TOO_SLOW_SQLSTATES = ("57014",)  # statement timeout


def classify_postgres_error(exc: Exception, url: str | None = None) -> SinkError:
    """Retryable outage, too-big batch, or data the database rejects (the message never holds
    the connection string's password: libpq echoes a string it cannot parse)."""
    sqlstate = getattr(exc, "sqlstate", None)
    message = scrub(f"{type(exc).__name__}: {str(exc).strip() or 'no message'}", url)
    if sqlstate in TOO_BIG_SQLSTATES:
        return SinkError(FailureKind.TOO_BIG, f"[{sqlstate}] {message}")
    if sqlstate in TOO_SLOW_SQLSTATES:
        return SinkError(FailureKind.TOO_SLOW, f"[{sqlstate}] {message}")
    if sqlstate is None and isinstance(exc, psycopg.DataError | psycopg.ProgrammingError):
        return SinkError(FailureKind.PERMANENT, f"[client] {message}")  # refused before sending
    if sqlstate is None or sqlstate.startswith(OUTAGE_SQLSTATE_CLASSES):
        return SinkError(FailureKind.OUTAGE, f"[{sqlstate or 'connection'}] {message}")
    return SinkError(FailureKind.PERMANENT, f"[{sqlstate}] {message}")


class PostgresSink:
    name = "postgres"

    def __repr__(self) -> str:
        return f"PostgresSink({redact_url(self._url)!r}, timeout={self._timeout!r})"

    def __init__(self, database_url: str, *, timeout: float = 15.0) -> None:
        self._url = database_url
        self._timeout = timeout
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def write_batch(self, records: Sequence[SessionRecord], *, sync_source: str) -> WriteResult:
        with self._lock:
            return write_batch_splitting(records, lambda batch: self._send(batch, sync_source))

    def record_events(self, events: Sequence[SyncEvent]) -> None:
        if not events:
            return
        rows = [
            (
                e.event_type,
                e.gfx_pc_id,
                e.file_path,
                e.session_id,
                e.file_count,
                e.error,
                orjson.dumps(e.details).decode(),
            )
            for e in events
        ]
        with self._lock:
            try:
                self._run(
                    lambda conn: conn.cursor().executemany(
                        f"insert into public.{EVENTS_TABLE} (event_type, gfx_pc_id, file_path, "
                        "session_id, file_count, error, details) "
                        "values (%s, %s, %s, %s, %s, %s, %s::jsonb)",
                        rows,
                    )
                )
            except SinkError as error:
                log.warning("could not record %d sync events: %s", len(events), error)

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _send(self, records: Sequence[SessionRecord], sync_source: str) -> None:
        def copy_and_merge(conn: psycopg.Connection) -> None:
            conn.execute(
                f"create temporary table {INCOMING} "
                "(like public.gfx_sessions including defaults) on commit drop"
            )
            with conn.cursor().copy(
                f"copy {INCOMING} ({', '.join(SESSION_COLUMNS)}) from stdin"
            ) as copy:
                for record in records:
                    row = session_row(record, sync_source)
                    row["raw_json"] = record.raw_json.decode("utf-8")
                    copy.write_row([row[c] for c in SESSION_COLUMNS])
            conn.execute(upsert_sessions_sql(INCOMING))  # type: ignore[arg-type]

        self._run(copy_and_merge)

    def _run(self, work: object) -> None:
        """Run `work(conn)` in one transaction, bounded by a server and a client timeout."""
        conn = self._connection()
        watchdog = threading.Timer(self._timeout + 5.0, _shutdown_socket, args=(conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            with conn.transaction():
                conn.execute(f"set local statement_timeout = {int(self._timeout * 1000)}")
                work(conn)  # type: ignore[operator]
        except psycopg.Error as exc:
            if conn.broken or conn.closed or getattr(exc, "sqlstate", None) is None:
                self._drop_connection()
            raise classify_postgres_error(exc, self._url) from None
        finally:
            watchdog.cancel()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(
                    self._url,
                    connect_timeout=max(1, int(self._timeout)),
                    prepare_threshold=None,
                    application_name="gfx-sync",
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                )
            except psycopg.Error as exc:
                # Not connected: whatever the cause (down, refused, a bad connection string),
                # every record would fail alike, so it is an outage and never dead-letters.
                error = classify_postgres_error(exc, self._url)
                raise SinkError(FailureKind.OUTAGE, str(error)) from None
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def _shutdown_socket(conn: psycopg.Connection) -> None:
    """A server that accepted the connection and then hangs: cut the socket so the read fails."""
    try:
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
