"""Sites in the data (issue 13): every row carries its site, first in every key; a database
of the previous schema is upgraded in place; a per-site login writes only its own site's rows.

Real Postgres throughout (and the in-repo PostgREST for the REST sink).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from gfx_sync.derive import PostgresHandStore, Selection, rebuild
from gfx_sync.export import export
from gfx_sync.migrate import MIGRATIONS_DIR, apply_migrations
from gfx_sync.pokergfx import SessionRecord
from gfx_sync.schema import SESSION_COLUMNS, session_row
from gfx_sync.settings import SITE_PATTERN
from gfx_sync.sinks.base import FailureKind, Sink, SinkError, SyncEvent
from gfx_sync.sinks.postgres import PostgresSink
from gfx_sync.sinks.supabase_rest import SupabaseRestSink
from gfx_sync.target_views import PostgresReader
from gfx_synth import make_session, session_bytes
from support.migrations import apply_until
from support.postgrest import run_postgrest
from support.records import SESSION_ID, deliver, make_record
from support.roles import as_user, attempt

SITES_MIGRATION = MIGRATIONS_DIR / "20261206000000_sites.sql"
PREVIOUS_VERSION = "20261205000000_hand_tables"
README = Path(__file__).resolve().parents[1] / "README.md"
SITE_TABLES = (
    "gfx_sessions",
    "sync_events",
    "gfx_hands",
    "gfx_hand_players",
    "gfx_hand_actions",
    "gfx_hand_derivations",
)


def open_sink(kind: str, database_url: str, site: str) -> Iterator[Sink]:
    if kind == "supabase_rest":
        with run_postgrest(database_url) as server:
            rest = SupabaseRestSink(server.url, SecretStr(server.key), timeout=10.0, site=site)
            try:
                yield rest
            finally:
                rest.close()
        return
    sink = PostgresSink(database_url, timeout=10.0, site=site)
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture(params=["postgres", "supabase_rest"])
def sink_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def synth_record(hands: int, *, seed: int = 3, mtime_offset: float = 0.0) -> SessionRecord:
    """A realistic session (players, events, boards) trimmed to `hands` hands."""
    document = make_session(hands=hands, seed=seed)
    return make_record(
        document["ID"], hands, data=session_bytes(document), mtime_offset=mtime_offset
    )


def keyed_rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select site_id, gfx_pc_id, session_id, hand_count from gfx_sessions order by 1, 2, 3"
        ).fetchall()


def hands_per_site(database_url: str) -> dict[str, tuple[int, int, int]]:
    """Per site: hands, players and actions rows."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select s.site_id, "
            " (select count(*) from gfx_hands h where h.site_id = s.site_id), "
            " (select count(*) from gfx_hand_players p where p.site_id = s.site_id), "
            " (select count(*) from gfx_hand_actions a where a.site_id = s.site_id) "
            "from (select distinct site_id from gfx_sessions) s"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_the_site_pattern_is_the_settings_pattern(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select public.gfx_sync_site_pattern()").fetchone() == (SITE_PATTERN,)
        for good in ("default", "a", "venue-2", "x" * 32):
            assert re.match(SITE_PATTERN, good)
            assert conn.execute("select %s ~ gfx_sync_site_pattern()", (good,)).fetchone() == (
                True,
            )
        for bad in ("", "A", "-a", "a-", "a_b", "x" * 33, "a b"):
            assert not re.match(SITE_PATTERN, bad)
            assert conn.execute("select %s ~ gfx_sync_site_pattern()", (bad,)).fetchone() == (
                False,
            )
    with psycopg.connect(database_url) as conn:
        for table in SITE_TABLES:
            check = conn.execute(
                "select pg_get_constraintdef(oid) from pg_constraint where conname = %s",
                (f"{table}_site_id_check",),
            ).fetchone()
            # NOT VALID: added without a scan of the rows the column's default filled
            assert check == ("CHECK ((site_id ~ gfx_sync_site_pattern())) NOT VALID",), table
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(session_insert("Bad_Site"))


def test_two_sites_with_the_same_pc_and_session_land_as_two_rows(
    sink_kind: str, database_url: str
) -> None:
    for site, hands in (("north", 3), ("south", 5)):
        for sink in open_sink(sink_kind, database_url, site):
            result = sink.write_batch(
                deliver(synth_record(hands)),
                sync_source="realtime",
                events=[SyncEvent("error", gfx_pc_id="PC01", error="boom")],
            )
            assert result.committed == [0]
    session_id = synth_record(1).session_id
    assert keyed_rows(database_url) == [
        ("north", "PC01", session_id, 3),
        ("south", "PC01", session_id, 5),
    ]
    per_site_hands = hands_per_site(database_url)
    assert {site: counts[0] for site, counts in per_site_hands.items()} == {"north": 3, "south": 5}
    assert all(players > 0 and actions > 0 for _, players, actions in per_site_hands.values())
    with psycopg.connect(database_url) as conn:
        events = conn.execute(
            "select site_id, event_type, gfx_pc_id from sync_events order by id"
        ).fetchall()
        status = conn.execute(
            "select site_id, gfx_pc_id, session_count, hand_count, errors_last_hour "
            "from pc_status order by 1"
        ).fetchall()
        per_site = conn.execute(
            "select site_id, total_sessions, total_hands, total_pcs, errors_last_hour "
            "from site_stats order by 1"
        ).fetchall()
        totals = conn.execute(
            "select total_sessions, total_hands, total_pcs, total_sites from sync_stats"
        ).fetchone()
    assert sorted(events) == [
        ("north", "batch", None),
        ("north", "error", "PC01"),
        ("south", "batch", None),
        ("south", "error", "PC01"),
    ]
    assert status == [("north", "PC01", 1, 3, 1), ("south", "PC01", 1, 5, 1)]
    assert per_site == [("north", 1, 3, 1, 1), ("south", 1, 5, 1, 1)]
    assert totals == (2, 8, 2, 2)


def test_the_newest_snapshot_wins_within_each_site(sink_kind: str, database_url: str) -> None:
    newer, older = synth_record(4, mtime_offset=60), synth_record(2)
    for sink in open_sink(sink_kind, database_url, "north"):
        sink.write_batch(deliver(newer), sync_source="realtime")
        sink.write_batch(deliver(older), sync_source="batch")  # older: ignored at north
    for sink in open_sink(sink_kind, database_url, "south"):
        sink.write_batch(deliver(older), sync_source="batch")  # south has nothing newer
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "select site_id, hand_count, file_hash, sync_source from gfx_sessions order by 1"
        ).fetchall()
    assert stored == [
        ("north", 4, newer.file_hash, "realtime"),
        ("south", 2, older.file_hash, "batch"),
    ]
    assert {site: hands[0] for site, hands in hands_per_site(database_url).items()} == {
        "north": 4,
        "south": 2,
    }


def test_readers_rebuild_and_export_stay_within_their_site(
    database_url: str, tmp_path: Path
) -> None:
    for site, hands in (("north", 3), ("south", 5)):
        for sink in open_sink("postgres", database_url, site):
            sink.write_batch(deliver(synth_record(hands)), sync_source="batch")
    reader = PostgresReader(database_url, site="south")
    try:
        [status] = reader.pc_status()
        [recent] = reader.recent_sessions()
    finally:
        reader.close()
    assert (status["site_id"], status["hand_count"], recent["hand_count"]) == ("south", 5, 5)

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("delete from gfx_hand_derivations")  # both sites need a rebuild
    store = PostgresHandStore(database_url, site="north")
    try:
        report = rebuild(store, Selection(pc="PC01"))
    finally:
        store.close()
    assert (report.selected, report.derived) == (1, 1)
    with psycopg.connect(database_url) as conn:
        derived = conn.execute("select site_id from gfx_hand_derivations").fetchall()
    assert derived == [("north",)]

    exported = export(database_url, Selection(), tmp_path, site="south")
    counts = {table.table: table.rows for table in exported.tables}
    assert counts["gfx_sessions"] == 1 and counts["gfx_hands"] == 5


# --- upgrading a database of the previous schema ----------------------------------------------


def write_previous_schema_rows(url: str, records: list[SessionRecord]) -> None:
    """Sessions as a writer of the previous schema wrote them (no site_id), and an event."""
    columns = [c for c in SESSION_COLUMNS if c != "site_id"]
    statement = sql.SQL("insert into public.gfx_sessions ({}) values ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(
            sql.SQL("%s::jsonb" if c == "raw_json" else "%s").format() for c in columns
        ),
    )
    with psycopg.connect(url, autocommit=True) as conn:
        for record in records:
            row = session_row(record, "batch")
            row["raw_json"] = record.raw_json.decode()
            conn.execute(statement, [row[c] for c in columns])
        conn.execute(
            "insert into sync_events (event_type, gfx_pc_id, file_count) "
            "values ('batch', 'PC01', 2)"
        )


def snapshot(url: str) -> dict[str, object]:
    """What must survive the upgrade: every row of every table, and each table's file."""
    with psycopg.connect(url) as conn:
        found: dict[str, object] = {}
        for table, columns in (
            ("gfx_sessions", "gfx_pc_id, session_id, file_hash, md5(raw_json::text), updated_at"),
            ("sync_events", "id, event_type, gfx_pc_id, file_count"),
            ("gfx_hands", "gfx_pc_id, session_id, hand_idx, hand_hash, final_pot"),
            ("gfx_hand_players", "gfx_pc_id, session_id, hand_idx, player_num, name, net"),
            ("gfx_hand_actions", "gfx_pc_id, session_id, hand_idx, seq, event_type, street"),
            ("gfx_hand_derivations", "gfx_pc_id, session_id, file_hash, hands"),
        ):
            found[table] = conn.execute(
                f"select {columns} from public.{table} order by 1, 2, 3"  # type: ignore[arg-type]
            ).fetchall()
            found[f"{table} file"] = conn.execute(
                "select pg_relation_filenode(%s)", (f"public.{table}",)
            ).fetchone()
    return found


def test_a_database_of_the_previous_schema_is_upgraded_in_place(
    empty_database_url: str, tmp_path: Path
) -> None:
    url = empty_database_url
    apply_until(url, PREVIOUS_VERSION, tmp_path)
    records = [synth_record(6, seed=1), synth_record(3, seed=2)]
    write_previous_schema_rows(url, records)
    before = snapshot(url)
    assert len(before["gfx_hands"]) == 9  # type: ignore[arg-type]

    assert apply_migrations(url) == [SITES_MIGRATION.stem]

    after = snapshot(url)
    for table in SITE_TABLES:
        # the same rows; the heap of the tables is the same file: no row was rewritten
        assert after[table] == before[table], table
        assert after[f"{table} file"] == before[f"{table} file"], table
    with psycopg.connect(url) as conn:
        for table in SITE_TABLES:
            sites = conn.execute(
                f"select distinct site_id from public.{table}"  # type: ignore[arg-type]
            ).fetchall()
            assert sites == [("default",)], table
    # the upgraded rows are the default site's: its agent updates them, not copies of them
    grown = synth_record(8, seed=1, mtime_offset=60)
    for sink in open_sink("postgres", url, "default"):
        assert sink.write_batch(deliver(grown), sync_source="realtime").committed == [0]
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "select site_id, hand_count from gfx_sessions where session_id = %s",
            (grown.session_id,),
        ).fetchall() == [("default", 8)]
        assert conn.execute("select count(*) from gfx_hands").fetchone() == (11,)


def test_the_migration_is_idempotent(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        before = conn.execute(
            "select (select count(*) from pg_policies), (select count(*) from pg_constraint "
            "where connamespace = 'public'::regnamespace)"
        ).fetchone()
        conn.execute(SITES_MIGRATION.read_text(encoding="utf-8"))  # type: ignore[arg-type]
        conn.execute(SITES_MIGRATION.read_text(encoding="utf-8"))  # type: ignore[arg-type]
        after = conn.execute(
            "select (select count(*) from pg_policies), (select count(*) from pg_constraint "
            "where connamespace = 'public'::regnamespace)"
        ).fetchone()
    assert after == before


# --- a per-site writer login ------------------------------------------------------------------


def readme_site_writer_sql() -> str:
    """The SQL block of README's "Per-site writer" subsection, as an operator copies it."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Per-site writer", 1)[1].split("\n#", 1)[0]
    [block] = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    return block


@pytest.fixture
def site_a_login(database_url: str, postgres_server_url: str) -> Iterator[str]:
    """README's SQL for site `a`, run as the owner; the role name made unique per test run
    (roles belong to the whole cluster)."""
    name = f"gfx_sync_site_a_{os.getpid()}"
    statements = (
        readme_site_writer_sql()
        .replace("gfx_sync_site_a", name)
        .replace("<a generated password>", "not-used-locally")
    )
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(statements)  # type: ignore[arg-type]
    yield name
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def session_insert(site: str, pc: str = "PC01") -> str:
    return (
        "insert into public.gfx_sessions (site_id, gfx_pc_id, session_id, file_name, file_path, "
        f"file_hash, file_size, file_mtime, raw_json, hand_count) values ('{site}', '{pc}', 1, "
        "'f.json', 'f.json', 'h', 1, now(), '{}', 0)"
    )


def test_a_site_login_writes_its_own_site_only(database_url: str, site_a_login: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(session_insert("b"))  # site b's row, written by the owner
    role = site_a_login
    assert attempt(database_url, role, session_insert("a")) is None
    denied = attempt(database_url, role, session_insert("b", pc="PC02"))
    assert isinstance(denied, psycopg.errors.InsufficientPrivilege)
    assert "row-level security" in str(denied)
    for statement in (
        "insert into public.sync_events (site_id, event_type) values ('b', 'error')",
        "insert into public.gfx_hands (site_id, gfx_pc_id, session_id, hand_idx, player_count, "
        "action_count, hand_hash) values ('b', 'PC01', 1, 0, 0, 0, 'h')",
        "insert into public.gfx_hand_players (site_id, gfx_pc_id, session_id, hand_idx, "
        "player_num) values ('b', 'PC01', 1, 0, 1)",
        "insert into public.gfx_hand_actions (site_id, gfx_pc_id, session_id, hand_idx, seq, "
        "street) values ('b', 'PC01', 1, 0, 0, 'preflop')",
        # an upsert onto site b's row: the conflicting row is not its to read or update
        session_insert("b") + " on conflict (site_id, gfx_pc_id, session_id) "
        "do update set file_name = 'stolen'",
        "delete from public.gfx_sessions",
        "truncate public.gfx_sessions",
    ):
        assert attempt(database_url, role, statement) is not None, statement
    assert (
        attempt(
            database_url,
            role,
            "insert into public.sync_events (site_id, event_type) values ('a', 'error')",
        )
        is None
    )
    # an update of site b's rows finds none (RLS hides them): nothing changes
    assert attempt(database_url, role, "update public.gfx_sessions set file_name = 'x'") is None
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select site_id, file_name from gfx_sessions").fetchall() == [
            ("b", "f.json")
        ]


def test_a_site_login_runs_its_agent_and_is_refused_another_site(
    database_url: str, site_a_login: str
) -> None:
    """The Postgres sink logged in as site a's login: site a's sessions and their hands land;
    the same login configured for site b is refused by row-level security."""
    url = as_user(database_url, site_a_login)
    record = synth_record(4)
    for sink in open_sink("postgres", url, "a"):
        result = sink.write_batch(
            deliver(record),
            sync_source="realtime",
            events=[SyncEvent("error", gfx_pc_id="PC01", error="boom")],
        )
        assert result.committed == [0]
        grown = synth_record(5, mtime_offset=30)
        assert sink.write_batch(deliver(grown), sync_source="batch").committed == [0]
    for sink in open_sink("postgres", url, "b"):
        try:
            refused = sink.write_batch(deliver(record), sync_source="realtime")
        except SinkError as raised:
            error: Exception = raised
        else:
            assert refused.committed == []
            [(_, error)] = refused.failed
        assert "row-level security" in str(error)
        # the login is wrong, not the data: the files wait in the queue, never dead-lettered
        assert isinstance(error, SinkError) and error.kind is FailureKind.OUTAGE
        assert "gfx_sync_site_writers" in str(error)
    assert keyed_rows(database_url) == [("a", "PC01", record.session_id, 5)]
    assert hands_per_site(database_url)["a"][0] == 5
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "select site_id, event_type from sync_events order by 1, 2"
        ).fetchall() == [("a", "batch"), ("a", "batch"), ("a", "error")]


def test_a_login_without_a_site_row_writes_nothing(
    database_url: str, postgres_server_url: str
) -> None:
    name = f"gfx_sync_site_none_{os.getpid()}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("create role {} login in role gfx_sync_site_writer").format(
                sql.Identifier(name)
            )
        )
    try:
        assert attempt(database_url, name, session_insert("default")) is not None
        assert attempt(database_url, name, session_insert("a")) is not None
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def test_the_all_sites_writer_still_writes_every_site(database_url: str, writer_user: str) -> None:
    url = as_user(database_url, writer_user)
    for site in ("a", "b"):
        for sink in open_sink("postgres", url, site):
            assert sink.write_batch(
                deliver(make_record(SESSION_ID, 2)), sync_source="batch"
            ).committed == [0]
    assert [row[0] for row in keyed_rows(database_url)] == ["a", "b"]


def test_a_session_row_carries_the_sink_site_first() -> None:
    """session_row carries the sink's site first, as the key does."""
    row = session_row(make_record(), "batch", "north")
    assert list(row)[:3] == ["site_id", "gfx_pc_id", "session_id"]
    assert row["site_id"] == "north"
    assert orjson.loads(row["raw_json"])["ID"] == SESSION_ID


def test_the_new_relations_keep_the_roles_apart(database_url: str) -> None:
    """anon reads nothing new; authenticated reads site_stats (through RLS: security_invoker)
    but not who may write which site; the all-sites writer is not a site writer."""
    for relation in ("site_stats", "gfx_sync_site_writers"):
        error = attempt(database_url, "anon", f"select * from public.{relation}")
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), relation
    assert attempt(database_url, "authenticated", "select * from public.site_stats") is None
    for role in ("authenticated", "gfx_sync_writer"):
        error = attempt(database_url, role, "select * from public.gfx_sync_site_writers")
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), role
    with psycopg.connect(database_url) as conn:
        options = conn.execute(
            "select relname, reloptions from pg_class where relname in "
            "('site_stats', 'pc_status', 'gfx_chip_counts', 'gfx_notable_hands', "
            "'gfx_player_session_stats') order by relname"
        ).fetchall()
    assert [o for _, o in options] == [["security_invoker=true"]] * 5
