"""Standby draining: `up` syncs by itself while the orchestrator is unreachable."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from gfx_sync.engine import SyncEngine
from gfx_sync.queue import ChangeKind, DurableQueue
from gfx_sync.settings import Settings
from gfx_sync.sinks.postgres import PostgresSink
from gfx_sync.standby import SYNC_SOURCE, StandbyDrainer
from support.clock import Clock
from support.records import SESSION_ID
from support.sessions import STABLE_AGE, write_session


def table(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select session_id, hand_count, sync_source from gfx_sessions order by session_id"
        ).fetchall()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(tmp_path: Path, database_url: str, clock: Clock) -> SyncEngine:
    (tmp_path / "nas" / "PC01" / "hands").mkdir(parents=True)
    settings = Settings(
        base_path=tmp_path / "nas",
        state_dir=tmp_path / "state",
        registry_path=tmp_path / "no-registry.json",
    )
    queue = DurableQueue(settings.resolved_queue_path, clock=clock)
    yield SyncEngine(settings, queue, PostgresSink(database_url, timeout=5))
    queue.close()


def test_the_queue_is_drained_directly_only_while_the_orchestrator_is_away(
    engine: SyncEngine, database_url: str, clock: Clock
) -> None:
    folder = engine.settings.base_path / "PC01" / "hands"
    recorded = write_session(folder, SESSION_ID, hands=2, age=STABLE_AGE)
    engine.site.enqueue(engine.queue, [recorded], ChangeKind.ADDED)  # the watcher recorded this one
    unseen = write_session(folder, SESSION_ID + 1, hands=3, age=STABLE_AGE)  # and missed this one
    up, watcher_alive = [True], [True]
    standby = StandbyDrainer(
        lambda: engine,
        lambda: up[0],
        grace=10,
        interval=1,
        watcher_running=lambda: watcher_alive[0],
        clock=clock,
    )

    assert standby.step() is None  # Prefect runs the drains
    up[0] = False
    assert standby.step() is None  # away, but not for `grace` yet: maybe a restart
    clock.now += 10
    report = standby.step()
    assert report is not None and standby.active and standby.takeovers == 1
    assert table(database_url) == [(SESSION_ID, 2, SYNC_SOURCE), (SESSION_ID + 1, 3, SYNC_SOURCE)]
    assert unseen.exists()

    # Nobody watching: found by a rescan.
    write_session(folder, SESSION_ID + 2, hands=1, age=STABLE_AGE)
    watcher_alive[0] = False
    clock.now += 1
    standby.step()
    assert [row[0] for row in table(database_url)][-1] == SESSION_ID + 2

    up[0] = True
    write_session(folder, SESSION_ID + 3, hands=1, age=STABLE_AGE)
    assert standby.step() is None and not standby.active  # Prefect's turn again
    assert len(table(database_url)) == 3
    assert engine.queue.stats().pending == 0 and engine.queue.stats().inflight == 0


def test_due_items_nobody_drains_are_drained_even_if_the_server_answers(
    engine: SyncEngine, database_url: str, clock: Clock
) -> None:
    """A server that answers /health but cannot run flows (locked database, stuck runner)."""
    folder = engine.settings.base_path / "PC01" / "hands"
    engine.site.enqueue(
        engine.queue,
        [write_session(folder, SESSION_ID, hands=4, age=STABLE_AGE)],
        ChangeKind.MODIFIED,
    )
    standby = StandbyDrainer(lambda: engine, lambda: True, grace=10, interval=1, clock=clock)

    clock.now += 9
    assert standby.step() is None  # due, but Prefect's batch may take it any moment
    clock.now += 1
    assert standby.step() is not None and standby.active
    assert table(database_url) == [(SESSION_ID, 4, SYNC_SOURCE)]
    assert standby.step() is None and not standby.active  # nothing waits: Prefect's turn
