"""Postgres sink: COPY a batch into a temporary table, then one INSERT ... ON CONFLICT.

Works through Supabase's transaction pooler: no prepared statements, no session state kept
between transactions (the temporary table is dropped at commit).
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TypeVar

import orjson
import psycopg
from psycopg import generators, pq, sql
from psycopg.abc import PQGen
from psycopg.pq.abc import PGresult
from psycopg.waiting import Wait

from gfx_sync.pokergfx import SessionRecord
from gfx_sync.redact import redact_url, scrub
from gfx_sync.schema import (
    EVENTS_TABLE,
    SESSION_COLUMNS,
    SESSIONS_TABLE,
    session_row,
    upsert_sessions_sql,
)
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
EVENTS_SAVEPOINT = "gfx_sync_events"
T = TypeVar("T")


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
    """One round trip per batch: a single simple-protocol query string holds BEGIN, the
    timeout, the temporary table, the COPY (its rows streamed in the same exchange), the merge,
    the batch's events under a savepoint, and COMMIT (`copy_in_one_query`). The events are
    inlined as literals for the same reason. The connection is in
    autocommit mode and each transaction is spelled out (BEGIN ... COMMIT), with
    `SET LOCAL statement_timeout` inside it: nothing is left on the session for a
    transaction pooler to hand to someone else.

    Safe to call from several threads: each write runs on a connection of its own (up to
    `concurrent_writes` are kept open between writes), so the engine can send the parts of a
    big batch at once.
    """

    name = "postgres"

    def __repr__(self) -> str:
        return f"PostgresSink({redact_url(self._url)!r}, timeout={self._timeout!r})"

    def __init__(
        self, database_url: str, *, timeout: float = 15.0, concurrent_writes: int = 1
    ) -> None:
        self._url = database_url
        self._timeout = timeout
        self.concurrent_writes = concurrent_writes
        self._idle: list[psycopg.Connection] = []  # connected, no transaction open
        self._idle_lock = threading.Lock()

    def write_batch(
        self,
        records: Sequence[SessionRecord],
        *,
        sync_source: str,
        events: Sequence[SyncEvent] = (),
    ) -> WriteResult:
        """`events` ride in the first (whole-batch) transaction; `events_recorded` says if they
        committed. A failure of the events insert never costs the data write."""
        recorded = False
        attach = list(events)

        def send(batch: Sequence[SessionRecord]) -> None:
            nonlocal recorded, attach
            mine, attach = attach, []  # only the first request carries them
            recorded = self._send(batch, sync_source, mine)

        result = write_batch_splitting(records, send)
        result.events_recorded = bool(events) and recorded and not result.failed
        return result

    def record_events(self, events: Sequence[SyncEvent]) -> None:
        if not events:
            return
        try:
            self._run(
                lambda conn: conn.execute(f"{self._begin()}{_events_sql(conn, events)}; commit")  # type: ignore[arg-type]
            )
        except SinkError as error:
            log.warning("could not record %d sync events: %s", len(events), error)

    def ping(self, *, timeout: float) -> bool:
        """Connect if need be and check that the table is there (a server without it, e.g. not
        migrated, is still down for us); the connection is kept for the next batch. Needs no
        privilege on the table."""
        try:
            conn = self._checkout(connect_timeout=timeout)
        except SinkError:
            return False
        watchdog = threading.Timer(timeout, shutdown_socket, args=(conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.execute(f"select 'public.{SESSIONS_TABLE}'::regclass")  # type: ignore[arg-type]
            return True
        except psycopg.Error:
            conn.close()
            return False
        finally:
            watchdog.cancel()
            self._checkin(conn)

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _begin(self) -> str:
        return f"begin; set local statement_timeout = {int(self._timeout * 1000)}; "

    def _send(
        self, records: Sequence[SessionRecord], sync_source: str, events: Sequence[SyncEvent]
    ) -> bool:
        """Upsert `records` in one transaction; True if `events` committed with them."""

        def copy_and_merge(conn: psycopg.Connection) -> bool:
            head = (
                self._begin() + f"create temporary table {INCOMING} "
                "(like public.gfx_sessions including defaults) on commit drop; "
                f"copy {INCOMING} ({', '.join(SESSION_COLUMNS)}) from stdin"
            )
            merge = upsert_sessions_sql(INCOMING)
            encoding = conn.info.encoding
            rows = (copy_text_row(session_row(r, sync_source), encoding) for r in records)
            if not events:
                copy_in_one_query(conn, head, rows, f"{merge}; commit")
                return False
            try:
                copy_in_one_query(
                    conn,
                    head,
                    rows,
                    f"{merge}; savepoint {EVENTS_SAVEPOINT}; {_events_sql(conn, events)}; "
                    f"release savepoint {EVENTS_SAVEPOINT}; commit",
                )
                return True
            except psycopg.Error as exc:
                if conn.broken or conn.closed or getattr(exc, "sqlstate", None) is None:
                    raise
                try:  # the merge got through and the events did not: keep the data
                    conn.execute(f"rollback to savepoint {EVENTS_SAVEPOINT}; commit")  # type: ignore[arg-type]
                except psycopg.Error:
                    raise exc from None  # the merge itself failed (no savepoint): as it was
                log.warning(
                    "could not record %d sync events with the batch: %s",
                    len(events),
                    classify_postgres_error(exc, self._url),
                )
                return False

        return self._run(copy_and_merge)

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work(conn)` (which BEGINs and COMMITs) on a connection of its own, bounded by
        a client-side watchdog; roll back whatever it left open."""
        conn = self._checkout()
        watchdog = threading.Timer(self._timeout + 5.0, shutdown_socket, args=(conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            return work(conn)
        except psycopg.Error as exc:
            if getattr(exc, "sqlstate", None) is None:
                conn.close()  # a client-side or connection error: the session state is unknown
            else:
                self._rollback(conn)
            raise classify_postgres_error(exc, self._url) from None
        except BaseException:
            conn.close()  # interrupted mid-transaction: never reuse that session
            raise
        finally:
            watchdog.cancel()
            self._checkin(conn)

    @staticmethod
    def _rollback(conn: psycopg.Connection) -> None:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            conn.execute("rollback")
        except psycopg.Error:
            conn.close()

    def _checkout(self, *, connect_timeout: float | None = None) -> psycopg.Connection:
        """An idle connection, or a new one: each concurrent write has its own session."""
        with self._idle_lock:
            while self._idle:
                conn = self._idle.pop()
                if not (conn.closed or conn.broken):
                    return conn
        seconds = min(self._timeout, connect_timeout or self._timeout)
        try:
            return psycopg.connect(
                self._url,
                autocommit=True,  # transactions are spelled out in the SQL (see class doc)
                connect_timeout=max(1, int(seconds)),
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

    def _checkin(self, conn: psycopg.Connection) -> None:
        """Keep a healthy connection for the next write (at most `concurrent_writes` kept)."""
        if conn.broken:
            conn.close()  # as a dropped session always was: its socket is freed now
        if conn.closed:
            return
        with self._idle_lock:
            if len(self._idle) < self.concurrent_writes:
                self._idle.append(conn)
                return
        conn.close()


COPY_CHUNK = 128 * 1024  # bytes handed to libpq at a time (psycopg's own COPY uses the same)
_COPY_ESCAPES = (  # COPY text format: what a field's bytes must not hold raw (as psycopg escapes)
    (b"\\", b"\\\\"),  # first: the escapes below add backslashes
    (b"\t", b"\\t"),
    (b"\n", b"\\n"),
    (b"\r", b"\\r"),
    (b"\b", b"\\b"),
    (b"\v", b"\\v"),
    (b"\f", b"\\f"),
)


def copy_text_field(value: object, encoding: str = "utf-8") -> bytes:
    """One value as a COPY text field in the connection's `encoding` (a Python codec name):
    None, str, bytes (UTF-8 text, e.g. the file's JSON as read: sent as is on a UTF-8
    connection, never decoded and re-encoded), int, or datetime (ISO 8601, as psycopg)."""
    if value is None:
        return b"\\N"
    if isinstance(value, bool):  # before int: bool is an int
        return b"t" if value else b"f"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, datetime):
        return value.isoformat().encode()
    if isinstance(value, str):
        data = value.encode(encoding)
    elif isinstance(value, bytes):
        data = value if codecs.lookup(encoding).name == "utf-8" else value.decode().encode(encoding)
    else:
        raise TypeError(f"no COPY text form for {type(value).__name__}")
    if b"\x00" in data:  # what psycopg's own COPY says, and where: before anything is sent
        raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    for raw, escaped in _COPY_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def copy_text_row(row: dict[str, object], encoding: str = "utf-8") -> bytes:
    """A `session_row` as one line of COPY text, columns in SESSION_COLUMNS order."""
    return b"\t".join([copy_text_field(row[c], encoding) for c in SESSION_COLUMNS]) + b"\n"


def copy_in_one_query(
    conn: psycopg.Connection, head: str, rows: Iterable[bytes], tail: str
) -> None:
    """`head` (ending in `COPY ... FROM STDIN`), the rows, then `tail`, in ONE simple-protocol
    query: the server runs the statements after the COPY as soon as the data ends, so a batch
    costs one round trip instead of one per statement group (psycopg's `cursor.copy()` takes a
    lone COPY only: start, data, end, then the next statement, each waiting for the server).

    Raises the first statement's error as psycopg would (with its SQLSTATE); a row that cannot
    be formatted (or any exception from `rows`) fails the COPY before its data ends, so
    nothing after it runs, and is re-raised.
    """
    pgconn = conn.pgconn
    encoding = conn.info.encoding
    with conn.lock:
        pgconn.send_query(f"{head}; {tail}".encode(encoding))
        started = conn.wait(generators.execute(pgconn))
        if not started or started[-1].status != pq.ExecStatus.COPY_IN:
            _raise_first_error(started, encoding)
            raise psycopg.ProgrammingError(f"no COPY in: {head[:80]!r}")
        try:
            chunk = bytearray()
            for row in rows:
                chunk += row
                if len(chunk) >= COPY_CHUNK:
                    conn.wait(generators.copy_to(pgconn, bytes(chunk)))
                    chunk.clear()
            if chunk:
                conn.wait(generators.copy_to(pgconn, bytes(chunk)))
        except BaseException as exc:
            with contextlib.suppress(psycopg.Error):  # the server's answer: "COPY canceled"
                message = f"error from Python: {type(exc).__qualname__}".encode()
                conn.wait(_copy_end_gen(pgconn, message))
            raise
        _raise_first_error(conn.wait(_copy_end_gen(pgconn, None)), encoding)


def _copy_end_gen(pgconn: psycopg.pq.abc.PGconn, error: bytes | None) -> PQGen[list[PGresult]]:
    """End (or fail) the COPY data and read every result left: the COPY's and the tail's."""
    while pgconn.put_copy_end(error) == 0:
        while not (yield Wait.W):
            continue
    while True:
        while not (yield Wait.W):
            continue
        if pgconn.flush() == 0:
            break
    return (yield from generators.fetch_many(pgconn))


def _raise_first_error(results: Sequence[PGresult], encoding: str) -> None:
    for result in results:
        if result.status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.NONFATAL_ERROR):
            raise psycopg.errors.error_from_result(result, encoding=encoding)


def _events_sql(conn: psycopg.Connection, events: Sequence[SyncEvent]) -> str:
    """One INSERT of `events`, values inlined as literals (quoted by psycopg for `conn`)."""
    rows = sql.SQL(", ").join(
        sql.SQL("({}, {}, {}, {}, {}, {}, {}::jsonb)").format(
            sql.Literal(e.event_type),
            sql.Literal(e.gfx_pc_id),
            sql.Literal(e.file_path),
            sql.Literal(e.session_id),
            sql.Literal(e.file_count),
            sql.Literal(e.error),
            sql.Literal(orjson.dumps(e.details, default=str).decode()),
        )
        for e in events
    )
    return (
        sql.SQL(
            "insert into public.{} (event_type, gfx_pc_id, file_path, session_id, file_count, "
            "error, details) values {}"
        )
        .format(sql.Identifier(EVENTS_TABLE), rows)
        .as_string(conn)
    )


def shutdown_socket(conn: psycopg.Connection) -> None:
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
