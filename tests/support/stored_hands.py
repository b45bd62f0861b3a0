"""Sessions stored through the real Postgres sink, and what the database derived from them,
for the rebuild (gfx-derive) and export (gfx-export) tests; their fixtures (a pytest plugin of
tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gfx_sync.sinks.postgres import PostgresSink
from gfx_synth import make_session, session_bytes
from support.prefect_env import prefect_server, reset_runtime
from support.records import deliver, make_record

HAND_TABLES = ("gfx_hands", "gfx_hand_players", "gfx_hand_actions")
# Columns that say when a row was written, not what it holds.
WRITE_TIME_COLUMNS = {"derived_at"}


@dataclass(frozen=True)
class Stored:
    pc: str
    session_id: int
    hands: int
    updated_at: datetime

    @property
    def key(self) -> tuple[str, int]:
        return (self.pc, self.session_id)


def store(database_url: str, pc: str, seed: int, hands: int) -> Stored:
    """One session synced as the sink syncs it (its own transaction: its own updated_at); the
    trigger derives its hand rows."""
    doc = make_session(hands=hands, seed=seed)
    sink = PostgresSink(database_url, timeout=30.0)
    try:
        record = make_record(doc["ID"], data=session_bytes(doc), pc_id=pc)
        result = sink.write_batch(deliver(record), sync_source="manual")
        assert result.failed == [] and result.committed == [0]
    finally:
        sink.close()
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select updated_at from gfx_sessions where gfx_pc_id = %s and session_id = %s",
            (pc, doc["ID"]),
        ).fetchone()
    assert row is not None
    return Stored(pc, doc["ID"], hands, row[0])


def hand_rows(database_url: str) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of the hand tables, without the time it was written: what a derivation
    produced, comparable between two derivations."""
    tables: dict[str, set[tuple[Any, ...]]] = {}
    with psycopg.connect(database_url) as conn:
        for table in HAND_TABLES:
            cursor = conn.execute(f"select * from public.{table}")
            assert cursor.description is not None
            keep = [n for n, c in enumerate(cursor.description) if c.name not in WRITE_TIME_COLUMNS]
            tables[table] = {tuple(_hashable(row[n]) for n in keep) for row in cursor.fetchall()}
    return tables


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def derived_sessions(database_url: str) -> dict[tuple[str, int], int]:
    """(pc, session) -> version, from gfx_hand_derivations."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select gfx_pc_id, session_id, version from gfx_hand_derivations"
        ).fetchall()
    return {(pc, sid): version for pc, sid, version in rows}


def hands_per_session(database_url: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select gfx_pc_id, session_id, count(*) from gfx_hands group by 1, 2"
        ).fetchall()
    return {(pc, sid): count for pc, sid, count in rows}


def forget_derivations(database_url: str) -> None:
    """As a database that stored its sessions before the hand tables existed."""
    with psycopg.connect(database_url) as conn:
        conn.execute("delete from gfx_hands")
        conn.execute("delete from gfx_hand_derivations")


@pytest.fixture
def three(database_url: str) -> list[Stored]:
    """Three sessions on two PCs, stored in this order (so updated_at grows)."""
    return [
        store(database_url, "PC01", seed=1, hands=3),
        store(database_url, "PC01", seed=2, hands=2),
        store(database_url, "PC02", seed=3, hands=4),
    ]


@pytest.fixture(scope="module")
def hands_prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as api_url:
        yield api_url


@pytest.fixture
def configured(
    hands_prefect_api: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Settings from the environment only, as a deployment run has them; the state folder."""
    for name in list(os.environ):
        if name.startswith(("GFX_SYNC_", "SUPABASE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.setenv("GFX_SYNC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GFX_SYNC_DATABASE_URL", database_url)
    reset_runtime()
    yield tmp_path / "state"
    reset_runtime()
