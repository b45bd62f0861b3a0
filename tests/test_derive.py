"""Rebuilding the hand tables from stored sessions (gfx_sync/derive.py, flows/derive.py).

On a real Postgres with the hand tables migration applied; sessions are stored through the
real sink, so the trigger derived them first, and what the trigger wrote is what a rebuild
must write again.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from flows.derive import SUMMARY_KEY, derive
from gfx_sync.derive import (
    DeriveError,
    PostgresHandStore,
    Progress,
    RebuildReport,
    RestHandStore,
    Selection,
    rebuild,
)
from gfx_synth import grow_session, make_session
from support.postgrest import run_postgrest
from support.prefect_env import artifacts, flow_run_id
from support.stored_hands import (
    Stored,
    derived_sessions,
    forget_derivations,
    hand_rows,
    hands_per_session,
    store,
)
from support.system import wait_for


@pytest.fixture
def pg_store(database_url: str) -> Iterator[PostgresHandStore]:
    hand_store = PostgresHandStore(database_url)
    yield hand_store
    hand_store.close()


def test_a_rebuild_derives_what_was_stored_before_then_writes_nothing(
    database_url: str, pg_store: PostgresHandStore, three: list[Stored]
) -> None:
    """Sessions stored before the hand tables existed get exactly the rows the trigger
    writes; a second rebuild finds every session current and writes nothing."""
    by_trigger = hand_rows(database_url)
    forget_derivations(database_url)
    progress: list[Progress] = []

    first = rebuild(pg_store, Selection(), on_progress=progress.append)

    assert hand_rows(database_url) == by_trigger
    assert first.derived == 3 and first.hands_written == 3 + 2 + 4
    assert [(p.done, p.total) for p in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [p.hands_written for p in progress] == [0, 3, 5, 9]  # key order: PC01's, PC02's
    assert set(derived_sessions(database_url)) == {s.key for s in three}

    second = rebuild(pg_store, Selection(), on_progress=progress.append)

    assert (second.selected, second.derived, second.hands_written) == (3, 0, 0)
    assert len(progress) == 4, "nothing to derive: no progress reported"
    assert second.rows() == [
        {"pc": "PC01", "selected": 2, "current": 2, "derived": 0, "hands_written": 0},
        {"pc": "PC02", "selected": 1, "current": 1, "derived": 0, "hands_written": 0},
    ]
    assert hand_rows(database_url) == by_trigger


def test_force_restores_deleted_hand_rows_and_leaves_the_others_alone(
    database_url: str, pg_store: PostgresHandStore, three: list[Stored]
) -> None:
    """Hand rows deleted by hand leave the derivation record current: only `force` looks at
    the rows again, and writes back exactly the missing hands."""
    by_trigger = hand_rows(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("delete from gfx_hands where hand_idx = 0")  # one hand of each session
    assert rebuild(pg_store, Selection()).hands_written == 0

    forced = rebuild(pg_store, Selection(), force=True)

    assert (forced.derived, forced.hands_written) == (3, 3)
    assert hand_rows(database_url) == by_trigger


def test_a_rebuild_after_a_derivation_change_derives_every_session_again(
    database_url: str, pg_store: PostgresHandStore, three: list[Stored]
) -> None:
    """A new derivation version makes every session stale, without `force`."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "create or replace function public.gfx_hands_derivation_version() returns integer "
            "language sql immutable as $$ select 2 $$"
        )

    report = rebuild(pg_store, Selection())

    assert (report.version, report.derived, report.hands_written) == (2, 3, 9)
    assert set(derived_sessions(database_url).values()) == {2}
    assert rebuild(pg_store, Selection()).derived == 0


class Stop(Exception):
    """The process dying mid-rebuild, as far as the rebuild can tell."""


def test_an_interrupted_rebuild_keeps_what_it_did_and_a_rerun_does_only_the_rest(
    database_url: str, pg_store: PostgresHandStore
) -> None:
    stored = [store(database_url, f"PC0{n % 2}", seed=10 + n, hands=2) for n in range(5)]
    by_trigger = hand_rows(database_url)
    forget_derivations(database_url)

    def crash_after_two(progress: Progress) -> None:
        if progress.done == 2:
            raise Stop

    with pytest.raises(Stop):
        rebuild(pg_store, Selection(), on_progress=crash_after_two)
    assert len(derived_sessions(database_url)) == 2, "each session commits on its own"

    progress: list[Progress] = []
    rest = rebuild(pg_store, Selection(), on_progress=progress.append)

    assert (rest.selected, rest.derived, rest.hands_written) == (5, 3, 6)
    assert [(p.done, p.total) for p in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert set(derived_sessions(database_url)) == {s.key for s in stored}
    assert hand_rows(database_url) == by_trigger


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        pytest.param(lambda s: Selection(pc="PC02"), {2}, id="pc"),
        pytest.param(lambda s: Selection(session_id=s[1].session_id), {1}, id="session"),
        pytest.param(lambda s: Selection(since=s[1].updated_at), {1, 2}, id="since-inclusive"),
        pytest.param(lambda s: Selection(until=s[1].updated_at), {0}, id="until-exclusive"),
        pytest.param(
            lambda s: Selection(pc="PC01", since=s[1].updated_at - timedelta(microseconds=1)),
            {1},
            id="pc-and-window",
        ),
        pytest.param(
            lambda s: Selection(since=s[2].updated_at + timedelta(seconds=1)), set(), id="none"
        ),
    ],
)
def test_the_selection_chooses_the_sessions_derived(
    database_url: str,
    pg_store: PostgresHandStore,
    three: list[Stored],
    selection: Any,
    expected: set[int],
) -> None:
    forget_derivations(database_url)

    report = rebuild(pg_store, selection(three))

    chosen = {three[n].key: three[n].hands for n in expected}
    assert hands_per_session(database_url) == chosen
    assert set(derived_sessions(database_url)) == set(chosen)
    assert (report.selected, report.derived) == (len(chosen), len(chosen))


def test_a_naive_time_is_utc_and_a_bad_pc_id_is_refused() -> None:
    moment = Selection(since=datetime(2025, 3, 14, 12)).since
    assert moment is not None and moment.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="PC id"):
        Selection(pc="../etc")


def test_the_supabase_rest_target_rebuilds_over_rpc(database_url: str, three: list[Stored]) -> None:
    """The same rebuild through PostgREST (the service role, under RLS)."""
    by_trigger = hand_rows(database_url)
    forget_derivations(database_url)
    with run_postgrest(database_url) as server:
        rest = RestHandStore(server.url, server.key)
        try:
            first = rebuild(rest, Selection(pc="PC01"))
            again = rebuild(rest, Selection())
        finally:
            rest.close()

    assert (first.selected, first.derived, first.hands_written) == (2, 2, 5)
    assert (again.selected, again.derived, again.hands_written) == (3, 1, 4)
    assert hand_rows(database_url) == by_trigger


def test_a_target_without_the_hand_tables_gets_a_clear_error(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("drop function public.gfx_derive_hands(text, bigint) cascade")
        conn.execute("drop table public.gfx_hand_derivations")
    hand_store = PostgresHandStore(database_url)
    try:
        with pytest.raises(DeriveError, match="gfx-sync migrate"):
            rebuild(hand_store, Selection())
    finally:
        hand_store.close()


def test_an_unreachable_target_is_an_error_without_the_password(database_url: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    url = psycopg.conninfo.make_conninfo(
        **{**info, "host": "127.0.0.1", "port": "1", "password": "hunter2-secret"}
    )
    with pytest.raises(DeriveError, match="cannot connect") as caught:
        PostgresHandStore(url, connect_timeout=2)
    assert "hunter2-secret" not in str(caught.value)


# -- the gfx-derive flow ----------------------------------------------------------------------


@pytest.mark.prefect
def test_the_derive_flow_shows_progress_and_a_summary(configured: Path, database_url: str) -> None:
    stored = [store(database_url, "PC01", seed=20 + n, hands=2) for n in range(3)]
    forget_derivations(database_url)

    state = derive(pc="PC01", return_state=True)

    assert state.is_completed(), state.message
    summary = state.result()
    assert summary == [
        {"pc": "PC01", "selected": 3, "current": 0, "derived": 3, "hands_written": 6}
    ]
    made = artifacts(flow_run_id(state))
    (table,) = [a for a in made if a.key == SUMMARY_KEY]
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert data == summary
    (progress,) = [a for a in made if a.type == "progress"]
    assert progress.data == 100
    assert set(derived_sessions(database_url)) == {s.key for s in stored}

    again = derive(return_state=True)
    assert again.result()[0]["derived"] == 0
    assert [a.type for a in artifacts(flow_run_id(again))] == ["table"], (
        "no progress: nothing derived"
    )


@pytest.mark.prefect
def test_a_derive_run_on_a_bad_selection_fails_with_the_reason(configured: Path) -> None:
    state = derive(pc="../etc", return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="PC id"):
        state.result()


def test_a_rebuild_waits_for_a_snapshot_being_written_and_derives_on_top_of_it(
    database_url: str, pg_store: PostgresHandStore
) -> None:
    """A sink writing a session while the rebuild reaches it: the rebuild waits for the
    write's transaction (the session row's lock), then finds the new snapshot derived. Two
    derivations of one session at once would collide on the hand rows' keys."""
    stored = store(database_url, "PC01", seed=30, hands=2)
    forget_derivations(database_url)
    grown = grow_session(make_session(hands=2, seed=30), 1, seed=30)
    reports: list[RebuildReport] = []
    with psycopg.connect(database_url) as writer:
        writer.execute(  # what the sink's upsert does: the trigger derives in this transaction
            "update gfx_sessions set raw_json = %s, file_hash = 'grown', hand_count = 3 "
            "where gfx_pc_id = %s and session_id = %s",
            (Jsonb(grown), *stored.key),
        )
        rebuilding = threading.Thread(target=lambda: reports.append(rebuild(pg_store, Selection())))
        rebuilding.start()
        assert wait_for(lambda: waiting_for_a_lock(database_url, "gfx-sync derive"))
        writer.commit()
    rebuilding.join(timeout=60)

    assert len(reports) == 1, "the rebuild finished"
    assert hands_per_session(database_url) == {stored.key: 3}
    with psycopg.connect(database_url) as conn:
        (file_hash,) = conn.execute("select file_hash from gfx_hand_derivations").fetchone()
        errors = conn.execute("select count(*) from sync_events where event_type = 'error'")
        assert (file_hash, errors.fetchone()[0]) == ("grown", 0)


def waiting_for_a_lock(database_url: str, application: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity "
            "where application_name = %s and wait_event_type = 'Lock'",
            (application,),
        ).fetchone()
    return bool(row and row[0])
