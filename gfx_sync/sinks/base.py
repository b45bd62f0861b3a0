"""What every sink promises: write a batch, say per record what happened, classify failures.

A sink raises `SinkError` from `_send`; `write_batch` turns that into per-record outcomes,
splitting a batch that was too big or too slow, and bisecting one that held bad data so the
good records still commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from gfx_sync.pokergfx import SessionRecord, newest_per_session

log = logging.getLogger(__name__)


class FailureKind(StrEnum):
    OUTAGE = "outage"  # the target is unreachable or overloaded: every record would fail alike
    TOO_BIG = "too_big"  # a size limit: a smaller batch may pass, a single record never will
    TOO_SLOW = "too_slow"  # a statement/read timeout: a smaller batch may pass
    PERMANENT = "permanent"  # the target rejected the data itself


class SinkError(Exception):
    def __init__(self, kind: FailureKind, message: str) -> None:
        self.kind = kind
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.kind is not FailureKind.PERMANENT


@dataclass(slots=True)
class WriteResult:
    committed: list[SessionRecord] = field(default_factory=list)
    failed: list[tuple[SessionRecord, SinkError]] = field(default_factory=list)
    requests: int = 0
    events_recorded: bool = False  # the events passed to write_batch committed with the data

    def merge(self, other: WriteResult) -> None:
        self.committed.extend(other.committed)
        self.failed.extend(other.failed)
        self.requests += other.requests


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """A row of `sync_events`: what happened, for the status views and the UI."""

    event_type: str
    gfx_pc_id: str | None = None
    file_path: str | None = None
    session_id: int | None = None
    file_count: int = 0
    error: str | None = None
    details: dict[str, object] = field(default_factory=dict)


class Sink(Protocol):
    name: str
    # How many `write_batch` calls may run at once (from different threads), each its own
    # transaction: the engine splits a big batch into this many parts.
    concurrent_writes: int

    def write_batch(
        self,
        records: Sequence[SessionRecord],
        *,
        sync_source: str,
        events: Sequence[SyncEvent] = (),
    ) -> WriteResult:
        """Upsert the records; every record ends up in `committed` or `failed`.

        `events` describe the batch if it commits whole in one request; a sink that can write
        them in that same transaction does so (saving a round trip) and sets
        `events_recorded`. Otherwise the caller records what really happened itself.
        """
        ...

    def record_events(self, events: Sequence[SyncEvent]) -> None:
        """Best effort: the events are a log, the queue is the source of truth."""
        ...

    def ping(self, *, timeout: float) -> bool:
        """Cheap: does the target answer now (within about `timeout` seconds)? Never raises."""
        ...

    def close(self) -> None: ...


Send = Callable[[Sequence[SessionRecord]], None]


def write_batch_splitting(records: Sequence[SessionRecord], send: Send) -> WriteResult:
    """Send newest-per-session records, splitting on TOO_BIG/TOO_SLOW, bisecting on PERMANENT.

    An OUTAGE fails the whole batch at once: smaller requests would not get through either.
    One record that still times out says the target is slow or locked (a lock, an overloaded
    server), not that the record is bad: it becomes an OUTAGE, which never uses up retries.
    Superseded snapshots count as committed with the newest one (they are older data).
    """
    newest = newest_per_session(list(records))
    kept = {id(r) for r in newest}
    superseded = [r for r in records if id(r) not in kept]
    result = _send_or_split(newest, send)
    committed_keys = {r.key for r in result.committed}
    failed_by_key = {r.key: error for r, error in result.failed}
    for record in superseded:
        if record.key in committed_keys:
            result.committed.append(record)
        else:
            result.failed.append((record, failed_by_key[record.key]))
    return result


def _send_or_split(records: list[SessionRecord], send: Send) -> WriteResult:
    if not records:
        return WriteResult()
    try:
        send(records)
    except SinkError as error:
        splittable = error.kind in (
            FailureKind.TOO_BIG,
            FailureKind.TOO_SLOW,
            FailureKind.PERMANENT,
        )
        if len(records) == 1 and error.kind is FailureKind.TOO_SLOW:
            error = SinkError(
                FailureKind.OUTAGE, f"{error} (a single record still times out: target slow)"
            )
        if len(records) == 1 or not splittable:
            return WriteResult(failed=[(r, error) for r in records], requests=1)
        log.info("batch of %d failed (%s); splitting", len(records), error.kind)
        middle = len(records) // 2
        result = WriteResult(requests=1)
        result.merge(_send_or_split(records[:middle], send))
        result.merge(_send_or_split(records[middle:], send))
        return result
    return WriteResult(committed=list(records), requests=1)
