"""The sync engine: queue items -> records -> sink, with acknowledgement only after commit.

Every path here leaves a change either committed in the target (then acknowledged), pending
in the queue with its error, dead-lettered with its reason, or quarantined with its reason.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gfx_sync.pokergfx import (
    FileVanishedError,
    OutsideBaseError,
    PokerGfxError,
    SessionRecord,
    read_session_file,
)
from gfx_sync.quarantine import clear_quarantine, quarantine_copy
from gfx_sync.queue import (
    ChangeKind,
    DurableQueue,
    Lane,
    Origin,
    QueueDiskFullError,
    QueueItem,
    Release,
    SyncedFile,
    backoff_delay,
)
from gfx_sync.settings import PcConfig, Settings
from gfx_sync.sinks.base import (
    Delivery,
    FailureKind,
    PartialWriteError,
    Sink,
    SinkError,
    SyncEvent,
    WriteResult,
)
from gfx_sync.site import LocatedFile, Site, stat_or_none

log = logging.getLogger(__name__)

TARGET_PROBE_INTERVAL = 0.5  # seconds between probes of an unreachable target (outage_wait)
CLOCK_SKEW_SECONDS = 60.0  # how far a NAS's clock may run ahead of ours
QUEUE_RETRY_FIRST = 0.5  # seconds before the first retry of a queue write on a full disk
QUEUE_RETRY_MAX = 5.0
# The first batch of a drain is read before anything can be sent (later ones are read ahead,
# while the previous one is on the wire): it gets this share of the byte budget, so sending
# starts after a short read (~10 ms for 2 MB instead of ~100 ms for 16 MB).
FIRST_BATCH_SHARE = 8

SYNC_SOURCE_OF_ORIGIN = {
    Origin.RESCAN: "recovery",
    Origin.BACKFILL: "backfill",
    Origin.MANUAL: "manual",
}


def default_sync_source(item: QueueItem) -> str:
    """The `sync_source` of a batch drained without one, from its first item."""
    if item.origin is Origin.WATCH:
        return "realtime" if item.kind is ChangeKind.ADDED else "batch"
    return SYNC_SOURCE_OF_ORIGIN[item.origin]


class Outcome:
    SYNCED = "synced"
    RETRY = "retry"  # back in the queue, due again later
    DEAD = "dead"  # out of retries: dead-lettered with its reason
    QUARANTINED = "quarantined"
    VANISHED = "vanished"  # deleted or renamed before it could be read: nothing to sync


@dataclass(frozen=True, slots=True)
class FileOutcome:
    item_id: int
    pc_id: str
    path: str
    status: str
    detail: str = ""
    session_id: int | None = None
    hand_count: int | None = None


@dataclass(slots=True)
class DrainReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    batches: int = 0
    requests: int = 0
    outage: str | None = None  # the target was unreachable: what it said, last time
    deferred: list[int] = field(default_factory=list)  # items released for an outage

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def claimed(self) -> int:
        return len(self.outcomes)

    def extend(self, other: DrainReport) -> None:
        self.outcomes.extend(other.outcomes)
        self.batches += other.batches
        self.requests += other.requests
        self.outage = other.outage or self.outage
        self.deferred.extend(other.deferred)

    @property
    def target_failing(self) -> bool:
        """Nothing got through and something must be retried: stop draining for now."""
        return self.outage is not None or (
            self.count(Outcome.SYNCED) == 0 and self.count(Outcome.RETRY) > 0
        )

    def summary(self) -> dict[str, int]:
        statuses = (Outcome.SYNCED, Outcome.RETRY, Outcome.DEAD, Outcome.QUARANTINED)
        return {"claimed": self.claimed, **{s: self.count(s) for s in statuses}}


@dataclass(slots=True)
class _Prepared:
    """A claimed batch, read and parsed, not sent yet."""

    report: DrainReport  # outcomes of the items reading already settled
    events: list[SyncEvent]  # what reading noted (quarantines): the sink records them
    records: list[tuple[QueueItem, SessionRecord]]


class SyncEngine:
    """Drains the durable queue into a sink. Safe to run in several processes at once."""

    def __init__(
        self,
        settings: Settings,
        queue: DurableQueue,
        sink: Sink,
        *,
        pcs: list[PcConfig] | None = None,
        worker: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.sink = sink
        self.site = Site(settings, pcs=pcs)  # a bad registry stops the start, naming it
        self.worker = worker or f"{os.uname().nodename}:{os.getpid()}"
        self._clock = clock
        self._rng = random.Random()

    # -- crashed claimers ----------------------------------------------------------------

    def expire_dead_claims(self) -> int:
        """See `expire_dead_claims`: this engine's own claims are never touched."""
        return expire_dead_claims(self.queue, own_worker=self.worker)

    # -- draining -----------------------------------------------------------------------

    def drain_once(
        self,
        *,
        lanes: Collection[Lane] | None = None,
        sync_source: str | None = None,
        added_grace: float | None = None,
    ) -> DrainReport:
        """Claim one batch (batch_size items within the byte budget) and settle every item.

        `added_grace`: leave ADDED items younger than this to the realtime path.
        """
        prepared = self._claim_prepared(lanes, added_grace)
        return DrainReport() if prepared is None else self._send_prepared(prepared, sync_source)

    def drain(
        self,
        *,
        lanes: Collection[Lane] | None = None,
        sync_source: str | None = None,
        max_batches: int | None = None,
        added_grace: float | None = None,
        outage_wait: float = 0.0,
    ) -> DrainReport:
        """Drain until nothing is due (or `max_batches`); stops early while the target fails.

        `outage_wait`: when the target is unreachable, probe it every TARGET_PROBE_INTERVAL
        for up to this many seconds and carry on draining as soon as it answers, instead of
        leaving the queue to the next run. A probe is one connect (or one small request), so a
        dead target sees two a second at most; the files' retries are never touched. A run
        does this once: if the target fails again after answering, the run stops.

        First frees items whose claimer died on this host, so a crash costs no lease wait.
        """
        self.expire_dead_claims()
        report = DrainReport()
        if max_batches is not None and max_batches <= 0:
            return report
        give_up_at: float | None = None
        claim = functools.partial(self._claim_prepared, lanes, added_grace)
        first_bytes = max(1, self.settings.batch_max_bytes // FIRST_BATCH_SHARE)
        # Read-ahead: batch N+1 is claimed, read and parsed on a second thread while batch N is
        # on the wire (reading is GIL-light file I/O and hashing; the sender mostly waits on
        # the socket). At most two batches are in memory.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gfx-read-ahead") as reader:
            ahead: Future[_Prepared | None] | None = reader.submit(claim, max_bytes=first_bytes)
            try:
                while ahead is not None:
                    current = ahead.result()
                    ahead = None
                    if current is None:
                        break
                    if max_batches is None or report.batches + 1 < max_batches:
                        ahead = reader.submit(claim)
                    batch = self._send_prepared(current, sync_source)
                    report.extend(batch)
                    if not batch.target_failing:
                        continue
                    if batch.outage is not None and outage_wait > 0 and give_up_at is None:
                        # Once per run: a target that answers the probe and then fails again
                        # is left to the next run, not re-sent the batch in a loop.
                        give_up_at = time.monotonic() + outage_wait
                        if self._wait_for_target(give_up_at):
                            # Back: what this run deferred for the outage is due again now, not
                            # in outage_retry_delay seconds.
                            self.queue.expedite(batch.deferred)
                            log.info("the target answers again; draining on")
                            report.outage = None
                            more = max_batches is None or report.batches < max_batches
                            if more and (ahead is None or ahead.result() is None):
                                ahead = reader.submit(claim)  # the expedited items, at least
                            continue
                    if ahead is not None:  # read but never sent: back to the queue, untried
                        report.extend(self._put_back(ahead.result(), outage=batch.outage))
                    break  # leave the rest for the next run
            except BaseException:
                if ahead is not None:  # do not leave a read-ahead batch leased for nothing
                    with contextlib.suppress(Exception):
                        self._put_back(ahead.result(), outage=None)
                raise
        return report

    def _put_back(self, prepared: _Prepared | None, *, outage: str | None) -> DrainReport:
        """A read-ahead batch the run will not send: its readable items go back to pending
        without an attempt counted (due after the outage delay if the target is down, at once
        otherwise); what reading already settled (quarantine...) stays settled."""
        if prepared is None:
            return DrainReport()
        report = prepared.report
        report.batches = 0
        delay = self.settings.outage_retry_delay if outage is not None else 0.0
        self._record_in_queue(
            self.queue.release_many,
            [Release(item.id, None, delay, count_attempt=False) for item, _ in prepared.records],
        )
        for item, _ in prepared.records:
            report.outcomes.append(
                FileOutcome(item.id, item.pc_id, item.path, Outcome.RETRY, "not sent this run")
            )
            if outage is not None:
                report.deferred.append(item.id)
        if prepared.events:
            self.sink.record_events(prepared.events)
        return report

    def _wait_for_target(self, give_up_at: float) -> bool:
        """Probe until the target answers (True) or `give_up_at` (monotonic) passes (False)."""
        while True:
            left = give_up_at - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(TARGET_PROBE_INTERVAL, left))
            left = give_up_at - time.monotonic()
            if left > 0 and self.sink.ping(timeout=max(1.0, left)):
                return True

    def _claim_prepared(
        self,
        lanes: Collection[Lane] | None,
        added_grace: float | None,
        *,
        max_bytes: int | None = None,
    ) -> _Prepared | None:
        """Claim one batch (at most `max_bytes`, the byte budget by default) and read it (the
        part a read-ahead thread does)."""
        items = self.queue.claim(
            self.settings.batch_size,
            worker=self.worker,
            max_bytes=self.settings.batch_max_bytes if max_bytes is None else max_bytes,
            lanes=lanes,
            added_grace=added_grace,
        )
        return self._prepare(items) if items else None

    def _prepare(self, items: list[QueueItem]) -> _Prepared:
        """Read and parse a claimed batch; unreadable files are settled here already."""
        report = DrainReport(batches=1)
        events: list[SyncEvent] = []
        records: list[tuple[QueueItem, SessionRecord]] = []
        for item in items:
            located = self.site.locate(item.path, item.pc_id)
            try:
                record = read_session_file(
                    located.path,
                    pc_id=item.pc_id,
                    relative_path=located.relative_path,
                    max_bytes=self.settings.max_file_bytes,
                    # A file under the base must stay in it: a symlink out is refused. Only a
                    # file named outside the base (`sync --pc`) is read where it is.
                    within=self.site.base_path if located.within_base else None,
                )
            except PokerGfxError as error:
                outcome = self._unreadable(item, located, error)
                report.outcomes.append(outcome)
                if outcome.status == Outcome.QUARANTINED:
                    events.append(
                        SyncEvent(
                            "quarantined",
                            gfx_pc_id=item.pc_id,
                            file_path=located.relative_path,
                            error=error.reason,
                        )
                    )
                continue
            records.append((item, record))
        return _Prepared(report, events, records)

    def _send_prepared(self, prepared: _Prepared, sync_source: str | None) -> DrainReport:
        """Write a read batch, then settle every item: ack after commit, or release."""
        report = prepared.report
        if not prepared.records:  # nothing to write: what reading noted is recorded alone
            if prepared.events:
                self.sink.record_events(prepared.events)
            return report
        source = sync_source or default_sync_source(prepared.records[0][0])
        started = time.monotonic()
        result, raised = self._write(prepared, source)
        write_seconds = time.monotonic() - started
        report.requests += result.requests
        self._settle_written(prepared, result, source, write_seconds)
        if raised is not None:  # what had an outcome beside it is settled; its items stay leased
            raise raised
        return report

    def _write(self, prepared: _Prepared, source: str) -> tuple[WriteResult, Exception | None]:
        """Hand the batch to the sink, each record with its item id, and what reading noted
        (quarantines) for the sink to record. Returns the outcomes, and what a part of the
        write raised after others had an outcome (`PartialWriteError`)."""
        deliveries = [Delivery(item.id, record) for item, record in prepared.records]
        try:
            result = self.sink.write_batch(deliveries, sync_source=source, events=prepared.events)
        except PartialWriteError as partial:
            return partial.result, partial.cause
        return result, None

    def _settle_written(
        self, prepared: _Prepared, result: WriteResult, source: str, write_seconds: float
    ) -> None:
        """Acknowledge what committed (logging how long the write took, for operators);
        release or dead-letter what failed, and record why."""
        report = prepared.report
        read = {item.id: (item, record) for item, record in prepared.records}
        committed = [read[item_id] for item_id in result.committed]
        # One queue transaction (one fsync) settles the batch: acknowledged only now that
        # the target committed, each with the file state it committed. A list, not a
        # generator: on a full disk `_record_in_queue` tries the same write again.
        synced = [
            SyncedFile(
                item.id,
                item.path,
                item.pc_id,
                record.file_size,
                record.file_mtime_epoch,
                record.file_hash,
            )
            for item, record in committed
        ]
        self._record_in_queue(
            self.queue.ack_synced, synced, source=source, write_seconds=write_seconds
        )
        for item, record in committed:
            self._clear_quarantine(item, record)
        for item, record in committed:
            report.outcomes.append(
                FileOutcome(
                    item.id,
                    item.pc_id,
                    item.path,
                    Outcome.SYNCED,
                    session_id=record.session_id,
                    hand_count=record.hand_count,
                )
            )
        releases: list[Release] = []
        errors: list[SyncEvent] = []
        for item_id, error in result.failed:
            item, record = read[item_id]
            outcome, release = self._sink_failed(item, error)
            if release is not None:
                releases.append(release)
            if error.kind is FailureKind.OUTAGE:
                report.outage = str(error)
                report.deferred.append(item.id)
            report.outcomes.append(outcome)
            errors.append(
                SyncEvent(
                    "error",
                    gfx_pc_id=item.pc_id,
                    file_path=record.file_path,
                    session_id=record.session_id,
                    error=str(error),
                    details={"kind": str(error.kind), "outcome": outcome.status},
                )
            )
        self._record_in_queue(self.queue.release_many, releases)
        if errors:
            self.sink.record_events(errors)

    def _record_in_queue(self, write: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Record in the queue what already happened (a commit, a failure, a quarantine).

        While the queue's disk is full, keep trying for half a lease rather than give up:
        items left in flight stay claimed until their lease runs out, and every newer change
        to their paths waits behind them. The error is logged each time, naming the queue file.
        """
        deadline = time.monotonic() + self.queue.lease_seconds / 2
        delay = QUEUE_RETRY_FIRST
        while True:
            try:
                write(*args, **kwargs)
                return
            except QueueDiskFullError as error:
                if time.monotonic() + delay > deadline:
                    raise
                log.error("%s; trying again in %.1f s", error, delay)
                time.sleep(delay)
                delay = min(delay * 2, QUEUE_RETRY_MAX)

    def _unreadable(
        self, item: QueueItem, located: LocatedFile, error: PokerGfxError
    ) -> FileOutcome:
        """Not parseable now: wait for the file to settle, then quarantine it if still broken."""
        if isinstance(error, FileVanishedError):
            self._record_in_queue(self.queue.ack, [item.id])
            return FileOutcome(item.id, item.pc_id, item.path, Outcome.VANISHED, error.reason)
        size, mtime = stat_or_none(located.path)
        age = None if mtime is None else self._clock() - mtime
        # A modification time far in the future (a wrong clock) would never "settle": beyond
        # CLOCK_SKEW_SECONDS it counts as settled, so the file is quarantined, not parked.
        settling = (
            age is not None
            and -CLOCK_SKEW_SECONDS < age < self.settings.settle_seconds
            and not isinstance(error, OutsideBaseError)
        )
        if settling:
            assert age is not None
            delay = max(0.05, self.settings.settle_seconds - age)
            self._record_in_queue(
                self.queue.release, item.id, error=str(error), delay=delay, count_attempt=False
            )
            return FileOutcome(item.id, item.pc_id, item.path, Outcome.RETRY, error.reason)
        quarantine_copy(
            self.settings.error_dir,
            item.pc_id,
            located.path,
            located.relative_path,
            str(error),
            copy=not isinstance(error, OutsideBaseError),  # never copy what lies outside
        )
        self._record_in_queue(self.queue.quarantine, item.id, str(error))
        if size is not None and mtime is not None:
            self._record_in_queue(
                self.queue.record_file_state,
                item.path,
                item.pc_id,
                size,
                mtime,
                "",
                Outcome.QUARANTINED,
            )
        log.warning("quarantined %s: %s", item.path, error.reason)
        return FileOutcome(item.id, item.pc_id, item.path, Outcome.QUARANTINED, error.reason)

    def _clear_quarantine(self, item: QueueItem, record: SessionRecord) -> None:
        """A file quarantined earlier (say, caught empty mid-rewrite and then left alone for
        longer than settle_seconds) has now committed: it is not broken any more."""
        try:
            cleared = clear_quarantine(
                self.settings.error_dir,
                item.pc_id,
                Path(item.path),
                record.file_path,  # relative to the base, as located when it was read
            )
        except OSError as exc:
            log.warning("could not clear the quarantine entry of %s: %s", item.path, exc)
            return
        if cleared:
            log.info("%s synced: its quarantine entry is cleared", item.path)

    def _sink_failed(self, item: QueueItem, error: SinkError) -> tuple[FileOutcome, Release | None]:
        """An outage never uses up retries; a rejection does, then dead-letters. Returns the
        release to apply (the caller applies a batch's releases in one transaction)."""
        if error.kind is FailureKind.OUTAGE:
            release = Release(
                item.id, str(error), self.settings.outage_retry_delay, count_attempt=False
            )
            outcome = FileOutcome(item.id, item.pc_id, item.path, Outcome.RETRY, str(error))
            return outcome, release
        attempts = item.attempts + 1
        if attempts > self.settings.max_retries:
            self._record_in_queue(self.queue.dead_letter, item.id, str(error))
            log.error("dead-lettered %s after %d attempts: %s", item.path, attempts, error)
            return FileOutcome(item.id, item.pc_id, item.path, Outcome.DEAD, str(error)), None
        delay = backoff_delay(
            attempts, self.settings.backoff_initial, self.settings.backoff_max, self._rng
        )
        release = Release(item.id, str(error), delay, count_attempt=True)
        return FileOutcome(item.id, item.pc_id, item.path, Outcome.RETRY, str(error)), release


def expire_dead_claims(queue: DurableQueue, own_worker: str | None = None) -> int:
    """Free the items of claimers on this host whose process is gone (SIGKILL, OOM, a
    reboot), instead of leaving them to wait out their lease. Worker ids are `host:pid`;
    a pid reused by another process only means waiting for the lease, as before."""
    host = os.uname().nodename
    dead = [
        worker
        for worker in queue.live_claimers()
        if worker != own_worker and _is_dead_local_worker(worker, host)
    ]
    if not dead:
        return 0
    freed = queue.expire_leases(dead, f"claimer {', '.join(sorted(dead))} died")
    if freed:
        log.warning("%d item(s) held by dead worker(s) %s claimable again", freed, dead)
    return freed


def _is_dead_local_worker(worker: str, host: str) -> bool:
    """True only when `worker` is `host:pid` and no process has that pid."""
    worker_host, _, pid = worker.rpartition(":")
    if worker_host != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists (e.g. another user's process): not ours to judge
    return False
