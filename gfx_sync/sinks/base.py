"""What every sink promises: write a batch, say per delivery what happened, classify failures.

Each record travels as a `Delivery` with the id of the queue item it came from, the way an
acknowledgement handle travels with an event: the write's `WriteResult` names every delivery by
that id, committed or failed (and how), so the caller settles its queue items from the result
alone. A sink raises `SinkError` from `_send`; `write_batch` turns that into per-delivery
outcomes, splitting a batch that was too big or too slow, and bisecting one that held bad data
so the good records still commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from gfx_sync.pokergfx import SessionRecord

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


@dataclass(frozen=True, slots=True)
class Delivery:
    """A record on its way to the target, with the id of the queue item it came from."""

    item_id: int
    record: SessionRecord


@dataclass(slots=True)
class WriteResult:
    """What a write did, by queue item id: every delivery is in `committed` or in `failed`."""

    committed: list[int] = field(default_factory=list)
    failed: list[tuple[int, SinkError]] = field(default_factory=list)
    requests: int = 0

    def merge(self, other: WriteResult) -> None:
        self.committed.extend(other.committed)
        self.failed.extend(other.failed)
        self.requests += other.requests


class PartialWriteError(Exception):
    """A part of a write raised (a bug, an interrupt) after other parts had an outcome.

    `result` holds those outcomes, to settle as usual; the deliveries of the part that raised
    are in neither list and stay unsettled. `cause` is what the part raised.
    """

    def __init__(self, result: WriteResult, cause: Exception) -> None:
        super().__init__(f"a part of the write raised: {cause!r}")
        self.result = result
        self.cause = cause


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


def batch_event(sync_source: str, files: int, requests: int) -> SyncEvent:
    """The "batch" event of a write that committed `files` deliveries in `requests` requests."""
    return SyncEvent(
        "batch", file_count=files, details={"source": sync_source, "requests": requests}
    )


def events_left_after(
    events: Sequence[SyncEvent], result: WriteResult, sync_source: str
) -> list[SyncEvent]:
    """What a write that could not carry `events` in its transaction still has to record:
    `events`, then a "batch" event for what committed (none if nothing did)."""
    if not result.committed:
        return list(events)
    return [*events, batch_event(sync_source, len(result.committed), result.requests)]


class Sink(Protocol):
    name: str

    def write_batch(
        self,
        deliveries: Sequence[Delivery],
        *,
        sync_source: str,
        events: Sequence[SyncEvent] = (),
    ) -> WriteResult:
        """Upsert the records; every delivery's item id ends up in `committed` or `failed`.

        The sink records its transactions' events: `events` (what the caller already knows,
        e.g. files quarantined while reading the batch) exactly once, and a "batch" event for
        what each committed write holds; in the data's transaction where it can, otherwise
        separately, best effort. Raises `PartialWriteError` when some deliveries have an outcome
        and others none (a part raised).
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


def by_session(deliveries: Sequence[Delivery]) -> dict[tuple[str, int], list[Delivery]]:
    """The deliveries grouped by session (`SessionRecord.key`), in order of first appearance."""
    sessions: dict[tuple[str, int], list[Delivery]] = {}
    for delivery in deliveries:
        sessions.setdefault(delivery.record.key, []).append(delivery)
    return sessions


def write_batch_splitting(deliveries: Sequence[Delivery], send: Send) -> WriteResult:
    """Send newest-per-session records, splitting on TOO_BIG/TOO_SLOW, bisecting on PERMANENT.

    An OUTAGE fails the whole batch at once: smaller requests would not get through either.
    One record that still times out says the target is slow or locked (a lock, an overloaded
    server), not that the record is bad: it becomes an OUTAGE, which never uses up retries.
    Superseded snapshots share the outcome of their session's newest (they are older data).
    """
    newest = {
        key: max(session, key=lambda d: d.record.recency)  # the first of equals, as sent
        for key, session in by_session(deliveries).items()
    }
    result = _send_or_split(list(newest.values()), send)
    committed = set(result.committed)
    failed = dict(result.failed)
    for delivery in deliveries:
        sent = newest[delivery.record.key].item_id
        if delivery.item_id == sent:
            continue
        if sent in committed:
            result.committed.append(delivery.item_id)
        else:
            result.failed.append((delivery.item_id, failed[sent]))
    return result


def _send_or_split(deliveries: list[Delivery], send: Send) -> WriteResult:
    if not deliveries:
        return WriteResult()
    try:
        send([d.record for d in deliveries])
    except SinkError as error:
        splittable = error.kind in (
            FailureKind.TOO_BIG,
            FailureKind.TOO_SLOW,
            FailureKind.PERMANENT,
        )
        if len(deliveries) == 1 and error.kind is FailureKind.TOO_SLOW:
            error = SinkError(
                FailureKind.OUTAGE, f"{error} (a single record still times out: target slow)"
            )
        if len(deliveries) == 1 or not splittable:
            return WriteResult(failed=[(d.item_id, error) for d in deliveries], requests=1)
        log.info("batch of %d failed (%s); splitting", len(deliveries), error.kind)
        middle = len(deliveries) // 2
        result = WriteResult(requests=1)
        result.merge(_send_or_split(deliveries[:middle], send))
        result.merge(_send_or_split(deliveries[middle:], send))
        return result
    return WriteResult(committed=[d.item_id for d in deliveries], requests=1)
