"""Migrations: applied to any Postgres, idempotently, with the schema the sinks rely on."""

from __future__ import annotations

import psycopg

from gfx_sync.migrate import LEDGER, apply_migrations, migration_files


def test_migrations_follow_the_supabase_cli_layout() -> None:
    files = migration_files()
    assert files, "no migrations found"
    for path in files:
        assert path.parent.parts[-2:] == ("supabase", "migrations")
        timestamp, _, name = path.stem.partition("_")
        assert timestamp.isdigit() and len(timestamp) == 14 and name


def test_applying_twice_is_a_no_op(empty_database_url: str) -> None:
    first = apply_migrations(empty_database_url)
    second = apply_migrations(empty_database_url)
    assert first == [p.stem for p in migration_files()]
    assert second == []
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute(f"select count(*) from {LEDGER}").fetchone() == (len(first),)


def test_files_are_idempotent_even_without_the_ledger(empty_database_url: str) -> None:
    """A database set up by `supabase db push` has no ledger of ours: re-running must not fail."""
    apply_migrations(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(f"drop table {LEDGER}")
    assert apply_migrations(empty_database_url) == [p.stem for p in migration_files()]


def test_schema_has_bigint_session_ids_and_status_views(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        column_type = conn.execute(
            "select data_type from information_schema.columns "
            "where table_name = 'gfx_sessions' and column_name = 'session_id'"
        ).fetchone()
        assert column_type == ("bigint",)
        key = conn.execute(
            "select array_agg(a.attname order by a.attname) from pg_index i "
            "join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) "
            "where i.indrelid = 'public.gfx_sessions'::regclass and i.indisprimary"
        ).fetchone()
        assert key == (["gfx_pc_id", "session_id", "site_id"],)
        conn.execute("select * from pc_status").fetchall()
        stats = conn.execute("select total_sessions, errors_last_hour from sync_stats").fetchone()
        assert stats == (0, 0)


def test_realtime_publication_is_joined_only_where_it_exists(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime")
    apply_migrations(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(f"delete from {LEDGER}")
    apply_migrations(empty_database_url)  # again: the table is already published, no error
    with psycopg.connect(empty_database_url) as conn:
        tables = conn.execute(
            "select tablename from pg_publication_tables where pubname = 'supabase_realtime' "
            "order by tablename"
        ).fetchall()
    assert tables == [
        ("gfx_hand_actions",),
        ("gfx_hand_players",),
        ("gfx_hands",),
        ("gfx_sessions",),
        ("sync_events",),
    ]
