"""All SQL is parameterized: a file name, folder or title with quotes, spaces, SQL or unicode
is just a name, stored unchanged by the queue, both sinks, quarantine and sync_events.

(The audit: every statement in gfx_sync/ and tasks/ passes values as parameters, COPY rows or
JSON bodies; what is formatted into SQL text is a constant identifier or an int.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from pydantic import SecretStr

from gfx_sync.engine import Outcome, SyncEngine
from gfx_sync.queue import ChangeKind, DurableQueue, ItemState
from gfx_sync.settings import Settings
from gfx_sync.sinks.base import Sink
from gfx_sync.sinks.postgres import PostgresSink
from gfx_sync.sinks.supabase_rest import SupabaseRestSink
from support.postgrest import run_postgrest
from support.records import SESSION_ID, session_document

PC_FOLDER = "Tisch 3 — \"Finale\" 'ü'"  # the registry maps it to a plain id
NASTY = [
    "Tisch 3 — \"Finale\" 'ü'",
    "'; drop table gfx_sessions; --",
    'Robert"); DROP TABLE sync_events;--',
    "%s %(x)s {0} $1 \\N \\x00 \\",
    "ünïcødé 漢字 🂡 \u202ertl",
    "  leading and trailing spaces  ",
]


@pytest.fixture(params=["postgres", "supabase_rest"])
def sink(request: pytest.FixtureRequest, database_url: str) -> Iterator[Sink]:
    if request.param == "supabase_rest":
        with run_postgrest(database_url) as server:
            rest = SupabaseRestSink(server.url, SecretStr(server.key), timeout=10.0)
            yield rest
            rest.close()
        return
    sink = PostgresSink(database_url, timeout=10.0)
    yield sink
    sink.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = tmp_path / "nas"
    (base / PC_FOLDER / "hands").mkdir(parents=True)
    registry = tmp_path / "pcs.json"
    registry.write_bytes(
        orjson.dumps({"pcs": [{"id": "PC03", "name": PC_FOLDER, "watch_path": PC_FOLDER}]})
    )
    return Settings(
        base_path=base, state_dir=tmp_path / "state", registry_path=registry, settle_seconds=0
    )


def test_odd_names_are_stored_unchanged_everywhere(
    settings: Settings, sink: Sink, database_url: str
) -> None:
    folder = settings.base_path / PC_FOLDER / "hands"
    good: dict[Path, int] = {}
    for n, name in enumerate(NASTY):
        session_id = SESSION_ID + n
        path = folder / f"{name} GameID={session_id}.json"
        path.write_bytes(orjson.dumps(session_document(session_id, 1, EventTitle=name)))
        good[path] = session_id
    broken = folder / f"{NASTY[1]} broken.json"
    broken.write_bytes(b'{"not": "a session"}')
    stamp = time.time() - 60
    for path in [*good, broken]:
        os.utime(path, (stamp, stamp))

    with DurableQueue(settings.resolved_queue_path) as queue:
        engine = SyncEngine(settings, queue, sink)
        engine.site.enqueue(engine.queue, [*good, broken], ChangeKind.ADDED)
        assert sorted(item.path for item in queue.items()) == sorted(map(str, [*good, broken]))
        report = engine.drain()
        assert sorted(o.status for o in report.outcomes) == sorted(
            [Outcome.SYNCED] * len(good) + [Outcome.QUARANTINED]
        )
        [quarantined] = queue.items(ItemState.QUARANTINED)
        assert quarantined.path == str(broken)

    relative = {path: path.relative_to(settings.base_path).as_posix() for path in [*good, broken]}
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select gfx_pc_id, session_id, file_name, file_path, event_title from gfx_sessions"
        ).fetchall()
        events = conn.execute(
            "select gfx_pc_id, file_path from sync_events where event_type = 'quarantined'"
        ).fetchall()
        tables = conn.execute(
            "select count(*) from pg_tables where tablename in ('gfx_sessions', 'sync_events')"
        ).fetchone()
    assert sorted(rows) == sorted(
        ("PC03", session_id, path.name, relative[path], NASTY[session_id - SESSION_ID])
        for path, session_id in good.items()
    )
    assert events == [("PC03", relative[broken])]
    assert tables == (2,)
    flat = relative[broken].replace("/", "__")
    copy = settings.error_dir / "PC03" / flat
    assert copy.read_bytes() == broken.read_bytes()
    assert str(broken) in (copy.parent / f"{flat}.reason.txt").read_text(encoding="utf-8")
