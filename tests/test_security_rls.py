"""Row-level security: the service role and the writer role write, nobody else does.

Real Postgres throughout. The test server connects as a superuser (which bypasses RLS), so
every check switches to the role under test with SET ROLE, or logs in as a member of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg
import pytest
from pydantic import SecretStr

from gfx_sync.migrate import MIGRATIONS_DIR, MigrationError, apply_migrations, migration_files
from gfx_sync.sinks.base import FailureKind, SyncEvent
from gfx_sync.sinks.postgres import PostgresSink
from gfx_sync.sinks.supabase_rest import SupabaseRestSink
from support.postgrest import run_postgrest
from support.records import SESSION_ID, deliver, make_record, session_document
from support.roles import as_user, attempt

TABLES = ("gfx_sessions", "sync_events")
INSERTS = {
    "gfx_sessions": (
        "insert into public.gfx_sessions (gfx_pc_id, session_id, file_name, file_path, "
        "file_hash, file_size, file_mtime, raw_json, hand_count) "
        "values ('PCX', 1, 'f.json', 'PCX/f.json', 'h', 1, now(), '{}', 0)"
    ),
    "sync_events": "insert into public.sync_events (event_type) values ('batch')",
}
WRITES = {
    table: [
        INSERTS[table],
        f"update public.{table} set gfx_pc_id = 'PCY'",
        f"delete from public.{table}",
        f"truncate public.{table}",
    ]
    for table in TABLES
}


def seed(url: str) -> None:
    """One session and one event, written by the owner, for the roles to try to touch."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in INSERTS.values():
            conn.execute(statement)  # type: ignore[arg-type]


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select (select count(*) from gfx_sessions), (select count(*) from sync_events)"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_every_gfx_sync_table_has_row_level_security(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "select c.relname, c.relrowsecurity from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'public' and c.relkind = 'r' order by c.relname"
        ).fetchall()
    assert tables == [
        ("gfx_hand_actions", True),
        ("gfx_hand_derivations", True),
        ("gfx_hand_players", True),
        ("gfx_hands", True),
        ("gfx_sessions", True),
        ("gfx_sync_migrations", True),
        ("gfx_sync_site_writers", True),
        ("sync_events", True),
    ]


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize("statement", [s for table in TABLES for s in WRITES[table]])
def test_anon_and_authenticated_cannot_write(database_url: str, role: str, statement: str) -> None:
    seed(database_url)
    error = attempt(database_url, role, statement)
    assert isinstance(error, psycopg.errors.InsufficientPrivilege), error
    assert counts(database_url) == (1, 1)


def test_anon_reads_nothing_authenticated_reads_tables_and_views(database_url: str) -> None:
    seed(database_url)
    for relation in (*TABLES, "pc_status", "sync_stats", "gfx_sync_migrations"):
        error = attempt(database_url, "anon", f"select * from public.{relation}")
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), relation
    with psycopg.connect(database_url) as conn:
        conn.execute("set role authenticated")
        assert conn.execute("select gfx_pc_id from public.gfx_sessions").fetchall() == [("PCX",)]
        assert conn.execute("select count(*) from public.sync_events").fetchone() == (1,)
        assert conn.execute("select total_sessions from public.sync_stats").fetchone() == (1,)
        assert conn.execute("select gfx_pc_id from public.pc_status").fetchall() == [("PCX",)]
    error = attempt(database_url, "authenticated", "select * from public.gfx_sync_migrations")
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)


def test_the_views_check_the_caller_not_their_owner(database_url: str) -> None:
    """security_invoker: a role that may not read the tables reads nothing through a view."""
    with psycopg.connect(database_url) as conn:
        options = conn.execute(
            "select relname, reloptions from pg_class where relname in ('pc_status', 'sync_stats') "
            "order by relname"
        ).fetchall()
    assert options == [
        ("pc_status", ["security_invoker=true"]),
        ("sync_stats", ["security_invoker=true"]),
    ]


def test_the_writer_role_writes_sessions_and_events_and_nothing_else(
    database_url: str, writer_user: str
) -> None:
    url = as_user(database_url, writer_user)
    sink = PostgresSink(url, timeout=5.0)
    try:
        first = sink.write_batch(deliver(make_record(hands=1)), sync_source="batch")
        newer = sink.write_batch(
            deliver(make_record(hands=3, mtime_offset=60)), sync_source="batch"
        )
        older = sink.write_batch(
            deliver(make_record(hands=2, mtime_offset=120)), sync_source="batch"
        )
        sink.record_events([SyncEvent("batch", gfx_pc_id="PC01", file_count=1)])
    finally:
        sink.close()
    for result in (first, newer, older):
        assert result.failed == [] and len(result.committed) == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select hand_count from gfx_sessions").fetchall() == [(3,)]
        events = conn.execute("select event_type, gfx_pc_id from sync_events order by id")
        # each write's own "batch" event in its transaction, then the one recorded alone
        assert events.fetchall() == [("batch", None)] * 3 + [("batch", "PC01")]
    for statement in (
        "delete from public.gfx_sessions",
        "truncate public.gfx_sessions",
        "update public.sync_events set error = 'x'",
        "delete from public.sync_events",
        "select * from public.sync_events",
        "insert into public.gfx_sync_migrations (version) values ('x')",
        "delete from public.gfx_sync_migrations",
        "create table public.sneaky (id int)",
    ):
        error = attempt(url, writer_user, statement)
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), statement
    assert counts(database_url) == (1, 4)


def test_gfx_sync_sync_runs_as_a_login_member_of_the_writer_role(
    tmp_path: Path, database_url: str, writer_user: str
) -> None:
    folder = tmp_path / "nas" / "PC01" / "hands"
    folder.mkdir(parents=True)
    good = folder / f"PGFX_live_data_export GameID={SESSION_ID}.json"
    good.write_bytes(orjson.dumps(session_document(hands=4)))
    broken = folder / "broken GameID=7.json"
    broken.write_bytes(b"{not json at all}")
    stamp = time.time() - 60
    os.utime(broken, (stamp, stamp))
    env = {
        **os.environ,
        "GFX_SYNC_BASE_PATH": str(tmp_path / "nas"),
        "GFX_SYNC_STATE_DIR": str(tmp_path / "state"),
        "GFX_SYNC_DATABASE_URL": as_user(database_url, writer_user),
        "GFX_SYNC_SETTLE_SECONDS": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gfx_sync.cli", "sync", str(good), str(broken)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # the broken file failed
    assert "could not record" not in result.stderr  # the events were written
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select session_id, hand_count from gfx_sessions").fetchall() == [
            (SESSION_ID, 4)
        ]
        events = conn.execute("select event_type from sync_events order by id").fetchall()
    assert events == [("quarantined",), ("batch",)]


def test_the_rest_path_writes_as_the_service_role_under_rls(database_url: str) -> None:
    """The test PostgREST runs each request as service_role (SET LOCAL ROLE), as PostgREST."""
    with run_postgrest(database_url) as server:
        sink = SupabaseRestSink(server.url, SecretStr(server.key), timeout=5.0)
        try:
            result = sink.write_batch(deliver(make_record(hands=2)), sync_source="batch")
            sink.record_events([SyncEvent("batch", file_count=1)])
        finally:
            sink.close()
    assert result.failed == []
    assert counts(database_url) == (1, 2)  # the write's "batch" event, then the one alone


def test_an_anon_key_by_mistake_is_an_outage_and_writes_nothing(database_url: str) -> None:
    """RLS refuses the anon role; the refusal must keep the data queued, never dead-letter it."""
    with run_postgrest(database_url, role="anon") as server:
        sink = SupabaseRestSink(server.url, SecretStr(server.key), timeout=5.0)
        try:
            result = sink.write_batch(deliver(make_record(hands=2)), sync_source="batch")
        finally:
            sink.close()
    [(_, error)] = result.failed
    assert error.kind is FailureKind.OUTAGE and "42501" in str(error)
    assert counts(database_url) == (0, 0)


def test_the_rls_migration_applies_on_top_of_the_first_and_keeps_the_data(
    empty_database_url: str, tmp_path: Path
) -> None:
    first, *later = migration_files()
    assert later, "the row-level security migration is missing"
    only_first = tmp_path / "migrations"
    only_first.mkdir()
    shutil.copy(first, only_first / first.name)
    assert apply_migrations(empty_database_url, only_first) == [first.stem]
    seed(empty_database_url)
    assert apply_migrations(empty_database_url, MIGRATIONS_DIR) == [p.stem for p in later]
    assert counts(empty_database_url) == (1, 1)
    error = attempt(empty_database_url, "anon", INSERTS["gfx_sessions"])
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    # and again, without the ledger (as after `supabase db push`): no error, same policies
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        policies = conn.execute("select count(*) from pg_policies").fetchone()
        conn.execute("drop table gfx_sync_migrations")
    apply_migrations(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select count(*) from pg_policies").fetchone() == policies
    assert counts(empty_database_url) == (1, 1)


def test_the_writer_starts_on_a_migrated_database_and_is_told_when_it_is_not(
    database_url: str, empty_database_url: str, writer_user: str
) -> None:
    """`gfx-sync up` applies migrations at start; as the writer that must be a no-op, and a
    schema that is behind must say who can fix it instead of failing obscurely."""
    assert apply_migrations(as_user(database_url, writer_user)) == []
    with pytest.raises(MigrationError, match="gfx-sync migrate --database-url"):
        apply_migrations(as_user(empty_database_url, writer_user))
