"""Apply `supabase/migrations/*.sql` (the Supabase CLI layout) to any Postgres, idempotently."""

from __future__ import annotations

from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"
LEDGER = "gfx_sync_migrations"
# Views a later file re-creates with more columns than an earlier file's CREATE OR REPLACE VIEW
# gives them (20261206000000_sites.sql puts site_id first). Re-applying every file to a schema
# without our ledger (set up by `supabase db push`) drops them first, in the first file's
# transaction: an older definition cannot replace a view that has columns it lacks.
REBUILT_VIEWS = (
    "pc_status",
    "sync_stats",
    "site_stats",
    "gfx_player_session_stats",
    "gfx_chip_counts",
    "gfx_notable_hands",
)


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def apply_migrations(
    database_url: str, directory: Path = MIGRATIONS_DIR, *, connect_timeout: float | None = None
) -> list[str]:
    """Apply the migrations not yet recorded; returns the versions applied now.

    Each file runs in its own transaction with its ledger row, under an advisory lock so two
    processes starting at once do not race. The files are idempotent themselves too, so a
    database set up by `supabase db push` instead is accepted as it is. When the ledger already
    lists every file nothing else is touched, so a least-privileged role (README, "Security")
    can start gfx-sync on a database its owner migrated.
    """
    files = migration_files(directory)
    applied_now: list[str] = []
    timeout = {} if connect_timeout is None else {"connect_timeout": max(1, round(connect_timeout))}
    with psycopg.connect(database_url, autocommit=True, prepare_threshold=None, **timeout) as conn:
        if not {path.stem for path in files} - _recorded(conn):
            return applied_now
        try:
            conn.execute(
                f"create table if not exists public.{LEDGER} "
                "(version text primary key, applied_at timestamptz not null default now())"
            )
        except psycopg.errors.InsufficientPrivilege:
            raise MigrationError(
                "migrations are pending and this database user may not apply them: run "
                "`gfx-sync migrate --database-url <the owner's connection string>`"
            ) from None
        conn.execute("select pg_advisory_lock(hashtext('gfx_sync_migrations'))")
        try:
            done = _recorded(conn)
            for path in files:
                version = path.stem
                if version in done:
                    continue
                with conn.transaction():
                    if not done and not applied_now:
                        views = ", ".join(f"public.{view}" for view in REBUILT_VIEWS)
                        conn.execute(f"drop view if exists {views}")  # type: ignore[arg-type]
                    conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[arg-type]
                    conn.execute(f"insert into public.{LEDGER} (version) values (%s)", (version,))
                applied_now.append(version)
        finally:
            conn.execute("select pg_advisory_unlock(hashtext('gfx_sync_migrations'))")
    return applied_now


# SQLSTATE classes of a server that is there but cannot take us now (connection exceptions,
# too many connections, starting up or shutting down); no SQLSTATE: it never answered.
UNREACHABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def is_unreachable(exc: BaseException) -> bool:
    """The database could not be reached (refused, unresolvable, timed out, starting up):
    worth waiting for. Anything else (a wrong password, no such database) is configuration."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(UNREACHABLE_SQLSTATE_CLASSES)


def pending_migrations(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Versions of `directory` the database's ledger does not list yet."""
    recorded = _recorded(conn)
    return [path.stem for path in migration_files(directory) if path.stem not in recorded]


class MigrationError(RuntimeError):
    """The schema is behind and this connection cannot bring it up to date."""


def _recorded(conn: psycopg.Connection) -> set[str]:
    """Versions in the ledger (none if there is no ledger, or this role may not read it)."""
    exists = conn.execute("select to_regclass(%s) is not null", (f"public.{LEDGER}",)).fetchone()
    if not exists or not exists[0]:
        return set()
    try:
        with conn.transaction():
            return {row[0] for row in conn.execute(f"select version from public.{LEDGER}")}
    except psycopg.errors.InsufficientPrivilege:
        return set()
