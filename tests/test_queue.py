"""The durable queue, as a specification: what is written survives, nothing is claimed twice,
nothing enqueued is lost, and failures are loud.

Time is a controllable clock (due times, leases, ages), never a sleep. Concurrency is tested
with real threads and real processes sharing one queue file.
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gfx_sync.queue import (
    REALTIME_LANE,
    RETENTION,
    SCHEMA_VERSION,
    ChangeKind,
    DurableQueue,
    FileState,
    ItemState,
    Lane,
    NewChange,
    Origin,
    QueueDiskFullError,
    QueueError,
    QueueItem,
    Release,
    SyncedFile,
    backoff_delay,
)
from support.clock import Clock

LEASE = 60.0
START = 1_000_000.0


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def queue_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "queue.sqlite3"  # the folder does not exist yet


@pytest.fixture
def queue(queue_path: Path, clock: Clock) -> Iterator[DurableQueue]:
    with DurableQueue(queue_path, lease_seconds=LEASE, clock=clock) as queue:
        yield queue


def hands(name: str, pc: str = "PC01") -> str:
    return f"/nas/{pc}/hands/{name}.json"


def put(
    queue: DurableQueue,
    name: str,
    kind: ChangeKind = ChangeKind.ADDED,
    size: int | None = 10,
    mtime: float | None = 1.0,
    pc: str = "PC01",
    origin: Origin = Origin.WATCH,
) -> int:
    return queue.enqueue(pc, hands(name, pc), kind, size, mtime, origin)


def claim_one(queue: DurableQueue, worker: str = "w1") -> QueueItem:
    [item] = queue.claim(1, worker=worker)
    return item


def state(queue: DurableQueue, item_id: int) -> ItemState | None:
    return queue.state_of(item_id)


# -- opening: durable settings, schema, errors ---------------------------------------------


def test_opening_creates_the_folder_and_a_wal_database_with_a_schema_version(
    queue: DurableQueue, queue_path: Path
) -> None:
    assert queue_path.is_file()
    conn = queue._conn
    assert conn is not None
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"items_claim", "items_path", "items_one_pending_per_path"} <= indexes


def test_what_was_enqueued_survives_closing_and_reopening(queue_path: Path, clock: Clock) -> None:
    with DurableQueue(queue_path, clock=clock) as queue:
        first = put(queue, "a", size=5, mtime=2.5)
        second = put(queue, "b", ChangeKind.MODIFIED, size=None, mtime=None)
    for _ in range(2):  # opening again is idempotent
        with DurableQueue(queue_path, clock=clock) as queue:
            assert queue.items() == [
                QueueItem(first, "PC01", hands("a"), ChangeKind.ADDED, 5, 2.5, 0, START, None),
                QueueItem(
                    second, "PC01", hands("b"), ChangeKind.MODIFIED, None, None, 0, START, None
                ),
            ]


def test_a_queue_file_from_a_newer_gfx_sync_is_refused(queue_path: Path) -> None:
    DurableQueue(queue_path).close()
    with sqlite3.connect(queue_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(QueueError, match="newer") as caught:
        DurableQueue(queue_path)
    assert str(queue_path) in str(caught.value)


def test_a_version_1_queue_is_upgraded_in_place_keeping_every_item(queue_path: Path) -> None:
    """Version 1 kept who noticed a change in `kind` (rescan, backfill, manual); those items
    become modified files of that origin, the others the watcher's."""
    queue_path.parent.mkdir(parents=True)
    with sqlite3.connect(queue_path) as conn:
        conn.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, pc_id TEXT NOT NULL, "
            "path TEXT NOT NULL, kind TEXT NOT NULL, size INTEGER, mtime REAL, state TEXT NOT "
            "NULL, attempts INTEGER NOT NULL DEFAULT 0, enqueued_at REAL NOT NULL, updated_at "
            "REAL NOT NULL, next_attempt_at REAL NOT NULL, claimed_by TEXT, lease_until REAL, "
            "finished_at REAL, last_error TEXT)"
        )
        for kind in ["added", "modified", "rescan", "backfill", "manual"]:
            conn.execute(
                "INSERT INTO items (pc_id, path, kind, size, mtime, state, enqueued_at, "
                "updated_at, next_attempt_at) VALUES ('PC01', ?, ?, 1, 1.0, 'pending', 0, 0, 0)",
                (hands(kind), kind),
            )
        conn.execute("PRAGMA user_version = 1")
    with DurableQueue(queue_path) as queue:
        assert [(i.path, i.kind, i.origin) for i in queue.items()] == [
            (hands("added"), ChangeKind.ADDED, Origin.WATCH),
            (hands("modified"), ChangeKind.MODIFIED, Origin.WATCH),
            (hands("rescan"), ChangeKind.MODIFIED, Origin.RESCAN),
            (hands("backfill"), ChangeKind.MODIFIED, Origin.BACKFILL),
            (hands("manual"), ChangeKind.MODIFIED, Origin.MANUAL),
        ]
        assert [i.path for i in queue.claim(10, worker="rt", lanes=[REALTIME_LANE])] == [
            hands("added")
        ]
    with sqlite3.connect(queue_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_file_that_is_not_a_database_is_a_queue_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    path.write_bytes(b"this is not an SQLite database, " * 200)
    with pytest.raises(QueueError) as caught:
        DurableQueue(path)
    assert str(path) in str(caught.value)
    assert not isinstance(caught.value, QueueDiskFullError)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_a_folder_that_cannot_be_created_is_a_queue_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("in the way")
    with pytest.raises(QueueError, match="cannot create its folder"):
        DurableQueue(tmp_path / "a-file" / "queue.sqlite3")


def test_a_closed_queue_refuses_work_with_a_queue_error(
    queue: DurableQueue, queue_path: Path
) -> None:
    queue.close()
    queue.close()  # idempotent
    with pytest.raises(QueueError, match="closed") as caught:
        put(queue, "a")
    assert str(queue_path) in str(caught.value)


def test_a_full_disk_is_reported_loudly_and_keeps_what_was_committed(
    queue_path: Path, clock: Clock
) -> None:
    with DurableQueue(queue_path, clock=clock) as queue:
        kept = queue.enqueue_many(
            NewChange("PC01", hands(f"k{i}"), ChangeKind.ADDED) for i in range(20)
        )
        queue._set_max_pages_for_tests(queue._page_count_for_tests() + 2)
        big = [
            NewChange("PC02", hands(f"x{i}" * 30, "PC02"), ChangeKind.ADDED) for i in range(3000)
        ]
        with pytest.raises(QueueDiskFullError) as caught:
            queue.enqueue_many(big)
        message = str(caught.value)
        assert "DISK FULL" in message and str(queue_path) in message
        assert isinstance(caught.value, QueueError)  # callers catching QueueError see it too
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        # Rolled back, and the queue is still usable for what fits.
        stats = queue.stats()
        assert (stats.pending, stats.pending_by_pc) == (20, {"PC01": 20})
        assert [i.id for i in queue.claim(5, worker="w")] == kept[:5]
    with DurableQueue(queue_path, clock=clock) as reopened:
        assert [i.id for i in reopened.items()] == kept
        assert reopened.stats().inflight == 5


# -- enqueue and coalescing ---------------------------------------------------------------


def test_enqueue_many_is_one_transaction_for_ten_thousand_files(queue: DurableQueue) -> None:
    statements: list[str] = []
    assert queue._conn is not None
    queue._conn.set_trace_callback(statements.append)
    changes = [
        NewChange(f"PC{i % 4:02}", hands(f"s{i}"), ChangeKind.ADDED, i, 1.0, Origin.BACKFILL)
        for i in range(10_000)
    ]
    ids = queue.enqueue_many(changes)
    queue._conn.set_trace_callback(None)

    assert len(set(ids)) == 10_000
    assert statements.count("COMMIT") == 1
    stats = queue.stats()
    assert stats.pending == 10_000
    assert stats.pending_by_pc == {"PC00": 2500, "PC01": 2500, "PC02": 2500, "PC03": 2500}


def test_enqueue_many_writes_nothing_when_the_input_fails_halfway(queue: DurableQueue) -> None:
    def changes() -> Iterator[NewChange]:
        yield NewChange("PC01", hands("a"), ChangeKind.ADDED)
        raise RuntimeError("the watcher's batch broke")

    with pytest.raises(RuntimeError):
        queue.enqueue_many(changes())
    assert queue.items() == []


def test_enqueueing_a_pending_path_again_updates_that_item(
    queue: DurableQueue, clock: Clock
) -> None:
    first = put(queue, "a", size=10, mtime=1.0)
    clock.advance(5)
    again = put(queue, "a", ChangeKind.MODIFIED, size=20, mtime=2.0)

    assert again == first
    [item] = queue.items()
    assert (item.size, item.mtime, item.enqueued_at) == (20, 2.0, START)  # waiting since first


WATCH_ADDED = (ChangeKind.ADDED, Origin.WATCH)  # the realtime lane
WATCH_MODIFIED = (ChangeKind.MODIFIED, Origin.WATCH)


@pytest.mark.parametrize(
    ("first", "then", "merged"),
    [
        (WATCH_ADDED, WATCH_MODIFIED, WATCH_ADDED),  # realtime must still pick it up
        (WATCH_MODIFIED, WATCH_ADDED, WATCH_ADDED),
        (WATCH_ADDED, (ChangeKind.ADDED, Origin.RESCAN), WATCH_ADDED),
        (
            WATCH_MODIFIED,
            (ChangeKind.MODIFIED, Origin.RESCAN),
            (ChangeKind.MODIFIED, Origin.RESCAN),
        ),
        (
            (ChangeKind.ADDED, Origin.BACKFILL),
            (ChangeKind.MODIFIED, Origin.MANUAL),
            (ChangeKind.MODIFIED, Origin.MANUAL),
        ),
        ((ChangeKind.ADDED, Origin.RESCAN), WATCH_ADDED, WATCH_ADDED),
    ],
)
def test_coalescing_keeps_the_realtime_lane_otherwise_takes_the_new_change(
    queue: DurableQueue,
    first: tuple[ChangeKind, Origin],
    then: tuple[ChangeKind, Origin],
    merged: tuple[ChangeKind, Origin],
) -> None:
    put(queue, "a", first[0], origin=first[1])
    put(queue, "a", then[0], origin=then[1])
    assert [(i.kind, i.origin) for i in queue.items()] == [merged]


def test_new_content_gets_a_fresh_try_while_the_same_content_keeps_its_backoff(
    queue: DurableQueue, clock: Clock
) -> None:
    item_id = put(queue, "a", size=10, mtime=1.0)
    claim_one(queue)
    queue.release(item_id, error="rejected", delay=100, count_attempt=True)

    put(queue, "a", ChangeKind.MODIFIED, size=10, mtime=1.0, origin=Origin.RESCAN)  # same content
    assert queue.claim(10, worker="w") == []
    [item] = queue.items()
    assert (item.attempts, item.last_error) == (1, "rejected")

    put(queue, "a", ChangeKind.MODIFIED, size=11, mtime=1.0)  # new content: due now, attempts 0
    [claimed] = queue.claim(10, worker="w")
    assert (claimed.id, claimed.attempts, claimed.last_error) == (item_id, 0, "rejected")


def test_a_path_in_flight_gets_a_new_pending_item(queue: DurableQueue) -> None:
    first = put(queue, "a", size=10)
    claim_one(queue)
    second = put(queue, "a", ChangeKind.MODIFIED, size=30)  # the reader may have read older bytes
    third = put(queue, "a", ChangeKind.MODIFIED, size=40)  # ...and that one coalesces

    assert second != first and third == second
    assert (state(queue, first), state(queue, second)) == (ItemState.INFLIGHT, ItemState.PENDING)


def test_a_path_enqueued_again_after_done_or_dead_gets_a_new_item(queue: DurableQueue) -> None:
    done = put(queue, "a")
    claim_one(queue)
    queue.ack([done])
    dead = put(queue, "b")
    claim_one(queue)
    queue.dead_letter(dead, "rejected")

    again = [put(queue, "a"), put(queue, "b")]
    assert not {done, dead} & set(again)
    assert (state(queue, done), state(queue, dead)) == (ItemState.DONE, ItemState.DEAD)
    assert [i.id for i in queue.items(ItemState.PENDING)] == again


def test_repeats_of_one_path_within_a_batch_share_one_item(queue: DurableQueue) -> None:
    ids = queue.enqueue_many(
        [
            NewChange("PC01", hands("a"), ChangeKind.ADDED, 1, 1.0),
            NewChange("PC01", hands("b"), ChangeKind.ADDED, 1, 1.0),
            NewChange("PC01", hands("a"), ChangeKind.MODIFIED, 2, 2.0),
        ]
    )
    assert ids[0] == ids[2] != ids[1]
    assert [(i.path, i.size, i.kind) for i in queue.items()] == [
        (hands("a"), 2, ChangeKind.ADDED),
        (hands("b"), 1, ChangeKind.ADDED),
    ]


# -- claiming -----------------------------------------------------------------------------


def test_a_claim_leases_items_to_the_worker(queue: DurableQueue, clock: Clock) -> None:
    item_id = put(queue, "a")
    [item] = queue.claim(5, worker="host:42")

    detail = queue.detail(item_id)
    assert detail is not None and detail.item == item
    assert (detail.state, detail.claimed_by, detail.lease_until) == (
        ItemState.INFLIGHT,
        "host:42",
        START + LEASE,
    )
    assert queue.claim(5, worker="other") == []  # leased: nobody else gets it


def test_claim_takes_due_items_oldest_due_first_up_to_the_limit(
    queue: DurableQueue, clock: Clock
) -> None:
    a, b, c, d = (put(queue, name) for name in "abcd")
    claim_one(queue)
    queue.release(a, error="x", delay=10)  # a is due again at START + 10
    clock.advance(1)
    queue.claim(1, worker="w")  # b
    queue.release(b, error="x", delay=1)  # b is due again at START + 2

    assert [i.id for i in queue.claim(10, worker="w")] == [c, d]
    clock.advance(1)
    assert [i.id for i in queue.claim(10, worker="w")] == [b]
    clock.advance(8)
    assert [i.id for i in queue.claim(10, worker="w")] == [a]


def test_claim_stops_at_the_limit(queue: DurableQueue) -> None:
    ids = [put(queue, f"f{i}") for i in range(5)]
    assert [i.id for i in queue.claim(3, worker="w")] == ids[:3]
    assert [i.id for i in queue.claim(3, worker="w")] == ids[3:]
    assert queue.claim(0, worker="w") == []


def test_claim_stays_within_the_byte_budget_but_always_takes_one(queue: DurableQueue) -> None:
    big = put(queue, "big", size=500)
    unknown = put(queue, "unknown", size=None)  # counts 0
    small = put(queue, "small", size=60)
    rest = put(queue, "rest", size=50)

    assert [i.id for i in queue.claim(10, worker="w", max_bytes=100)] == [big]  # alone, too big
    assert [i.id for i in queue.claim(10, worker="w", max_bytes=100)] == [unknown, small]
    assert [i.id for i in queue.claim(10, worker="w", max_bytes=100)] == [rest]


def test_claim_can_be_limited_to_lanes(queue: DurableQueue) -> None:
    modified = put(queue, "m", ChangeKind.MODIFIED)
    added = put(queue, "a", ChangeKind.ADDED)
    rescan = put(queue, "r", ChangeKind.ADDED, origin=Origin.RESCAN)  # not the realtime lane's
    backfill = put(queue, "b", ChangeKind.MODIFIED, origin=Origin.BACKFILL)

    assert [i.id for i in queue.claim(10, worker="rt", lanes=[REALTIME_LANE])] == [added]
    assert queue.claim(10, worker="rt", lanes=()) == []
    backfill_lane = Lane(origins=frozenset({Origin.BACKFILL}))
    assert [i.id for i in queue.claim(10, worker="bf", lanes=[backfill_lane])] == [backfill]
    assert [i.id for i in queue.claim(10, worker="batch")] == [modified, rescan]


def test_a_sweeper_leaves_fresh_added_items_to_the_realtime_run(
    queue: DurableQueue, clock: Clock
) -> None:
    added = put(queue, "a", ChangeKind.ADDED)
    modified = put(queue, "m", ChangeKind.MODIFIED)
    clock.advance(29)
    assert [i.id for i in queue.claim(10, worker="sweeper", added_grace=30)] == [modified]
    clock.advance(1)  # realtime missed it for the whole grace period: the sweeper takes it
    assert [i.id for i in queue.claim(10, worker="sweeper", added_grace=30)] == [added]


def test_an_expired_lease_is_claimed_again_with_an_attempt_counted(
    queue: DurableQueue, clock: Clock
) -> None:
    item_id = put(queue, "a")
    claim_one(queue, "crashed")
    clock.advance(LEASE - 1)
    assert queue.claim(10, worker="w2") == []
    assert queue.stats().expired_leases == 0

    clock.advance(1)
    assert queue.stats().expired_leases == 1
    [again] = queue.claim(10, worker="w2")
    assert (again.id, again.attempts) == (item_id, 1)
    assert again.last_error is not None and "crashed" in again.last_error
    detail = queue.detail(item_id)
    assert detail is not None and detail.item == again
    assert (detail.claimed_by, detail.lease_until) == ("w2", clock.now + LEASE)


def test_a_file_is_handled_by_one_claimer_at_a_time(queue: DurableQueue, clock: Clock) -> None:
    old = put(queue, "a", size=10)
    claim_one(queue, "w1")
    new = put(queue, "a", ChangeKind.MODIFIED, size=20)
    other = put(queue, "b")

    # The newer bytes wait until the older read is settled: written last, never interleaved.
    assert [i.id for i in queue.claim(10, worker="w2")] == [other]
    queue.ack([old])
    assert [i.id for i in queue.claim(10, worker="w2")] == [new]


def test_a_claim_never_carries_one_file_twice(queue: DurableQueue, clock: Clock) -> None:
    old = put(queue, "a", size=10)
    claim_one(queue, "crashed")
    new = put(queue, "a", ChangeKind.MODIFIED, size=20)
    clock.advance(LEASE)  # both the expired lease and the newer item are due

    assert [i.id for i in queue.claim(10, worker="w2")] == [old]
    queue.ack([old])
    assert [i.id for i in queue.claim(10, worker="w2")] == [new]


# -- settling -----------------------------------------------------------------------------


def test_ack_marks_done(queue: DurableQueue) -> None:
    a, b = put(queue, "a"), put(queue, "b")
    queue.claim(2, worker="w")
    queue.ack(iter([a, b]))
    assert {state(queue, a), state(queue, b)} == {ItemState.DONE}
    assert (queue.stats().done, queue.stats().inflight) == (2, 0)


def test_ack_synced_settles_a_batch_and_its_file_states_in_one_transaction(
    queue: DurableQueue,
) -> None:
    ids = [put(queue, f"s{n}") for n in range(3)]
    queue.claim(3, worker="w")
    statements: list[str] = []
    assert queue._conn is not None
    queue._conn.set_trace_callback(statements.append)
    queue.ack_synced(
        SyncedFile(i, hands(f"s{n}"), "PC01", 100 + n, 5.0, f"h{n}") for n, i in enumerate(ids)
    )
    queue._conn.set_trace_callback(None)

    assert statements.count("COMMIT") == 1  # one fsync for the batch, not one per file
    assert {state(queue, i) for i in ids} == {ItemState.DONE}
    states = queue.file_states()
    assert [(s.size, s.file_hash, s.outcome) for s in map(states.get, sorted(states))] == [
        (100, "h0", "synced"),
        (101, "h1", "synced"),
        (102, "h2", "synced"),
    ]


def test_ack_synced_is_all_or_nothing(queue_path: Path, clock: Clock) -> None:
    """A failure (here a full disk) leaves every item in flight and no file state: nothing is
    acknowledged without its state, nothing half-recorded."""
    with DurableQueue(queue_path, clock=clock) as queue:
        ids = queue.enqueue_many(
            NewChange("PC01", hands(f"k{n}"), ChangeKind.ADDED) for n in range(2000)
        )
        queue.claim(2000, worker="w")
        queue._set_max_pages_for_tests(queue._page_count_for_tests() + 2)
        with pytest.raises(QueueDiskFullError):
            queue.ack_synced(
                SyncedFile(i, hands(f"k{n}"), "PC01", n, 1.0, "x" * 64) for n, i in enumerate(ids)
            )
        assert queue.stats().inflight == 2000 and queue.stats().done == 0
        assert queue.file_states() == {}


def test_release_many_releases_each_item_in_one_transaction(
    queue: DurableQueue, clock: Clock
) -> None:
    a, b = put(queue, "a"), put(queue, "b")
    queue.claim(2, worker="w")
    statements: list[str] = []
    assert queue._conn is not None
    queue._conn.set_trace_callback(statements.append)
    queue.release_many([Release(a, "outage", 2, count_attempt=False), Release(b, "rejected", 30)])
    queue._conn.set_trace_callback(None)

    assert statements.count("COMMIT") == 1
    details = [queue.detail(a), queue.detail(b)]
    assert [(d.state, d.next_attempt_at, d.item.attempts, d.item.last_error) for d in details] == [
        (ItemState.PENDING, START + 2, 0, "outage"),
        (ItemState.PENDING, START + 30, 1, "rejected"),
    ]


def test_expedite_makes_waiting_items_due_now_and_leaves_others_alone(
    queue: DurableQueue, clock: Clock
) -> None:
    waiting, inflight, done = put(queue, "a"), put(queue, "b"), put(queue, "c")
    queue.claim(3, worker="w")
    queue.release(waiting, error="outage", delay=100, count_attempt=False)
    queue.ack([done])
    queue.expedite([waiting, inflight, done])
    assert [i.id for i in queue.claim(5, worker="w2")] == [waiting]
    assert (state(queue, inflight), state(queue, done)) == (ItemState.INFLIGHT, ItemState.DONE)


def test_release_returns_an_item_with_its_error_due_later(
    queue: DurableQueue, clock: Clock
) -> None:
    item_id = put(queue, "a")
    claim_one(queue)
    queue.release(item_id, error="target rejected it", delay=30)

    detail = queue.detail(item_id)
    assert detail is not None
    assert (detail.state, detail.next_attempt_at, detail.claimed_by) == (
        ItemState.PENDING,
        START + 30,
        None,
    )
    assert (detail.item.attempts, detail.item.last_error) == (1, "target rejected it")
    clock.advance(29)
    assert queue.claim(1, worker="w") == []
    clock.advance(1)
    assert claim_one(queue).id == item_id


def test_release_without_counting_or_error_keeps_attempts_and_the_last_error(
    queue: DurableQueue,
) -> None:
    item_id = put(queue, "a")
    claim_one(queue)
    queue.release(item_id, error="outage", delay=0, count_attempt=True)
    claim_one(queue)
    queue.release(item_id, error=None, delay=0, count_attempt=False)

    [item] = queue.items(ItemState.PENDING)
    assert (item.attempts, item.last_error) == (1, "outage")
    assert queue.last_error_of(item_id) == "outage"


def test_releasing_an_item_whose_file_changed_meanwhile_merges_into_the_newer_item(
    queue: DurableQueue,
) -> None:
    old = put(queue, "a", ChangeKind.ADDED, size=10)
    claim_one(queue)
    new = put(queue, "a", ChangeKind.MODIFIED, size=20)
    queue.release(old, error="half-written", delay=100)

    assert state(queue, old) == ItemState.DONE
    assert queue.last_error_of(old) == f"superseded by item {new} after: half-written"
    [item] = queue.claim(10, worker="w")  # the newer content, due now, still ADDED
    assert (item.id, item.size, item.kind, item.attempts) == (new, 20, ChangeKind.ADDED, 0)
    assert item.last_error == "half-written"


def test_dead_letter_and_quarantine_keep_their_reason_and_are_never_claimed(
    queue: DurableQueue, clock: Clock
) -> None:
    dead, bad = put(queue, "dead"), put(queue, "bad")
    queue.claim(2, worker="w")
    queue.dead_letter(dead, "rejected 5 times: bad hand")
    queue.quarantine(bad, "not JSON")
    clock.advance(10 * LEASE)

    assert queue.claim(10, worker="w") == []
    assert (state(queue, dead), queue.last_error_of(dead)) == (
        ItemState.DEAD,
        "rejected 5 times: bad hand",
    )
    assert (state(queue, bad), queue.last_error_of(bad)) == (ItemState.QUARANTINED, "not JSON")


def test_settling_ignores_items_that_are_not_inflight(queue: DurableQueue) -> None:
    waiting = put(queue, "waiting")
    before = queue.detail(waiting)
    queue.ack([waiting])
    queue.release(waiting, error="x", delay=99)
    queue.dead_letter(waiting, "x")
    queue.quarantine(waiting, "x")
    assert queue.detail(waiting) == before
    assert before is not None and before.state == ItemState.PENDING


def test_a_late_verdict_after_a_lease_expired_is_ignored(queue: DurableQueue, clock: Clock) -> None:
    """The slow claimer's item was re-claimed and acknowledged by another: its late calls
    change nothing. Not fencing by worker can repeat work, never lose it."""
    item_id = put(queue, "a")
    claim_one(queue, "slow")
    clock.advance(LEASE)
    claim_one(queue, "fast")
    queue.ack([item_id])
    before = queue.detail(item_id)

    queue.release(item_id, error="slow failed", delay=0)
    queue.dead_letter(item_id, "slow gave up")
    queue.quarantine(item_id, "slow gave up")
    queue.ack([item_id])

    assert queue.detail(item_id) == before
    assert before is not None and before.state == ItemState.DONE
    assert queue.detail(12345) is None and queue.state_of(12345) is None


# -- requeue, inspection, statistics, pruning ---------------------------------------------


def dead_and_quarantined(queue: DurableQueue) -> tuple[int, int, int]:
    dead1 = put(queue, "d1", pc="PC01")
    dead2 = put(queue, "d2", pc="PC02")
    bad = put(queue, "q", pc="PC01")
    queue.claim(3, worker="w")
    queue.release(dead1, error="e", delay=0)
    claim_one(queue)
    queue.dead_letter(dead1, "dead one")
    queue.dead_letter(dead2, "dead two")
    queue.quarantine(bad, "broken")
    return dead1, dead2, bad


def test_requeue_gives_dead_items_a_fresh_start(queue: DurableQueue, clock: Clock) -> None:
    dead1, dead2, bad = dead_and_quarantined(queue)
    clock.advance(1)

    assert queue.requeue() == 2
    assert state(queue, bad) == ItemState.QUARANTINED
    claimed = queue.claim(10, worker="w")
    assert [(i.id, i.attempts, i.last_error) for i in claimed] == [
        (dead1, 0, "dead one"),  # the reason stays until the next try replaces it
        (dead2, 0, "dead two"),
    ]


def test_requeue_can_be_limited_to_a_pc_and_include_quarantined(queue: DurableQueue) -> None:
    dead1, dead2, bad = dead_and_quarantined(queue)

    assert queue.requeue([ItemState.DEAD, ItemState.QUARANTINED], pc_id="PC01") == 2
    assert [i.id for i in queue.items(ItemState.PENDING)] == [dead1, bad]
    assert [i.id for i in queue.items(ItemState.DEAD)] == [dead2]
    assert queue.requeue([]) == 0
    with pytest.raises(ValueError, match="inflight"):
        queue.requeue([ItemState.INFLIGHT])


def test_requeue_into_a_path_that_is_pending_again_keeps_one_item(
    queue: DurableQueue, clock: Clock
) -> None:
    dead = put(queue, "a", ChangeKind.ADDED)
    claim_one(queue)
    queue.dead_letter(dead, "rejected")
    newer = put(queue, "a", ChangeKind.MODIFIED, size=99)
    claim_one(queue)
    queue.release(newer, error="outage", delay=1000)

    assert queue.requeue() == 1
    assert state(queue, dead) == ItemState.DONE
    assert queue.last_error_of(dead) == f"superseded by item {newer}"
    [item] = queue.claim(10, worker="w")  # due now, attempts reset, ADDED kept
    assert (item.id, item.attempts, item.kind, item.size) == (newer, 0, ChangeKind.ADDED, 99)


def test_items_lists_by_state_oldest_first_within_the_limit(queue: DurableQueue) -> None:
    ids = [put(queue, f"f{i}") for i in range(5)]
    claim_one(queue)

    assert [i.id for i in queue.items()] == ids
    assert [i.id for i in queue.items(ItemState.PENDING, limit=2)] == ids[1:3]
    assert [i.id for i in queue.items(ItemState.INFLIGHT)] == ids[:1]
    assert queue.items(ItemState.DEAD) == []


def test_stats_count_every_state_and_the_backlog(queue: DurableQueue, clock: Clock) -> None:
    assert queue.stats().oldest_pending_age is None
    dead_and_quarantined(queue)  # 2 dead, 1 quarantined
    clock.advance(10)
    done = put(queue, "done", pc="PC03")
    claim_one(queue)
    queue.ack([done])
    waiting = put(queue, "waiting", pc="PC01")
    claim_one(queue)
    queue.release(waiting, error="x", delay=5)  # pending, not due yet
    put(queue, "busy", pc="PC02")
    claim_one(queue)  # inflight
    put(queue, "due", pc="PC02")
    clock.advance(2)

    stats = queue.stats()
    assert (stats.pending, stats.due, stats.inflight) == (2, 1, 1)
    assert (stats.done, stats.dead, stats.quarantined) == (1, 2, 1)
    assert stats.oldest_pending_age == 2.0
    assert stats.pending_by_pc == {"PC01": 1, "PC02": 1}
    assert stats.expired_leases == 0


def test_prune_deletes_only_done_items_acknowledged_long_enough_ago(
    queue: DurableQueue, clock: Clock
) -> None:
    dead1, dead2, bad = dead_and_quarantined(queue)
    old = put(queue, "old")
    claim_one(queue)
    queue.ack([old])
    clock.advance(100)
    recent = put(queue, "recent")
    claim_one(queue)
    queue.ack([recent])
    clock.advance(10)

    assert queue.prune_done(older_than=50) == 1
    assert queue.state_of(old) is None and queue.state_of(recent) == ItemState.DONE
    assert queue.prune_done(older_than=0) == 1
    assert [i.id for i in queue.items()] == [dead1, dead2, bad]  # never dead or quarantined
    with pytest.raises(ValueError):
        queue.prune_done(-1)


def test_acknowledging_a_batch_prunes_done_items_past_retention_and_nothing_else(
    queue: DurableQueue, clock: Clock
) -> None:
    """A queue that keeps working stays bounded: no caller has to remember to prune."""
    dead1, dead2, bad = dead_and_quarantined(queue)
    old = put(queue, "old")
    (item,) = queue.claim(1, worker="w")
    queue.ack_synced([SyncedFile(item.id, item.path, "PC01", 1, 1.0, "h")], source="batch")
    clock.advance(RETENTION + 1)
    new = put(queue, "new")
    (item,) = queue.claim(1, worker="w")
    queue.ack_synced([SyncedFile(item.id, item.path, "PC01", 1, 1.0, "h")], source="batch")

    assert queue.state_of(old) is None and queue.state_of(new) == ItemState.DONE
    assert sorted(i.id for i in queue.items()) == sorted([dead1, dead2, bad, new])
    assert [row.path for row in queue.synced_since()] == [item.path]


# -- what was synced ----------------------------------------------------------------------


def test_file_state_is_upserted_by_path_and_listed_per_pc(
    queue: DurableQueue, clock: Clock
) -> None:
    assert queue.file_state(hands("a")) is None
    queue.record_file_state(hands("a"), "PC01", 10, 1.5, "h1", "synced")
    clock.advance(5)
    queue.record_file_state(hands("a"), "PC01", 12, 2.5, "h2", "synced")
    queue.record_file_state(hands("b", "PC02"), "PC02", 3, 0.25, "", "quarantined")

    a = FileState(hands("a"), "PC01", 12, 2.5, "h2", "synced", START + 5)
    b = FileState(hands("b", "PC02"), "PC02", 3, 0.25, "", "quarantined", START + 5)
    assert queue.file_state(hands("a")) == a
    assert queue.file_states() == {a.path: a, b.path: b}
    assert queue.file_states("PC02") == {b.path: b}
    assert queue.file_states("PC09") == {}


def test_needs_sync_unless_size_and_mtime_match_exactly(queue: DurableQueue) -> None:
    mtime = 1_732_000_000.123456  # a real st_mtime: must round-trip exactly
    assert queue.needs_sync(hands("a"), 10, mtime)
    queue.record_file_state(hands("a"), "PC01", 10, mtime, "h", "synced")
    assert not queue.needs_sync(hands("a"), 10, mtime)
    assert queue.needs_sync(hands("a"), 11, mtime)
    assert queue.needs_sync(hands("a"), 10, mtime + 1e-6)


# -- backoff ------------------------------------------------------------------------------


class Highest(random.Random):
    """Jitter pinned to its top, to see the nominal delays."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_from_initial_up_to_the_cap() -> None:
    delays = [backoff_delay(n, 2.0, 60.0, Highest()) for n in range(1, 8)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert backoff_delay(0, 2.0, 60.0, Highest()) == 2.0  # no attempt yet counts as the first
    assert backoff_delay(10**9, 2.0, 60.0, Highest()) == 60.0  # no overflow


def test_backoff_jitter_is_seeded_and_reproducible() -> None:
    first = [backoff_delay(n, 1.0, 300.0, random.Random(7)) for n in range(1, 10)]
    again = [backoff_delay(n, 1.0, 300.0, random.Random(7)) for n in range(1, 10)]
    assert first == again


def test_backoff_refuses_a_zero_or_negative_base() -> None:
    with pytest.raises(ValueError):
        backoff_delay(1, 0.0, 10.0)
    with pytest.raises(ValueError):
        backoff_delay(1, 1.0, -1.0)


@given(
    attempts=st.integers(-5, 5000),
    initial=st.floats(1e-3, 1e3),
    cap=st.floats(1e-3, 1e6),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_between_half_the_nominal_delay_and_the_cap(
    attempts: int, initial: float, cap: float, seed: int
) -> None:
    delay = backoff_delay(attempts, initial, cap, random.Random(seed))
    nominal = min(cap, initial * 2.0 ** min(max(attempts, 1) - 1, 62))
    assert 0 < delay <= cap
    assert nominal * 0.5 <= delay <= nominal


# -- concurrency: threads and processes ---------------------------------------------------


def test_threads_sharing_one_queue_never_claim_the_same_item(queue: DurableQueue) -> None:
    ids = queue.enqueue_many(
        NewChange("PC01", hands(f"t{i}"), ChangeKind.ADDED) for i in range(400)
    )
    claimed: list[list[int]] = [[] for _ in range(4)]

    def work(mine: list[int]) -> None:
        while batch := queue.claim(3, worker=threading.current_thread().name):
            mine.extend(i.id for i in batch)
            queue.ack(i.id for i in batch)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every = [i for mine in claimed for i in mine]
    assert sorted(every) == sorted(ids)  # all of them, none twice
    assert queue.stats().done == 400


def _claim_until_empty(path: str, worker: str, start: Barrier, results: ProcessQueue) -> None:
    """One process: its own connection, claiming small batches until nothing is due."""
    claimed: list[int] = []
    with DurableQueue(Path(path)) as queue:
        start.wait()
        while batch := queue.claim(7, worker=worker):
            claimed.extend(item.id for item in batch)
            time.sleep(0.002)  # the work between claim and ack, outside the lock
            queue.ack(item.id for item in batch)
    results.put((worker, claimed))


def test_connections_opening_a_new_file_at_once_share_one_schema(queue_path: Path) -> None:
    opened: list[DurableQueue] = []
    threads = [
        threading.Thread(target=lambda: opened.append(DurableQueue(queue_path))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(opened) == 4
    for n, queue in enumerate(opened):
        queue.enqueue("PC01", hands(f"c{n}"), ChangeKind.ADDED)
    assert [queue.stats().pending for queue in opened] == [4, 4, 4, 4]
    for queue in opened:
        queue.close()


def test_processes_claiming_concurrently_never_get_the_same_item(queue_path: Path) -> None:
    with DurableQueue(queue_path) as queue:
        ids = queue.enqueue_many(
            NewChange(f"PC{i % 8:02}", hands(f"p{i}"), ChangeKind.MODIFIED, 1000, 1.0)
            for i in range(2000)
        )
    context = multiprocessing.get_context("spawn")  # fresh processes, as in production
    start = context.Barrier(4)
    results = context.Queue()
    workers = [
        context.Process(target=_claim_until_empty, args=(str(queue_path), f"w{n}", start, results))
        for n in range(4)
    ]
    for process in workers:
        process.start()
    got = dict(results.get(timeout=120) for _ in workers)
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0

    every = [item_id for claimed in got.values() for item_id in claimed]
    assert len(every) == len(set(every)), "an item was claimed twice"
    assert set(every) == set(ids), "an item was never claimed"
    assert sum(1 for claimed in got.values() if claimed) >= 2, "the claims did not overlap"
    with DurableQueue(queue_path) as queue:
        stats = queue.stats()
        assert (stats.done, stats.pending, stats.inflight) == (2000, 0, 0)


# -- nothing is lost: the queue against a model -------------------------------------------

PATHS = [hands(name) for name in "abcd"]
SETTLE = ("ack", "release", "dead_letter", "quarantine")


def _subsets(values: type[ChangeKind] | type[Origin]) -> st.SearchStrategy:
    return st.none() | st.frozensets(st.sampled_from(list(values)))


LANES = st.builds(Lane, _subsets(ChangeKind), _subsets(Origin))


def in_lane(lane: Lane, item: QueueItem) -> bool:
    """The model of a lane: kind and origin both among the lane's (None: any)."""
    return (lane.kinds is None or item.kind in lane.kinds) and (
        lane.origins is None or item.origin in lane.origins
    )


class NothingIsLost(RuleBasedStateMachine):
    """Random enqueue/claim/settle/requeue/time steps. The model knows, per path, whether its
    last enqueue has been answered: acknowledged, dead-lettered or quarantined through a claim
    made after it. Until then the path must have a live (pending or inflight) item."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="gfx-queue-model-"))
        self.clock = Clock(START)
        self.queue = DurableQueue(self.folder / "q.sqlite3", lease_seconds=LEASE, clock=self.clock)
        self.step = 0
        self.last_enqueue: dict[str, int] = {}
        self.answered: dict[str, bool] = {}
        self.claimed_at: dict[int, int] = {}  # item id -> step of its latest claim

    def teardown(self) -> None:
        self.queue.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def tick(self) -> int:
        self.step += 1
        return self.step

    def rows(self) -> dict:
        return {i.id: self.queue.detail(i.id) for i in self.queue.items(limit=100_000)}

    @initialize()
    def start_somewhere(self) -> None:
        self.tick()

    @rule(
        path=st.sampled_from(PATHS),
        kind=st.sampled_from(list(ChangeKind)),
        origin=st.sampled_from(list(Origin)),
        size=st.sampled_from([None, 1, 2]),
    )
    def enqueue(self, path: str, kind: ChangeKind, origin: Origin, size: int | None) -> None:
        item_id = self.queue.enqueue("PC01", path, kind, size, 1.0, origin)
        assert self.queue.state_of(item_id) == ItemState.PENDING
        self.last_enqueue[path] = self.tick()
        self.answered[path] = False

    @rule(
        limit=st.integers(1, 4),
        lanes=st.none() | st.lists(LANES, min_size=1, max_size=2),
        worker=st.sampled_from(["w1", "w2"]),
    )
    def claim(self, limit: int, lanes: list[Lane] | None, worker: str) -> None:
        now = self.clock.now
        before = self.rows()
        busy = {
            d.item.path
            for d in before.values()
            if d.state == ItemState.INFLIGHT and d.lease_until > now
        }
        claimable = {
            d.item.path
            for d in before.values()
            if (
                (d.state == ItemState.PENDING and d.next_attempt_at <= now)
                or (d.state == ItemState.INFLIGHT and d.lease_until <= now)
            )
            and (lanes is None or any(in_lane(lane, d.item) for lane in lanes))
            and d.item.path not in busy
        }
        got = self.queue.claim(limit, worker=worker, lanes=lanes)
        paths = [i.path for i in got]
        assert len(paths) == len(set(paths)), "one file twice in a claim"
        assert set(paths) <= claimable
        if len(got) < limit:
            assert set(paths) == claimable, "a due item was left behind"
        order = [(before[i.id].next_attempt_at, i.id) for i in got]
        assert order == sorted(order)
        step = self.tick()
        for item in got:
            self.claimed_at[item.id] = step

    @precondition(lambda self: self.claimed_at)
    @rule(data=st.data(), action=st.sampled_from(SETTLE), delay=st.sampled_from([0.0, 5.0, 90.0]))
    def settle(self, data: st.DataObject, action: str, delay: float) -> None:
        item_id = data.draw(st.sampled_from(sorted(self.claimed_at)))
        before = self.queue.detail(item_id)
        if action == "ack":
            self.queue.ack([item_id])
        elif action == "release":
            self.queue.release(item_id, error="boom", delay=delay, count_attempt=True)
        elif action == "dead_letter":
            self.queue.dead_letter(item_id, "gave up")
        else:
            self.queue.quarantine(item_id, "unreadable")
        after = self.queue.detail(item_id)
        if before is None or before.state != ItemState.INFLIGHT:
            assert after == before, "a settle changed an item that was not inflight"
            return
        assert after is not None
        expected = {
            "ack": {ItemState.DONE},
            "release": {ItemState.PENDING, ItemState.DONE},  # DONE: superseded by a newer one
            "dead_letter": {ItemState.DEAD},
            "quarantine": {ItemState.QUARANTINED},
        }[action]
        assert after.state in expected
        path = after.item.path
        if action != "release" and self.claimed_at[item_id] > self.last_enqueue[path]:
            self.answered[path] = True

    @rule(seconds=st.sampled_from([1.0, LEASE / 2, LEASE, 100.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(quarantined=st.booleans())
    def requeue(self, quarantined: bool) -> None:
        states = [ItemState.DEAD] + ([ItemState.QUARANTINED] if quarantined else [])
        count = sum(len(self.queue.items(s)) for s in states)
        assert self.queue.requeue(states) == count
        assert all(not self.queue.items(s) for s in states)

    @rule()
    def drain_everything(self) -> None:
        """Liveness: once leases and backoffs have run out, everything can be acknowledged."""
        self.clock.advance(LEASE + 1000)
        while got := self.queue.claim(100, worker="drainer"):
            step = self.tick()
            self.queue.ack(i.id for i in got)
            for item in got:
                self.claimed_at[item.id] = step
                if step > self.last_enqueue[item.path]:
                    self.answered[item.path] = True
        assert all(self.answered.values())
        stats = self.queue.stats()
        assert (stats.pending, stats.inflight) == (0, 0)

    @invariant()
    def nothing_is_lost(self) -> None:
        live: dict[str, int] = {}
        for d in self.rows().values():
            if d.state in (ItemState.PENDING, ItemState.INFLIGHT):
                live[d.item.path] = live.get(d.item.path, 0) + 1
            if d.state in (ItemState.DEAD, ItemState.QUARANTINED):
                assert d.item.last_error, "a dead or quarantined item without its reason"
        for path, answered in self.answered.items():
            assert answered or live.get(path), f"{path} was enqueued and then lost"

    @invariant()
    def at_most_one_pending_item_per_path(self) -> None:
        paths = [i.path for i in self.queue.items(ItemState.PENDING, limit=100_000)]
        assert len(paths) == len(set(paths))


TestNothingIsLost = NothingIsLost.TestCase
TestNothingIsLost.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_has_due_answers_what_claim_would_find(queue: DurableQueue, clock: Clock) -> None:
    """The warm runner skips a run's child when this says nothing is due."""
    assert not queue.has_due()
    put(queue, "a", ChangeKind.ADDED)
    assert queue.has_due(lanes=[REALTIME_LANE])
    assert not queue.has_due(lanes=[Lane(kinds=frozenset({ChangeKind.MODIFIED}))])
    assert not queue.has_due(added_grace=30)  # fresh: left to the realtime run
    clock.advance(30)
    assert queue.has_due(added_grace=30)
    [item] = queue.claim(10, worker="rt")
    assert not queue.has_due()  # in flight under a live lease
    queue.ack([item.id])
    assert not queue.has_due()


def test_files_and_bytes_synced_are_counted_per_window(queue: DurableQueue, clock: Clock) -> None:
    """Each window counts what committed within it: a file from 2 h ago is in the day only,
    one from 2 min ago in the hour and the day, one just now in all three."""
    for name, size, then_wait in (("2h", 1000, 7080.0), ("2min", 200, 120.0), ("now", 30, 0.0)):
        put(queue, name)
        (item,) = queue.claim(1, worker="w")
        queue.ack_synced([SyncedFile(item.id, item.path, "PC01", size, 1.0, "h")], source="batch")
        clock.advance(then_wait)
    windows = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}
    assert queue.synced_within(windows) == (
        {"minute": 1, "hour": 2, "day": 3},
        {"minute": 30, "hour": 230, "day": 1230},
    )
    assert queue.synced_within({}) == ({}, {})

    # Asked again with nothing changed: the kept answer, no read of the log.
    statements: list[str] = []
    assert queue._conn is not None
    queue._conn.set_trace_callback(statements.append)
    assert queue.synced_within(windows)[0] == {"minute": 1, "hour": 2, "day": 3}
    queue._conn.set_trace_callback(None)
    assert not [s for s in statements if "synced_log" in s]
    # A row leaving a window changes the answer without any write...
    clock.advance(61.0)
    assert queue.synced_within(windows)[0] == {"minute": 0, "hour": 2, "day": 3}
    clock.advance(3600.0 - 120.0 - 61.0 + 1.0)
    assert queue.synced_within(windows) == (
        {"minute": 0, "hour": 1, "day": 3},
        {"minute": 0, "hour": 30, "day": 1230},
    )
    # ...and so does a commit.
    put(queue, "later")
    (item,) = queue.claim(1, worker="w")
    queue.ack_synced([SyncedFile(item.id, item.path, "PC01", 4, 1.0, "h")], source="batch")
    assert queue.synced_within(windows)[0] == {"minute": 1, "hour": 2, "day": 4}


def test_operator_reads_are_kept_until_the_queue_changes(
    queue: DurableQueue, queue_path: Path, clock: Clock
) -> None:
    """The console and the status table ask for the last commit, the per-PC summaries and the
    unresolved failures every few seconds: a queue that stands still is read once, and a write
    through any connection (another process's, or this one's) shows in the next answer."""
    put(queue, "a")
    (item,) = queue.claim(1, worker="w")
    queue.quarantine(item.id, "truncated JSON")

    def reads() -> tuple[object, ...]:
        return (
            queue.last_commit_at(),
            {pc: s.pending for pc, s in queue.pc_summaries().items()},
            [f.item.last_error for f in queue.unresolved_failures()],
        )

    assert reads() == (None, {}, ["truncated JSON"])
    statements: list[str] = []
    assert queue._conn is not None
    queue._conn.set_trace_callback(statements.append)
    clock.advance(3600.0)  # none of these reads depends on the time of asking
    assert reads() == (None, {}, ["truncated JSON"])
    assert [s for s in statements if "SELECT" in s] == [], "a queue that stood still was read"
    queue._conn.set_trace_callback(None)

    queue.pc_summaries().clear()  # an answer handed out is the caller's copy
    queue.unresolved_failures().clear()
    assert reads() == (None, {}, ["truncated JSON"])

    with DurableQueue(queue_path, clock=clock) as watcher:  # as the watcher process
        watcher.enqueue("PC01", hands("b"), ChangeKind.ADDED)
    assert reads() == (None, {"PC01": 1}, ["truncated JSON"])

    (item,) = queue.claim(1, worker="w")  # through this queue's own connection
    queue.ack_synced([SyncedFile(item.id, item.path, "PC01", 10, 1.0, "h")], source="batch")
    put(queue, "a")
    (item,) = queue.claim(1, worker="w")
    queue.ack_synced([SyncedFile(item.id, item.path, "PC01", 10, 1.0, "h")], source="batch")
    assert reads() == (clock(), {"PC01": 0}, [])  # the quarantined file synced since
