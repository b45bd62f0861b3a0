"""The operator's snapshot and change feed, on a real queue and a real Postgres: what synced,
what waits, what failed, per PC; a target that is cut turns its checks red and back."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from gfx_sync.engine import SyncEngine
from gfx_sync.observe import ChangeFeed, Observer, OrchestratorView, PcState, pc_state
from gfx_sync.queue import ChangeKind, DurableQueue, ItemState
from gfx_sync.settings import Settings
from gfx_sync.sinks.postgres import PostgresSink
from gfx_sync.target_views import PostgresReader, RestReader
from support.nas import make_nas, nas_settings
from support.postgrest import run_postgrest
from support.sessions import STABLE_AGE, write_session

PREFECT_OK = OrchestratorView(True, "Prefect reachable", ui_url="http://127.0.0.1:4200")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_nas(tmp_path)


@pytest.fixture
def settings(tmp_path: Path, base: Path) -> Settings:
    return nas_settings(tmp_path, settle_seconds=0.0, max_retries=0)


@pytest.fixture
def queue(settings: Settings) -> DurableQueue:
    settings.state_dir.mkdir(parents=True)
    with DurableQueue(settings.resolved_queue_path) as queue:
        yield queue


def sync(settings: Settings, queue: DurableQueue, url: str, *paths: Path) -> None:
    engine = SyncEngine(settings, queue, PostgresSink(url, timeout=5))
    engine.site.enqueue(queue, list(paths), ChangeKind.ADDED)
    engine.drain(sync_source="realtime")
    engine.sink.close()


def test_a_snapshot_shows_what_synced_what_waits_and_what_failed(
    settings: Settings, queue: DurableQueue, base: Path, database_url: str
) -> None:
    good = write_session(base / "PC01" / "hands", 638900000000000101, hands=3, age=STABLE_AGE)
    broken = base / "PC02" / "hands" / "PGFX_live_data_export GameID=638900000000000102.json"
    broken.write_text('{"ID": 638900000000000102, "Hands": [', encoding="utf-8")
    sync(settings, queue, database_url, good, broken)
    waiting = write_session(base / "PC02" / "hands", 638900000000000103, age=STABLE_AGE)
    queue.enqueue("PC02", str(waiting), ChangeKind.MODIFIED)

    reader = PostgresReader(database_url)
    snap = Observer(
        settings, queue=queue, reader=reader, orchestrator=lambda: PREFECT_OK
    ).snapshot()
    reader.close()

    assert snap.synced["minute"] == snap.synced["day"] == 1
    assert snap.bytes_synced["minute"] == good.stat().st_size
    assert snap.last_commit_at is not None
    assert snap.queue is not None and snap.queue.counts["pending"] == 1
    assert snap.queue.counts["quarantined"] == 1
    assert {c.name: c.ok for c in snap.checks} | {"watcher": True} == {  # noqa: RUF100
        "process": True,
        "watcher": True,  # no `up` runs here: the watcher check is red, asserted below
        "queue": True,
        "target": True,
        "schema": True,
        "orchestrator": True,
    }
    assert not snap.check("watcher").ok, snap.checks  # type: ignore[union-attr]
    assert snap.ready
    cards = {card.pc_id: card for card in snap.pcs}
    assert set(cards) == {"PC01", "PC02"}
    assert (cards["PC01"].sessions, cards["PC01"].hands) == (1, 3)
    assert cards["PC01"].newest_file == f"PC01/hands/{good.name}"
    assert cards["PC01"].state is PcState.ONLINE and cards["PC01"].pending == 0
    assert cards["PC02"].pending == 1 and cards["PC02"].lag >= 0
    assert cards["PC02"].errors_last_hour >= 1
    [problem] = snap.problems
    assert (problem.pc_id, problem.state, problem.path) == (
        "PC02",
        ItemState.QUARANTINED,
        str(broken),
    )
    assert problem.reason and problem.quarantine_copy is not None
    assert Path(problem.quarantine_copy).parent == settings.error_dir / "PC02"
    [session] = snap.sessions
    assert (session.pc_id, session.session_id, session.hands) == ("PC01", 638900000000000101, 3)
    assert snap.prefect_ui == "http://127.0.0.1:4200"


def test_the_queue_is_read_again_after_any_write_and_only_then(
    settings: Settings, queue: DurableQueue
) -> None:
    """The per-PC summaries and failures are kept between snapshots while the queue stands
    still, and a write by anyone (another process's connection, or this queue's) shows in the
    next snapshot."""
    observer = Observer(settings, queue=queue, reader=None, orchestrator=lambda: PREFECT_OK)
    version = queue.version()
    assert queue.version() == version, "reading moves the version"
    assert observer.snapshot(target=False).pcs[0].pending == 0
    with DurableQueue(settings.resolved_queue_path) as watcher:  # as the watcher process
        watcher.enqueue("PC01", "/nas/PC01/hands/a.json", ChangeKind.ADDED)
    assert queue.version() != version
    [card] = [c for c in observer.snapshot(target=False).pcs if c.pc_id == "PC01"]
    assert card.pending == 1
    [item] = queue.claim(1, worker="test")
    queue.quarantine(item.id, "truncated JSON")  # through this queue's own connection
    snap = observer.snapshot(target=False)
    assert [p.reason for p in snap.problems] == ["truncated JSON"]
    assert [c.pending for c in snap.pcs if c.pc_id == "PC01"] == [0]


def test_requeue_brings_a_fixed_file_back_and_it_leaves_the_problems(
    settings: Settings, queue: DurableQueue, base: Path, database_url: str
) -> None:
    broken = base / "PC01" / "hands" / "PGFX_live_data_export GameID=638900000000000201.json"
    broken.write_text("{", encoding="utf-8")
    sync(settings, queue, database_url, broken)
    observer = Observer(settings, queue=queue, reader=PostgresReader(database_url))
    [problem] = observer.snapshot().problems

    write_session(base / "PC01" / "hands", 638900000000000201, hands=2, age=STABLE_AGE)
    assert observer.requeue([problem.item_id]) == 1
    assert queue.state_of(problem.item_id) is ItemState.PENDING
    SyncEngine(settings, queue, PostgresSink(database_url, timeout=5)).drain()

    snap = observer.snapshot()
    assert snap.problems == []
    assert [(s.session_id, s.hands) for s in snap.sessions] == [(638900000000000201, 2)]


def test_a_cut_target_turns_its_checks_red_and_back(
    settings: Settings, queue: DurableQueue, postgres_server_url: str, database_url: str
) -> None:
    reader = PostgresReader(database_url)
    observer = Observer(settings, queue=queue, reader=reader, orchestrator=lambda: PREFECT_OK)
    assert observer.snapshot().ready
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f"alter database {name} with allow_connections false")
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (name,)
        )
        cut = observer.snapshot()
        admin.execute(f"alter database {name} with allow_connections true")
    assert not cut.ready
    assert not cut.check("target").ok  # type: ignore[union-attr]
    assert database_url not in repr(cut.checks)
    assert cut.queue is not None  # the local part still shows
    assert observer.snapshot().ready
    reader.close()


def test_the_feed_moves_on_a_commit_and_on_a_queue_write(
    settings: Settings, queue: DurableQueue, base: Path, database_url: str
) -> None:
    feed = ChangeFeed(settings.resolved_queue_path, PostgresReader(database_url), poll=0.05)
    feed.start()
    try:
        assert all(following.wait(30) for following in feed.following.values())
        version = feed.version
        queue.enqueue("PC01", str(base / "PC01" / "hands" / "x.json"), ChangeKind.ADDED)
        after_queue_write = feed.wait_newer(version, timeout=30)
        assert after_queue_write > version
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("insert into sync_events (event_type) values ('recovery')")
        assert feed.wait_newer(after_queue_write, timeout=30) > after_queue_write
    finally:
        feed.stop()


@pytest.mark.parametrize(
    ("age", "others", "expected"),
    [
        (None, True, PcState.OFFLINE),
        (10.0, True, PcState.ONLINE),
        (400.0, True, PcState.SILENT),
        (400.0, False, PcState.IDLE),
        (200.0, True, PcState.ONLINE),
        (1000.0, False, PcState.IDLE),
        (4000.0, True, PcState.OFFLINE),
    ],
)
def test_pc_state(age: float | None, others: bool, expected: PcState) -> None:
    last = None if age is None else 10_000.0 - age
    assert pc_state(last, now=10_000.0, silent_after=300.0, others_active=others) is expected


def test_a_file_synced_from_outside_the_base_is_shown_by_its_full_path(
    settings: Settings, queue: DurableQueue, tmp_path: Path, database_url: str
) -> None:
    """`gfx-sync sync --pc PC07 /elsewhere/x.json`: the snapshot still builds."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    broken = elsewhere / "PGFX_live_data_export GameID=638900000000000301.json"
    broken.write_text("{", encoding="utf-8")
    engine = SyncEngine(settings, queue, PostgresSink(database_url, timeout=5))
    engine.site.enqueue(queue, [broken], ChangeKind.MODIFIED, pc_id="PC07")
    engine.drain()
    engine.sink.close()
    snap = Observer(settings, queue=queue, reader=None).snapshot()
    [problem] = snap.problems
    assert problem.pc_id == "PC07" and problem.quarantine_copy is not None
    assert [card.pc_id for card in snap.pcs if card.pc_id == "PC07"] == ["PC07"]


def test_the_supabase_rest_target_is_read_and_followed_by_polling(
    settings: Settings, queue: DurableQueue, base: Path, database_url: str
) -> None:
    """Through the PostgREST stand-in, with the exact requests supabase-py sends: the views
    read as the service role, and the feed (no LISTEN over REST) polls the newest event."""
    good = write_session(base / "PC01" / "hands", 638900000000000401, hands=4, age=STABLE_AGE)
    sync(settings, queue, database_url, good)
    with run_postgrest(database_url) as server:
        reader = RestReader(server.url, server.key)
        snap = Observer(settings, queue=queue, reader=reader).snapshot()
        feed = ChangeFeed(None, reader, target_poll=0.1).start()
        try:
            assert feed.following["target"].wait(30)
            version = feed.version
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("insert into sync_events (event_type) values ('recovery')")
            assert feed.wait_newer(version, timeout=30) > version
        finally:
            feed.stop()
        reads = [(r.method, r.path, r.query) for r in server.requests]
    assert snap.check("target").ok and snap.check("schema").ok  # type: ignore[union-attr]
    assert snap.check("schema").detail == "views answer"  # type: ignore[union-attr]
    [card] = [c for c in snap.pcs if c.pc_id == "PC01"]
    assert (card.sessions, card.hands) == (1, 4)
    assert [(s.session_id, s.hands) for s in snap.sessions] == [(638900000000000401, 4)]
    assert isinstance(snap.sessions[0].updated_at, float) and snap.sessions[0].updated_at > 0
    assert (
        "GET",
        "/rest/v1/pc_status",
        {"select": "*", "site_id": "eq.default", "order": "gfx_pc_id.asc"},
    ) in reads
    assert (
        "GET",
        "/rest/v1/sync_events",
        {"select": "id", "order": "id.desc", "limit": "1"},
    ) in reads
