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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import orjson
import psycopg
from psycopg import sql

from gfx_sync.compat import copy_then
from gfx_sync.pokergfx import SessionRecord
from gfx_sync.redact import redact_url, scrub
from gfx_sync.schema import (
    EVENTS_TABLE,
    SESSION_COLUMNS,
    SESSIONS_TABLE,
    session_row,
    upsert_sessions_sql,
)
from gfx_sync.settings import DEFAULT_SITE
from gfx_sync.sinks.base import (
    Delivery,
    FailureKind,
    PartialWriteError,
    SinkError,
    SyncEvent,
    WriteResult,
    batch_event,
    by_session,
    events_left_after,
    write_batch_splitting,
)

log = logging.getLogger(__name__)

INCOMING = "gfx_sessions_incoming"
OUTAGE_SQLSTATE_CLASSES = ("08", "25", "40", "42", "53", "55", "57", "58", "XX", "0A")
TOO_BIG_SQLSTATES = ("54000", "54001")  # program limits: the batch itself is too big
TOO_SLOW_SQLSTATES = ("57014",)  # statement timeout
PERMISSION_SQLSTATE = "42501"
# Said with every refusal: the login, not the data, is wrong, so the data waits in the queue.
PERMISSION_HINT = (
    "the login may not write this: check its grants; a per-site login writes only the sites "
    "gfx_sync_site_writers lists for it (GFX_SYNC_SITE)"
)
EVENTS_SAVEPOINT = "gfx_sync_events"
# A batch this big is split over the concurrent writes: one transaction per part, each on its
# own connection, so the database parses and compresses the parts' JSON on as many cores (its
# ingest is most of a batch's time). A smaller part is not worth its round trip.
SPLIT_MIN_BYTES = 1024 * 1024
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
    if sqlstate == PERMISSION_SQLSTATE:
        return SinkError(FailureKind.OUTAGE, f"[{sqlstate}] {message} ({PERMISSION_HINT})")
    if sqlstate is None or sqlstate.startswith(OUTAGE_SQLSTATE_CLASSES):
        return SinkError(FailureKind.OUTAGE, f"[{sqlstate or 'connection'}] {message}")
    return SinkError(FailureKind.PERMANENT, f"[{sqlstate}] {message}")


class PostgresSink:
    """One round trip per batch: a single simple-protocol query string holds BEGIN, the
    timeout, the temporary table, the COPY (its rows streamed in the same exchange), the merge,
    the batch's events under a savepoint, and COMMIT (`gfx_sync.compat.copy_then`). The events are
    inlined as literals for the same reason. The connection is in
    autocommit mode and each transaction is spelled out (BEGIN ... COMMIT), with
    `SET LOCAL statement_timeout` inside it: nothing is left on the session for a
    transaction pooler to hand to someone else.

    A big batch is split into up to `concurrent_writes` parts (`split_by_session`), written
    at once, each in its own transaction on a connection of its own (up to `concurrent_writes`
    are kept open between writes). Safe to call from several threads.

    Every row it writes (sessions and sync events) carries `site` (the agent's GFX_SYNC_SITE).
    """

    name = "postgres"

    def __repr__(self) -> str:
        return (
            f"PostgresSink({redact_url(self._url)!r}, timeout={self._timeout!r}, "
            f"site={self.site!r})"
        )

    def __init__(
        self,
        database_url: str,
        *,
        timeout: float = 15.0,
        concurrent_writes: int = 1,
        site: str = DEFAULT_SITE,
    ) -> None:
        self._url = database_url
        self.site = site
        self._timeout = timeout
        self.concurrent_writes = concurrent_writes
        self._idle: list[psycopg.Connection] = []  # connected, no transaction open
        self._idle_lock = threading.Lock()

    def write_batch(
        self,
        deliveries: Sequence[Delivery],
        *,
        sync_source: str,
        events: Sequence[SyncEvent] = (),
    ) -> WriteResult:
        """Each part's "batch" event rides in its transaction, and `events` in the first
        part's: what could not commit with its data (the transaction failed and was split, or
        the events insert failed) is recorded after the write, in one insert. A failure of the
        events insert never costs the data write. A part that raises (not a `SinkError`) leaves
        its deliveries without an outcome: `PartialWriteError` if other parts had one."""

        def write(part: list[Delivery], carried: Sequence[SyncEvent]) -> _PartWritten | Exception:
            try:
                return self._write_part(part, sync_source, carried)
            except Exception as exc:  # the other parts' commits must still be acknowledged
                return exc

        parts = split_by_session(deliveries, self.concurrent_writes)
        if len(parts) == 1:
            outcomes = [write(parts[0], events)]
        else:
            with ThreadPoolExecutor(len(parts) - 1, thread_name_prefix="gfx-write") as pool:
                others = [pool.submit(write, part, ()) for part in parts[1:]]
                outcomes = [write(parts[0], events), *(f.result() for f in others)]
        result = WriteResult()
        left: list[SyncEvent] = []
        raised: Exception | None = None
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, Exception):
                raised = raised or outcome
                if index == 0:  # its events went nowhere
                    left.extend(events)
                continue
            result.merge(outcome.result)
            left.extend(outcome.events_left)
        self.record_events(left)
        if raised is not None:
            if result.committed or result.failed:
                raise PartialWriteError(result, raised) from raised
            raise raised
        return result

    def _write_part(
        self, part: Sequence[Delivery], sync_source: str, events: Sequence[SyncEvent]
    ) -> _PartWritten:
        """One part in one transaction (more if it must split): its first request carries
        `events` and the part's "batch" event."""
        carried = [*events, batch_event(sync_source, len(part), 1)]
        recorded = False

        def send(batch: Sequence[SessionRecord]) -> None:
            nonlocal carried, recorded
            mine, carried = carried, []  # only the first request carries them
            recorded = self._send(batch, sync_source, mine) or recorded

        result = write_batch_splitting(part, send)
        return _PartWritten(
            result, [] if recorded else events_left_after(events, result, sync_source)
        )

    def record_events(self, events: Sequence[SyncEvent]) -> None:
        if not events:
            return
        try:
            self._run(
                lambda conn: conn.execute(
                    f"{self._begin()}{_events_sql(conn, events, self.site)}; commit"  # type: ignore[arg-type]
                )
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
            rows = (
                piece
                for r in records
                for piece in copy_text_pieces(session_row(r, sync_source, self.site), encoding)
            )
            if not events:
                copy_then(conn, head, rows, f"{merge}; commit")
                return False
            try:
                copy_then(
                    conn,
                    head,
                    rows,
                    f"{merge}; savepoint {EVENTS_SAVEPOINT}; "
                    f"{_events_sql(conn, events, self.site)}; "
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


@dataclass(frozen=True, slots=True)
class _PartWritten:
    result: WriteResult
    events_left: list[SyncEvent]  # what did not commit with the part's data


def split_by_session(deliveries: Sequence[Delivery], parts: int) -> list[list[Delivery]]:
    """Up to `parts` parts of about equal bytes (at least SPLIT_MIN_BYTES each), every snapshot
    of a session in the same part: two transactions never touch one row, so they never wait
    on each other, let alone deadlock, and each part keeps only its newest snapshot."""
    sessions = by_session(deliveries)
    total = sum(d.record.file_size for d in deliveries)
    parts = min(parts, len(sessions), total // SPLIT_MIN_BYTES)
    if parts <= 1:
        return [list(deliveries)]
    split: list[list[Delivery]] = [[] for _ in range(parts)]
    sizes = [0] * parts
    sized = [(sum(d.record.file_size for d in session), session) for session in sessions.values()]
    sized.sort(key=lambda entry: entry[0], reverse=True)
    for size, session in sized:  # largest first, each to the lightest part
        lightest = sizes.index(min(sizes))
        split[lightest].extend(session)
        sizes[lightest] += size
    return split


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


def copy_text_pieces(row: dict[str, object], encoding: str = "utf-8") -> list[bytes]:
    """A `session_row` as one line of COPY text, columns in SESSION_COLUMNS order, in pieces:
    the fields and their separators, not joined (a big file's JSON is not copied again)."""
    pieces: list[bytes] = []
    for column in SESSION_COLUMNS:
        pieces += (copy_text_field(row[column], encoding), b"\t")
    pieces[-1] = b"\n"
    return pieces


def _events_sql(conn: psycopg.Connection, events: Sequence[SyncEvent], site: str) -> str:
    """One INSERT of `events` at `site`, values inlined as literals (quoted by psycopg for
    `conn`)."""
    rows = sql.SQL(", ").join(
        sql.SQL("({}, {}, {}, {}, {}, {}, {}, {}::jsonb)").format(
            sql.Literal(site),
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
            "insert into public.{} (site_id, event_type, gfx_pc_id, file_path, session_id, "
            "file_count, error, details) values {}"
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
