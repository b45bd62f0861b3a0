"""The durable local queue: every detected file change is written here before anything else.

One SQLite file (WAL, synchronous=FULL) shared by the watcher, the realtime run and the batch
run, which are separate processes. An item moves pending -> inflight -> done; a failed try goes
back to pending with its error and a later due time; an item that cannot succeed ends dead
(dead-lettered) or quarantined with its reason. Only done rows are ever deleted (after RETENTION):
an acknowledgement means the target committed the content, nothing else does.

Claiming takes SQLite's write lock up front (BEGIN IMMEDIATE), so two processes never claim the
same item. A claim is a lease: if the claimer dies, the item is claimable again once the lease
has run out.

Rules that keep a change from being lost or overwritten by older bytes:

* At most one PENDING item per path (a unique partial index). Enqueueing a path that has one
  coalesces into it; enqueueing a path whose item is INFLIGHT adds a new pending item, because
  the in-flight reader may have read older bytes.
* A path is handled by one claimer at a time: claim skips items whose path is inflight under a
  live lease, and never returns two items of one path. So newer content is always written
  after older content, and no batch carries the same file twice.
* ack / release / dead_letter / quarantine act only on INFLIGHT rows and are not fenced by
  worker. A late call for a row that is no longer inflight (e.g. already acknowledged by whoever
  re-claimed it after its lease expired) is ignored. The worst this can do is repeat work: any
  content change during a claim has its own pending item, which these calls never touch.
"""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

_T = TypeVar("_T")

SCHEMA_VERSION = 2  # 2: `origin` split from `kind`
BUSY_TIMEOUT_SECONDS = 30.0
_MAX_BACKOFF_EXPONENT = 62  # 2**62 * any sane initial is far beyond any cap; avoids overflow


class ChangeKind(StrEnum):
    """What happened to the file, as far as whoever noticed it can tell."""

    ADDED = "added"  # a file not seen before
    MODIFIED = "modified"


class Origin(StrEnum):
    """Who noticed the change."""

    WATCH = "watch"  # the watcher: an event, a polled file's second look, its own rescans
    RESCAN = "rescan"  # the recovery flow or the standby drainer walking the folders
    BACKFILL = "backfill"
    MANUAL = "manual"  # `gfx-sync sync`


@dataclass(frozen=True, slots=True)
class Lane:
    """A set of items a drain takes: those whose kind and origin are both in the given sets
    (None: any)."""

    kinds: frozenset[ChangeKind] | None = None
    origins: frozenset[Origin] | None = None

    def sql(self) -> tuple[str, list[str]]:
        clauses, params = [], []
        for column, values in (("kind", self.kinds), ("origin", self.origins)):
            if values is not None:
                clauses.append(f"c.{column} IN ({', '.join('?' * len(values))})")
                params.extend(sorted(v.value for v in values))
        return " AND ".join(clauses) or "1", params


# Files the watcher saw appear: the realtime run's, and left to it for a grace period.
REALTIME_LANE = Lane(frozenset({ChangeKind.ADDED}), frozenset({Origin.WATCH}))


class ItemState(StrEnum):
    PENDING = "pending"
    INFLIGHT = "inflight"
    DONE = "done"
    DEAD = "dead"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: int
    pc_id: str
    path: str
    kind: ChangeKind
    size: int | None
    mtime: float | None
    attempts: int
    enqueued_at: float
    last_error: str | None
    origin: Origin = Origin.WATCH


@dataclass(frozen=True, slots=True)
class NewChange:
    """Input for enqueue_many."""

    pc_id: str
    path: str
    kind: ChangeKind
    size: int | None = None
    mtime: float | None = None
    origin: Origin = Origin.WATCH


@dataclass(frozen=True, slots=True)
class FileState:
    """What was last synced (or quarantined) for a path, so rescans skip unchanged files."""

    path: str
    pc_id: str
    size: int
    mtime: float
    file_hash: str
    outcome: str
    recorded_at: float


@dataclass(frozen=True, slots=True)
class SyncedFile:
    """Input for ack_synced: a committed item and the file content the target now holds."""

    item_id: int
    path: str
    pc_id: str
    size: int
    mtime: float
    file_hash: str


@dataclass(frozen=True, slots=True)
class SyncedLogRow:
    """One committed file: `latency` = seconds from its change's first enqueue to the ack."""

    id: int
    finished_at: float
    pc_id: str
    path: str
    source: str
    origin: str
    kind: str
    size: int
    latency: float


@dataclass(frozen=True, slots=True)
class WriteLogRow:
    """One committed batch: how many files and bytes, and the sink's write time."""

    id: int
    finished_at: float
    source: str
    files: int
    bytes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class PcSummary:
    """One PC as the queue knows it."""

    pc_id: str
    files_synced: int  # paths whose last outcome is synced
    last_sync_at: float | None
    newest_path: str | None  # the synced file with the latest mtime
    pending: int
    oldest_pending_at: float | None  # enqueue time of its oldest pending change


@dataclass(frozen=True, slots=True)
class Release:
    """Input for release_many (see release)."""

    item_id: int
    error: str | None
    delay: float
    count_attempt: bool = True


@dataclass(frozen=True, slots=True)
class QueueStats:
    pending: int
    due: int  # pending items due now
    inflight: int
    done: int
    dead: int
    quarantined: int
    oldest_pending_age: float | None  # seconds since the oldest pending item was first enqueued
    pending_by_pc: dict[str, int]
    expired_leases: int = 0  # inflight items whose claimer missed its lease (crashed?)


@dataclass(frozen=True, slots=True)
class ItemDetail:
    """Everything about one row, for inspection and tests."""

    item: QueueItem
    state: ItemState
    next_attempt_at: float
    claimed_by: str | None
    lease_until: float | None
    updated_at: float
    finished_at: float | None


class QueueError(Exception):
    """A queue operation failed; nothing of it was written. The message names the queue file."""


class QueueDiskFullError(QueueError):
    """The disk holding the queue is full (SQLITE_FULL): new changes cannot be recorded."""


def backoff_delay(
    attempts: int, initial: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before try number `attempts` + 1: capped exponential with half jitter.

    nominal = min(cap, initial * 2 ** (attempts - 1)), scaled by uniform(0.5, 1.0). The jitter
    spreads processes that failed together so they do not retry in lockstep; keeping at least
    half the nominal delay (unlike full jitter, which can return ~0) stops a failing target from
    being hammered. attempts < 1 counts as 1. The result is always in (0, cap].
    """
    if not initial > 0 or not cap > 0:
        raise ValueError(f"backoff needs initial > 0 and cap > 0, got {initial!r}, {cap!r}")
    exponent = min(max(attempts, 1) - 1, _MAX_BACKOFF_EXPONENT)
    nominal = min(cap, initial * 2.0**exponent)
    return nominal * (rng or random).uniform(0.5, 1.0)


_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pc_id TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        origin TEXT NOT NULL DEFAULT 'watch',
        size INTEGER,
        mtime REAL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        claimed_by TEXT,
        lease_until REAL,
        finished_at REAL,
        last_error TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS items_claim ON items (state, next_attempt_at, id)",
    "CREATE INDEX IF NOT EXISTS items_path ON items (path, state)",
    # Done rows are pruned by age (RETENTION): found by this index, not by a scan.
    "CREATE INDEX IF NOT EXISTS items_done ON items (finished_at) WHERE state = 'done'",
    # The coalescing rule, enforced: a second pending row for a path is a bug, not a state.
    "CREATE UNIQUE INDEX IF NOT EXISTS items_one_pending_per_path ON items (path) "
    "WHERE state = 'pending'",
    """
    CREATE TABLE IF NOT EXISTS file_state (
        path TEXT PRIMARY KEY,
        pc_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime REAL NOT NULL,
        file_hash TEXT NOT NULL,
        outcome TEXT NOT NULL,
        recorded_at REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS file_state_pc ON file_state (pc_id)",
    # What committed and how fast, for operators (the console, the metrics): one row per
    # file and one per batch, written in the acknowledging transaction, kept RETENTION.
    """
    CREATE TABLE IF NOT EXISTS synced_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        finished_at REAL NOT NULL,
        pc_id TEXT NOT NULL,
        path TEXT NOT NULL,
        source TEXT NOT NULL,
        origin TEXT NOT NULL,
        kind TEXT NOT NULL,
        size INTEGER NOT NULL,
        latency REAL NOT NULL
    )
    """,
    # Covering: the console's per-window counts and bytes read the index alone.
    "CREATE INDEX IF NOT EXISTS synced_log_finished_size ON synced_log (finished_at, size)",
    "DROP INDEX IF EXISTS synced_log_finished",
    """
    CREATE TABLE IF NOT EXISTS writes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        finished_at REAL NOT NULL,
        source TEXT NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        seconds REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS writes_finished ON writes (finished_at)",
)
# Seconds done items and the synced_log / writes rows are kept (the console's day window, and
# more): pruned as each batch is acknowledged, so a queue that keeps working stays bounded.
RETENTION = 2 * 86400.0
_SYNCED_LOG_COLUMNS = "id, finished_at, pc_id, path, source, origin, kind, size, latency"
_WRITES_COLUMNS = "id, finished_at, source, files, bytes, seconds"

_ITEM_COLUMNS = "id, pc_id, path, kind, size, mtime, attempts, enqueued_at, last_error, origin"
_DETAIL_COLUMNS = (
    f"{_ITEM_COLUMNS}, state, next_attempt_at, claimed_by, lease_until, updated_at, finished_at"
)
_FILE_STATE_COLUMNS = "path, pc_id, size, mtime, file_hash, outcome, recorded_at"

_UPSERT_FILE_STATE = (
    f"INSERT INTO file_state ({_FILE_STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (path) DO UPDATE SET pc_id = excluded.pc_id, size = excluded.size, "
    "mtime = excluded.mtime, file_hash = excluded.file_hash, "
    "outcome = excluded.outcome, recorded_at = excluded.recorded_at"
)


def _item(row: tuple) -> QueueItem:
    return QueueItem(
        id=row[0],
        pc_id=row[1],
        path=row[2],
        kind=ChangeKind(row[3]),
        size=row[4],
        mtime=row[5],
        attempts=row[6],
        enqueued_at=row[7],
        last_error=row[8],
        origin=Origin(row[9]),
    )


def _detail(row: tuple) -> ItemDetail:
    return ItemDetail(
        item=_item(row[:10]),
        state=ItemState(row[10]),
        next_attempt_at=row[11],
        claimed_by=row[12],
        lease_until=row[13],
        updated_at=row[14],
        finished_at=row[15],
    )


def _prune(conn: sqlite3.Connection, before: float) -> int:
    """Drop done items and log rows finished before `before`; returns the items dropped."""
    for log_table in ("synced_log", "writes"):
        conn.execute(f"DELETE FROM {log_table} WHERE finished_at < ?", (before,))
    return conn.execute(
        "DELETE FROM items WHERE state = 'done' AND finished_at < ?", (before,)
    ).rowcount


def _file_state(row: tuple) -> FileState:
    return FileState(*row)


def _merged(old: tuple[str, str], new: tuple[str, str]) -> tuple[str, str]:
    """(kind, origin) of two changes to one path coalesced: the newer one's, except that a
    change in the realtime lane stays there (the realtime run must still pick the file up)."""
    realtime = (ChangeKind.ADDED.value, Origin.WATCH.value)
    return realtime if realtime in (tuple(old), tuple(new)) else new


def _translate(path: Path, exc: sqlite3.Error, what: str) -> QueueError:
    text = str(exc)
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in text:
        return QueueDiskFullError(
            f"durable queue {path}: DISK FULL, could not {what} ({text}). Nothing of it was "
            f"written; what the queue held before is intact. Free space on the disk holding "
            f"{path.parent}: until then no new change can be recorded."
        )
    return QueueError(f"durable queue {path}: could not {what}: {type(exc).__name__}: {text}")


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """SQLite may already have rolled back (e.g. on SQLITE_FULL); never mask the first error."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _due_query(
    now: float, lanes: Collection[Lane] | None, added_grace: float | None
) -> tuple[str, list[object]]:
    """Items `claim` may take: due pending ones, or in flight under an expired lease, in one
    of `lanes` (any, if None), whose path is not in flight under a live lease. The condition
    and its parameters."""
    params: list[object] = [now, now]
    lane_clause = ""
    if lanes is not None:
        parts = []
        for lane in lanes:
            clause, values = lane.sql()
            parts.append(f"({clause})")
            params.extend(values)
        lane_clause = f"AND ({' OR '.join(parts)})"
    grace_clause = ""
    if added_grace is not None:
        grace_clause = "AND (NOT (c.kind = 'added' AND c.origin = 'watch') OR c.enqueued_at <= ?)"
        params.append(now - added_grace)
    params.append(now)
    condition = f"""((c.state = 'pending' AND c.next_attempt_at <= ?)
                   OR (c.state = 'inflight' AND c.lease_until <= ?))
              {lane_clause}
              {grace_clause}
              AND NOT EXISTS (
                  SELECT 1 FROM items AS busy
                  WHERE busy.path = c.path AND busy.state = 'inflight' AND busy.lease_until > ?)"""
    return condition, params


def _enable_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL; the resulting journal mode. Connections making a new file at once can be
    refused at once ("database is locked") here: SQLite does not wait on its busy handler for
    this switch. Such refusals are retried until the busy timeout, like any other lock wait."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.02))


class _Kept(NamedTuple):
    """A read's answer, kept while the queue's data stays at `version` and the time of asking
    stays within [asked_at, valid_until] (the answer of a read that counts within a window of
    time changes when a row leaves the window, without any write)."""

    version: tuple[int, int]
    asked_at: float
    valid_until: float
    answer: Any


class DurableQueue:
    """The queue file, through one connection. Thread-safe (one lock), process-safe (SQLite).

    Reads that operators' views repeat every few seconds (`synced_within`, `last_commit_at`,
    `pc_summaries`, `unresolved_failures`) are kept until the data changes (`version`), so a
    queue that stands still is read once."""

    def __init__(
        self,
        path: Path,
        *,
        lease_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        self.path = Path(path)
        self.lease_seconds = float(lease_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[Hashable, _Kept] = {}
        self._conn: sqlite3.Connection | None = self._open()

    # -- opening and closing --------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QueueError(f"durable queue {self.path}: cannot create its folder: {exc}") from exc
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock
            )
        except sqlite3.Error as exc:
            raise _translate(self.path, exc, "open it") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            mode = _enable_wal(conn)
            if str(mode).lower() != "wal":
                raise QueueError(
                    f"durable queue {self.path}: SQLite refused WAL mode (got {mode!r}); keep the "
                    "queue on a local disk, not a network share"
                )
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA journal_size_limit = 67108864")  # keep the WAL file bounded
            self._create_schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(self.path, exc, "open it") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Idempotent, and safe when several processes open a new file at once."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise QueueError(
                    f"durable queue {self.path}: schema version {version} is newer than this "
                    f"gfx-sync understands ({SCHEMA_VERSION}); upgrade gfx-sync"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
            if "origin" not in columns:  # a version 1 queue: kind held the origin too
                conn.execute("ALTER TABLE items ADD COLUMN origin TEXT NOT NULL DEFAULT 'watch'")
                conn.execute(
                    "UPDATE items SET origin = kind, kind = 'modified' "
                    "WHERE kind IN ('rescan', 'backfill', 'manual')"
                )
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            raise

    def close(self) -> None:
        """Idempotent. Later calls on this queue raise QueueError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DurableQueue({str(self.path)!r})"

    # -- transactions ---------------------------------------------------------------------

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QueueError(f"durable queue {self.path}: closed")
        return self._conn

    @contextmanager
    def _transaction(self, what: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """All or nothing. Writers take the write lock first, so read-then-write is atomic
        across processes; readers get one consistent snapshot."""
        with self._lock:
            conn = self._require_open()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback_quietly(conn)
                raise _translate(self.path, exc, what) from exc
            except BaseException:
                _rollback_quietly(conn)
                raise

    def version(self) -> tuple[int, int]:
        """Changes whenever the queue's data may have changed: a commit by any other connection
        (another process: SQLite's data_version) or a row changed through this one. Equal
        versions: what was read from the queue still holds."""
        with self._lock:
            conn = self._require_open()
            try:
                (others,) = conn.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error as exc:
                raise _translate(self.path, exc, "read the data version") from exc
            return others, conn.total_changes

    def _kept_read(self, key: Hashable, read: Callable[[float], tuple[_T, float]]) -> _T:
        """`read(now)` returns an answer and the time until which it holds if nothing is
        written (math.inf: until a write). The answer is shared: callers must not change it.
        The version is taken before reading, so a write that races the read only makes the
        next call read again."""
        version, now = self.version(), self._clock()
        kept = self._kept.get(key)
        if kept and kept.version == version and kept.asked_at <= now <= kept.valid_until:
            return kept.answer
        answer, valid_until = read(now)
        self._kept[key] = _Kept(version, now, valid_until, answer)
        return answer

    def _set_max_pages_for_tests(self, pages: int) -> None:
        """Simulate a full disk: SQLite answers SQLITE_FULL once the file would outgrow this."""
        with self._lock:
            self._require_open().execute(f"PRAGMA max_page_count = {int(pages)}")

    def _page_count_for_tests(self) -> int:
        with self._lock:
            return self._require_open().execute("PRAGMA page_count").fetchone()[0]

    # -- recording changes ----------------------------------------------------------------

    def enqueue(
        self,
        pc_id: str,
        path: str,
        kind: ChangeKind,
        size: int | None = None,
        mtime: float | None = None,
        origin: Origin = Origin.WATCH,
    ) -> int:
        """Record one change; returns the id of the pending item that now carries it."""
        return self.enqueue_many([NewChange(pc_id, path, kind, size, mtime, origin)])[0]

    def enqueue_many(self, changes: Iterable[NewChange]) -> list[int]:
        """Record changes in one transaction (all or none); one id per change, in order.

        A path with a pending item coalesces into it (see _enqueue_one), so repeated changes to
        one file, even within this batch, leave one pending item.
        """
        batch = [replace(c, kind=ChangeKind(c.kind), origin=Origin(c.origin)) for c in changes]
        if not batch:
            return []
        with self._transaction(f"enqueue {len(batch)} change(s)", write=True) as conn:
            now = self._clock()
            return [self._enqueue_one(conn, change, now) for change in batch]

    @staticmethod
    def _enqueue_one(conn: sqlite3.Connection, change: NewChange, now: float) -> int:
        row = conn.execute(
            "SELECT id, kind, origin, size, mtime FROM items WHERE path = ? AND state = 'pending'",
            (change.path,),
        ).fetchone()
        if row is None:
            cursor = conn.execute(
                "INSERT INTO items (pc_id, path, kind, origin, size, mtime, state, attempts, "
                "enqueued_at, updated_at, next_attempt_at) "
                "VALUES (:pc_id, :path, :kind, :origin, :size, :mtime, 'pending', 0, :now, :now, "
                ":now)",
                {
                    "pc_id": change.pc_id,
                    "path": change.path,
                    "kind": change.kind.value,
                    "origin": change.origin.value,
                    "size": change.size,
                    "mtime": change.mtime,
                    "now": now,
                },
            )
            return int(cursor.lastrowid or 0)
        item_id, old_kind, old_origin, old_size, old_mtime = row
        kind, origin = _merged((old_kind, old_origin), (change.kind.value, change.origin.value))
        if (old_size, old_mtime) != (change.size, change.mtime):
            # New content deserves a fresh try, whatever the old content's backoff was.
            conn.execute(
                "UPDATE items SET pc_id = ?, kind = ?, origin = ?, size = ?, mtime = ?, "
                "attempts = 0, next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (change.pc_id, kind, origin, change.size, change.mtime, now, now, item_id),
            )
        else:
            conn.execute(
                "UPDATE items SET pc_id = ?, kind = ?, origin = ?, updated_at = ? WHERE id = ?",
                (change.pc_id, kind, origin, now, item_id),
            )
        return int(item_id)

    # -- claiming and settling ------------------------------------------------------------

    def claim(
        self,
        limit: int,
        *,
        worker: str,
        max_bytes: int | None = None,
        lanes: Collection[Lane] | None = None,
        added_grace: float | None = None,
    ) -> list[QueueItem]:
        """Lease up to `limit` due items (and, with max_bytes, at most that many bytes, but at
        least one item) to `worker`, oldest due first.

        Due means pending with next_attempt_at <= now, or inflight with an expired lease (its
        claimer died or hung). Re-claiming an expired lease counts an attempt and says so in
        last_error, so a file that kills its reader is visible and cannot loop unnoticed.
        Items whose path is inflight under a live lease wait (one claimer per path).
        With `added_grace`, items in the realtime lane are left alone until they are that many
        seconds old: the realtime path has them first, a sweeper only takes what it missed.
        """
        if limit <= 0 or (lanes is not None and not lanes):
            return []
        with self._transaction(f"claim items for {worker}", write=True) as conn:
            now = self._clock()
            condition, params = _due_query(now, lanes, added_grace)
            sql = f"""
                SELECT {", ".join("c." + col for col in _ITEM_COLUMNS.split(", "))},
                       c.state, c.claimed_by
                FROM items AS c
                WHERE {condition}
                ORDER BY c.next_attempt_at, c.id
            """
            chosen: list[QueueItem] = []
            paths: set[str] = set()
            total = 0
            cursor = conn.execute(sql, params)
            try:
                for row in cursor:
                    if len(chosen) >= limit:
                        break
                    item = _item(row)
                    if item.path in paths:
                        continue  # the older item of this path goes first, alone
                    size = item.size or 0
                    if chosen and max_bytes is not None and total + size > max_bytes:
                        break
                    if row[-2] == ItemState.INFLIGHT:
                        item = replace(
                            item,
                            attempts=item.attempts + 1,
                            last_error=f"lease of {row[-1]} expired before it settled the item",
                        )
                    chosen.append(item)
                    paths.add(item.path)
                    total += size
            finally:
                cursor.close()
            conn.executemany(
                "UPDATE items SET state = 'inflight', claimed_by = ?, lease_until = ?, "
                "updated_at = ?, attempts = ?, last_error = ? WHERE id = ?",
                [
                    (worker, now + self.lease_seconds, now, i.attempts, i.last_error, i.id)
                    for i in chosen
                ],
            )
        return chosen

    def has_due(
        self, *, lanes: Collection[Lane] | None = None, added_grace: float | None = None
    ) -> bool:
        """Whether `claim` with these filters would find anything now (a cheap look)."""
        if lanes is not None and not lanes:
            return False
        with self._transaction("look for due items", write=False) as conn:
            condition, params = _due_query(self._clock(), lanes, added_grace)
            sql = f"SELECT 1 FROM items AS c WHERE {condition} LIMIT 1"
            return conn.execute(sql, params).fetchone() is not None

    def oldest_due_age(self) -> float | None:
        """Seconds the longest-waiting due pending item has been due (None: nothing due).
        Every try moves an item's due time on, so this grows only while nobody drains."""
        with self._transaction("read the oldest due item", write=False) as conn:
            now = self._clock()
            (oldest,) = conn.execute(
                "SELECT min(next_attempt_at) FROM items "
                "WHERE state = 'pending' AND next_attempt_at <= ?",
                (now,),
            ).fetchone()
        return None if oldest is None else now - oldest

    def live_claimers(self) -> set[str]:
        """Workers holding an unexpired lease (the engine checks whether they still exist)."""
        with self._transaction("read claimers", write=False) as conn:
            rows = conn.execute(
                "SELECT DISTINCT claimed_by FROM items "
                "WHERE state = 'inflight' AND lease_until > ? AND claimed_by IS NOT NULL",
                (self._clock(),),
            ).fetchall()
        return {row[0] for row in rows}

    def expire_leases(self, workers: Collection[str], reason: str) -> int:
        """End the leases of `workers` now (they are known dead): their items are claimable
        at once, by the same path as an expired lease (an attempt counted). Returns how many."""
        if not workers:
            return 0
        marks = ", ".join("?" * len(workers))
        with self._transaction("expire leases", write=True) as conn:
            now = self._clock()
            cursor = conn.execute(
                f"UPDATE items SET lease_until = ?, last_error = ?, updated_at = ? "
                f"WHERE state = 'inflight' AND lease_until > ? AND claimed_by IN ({marks})",
                (now, reason, now, now, *workers),
            )
            return cursor.rowcount

    def ack(self, item_ids: Iterable[int]) -> None:
        """inflight -> done: the target committed these. Rows not inflight are left alone."""
        ids = [int(i) for i in item_ids]
        if not ids:
            return
        with self._transaction(f"acknowledge {len(ids)} item(s)", write=True) as conn:
            now = self._clock()
            conn.executemany(
                "UPDATE items SET state = 'done', finished_at = ?, updated_at = ?, "
                "lease_until = NULL WHERE id = ? AND state = 'inflight'",
                [(now, now, i) for i in ids],
            )

    def ack_synced(
        self,
        synced: Iterable[SyncedFile],
        *,
        source: str = "",
        write_seconds: float | None = None,
    ) -> None:
        """ack plus record_file_state for a whole batch in ONE transaction: one fsync per batch
        instead of one per file, and never an acknowledged item without its file state.
        The same transaction logs each file (and, given `write_seconds`, the batch) for
        operators, and drops done items and log rows older than RETENTION."""
        files = list(synced)
        if not files:
            return
        with self._transaction(f"acknowledge {len(files)} synced item(s)", write=True) as conn:
            now = self._clock()
            conn.executemany(
                "INSERT INTO synced_log (finished_at, pc_id, path, source, origin, kind, size, "
                "latency) SELECT ?, pc_id, path, ?, origin, kind, ?, max(0.0, ? - enqueued_at) "
                "FROM items WHERE id = ? AND state = 'inflight'",
                [(now, source, f.size, now, f.item_id) for f in files],
            )
            if write_seconds is not None:
                conn.execute(
                    "INSERT INTO writes (finished_at, source, files, bytes, seconds) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (now, source, len(files), sum(f.size for f in files), write_seconds),
                )
            _prune(conn, now - RETENTION)
            conn.executemany(
                "UPDATE items SET state = 'done', finished_at = ?, updated_at = ?, "
                "lease_until = NULL WHERE id = ? AND state = 'inflight'",
                [(now, now, f.item_id) for f in files],
            )
            conn.executemany(
                _UPSERT_FILE_STATE,
                [(f.path, f.pc_id, f.size, f.mtime, f.file_hash, "synced", now) for f in files],
            )

    def release(
        self, item_id: int, *, error: str | None, delay: float, count_attempt: bool = True
    ) -> None:
        """inflight -> pending, due again `delay` seconds from now (error None keeps the old one).

        If the path meanwhile got a pending item (a newer change), that item carries on
        instead: it takes the error (and ADDED, if this one was), keeps its own fresh attempts
        and due time, and this row is retired as done ("superseded"), nothing being left behind.
        """
        self.release_many([Release(item_id, error, delay, count_attempt)])

    def release_many(self, releases: Iterable[Release]) -> None:
        """release for several items in one transaction (one fsync: an outage releases a whole
        batch at once)."""
        batch = list(releases)
        if not batch:
            return
        with self._transaction(f"release {len(batch)} item(s)", write=True) as conn:
            now = self._clock()
            for release in batch:
                self._release_one(conn, release, now)

    def _release_one(self, conn: sqlite3.Connection, release: Release, now: float) -> None:
        item_id, error = release.item_id, release.error
        row = conn.execute(
            "SELECT path, kind, origin FROM items WHERE id = ? AND state = 'inflight'", (item_id,)
        ).fetchone()
        if row is None:
            return
        path, kind, origin = row
        newer = conn.execute(
            "SELECT id, kind, origin FROM items WHERE path = ? AND state = 'pending'", (path,)
        ).fetchone()
        if newer is not None:
            conn.execute(
                "UPDATE items SET kind = ?, origin = ?, last_error = COALESCE(?, last_error), "
                "updated_at = ? WHERE id = ?",
                (*_merged((newer[1], newer[2]), (kind, origin)), error, now, newer[0]),
            )
            self._retire_superseded(conn, item_id, newer[0], error, now)
            return
        conn.execute(
            "UPDATE items SET state = 'pending', attempts = attempts + ?, "
            "next_attempt_at = ?, last_error = COALESCE(?, last_error), claimed_by = NULL, "
            "lease_until = NULL, updated_at = ? WHERE id = ?",
            (
                1 if release.count_attempt else 0,
                now + max(0.0, release.delay),
                error,
                now,
                item_id,
            ),
        )

    def expedite(self, item_ids: Iterable[int]) -> None:
        """Make these pending items due now (the target they waited for is back). Items no
        longer pending, or already due, are left alone."""
        ids = [int(i) for i in item_ids]
        if not ids:
            return
        with self._transaction(f"expedite {len(ids)} item(s)", write=True) as conn:
            now = self._clock()
            conn.executemany(
                "UPDATE items SET next_attempt_at = ?, updated_at = ? "
                "WHERE id = ? AND state = 'pending' AND next_attempt_at > ?",
                [(now, now, i, now) for i in ids],
            )

    @staticmethod
    def _retire_superseded(
        conn: sqlite3.Connection, item_id: int, by_id: int, error: str | None, now: float
    ) -> None:
        note = f"superseded by item {by_id}" + (f" after: {error}" if error else "")
        conn.execute(
            "UPDATE items SET state = 'done', finished_at = ?, updated_at = ?, lease_until = NULL, "
            "last_error = ? WHERE id = ?",
            (now, now, note, item_id),
        )

    def dead_letter(self, item_id: int, reason: str) -> None:
        """inflight -> dead, with the reason. Kept until requeued; never pruned."""
        self._finish(item_id, ItemState.DEAD, reason)

    def quarantine(self, item_id: int, reason: str) -> None:
        """inflight -> quarantined (the file itself was copied aside by the caller)."""
        self._finish(item_id, ItemState.QUARANTINED, reason)

    def _finish(self, item_id: int, state: ItemState, reason: str) -> None:
        with self._transaction(f"mark item {item_id} {state}", write=True) as conn:
            now = self._clock()
            conn.execute(
                "UPDATE items SET state = ?, last_error = ?, finished_at = ?, updated_at = ?, "
                "lease_until = NULL WHERE id = ? AND state = 'inflight'",
                (state.value, reason, now, now, item_id),
            )

    def requeue(
        self,
        states: Collection[ItemState] = (ItemState.DEAD,),
        *,
        pc_id: str | None = None,
        item_ids: Collection[int] | None = None,
    ) -> int:
        """Give items in `states` (default: dead) a fresh start: pending, attempts 0, due now.

        last_error is kept until the next try replaces it. A path that already has a pending
        item coalesces into it (made due now, attempts 0) and the requeued row is retired as
        done ("superseded"). INFLIGHT cannot be requeued: a claimer holds it. `pc_id` and
        `item_ids` narrow it down. Returns how many items were requeued.
        """
        wanted = {ItemState(s) for s in states}
        if ItemState.INFLIGHT in wanted:
            raise ValueError("inflight items belong to their claimer; they return when it fails")
        if not wanted:
            return 0
        marks = ", ".join("?" * len(wanted))
        where = f"state IN ({marks})" + (" AND pc_id = ?" if pc_id is not None else "")
        params: list[object] = [s.value for s in wanted] + ([pc_id] if pc_id is not None else [])
        if item_ids is not None:
            ids = sorted({int(i) for i in item_ids})
            if not ids:
                return 0
            where += f" AND id IN ({', '.join('?' * len(ids))})"
            params.extend(ids)
        with self._transaction("requeue items", write=True) as conn:
            now = self._clock()
            rows = conn.execute(
                f"SELECT id, path, kind, origin, state FROM items WHERE {where} ORDER BY id",
                params,
            ).fetchall()
            for item_id, path, kind, origin, state in rows:
                pending = conn.execute(
                    "SELECT id, kind, origin FROM items WHERE path = ? AND state = 'pending'",
                    (path,),
                ).fetchone()
                if pending is None or pending[0] == item_id:
                    conn.execute(
                        "UPDATE items SET state = 'pending', attempts = 0, next_attempt_at = ?, "
                        "claimed_by = NULL, lease_until = NULL, finished_at = NULL, "
                        "updated_at = ? WHERE id = ?",
                        (now, now, item_id),
                    )
                    continue
                conn.execute(
                    "UPDATE items SET kind = ?, origin = ?, attempts = 0, next_attempt_at = ?, "
                    "updated_at = ? WHERE id = ?",
                    (*_merged((pending[1], pending[2]), (kind, origin)), now, now, pending[0]),
                )
                if state != ItemState.DONE:
                    self._retire_superseded(conn, item_id, pending[0], None, now)
            return len(rows)

    # -- inspection -----------------------------------------------------------------------

    def items(self, state: ItemState | None = None, *, limit: int = 1000) -> list[QueueItem]:
        """Items (in `state`, or all), oldest first."""
        with self._transaction("list items", write=False) as conn:
            if state is None:
                rows = conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items ORDER BY id LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE state = ? ORDER BY id LIMIT ?",
                    (ItemState(state).value, limit),
                ).fetchall()
        return [_item(row) for row in rows]

    def detail(self, item_id: int) -> ItemDetail | None:
        """One row with its state, due time and lease; None if there is no such item."""
        with self._transaction(f"read item {item_id}", write=False) as conn:
            row = conn.execute(
                f"SELECT {_DETAIL_COLUMNS} FROM items WHERE id = ?", (item_id,)
            ).fetchone()
        return None if row is None else _detail(row)

    def state_of(self, item_id: int) -> ItemState | None:
        found = self.detail(item_id)
        return None if found is None else found.state

    def last_error_of(self, item_id: int) -> str | None:
        found = self.detail(item_id)
        return None if found is None else found.item.last_error

    def stats(self) -> QueueStats:
        """Counts per state, from one consistent snapshot."""
        with self._transaction("read statistics", write=False) as conn:
            now = self._clock()
            counts = dict(conn.execute("SELECT state, count(*) FROM items GROUP BY state"))
            due, oldest = conn.execute(
                "SELECT count(*) FILTER (WHERE next_attempt_at <= ?), min(enqueued_at) "
                "FROM items WHERE state = 'pending'",
                (now,),
            ).fetchone()
            (expired,) = conn.execute(
                "SELECT count(*) FROM items WHERE state = 'inflight' AND lease_until <= ?",
                (now,),
            ).fetchone()
            by_pc = dict(
                conn.execute(
                    "SELECT pc_id, count(*) FROM items WHERE state = 'pending' GROUP BY pc_id"
                )
            )
        return QueueStats(
            pending=counts.get(ItemState.PENDING.value, 0),
            due=due,
            inflight=counts.get(ItemState.INFLIGHT.value, 0),
            done=counts.get(ItemState.DONE.value, 0),
            dead=counts.get(ItemState.DEAD.value, 0),
            quarantined=counts.get(ItemState.QUARANTINED.value, 0),
            oldest_pending_age=None if oldest is None else max(0.0, now - oldest),
            pending_by_pc=by_pc,
            expired_leases=expired,
        )

    def prune_done(self, older_than: float) -> int:
        """Delete done rows acknowledged more than `older_than` seconds ago (safe: the target
        has them). Dead and quarantined rows are never deleted. Returns how many went."""
        if older_than < 0:
            raise ValueError(f"older_than must be >= 0, got {older_than!r}")
        with self._transaction("prune done items", write=True) as conn:
            return _prune(conn, self._clock() - older_than)

    # -- what was synced ------------------------------------------------------------------

    def synced_since(self, after_id: int = 0, *, limit: int = 10_000) -> list[SyncedLogRow]:
        """Files committed after log row `after_id`, oldest first (histograms read on)."""
        with self._transaction("read the synced log", write=False) as conn:
            rows = conn.execute(
                f"SELECT {_SYNCED_LOG_COLUMNS} FROM synced_log WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [SyncedLogRow(*row) for row in rows]

    def writes_since(self, after_id: int = 0, *, limit: int = 10_000) -> list[WriteLogRow]:
        """Batches committed after log row `after_id`, oldest first."""
        with self._transaction("read the write log", write=False) as conn:
            rows = conn.execute(
                f"SELECT {_WRITES_COLUMNS} FROM writes WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [WriteLogRow(*row) for row in rows]

    def synced_within(self, windows: dict[str, float]) -> tuple[dict[str, int], dict[str, int]]:
        """Files and bytes committed within each window (seconds back from now), by name: one
        pass over the widest window, kept until a write or until its oldest row in some window
        leaves it."""
        if not windows:
            return {}, {}
        files, size = self._kept_read(
            ("synced_within", tuple(windows.items())), lambda now: self._read_synced(windows, now)
        )
        return dict(files), dict(size)

    def _read_synced(
        self, windows: dict[str, float], now: float
    ) -> tuple[tuple[dict[str, int], dict[str, int]], float]:
        since = {name: now - seconds for name, seconds in windows.items()}
        columns = ", ".join(
            "coalesce(sum(finished_at >= ?), 0), coalesce(sum(size * (finished_at >= ?)), 0), "
            "min(CASE WHEN finished_at >= ? THEN finished_at END)"
            for _ in since
        )
        params = [t for start in since.values() for t in (start, start, start)]
        with self._transaction("count synced files", write=False) as conn:
            row = conn.execute(
                f"SELECT {columns} FROM synced_log WHERE finished_at >= ?",
                (*params, min(since.values())),
            ).fetchone()
        files = {name: row[3 * i] for i, name in enumerate(since)}
        size = {name: row[3 * i + 1] for i, name in enumerate(since)}
        leaves = [
            row[3 * i + 2] + windows[name]
            for i, name in enumerate(since)
            if row[3 * i + 2] is not None
        ]
        return (files, size), min(leaves, default=math.inf)

    def last_commit_at(self) -> float | None:
        return self._kept_read("last_commit_at", lambda _now: (self._read_last_commit(), math.inf))

    def _read_last_commit(self) -> float | None:
        with self._transaction("read the last commit", write=False) as conn:
            (last,) = conn.execute("SELECT max(finished_at) FROM synced_log").fetchone()
        return last

    def pc_summaries(self) -> dict[str, PcSummary]:
        """Per PC: files synced, last sync, newest synced file, pending changes. One read."""
        return dict(self._kept_read("pc_summaries", lambda _now: (self._read_pcs(), math.inf)))

    def _read_pcs(self) -> dict[str, PcSummary]:
        with self._transaction("summarize PCs", write=False) as conn:
            synced = conn.execute(
                "SELECT pc_id, count(*), max(recorded_at) FROM file_state "
                "WHERE outcome = 'synced' GROUP BY pc_id"
            ).fetchall()
            newest = dict(
                conn.execute(
                    "SELECT pc_id, path FROM (SELECT pc_id, path, row_number() OVER "
                    "(PARTITION BY pc_id ORDER BY mtime DESC, path) AS n FROM file_state "
                    "WHERE outcome = 'synced') WHERE n = 1"
                ).fetchall()
            )
            pending = conn.execute(
                "SELECT pc_id, count(*), min(enqueued_at) FROM items WHERE state = 'pending' "
                "GROUP BY pc_id"
            ).fetchall()
        summaries: dict[str, PcSummary] = {}
        for pc_id, count, last in synced:
            summaries[pc_id] = PcSummary(pc_id, count, last, newest.get(pc_id), 0, None)
        for pc_id, count, oldest in pending:
            known = summaries.get(pc_id) or PcSummary(pc_id, 0, None, None, 0, None)
            summaries[pc_id] = replace(known, pending=count, oldest_pending_at=oldest)
        return summaries

    def unresolved_failures(self, *, limit: int = 500) -> list[ItemDetail]:
        """Dead-lettered and quarantined items whose file has not synced since: what an
        operator still has to look at (a fixed file that synced later is not listed)."""
        return list(
            self._kept_read(
                ("unresolved_failures", limit),
                lambda _now: (self._read_failures(limit), math.inf),
            )
        )

    def _read_failures(self, limit: int) -> list[ItemDetail]:
        with self._transaction("list unresolved failures", write=False) as conn:
            rows = conn.execute(
                f"SELECT {_DETAIL_COLUMNS} FROM items i WHERE state IN ('dead', 'quarantined') "
                "AND NOT EXISTS (SELECT 1 FROM file_state f WHERE f.path = i.path "
                "AND f.outcome = 'synced' AND f.recorded_at > coalesce(i.finished_at, 0)) "
                "ORDER BY finished_at DESC, id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_detail(row) for row in rows]

    def record_file_state(
        self, path: str, pc_id: str, size: int, mtime: float, file_hash: str, outcome: str
    ) -> None:
        """Remember a path's last synced (or quarantined) size/mtime/hash; replaces the old."""
        with self._transaction(f"record the state of {path}", write=True) as conn:
            conn.execute(
                _UPSERT_FILE_STATE, (path, pc_id, size, mtime, file_hash, outcome, self._clock())
            )

    def file_state(self, path: str) -> FileState | None:
        with self._transaction(f"read the state of {path}", write=False) as conn:
            row = conn.execute(
                f"SELECT {_FILE_STATE_COLUMNS} FROM file_state WHERE path = ?", (path,)
            ).fetchone()
        return None if row is None else _file_state(row)

    def file_states(self, pc_id: str | None = None) -> dict[str, FileState]:
        """All recorded states (of one PC), by path: one query for a whole rescan."""
        with self._transaction("read file states", write=False) as conn:
            if pc_id is None:
                rows = conn.execute(f"SELECT {_FILE_STATE_COLUMNS} FROM file_state").fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_FILE_STATE_COLUMNS} FROM file_state WHERE pc_id = ?", (pc_id,)
                ).fetchall()
        return {row[0]: _file_state(row) for row in rows}

    def stale_file_paths(self, pc_id: str) -> list[str]:
        """Paths of a PC whose last record is older than RETENTION and that no change is
        pending for: the ones to check for files gone from disk (see `forget_file_states`)."""
        with self._transaction("read stale file states", write=False) as conn:
            rows = conn.execute(
                "SELECT path FROM file_state f WHERE pc_id = ? AND recorded_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM items i WHERE i.path = f.path "
                "AND i.state IN ('pending', 'inflight'))",
                (pc_id, self._clock() - RETENTION),
            ).fetchall()
        return [path for (path,) in rows]

    def forget_file_states(self, paths: Iterable[str]) -> int:
        """Drop the records of files gone from disk, so the queue stays bounded as sessions
        come and go; a file that comes back is new again (and its sync is idempotent)."""
        gone = [(path,) for path in paths]
        if not gone:
            return 0
        with self._transaction(f"forget {len(gone)} vanished file(s)", write=True) as conn:
            return conn.executemany("DELETE FROM file_state WHERE path = ?", gone).rowcount

    def needs_sync(self, path: str, size: int, mtime: float) -> bool:
        """True unless the path's recorded state has exactly this size and mtime."""
        state = self.file_state(path)
        return state is None or state.size != size or state.mtime != mtime
