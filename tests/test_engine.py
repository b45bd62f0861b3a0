"""The engine: changes are persisted first, acknowledged only after the target committed them,
retried through outages, quarantined only when stable and still broken."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from bench.proxy import LOOPBACK, ProxyProcess, Upstream, unix_socket_of
from gfx_sync.engine import FIRST_BATCH_SHARE, Outcome, SyncEngine
from gfx_sync.pokergfx import SessionRecord
from gfx_sync.queue import ChangeKind, DurableQueue, ItemState
from gfx_sync.settings import Settings
from gfx_sync.sinks.base import Delivery, SyncEvent, WriteResult
from gfx_sync.sinks.postgres import SPLIT_MIN_BYTES, PostgresSink
from support import sessions
from support.clock import Clock
from support.disk import fill, small_disk
from support.nas import make_nas, nas_settings
from support.records import SESSION_ID, session_document


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_nas(tmp_path, ("PC01",))


@pytest.fixture
def settings(tmp_path: Path, base: Path) -> Settings:
    return nas_settings(tmp_path, settle_seconds=2.0, max_retries=2, outage_retry_delay=2.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(settings: Settings, clock: Clock) -> DurableQueue:
    with DurableQueue(settings.resolved_queue_path, clock=clock) as queue:
        yield queue


def make_engine(settings: Settings, queue: DurableQueue, url: str, clock: Clock) -> SyncEngine:
    return SyncEngine(settings, queue, PostgresSink(url, timeout=2), clock=clock)


def write_session(base: Path, *, age: float = sessions.STABLE_AGE, **fields: Any) -> Path:
    """A session file in PC01's folder of the NAS at `base`, settled unless `age` says."""
    return sessions.write_session(base / "PC01" / "hands", age=age, **fields)


def table(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select gfx_pc_id, session_id, hand_count, file_path, sync_source "
            "from gfx_sessions order by session_id"
        ).fetchall()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def test_a_file_goes_through_the_queue_into_one_row(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    engine = make_engine(settings, queue, database_url, clock)
    path = write_session(base, hands=3)
    engine.site.enqueue(engine.queue, [path], ChangeKind.ADDED)
    report = engine.drain()
    assert [o.status for o in report.outcomes] == [Outcome.SYNCED]
    assert table(database_url) == [("PC01", SESSION_ID, 3, f"PC01/hands/{path.name}", "realtime")]
    assert queue.stats().done == 1 and queue.stats().pending == 0
    assert not queue.needs_sync(str(path), path.stat().st_size, path.stat().st_mtime)


def test_growth_through_the_queue_ends_with_the_latest(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    engine = make_engine(settings, queue, database_url, clock)
    for hands in (1, 2, 5):
        path = write_session(base, hands=hands, age=60 - hands)
        engine.site.enqueue(engine.queue, [path], ChangeKind.MODIFIED)
        engine.drain()
    assert [row[2] for row in table(database_url)] == [5]


def test_an_outage_keeps_items_pending_without_using_retries_then_they_drain(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    paths = [write_session(base, hands=2, session_id=SESSION_ID + n) for n in range(4)]
    down = make_engine(settings, queue, closed_port_url(), clock)
    down.site.enqueue(down.queue, paths, ChangeKind.ADDED)
    for _ in range(settings.max_retries + 3):  # more failures than max_retries
        report = down.drain()
        assert {o.status for o in report.outcomes} == {Outcome.RETRY}
        assert "connection" in report.outcomes[0].detail.lower()
        clock.now += settings.outage_retry_delay
    stats = queue.stats()
    assert (stats.pending, stats.dead, stats.done) == (4, 0, 0)
    assert all(item.last_error for item in queue.items(ItemState.PENDING))

    back = make_engine(settings, queue, database_url, clock)
    assert back.drain().count(Outcome.SYNCED) == 4
    assert len(table(database_url)) == 4
    assert queue.stats().pending == 0


def test_a_truncated_file_is_retried_while_settling_then_synced(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    engine = make_engine(settings, queue, database_url, clock)
    path = write_session(base, hands=2)
    complete = path.read_bytes()
    path.write_bytes(complete[: len(complete) // 2])  # mid-rewrite; mtime is now
    clock.now = path.stat().st_mtime + 0.5
    engine.site.enqueue(engine.queue, [path], ChangeKind.ADDED)
    report = engine.drain()
    assert [o.status for o in report.outcomes] == [Outcome.RETRY]
    assert "truncated" in report.outcomes[0].detail
    assert not (settings.error_dir).exists()  # never quarantined while settling

    path.write_bytes(complete)  # PokerGFX finishes writing
    clock.now += 5
    engine.site.enqueue(engine.queue, [path], ChangeKind.MODIFIED)
    assert [o.status for o in engine.drain().outcomes] == [Outcome.SYNCED]
    assert [row[2] for row in table(database_url)] == [2]


def test_a_stable_broken_file_is_copied_to_quarantine_and_retried_when_it_changes(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    engine = make_engine(settings, queue, database_url, clock)
    path = base / "PC01" / "hands" / "PGFX_live_data_export GameID=1.json"
    path.write_bytes(b'{"not": "a session"}')
    old = time.time() - 60
    os.utime(path, (old, old))
    engine.site.enqueue(engine.queue, [path], ChangeKind.ADDED)
    report = engine.drain()
    assert [o.status for o in report.outcomes] == [Outcome.QUARANTINED]
    assert path.exists()  # copied, not moved: PokerGFX may still own it
    copy = settings.error_dir / "PC01" / f"PC01__hands__{path.name}"
    reason = copy.with_name(copy.name + ".reason.txt").read_text()
    assert copy.read_bytes() == path.read_bytes()
    assert path.name in reason and "not a PokerGFX session" in reason
    assert queue.stats().quarantined == 1
    assert not queue.needs_sync(str(path), path.stat().st_size, path.stat().st_mtime)
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "select event_type, gfx_pc_id, file_path from sync_events"
        ).fetchall() == [("quarantined", "PC01", f"PC01/hands/{path.name}")]

    path.write_bytes(orjson.dumps(session_document(1, 1)))  # fixed later
    assert queue.needs_sync(str(path), path.stat().st_size, path.stat().st_mtime)
    clock.now = time.time() + 10
    engine.site.enqueue(engine.queue, [path], ChangeKind.MODIFIED)
    assert [o.status for o in engine.drain().outcomes] == [Outcome.SYNCED]
    # _error/ lists what is broken now: the committed file's entry is gone, others stay.
    assert list((settings.error_dir / "PC01").iterdir()) == []


def test_a_broken_file_dated_far_in_the_future_is_quarantined_not_parked(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    """Its age is negative: waiting for it to "settle" would park it for years."""
    engine = make_engine(settings, queue, database_url, clock)
    path = base / "PC01" / "hands" / "PGFX_live_data_export GameID=1.json"
    path.write_bytes(b'{"not": "a session"}')
    future = time.time() + 10 * 365 * 86400
    os.utime(path, (future, future))
    engine.site.enqueue(engine.queue, [path], ChangeKind.ADDED)
    assert [o.status for o in engine.drain().outcomes] == [Outcome.QUARANTINED]
    assert queue.stats().quarantined == 1


def test_a_rejected_file_is_retried_with_backoff_then_dead_lettered(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    engine = make_engine(settings, queue, database_url, clock)
    path = write_session(base, hands=1)
    path.write_bytes(path.read_bytes().replace(b'"EventTitle":""', b'"EventTitle":"\\u0000"'))
    os.utime(path, (time.time() - 60,) * 2)
    engine.site.enqueue(engine.queue, [path], ChangeKind.ADDED)
    statuses = []
    for _ in range(settings.max_retries + 1):
        statuses += [o.status for o in engine.drain().outcomes]
        assert engine.drain().outcomes == []  # backing off: not due yet
        clock.now += settings.backoff_max
    assert statuses == [Outcome.RETRY] * settings.max_retries + [Outcome.DEAD]
    [dead] = queue.items(ItemState.DEAD)
    assert "NUL" in (dead.last_error or "")
    assert table(database_url) == []


def test_a_file_deleted_before_it_is_read_is_settled(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    engine = make_engine(settings, queue, database_url, clock)
    path = write_session(base, hands=1)
    engine.site.enqueue(engine.queue, [path], ChangeKind.ADDED)
    path.unlink()
    assert [o.status for o in engine.drain().outcomes] == [Outcome.VANISHED]
    assert queue.stats().pending == 0


def test_the_pc_comes_from_the_path_or_the_flag(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, tmp_path: Path
) -> None:
    engine = make_engine(settings, queue, database_url, Clock())
    inside = engine.site.locate(base / "PC01" / "hands" / "x.json")
    assert (inside.pc_id, inside.relative_path) == ("PC01", "PC01/hands/x.json")
    outside = engine.site.locate(tmp_path / "elsewhere" / "x.json", pc_id="PC07")
    assert outside.pc_id == "PC07"
    with pytest.raises(ValueError, match="pass --pc"):
        engine.site.locate(tmp_path / "elsewhere" / "x.json")


def test_a_batch_respects_batch_size(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    small = settings.model_copy(update={"batch_size": 3})
    engine = make_engine(small, queue, database_url, clock)
    paths = [write_session(base, hands=1, session_id=SESSION_ID + n) for n in range(7)]
    engine.site.enqueue(engine.queue, paths, ChangeKind.MODIFIED)
    report = engine.drain()
    assert (report.batches, report.count(Outcome.SYNCED)) == (3, 7)
    assert len(table(database_url)) == 7


def events(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select event_type, gfx_pc_id, file_count, details->>'requests' from sync_events "
            "order by id"
        ).fetchall()


def test_a_batch_commits_with_its_events_and_its_file_states(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    engine = make_engine(settings, queue, database_url, clock)
    paths = [write_session(base, hands=2, session_id=SESSION_ID + n) for n in range(3)]
    broken = base / "PC01" / "hands" / "PGFX_live_data_export GameID=9.json"
    broken.write_bytes(b'{"not": "a session"}')
    os.utime(broken, (time.time() - 60,) * 2)
    engine.site.enqueue(engine.queue, [*paths, broken], ChangeKind.MODIFIED)
    report = engine.drain()
    assert (report.count(Outcome.SYNCED), report.count(Outcome.QUARANTINED)) == (3, 1)
    assert events(database_url) == [("quarantined", "PC01", 0, None), ("batch", None, 3, "1")]
    assert len(table(database_url)) == 3
    for path in paths:
        state = queue.file_state(str(path))
        assert state is not None and state.outcome == Outcome.SYNCED
        assert not queue.needs_sync(str(path), path.stat().st_size, path.stat().st_mtime)
    assert queue.stats().done == 3


def test_a_failing_events_table_never_costs_the_data(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("alter table sync_events add constraint refuse_all check (false) not valid")
    engine = make_engine(settings, queue, database_url, clock)
    paths = [write_session(base, hands=1, session_id=SESSION_ID + n) for n in range(2)]
    engine.site.enqueue(engine.queue, paths, ChangeKind.MODIFIED)
    assert engine.drain().count(Outcome.SYNCED) == 2
    assert len(table(database_url)) == 2 and events(database_url) == []
    stats = queue.stats()
    assert (stats.done, stats.pending, stats.inflight) == (2, 0, 0)


LONG_NOTES = "n" * (SPLIT_MIN_BYTES * 6 // 10)  # makes a file of ~0.6 split minimums
WRITERS_SQL = """
create table written_by (session_id bigint, backend int);
create function log_writer() returns trigger language plpgsql as $$
begin
    insert into written_by values (new.session_id, pg_backend_pid());
    return null;
end;
$$;
create trigger log_writer after insert or update on gfx_sessions
    for each row execute function log_writer();
"""


@pytest.fixture
def big_batches(settings: Settings) -> Settings:
    """A byte budget whose first batch (1/FIRST_BATCH_SHARE of it) holds every file of a test."""
    return settings.model_copy(update={"batch_max_bytes": 64 * 1024 * 1024})


def written_by(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as conn:
        return conn.execute("select session_id, backend from written_by").fetchall()


def test_a_big_batch_is_written_in_parts_at_once_with_each_session_in_one_part(
    big_batches: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    """One transaction per part, each on its own connection (`write_connections`), so the
    database ingests the parts on as many cores; every snapshot of a session goes in the same
    part, where only the newest is sent, and each part's "batch" event commits with it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(WRITERS_SQL)  # type: ignore[arg-type]
    sink = PostgresSink(database_url, timeout=5, concurrent_writes=2)
    engine = SyncEngine(big_batches, queue, sink, clock=clock)
    paths = [
        write_session(base, hands=2, session_id=SESSION_ID + n, Notes=LONG_NOTES) for n in range(4)
    ]
    older = write_session(base, hands=1, name="older copy.json", Notes=LONG_NOTES)
    engine.site.enqueue(engine.queue, [*paths, older], ChangeKind.MODIFIED)
    report = engine.drain()
    assert (report.batches, report.requests, report.count(Outcome.SYNCED)) == (1, 2, 5)
    assert [row[2] for row in table(database_url)] == [2, 2, 2, 2]  # each session's newest
    writes = written_by(database_url)
    assert sorted(session for session, _ in writes) == [SESSION_ID + n for n in range(4)]
    assert len({backend for _, backend in writes}) == 2  # two connections wrote
    parts = [e for e in events(database_url) if e[0] == "batch"]
    assert len(parts) == 2 and sum(e[2] for e in parts) == 5 and {e[3] for e in parts} == {"1"}
    assert (queue.stats().done, queue.stats().inflight) == (5, 0)


def test_a_small_batch_is_one_transaction_whatever_the_connections(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    sink = PostgresSink(database_url, timeout=5, concurrent_writes=2)
    engine = SyncEngine(settings, queue, sink, clock=clock)
    paths = [write_session(base, hands=2, session_id=SESSION_ID + n) for n in range(4)]
    engine.site.enqueue(engine.queue, paths, ChangeKind.MODIFIED)
    report = engine.drain()
    assert (report.batches, report.requests, report.count(Outcome.SYNCED)) == (1, 1, 4)
    assert events(database_url) == [("batch", None, 4, "1")]


class WrappedSink:
    """The real Postgres sink behind a test's twist (subclasses override `write_batch`)."""

    def __init__(self, sink: PostgresSink) -> None:
        self.sink = sink
        self.name = sink.name

    def write_batch(
        self,
        deliveries: Sequence[Delivery],
        *,
        sync_source: str,
        events: Sequence[SyncEvent] = (),
    ) -> WriteResult:
        return self.sink.write_batch(deliveries, sync_source=sync_source, events=events)

    def record_events(self, events: Sequence[SyncEvent]) -> None:
        self.sink.record_events(events)

    def ping(self, *, timeout: float) -> bool:
        return self.sink.ping(timeout=timeout)

    def close(self) -> None:
        self.sink.close()


class FailsOnSession(PostgresSink):
    """The Postgres sink, but the part holding `session_id` raises (a bug, an interrupt)
    before it is sent."""

    def __init__(self, database_url: str, session_id: int, **options: Any) -> None:
        super().__init__(database_url, **options)
        self.session_id = session_id

    def _send(
        self, records: Sequence[SessionRecord], sync_source: str, events: Sequence[SyncEvent]
    ) -> bool:
        if any(r.session_id == self.session_id for r in records):
            raise RuntimeError(f"part with session {self.session_id} broke")
        return super()._send(records, sync_source, events)


def test_a_part_that_raises_leaves_its_items_claimed_and_the_other_parts_acknowledged(
    big_batches: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    sink = FailsOnSession(database_url, SESSION_ID, timeout=5, concurrent_writes=2)
    engine = SyncEngine(big_batches, queue, sink, clock=clock)
    paths = [
        write_session(base, hands=2, session_id=SESSION_ID + n, Notes=LONG_NOTES) for n in range(4)
    ]
    engine.site.enqueue(engine.queue, paths, ChangeKind.MODIFIED)
    with pytest.raises(RuntimeError, match=f"session {SESSION_ID} broke"):
        engine.drain()
    stored = {row[1] for row in table(database_url)}
    assert SESSION_ID not in stored and len(stored) == 2  # the other part committed
    assert events(database_url) == [("batch", None, 2, "1")]  # with that part, once
    stats = queue.stats()
    assert (stats.done, stats.inflight) == (2, 2)  # acknowledged / leased until it runs out


@pytest.fixture
def proxy(database_url: str) -> Iterator[tuple[ProxyProcess, str]]:
    """A loopback proxy in front of the test server that can refuse connections ("down")."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    host, port = str(info.get("host") or ""), info.get("port")
    if host.startswith("/"):
        upstream = Upstream(unix_path=unix_socket_of(host, port))
    elif host in (LOOPBACK, "localhost"):
        upstream = Upstream(port=int(port or 5432))
    else:
        pytest.skip(f"the proxy only forwards to a local server, not {host}")
    with ProxyProcess(upstream) as proxy:
        url = psycopg.conninfo.make_conninfo(database_url, host=LOOPBACK, port=str(proxy.port))
        yield proxy, url


def test_a_run_that_waits_for_the_target_drains_once_it_is_back(
    settings: Settings,
    queue: DurableQueue,
    database_url: str,
    base: Path,
    clock: Clock,
    proxy: tuple[ProxyProcess, str],
) -> None:
    """Down at the start: the run probes, the target returns, and the same run commits every
    file, without using up a retry. (The queue's clock stands still, so only the run making
    its deferred items due again can get them through.)"""
    server, url = proxy
    engine = make_engine(settings, queue, url, clock)
    paths = [write_session(base, hands=2, session_id=SESSION_ID + n) for n in range(3)]
    engine.site.enqueue(engine.queue, paths, ChangeKind.MODIFIED)
    server.refuse(True)
    probes: list[bool] = []
    ping = engine.sink.ping

    def counting_ping(*, timeout: float) -> bool:
        answered = ping(timeout=timeout)
        probes.append(answered)
        if len(probes) == 2:
            server.refuse(False)  # back after two failed probes
        return answered

    engine.sink.ping = counting_ping  # type: ignore[method-assign]
    report = engine.drain(outage_wait=60)

    assert probes[:2] == [False, False] and probes[-1] is True
    assert report.outage is None and report.count(Outcome.SYNCED) == 3
    assert len(table(database_url)) == 3
    stats = queue.stats()
    assert (stats.done, stats.pending, stats.inflight) == (3, 0, 0)
    assert all(item.attempts == 0 for item in queue.items(ItemState.DONE))


def test_a_run_gives_up_waiting_when_the_target_stays_down(
    settings: Settings,
    queue: DurableQueue,
    base: Path,
    clock: Clock,
    proxy: tuple[ProxyProcess, str],
) -> None:
    server, url = proxy
    engine = make_engine(settings, queue, url, clock)
    engine.site.enqueue(engine.queue, [write_session(base, hands=1)], ChangeKind.MODIFIED)
    server.refuse(True)
    report = engine.drain(outage_wait=1.2)
    assert report.outage is not None and report.count(Outcome.RETRY) == 1
    [item] = queue.items(ItemState.PENDING)
    assert item.attempts == 0 and item.last_error
    detail = queue.detail(item.id)
    assert detail is not None and detail.next_attempt_at > clock.now  # not expedited


def test_a_read_ahead_batch_that_is_not_sent_goes_back_untried(
    settings: Settings, queue: DurableQueue, base: Path, clock: Clock
) -> None:
    """Batch 2 is read while batch 1 is sent; batch 1 finds the target down, so the run stops
    and batch 2 returns to the queue: no lease left behind, no attempt counted."""
    one = settings.model_copy(update={"batch_size": 1})
    engine = make_engine(one, queue, closed_port_url(), clock)
    paths = [write_session(base, hands=1, session_id=SESSION_ID + n) for n in range(3)]
    engine.site.enqueue(engine.queue, paths, ChangeKind.MODIFIED)
    report = engine.drain()
    assert report.outage is not None and report.batches == 1
    stats = queue.stats()
    assert (stats.pending, stats.inflight, stats.done) == (3, 0, 0)
    assert all(item.attempts == 0 for item in queue.items(ItemState.PENDING))


def test_the_first_batch_of_a_run_is_small_so_sending_starts_early(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    """It is read before anything can be sent: 1/FIRST_BATCH_SHARE of the byte budget (at
    least one file); the batches after it, read ahead while one is on the wire, get it all."""
    budget = settings.model_copy(update={"batch_max_bytes": 64 * 1024})
    engine = make_engine(budget, queue, database_url, clock)
    paths = [write_session(base, hands=100, session_id=SESSION_ID + n) for n in range(8)]
    size = paths[0].stat().st_size
    assert 2 * size > 64 * 1024 // FIRST_BATCH_SHARE and 8 * size < 64 * 1024
    engine.site.enqueue(engine.queue, paths, ChangeKind.MODIFIED)
    report = engine.drain()
    assert (report.batches, report.count(Outcome.SYNCED)) == (2, 8)
    assert [o.session_id for o in report.outcomes[:1]] == [SESSION_ID]  # alone in the first
    assert len(table(database_url)) == 8


def test_max_batches_bounds_a_run_with_read_ahead(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    one = settings.model_copy(update={"batch_size": 1})
    engine = make_engine(one, queue, database_url, clock)
    paths = [write_session(base, hands=1, session_id=SESSION_ID + n) for n in range(5)]
    engine.site.enqueue(engine.queue, paths, ChangeKind.MODIFIED)
    report = engine.drain(max_batches=2)
    assert (report.batches, report.count(Outcome.SYNCED)) == (2, 2)
    stats = queue.stats()
    assert (stats.done, stats.pending, stats.inflight) == (2, 3, 0)
    assert engine.drain().count(Outcome.SYNCED) == 3
    assert len(table(database_url)) == 5


def test_a_target_that_answers_but_keeps_failing_gets_one_more_try_per_run(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    """The probe answers (the server is up) but every write fails as an outage (here: "disk
    full"): the run re-sends once, then stops, instead of re-sending the batch in a loop."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "create function disk_full() returns trigger language plpgsql as $$ "
            "begin raise exception 'no space' using errcode = '53100'; end $$"
        )
        conn.execute(
            "create trigger disk_full before insert on gfx_sessions for each row "
            "execute function disk_full()"
        )
    engine = make_engine(settings, queue, database_url, clock)
    engine.site.enqueue(engine.queue, [write_session(base, hands=1)], ChangeKind.MODIFIED)
    report = engine.drain(outage_wait=30)
    assert report.outage is not None and "53100" in report.outage
    assert (report.batches, report.requests) == (2, 2)
    [item] = queue.items(ItemState.PENDING)
    assert item.attempts == 0


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_items_of_a_dead_local_claimer_are_synced_without_waiting_for_the_lease(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, clock: Clock
) -> None:
    """A SIGKILLed run leaves its claim behind; the next drain must not wait out the lease."""
    host = os.uname().nodename
    paths = [write_session(base, hands=2, session_id=SESSION_ID + n) for n in range(3)]
    engine = make_engine(settings, queue, database_url, clock)
    ids = engine.site.enqueue(engine.queue, paths, ChangeKind.ADDED)
    workers = {
        ids[0]: f"{host}:{dead_pid()}",  # crashed here: freed at once
        ids[1]: f"{host}:{os.getppid()}",  # alive here: keeps its lease
        ids[2]: f"elsewhere:{dead_pid()}",  # another host: not ours to judge
    }
    for item_id, worker in workers.items():
        assert [i.id for i in queue.claim(1, worker=worker)] == [item_id]

    report = engine.drain()
    assert [(o.item_id, o.status) for o in report.outcomes] == [(ids[0], Outcome.SYNCED)]
    assert [row[1] for row in table(database_url)] == [SESSION_ID]
    assert queue.detail(ids[0]).item.attempts == 1  # the crash is counted, like a lost lease
    held = {i: queue.detail(i) for i in ids[1:]}
    assert all(d.state is ItemState.INFLIGHT for d in held.values())
    assert {d.claimed_by for d in held.values()} == {workers[ids[1]], workers[ids[2]]}


class FillsTheQueueDiskAfterCommit(WrappedSink):
    """Once the sink has committed, the queue's disk fills up, and space comes back a moment
    later (as when an operator clears it)."""

    def __init__(self, sink: PostgresSink, filler: Path, space_back_after: float) -> None:
        super().__init__(sink)
        self.filler = filler
        self.space_back_after = space_back_after

    def write_batch(
        self,
        deliveries: Sequence[Delivery],
        *,
        sync_source: str,
        events: Sequence[SyncEvent] = (),
    ) -> WriteResult:
        result = super().write_batch(deliveries, sync_source=sync_source, events=events)
        fill(self.filler)
        threading.Timer(self.space_back_after, self.filler.unlink).start()
        return result


def test_a_full_queue_disk_after_commit_holds_the_acks_until_space_returns(
    settings: Settings, database_url: str, base: Path, tmp_path: Path
) -> None:
    """The target committed, then the ack cannot be written: the run keeps trying instead of
    leaving the items in flight until their lease expires (newer changes to those paths would
    wait behind them all that time)."""
    with small_disk(tmp_path / "queue-disk", 1024 * 1024) as disk:
        with DurableQueue(disk / "queue.sqlite3") as queue:
            sink = FillsTheQueueDiskAfterCommit(
                PostgresSink(database_url, timeout=2), disk / "filler", space_back_after=1.0
            )
            engine = SyncEngine(settings, queue, sink)  # type: ignore[arg-type]
            paths = [write_session(base, hands=2, session_id=SESSION_ID + i) for i in range(5)]
            engine.site.enqueue(engine.queue, paths, ChangeKind.ADDED)
            report = engine.drain_once()
            assert report.count(Outcome.SYNCED) == 5
            stats = queue.stats()
            assert (stats.done, stats.inflight, stats.pending) == (5, 0, 0)
            assert not any(
                queue.needs_sync(str(p), p.stat().st_size, p.stat().st_mtime) for p in paths
            )
        assert len(table(database_url)) == 5
