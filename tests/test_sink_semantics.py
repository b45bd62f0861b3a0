"""The upsert semantics every sink must keep, run against each sink and a real Postgres.

One row per (PC, session); the newest snapshot wins in any arrival order; an older snapshot
never overwrites a newer one; an identical re-send writes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest
from pydantic import SecretStr

from gfx_sync.pokergfx import SessionRecord
from gfx_sync.sinks.base import Sink, SyncEvent
from gfx_sync.sinks.postgres import PostgresSink
from gfx_sync.sinks.supabase_rest import SupabaseRestSink
from gfx_synth import make_session, session_bytes, trim_session
from support.events import event_rows
from support.postgrest import run_postgrest
from support.records import SESSION_ID, deliver, make_record
from support.roles import as_user

SINK_KINDS = ["postgres", "postgres_writer_role", "supabase_rest"]


@pytest.fixture(params=SINK_KINDS)
def sink(request: pytest.FixtureRequest, database_url: str) -> Iterator[Sink]:
    """Each test runs against both sinks, over the same real Postgres; the Postgres sink also
    as a login member of the least-privileged `gfx_sync_writer` role, under row-level security."""
    if request.param == "supabase_rest":
        with run_postgrest(database_url) as server:
            rest = SupabaseRestSink(server.url, SecretStr(server.key), timeout=5.0)
            yield rest
            rest.close()
        return
    url = database_url
    if request.param == "postgres_writer_role":
        url = as_user(database_url, request.getfixturevalue("writer_user"))
    sink = PostgresSink(url, timeout=5.0)
    yield sink
    sink.close()


def rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select gfx_pc_id, session_id, hand_count, file_hash, updated_at, "
            "raw_json->'ID', jsonb_array_length(raw_json->'Hands'), sync_source "
            "from gfx_sessions order by gfx_pc_id, session_id"
        ).fetchall()


def test_a_new_session_becomes_one_row_with_its_values(sink: Sink, database_url: str) -> None:
    record = make_record(hands=3)
    result = sink.write_batch(deliver(record), sync_source="realtime")
    assert result.committed == [0] and result.failed == []
    [row] = rows(database_url)
    assert row[:4] == ("PC01", SESSION_ID, 3, record.file_hash)
    assert row[5:] == (SESSION_ID, 3, "realtime")  # raw_json stored as a JSON object


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 5])))
def test_growth_in_any_arrival_order_ends_with_the_newest(
    sink: Sink, database_url: str, order: tuple[int, ...]
) -> None:
    snapshots = {hands: make_record(hands=hands, mtime_offset=hands * 60) for hands in (1, 2, 5)}
    for hands in order:
        sink.write_batch(deliver(snapshots[hands]), sync_source="batch")
    [row] = rows(database_url)
    assert row[2] == 5 and row[3] == snapshots[5].file_hash


def test_an_older_snapshot_with_a_newer_mtime_does_not_win(sink: Sink, database_url: str) -> None:
    """A backfill of an old copy touched later still has fewer hands: it must not regress."""
    sink.write_batch(deliver(make_record(hands=5, mtime_offset=0)), sync_source="batch")
    sink.write_batch(deliver(make_record(hands=2, mtime_offset=3600)), sync_source="backfill")
    assert rows(database_url)[0][2] == 5


def test_same_hands_later_mtime_wins(sink: Sink, database_url: str) -> None:
    first = make_record(hands=2, mtime_offset=0)
    later = make_record(
        hands=2,
        mtime_offset=10,
        data=first.raw_json.replace(b'"EventTitle":""', b'"EventTitle":"x"'),
    )
    sink.write_batch(deliver(later), sync_source="batch")
    sink.write_batch(deliver(first), sync_source="batch")
    assert rows(database_url)[0][3] == later.file_hash


def test_an_identical_resend_writes_nothing(sink: Sink, database_url: str) -> None:
    record = make_record(hands=2)
    sink.write_batch(deliver(record), sync_source="batch")
    before = rows(database_url)
    result = sink.write_batch(deliver(record), sync_source="batch")
    assert result.committed == [0]
    assert rows(database_url) == before  # updated_at not bumped


def test_a_newer_snapshot_bumps_updated_at(sink: Sink, database_url: str) -> None:
    sink.write_batch(deliver(make_record(hands=1)), sync_source="batch")
    before = rows(database_url)[0][4]
    sink.write_batch(deliver(make_record(hands=2, mtime_offset=5)), sync_source="batch")
    assert rows(database_url)[0][4] > before


def test_several_snapshots_in_one_batch_the_newest_wins(sink: Sink, database_url: str) -> None:
    batch = deliver(*(make_record(hands=h, mtime_offset=h) for h in (3, 1, 7, 2)))
    result = sink.write_batch(batch, sync_source="batch")
    assert sorted(result.committed) == [0, 1, 2, 3]  # the older ones with the newest
    [row] = rows(database_url)
    assert row[2] == 7


def test_sessions_are_per_pc(sink: Sink, database_url: str) -> None:
    batch = deliver(
        make_record(pc_id="PC01"), make_record(pc_id="PC02"), make_record(SESSION_ID + 1)
    )
    sink.write_batch(batch, sync_source="batch")
    assert [(r[0], r[1]) for r in rows(database_url)] == [
        ("PC01", SESSION_ID),
        ("PC01", SESSION_ID + 1),
        ("PC02", SESSION_ID),
    ]


def test_a_rejected_record_is_isolated_and_the_rest_commit(sink: Sink, database_url: str) -> None:
    """jsonb refuses \\u0000: that one record fails permanently, its batch-mates commit."""
    good = [make_record(SESSION_ID + n) for n in range(5)]
    bad = make_record(
        SESSION_ID + 99,
        data=make_record(SESSION_ID + 99).raw_json.replace(
            b'"EventTitle":""', b'"EventTitle":"\\u0000"'
        ),
    )
    result = sink.write_batch(deliver(*good[:2], bad, *good[2:]), sync_source="batch")
    assert sorted(result.committed) == [0, 1, 3, 4, 5]
    [(failed, error)] = result.failed
    assert failed == 2 and not error.retryable
    assert len(rows(database_url)) == 5


def test_the_events_given_and_a_batch_event_are_recorded_once(
    sink: Sink, database_url: str
) -> None:
    """Whether a sink can write them in the data's transaction or not."""
    quarantined = SyncEvent("quarantined", gfx_pc_id="PC01", file_path="PC01/x.json", error="bad")
    batch = deliver(make_record(), make_record(SESSION_ID + 1), make_record(hands=2))
    result = sink.write_batch(batch, sync_source="realtime", events=[quarantined])
    assert sorted(result.committed) == [0, 1, 2] and result.requests == 1
    assert event_rows(database_url) == [
        ("quarantined", "PC01", 0, "bad", {}),
        ("batch", None, 3, None, {"source": "realtime", "requests": 1}),
    ]


# --- hand tables (issue 14): derived by the database in the session's transaction -------------


def hand_rows(database_url: str) -> dict[int, tuple]:
    """hand_idx -> (hand_num, hash, row version, derived_at) of the one session's hands."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select hand_idx, hand_num, hand_hash, xmin::text, derived_at from gfx_hands"
        ).fetchall()
        players = conn.execute("select count(*) from gfx_hand_players").fetchone()
        actions = conn.execute("select count(*) from gfx_hand_actions").fetchone()
    assert players is not None and actions is not None
    return {idx: rest for idx, *rest in rows} | {-1: (players[0], actions[0])}


def synth_record(doc: dict, mtime_offset: float) -> SessionRecord:
    return make_record(doc["ID"], data=session_bytes(doc), mtime_offset=mtime_offset)


def test_hands_arriving_as_50_then_1_then_107_end_as_the_107(sink: Sink, database_url: str) -> None:
    doc = make_session(hands=107, seed=21, aborted_last_hand=True)
    for hands, offset in ((50, 0), (1, 10), (107, 20)):
        snapshot = synth_record(trim_session(doc, hands), offset)
        assert sink.write_batch(deliver(snapshot), sync_source="realtime").failed == []
    rows = hand_rows(database_url)
    assert sorted(rows) == [-1, *range(107)]
    assert [rows[idx][0] for idx in range(107)] == [h["HandNum"] for h in doc["Hands"]]
    assert rows[-1] == (
        sum(len(h["Players"]) for h in doc["Hands"]),
        sum(len(h["Events"]) for h in doc["Hands"]),
    )


def test_an_older_or_identical_snapshot_writes_no_hand_row(sink: Sink, database_url: str) -> None:
    doc = make_session(hands=6, seed=22)
    newest = synth_record(doc, 30)
    assert sink.write_batch(deliver(newest), sync_source="batch").failed == []
    before = hand_rows(database_url)
    for snapshot in (newest, synth_record(trim_session(doc, 4), 60), newest):
        assert sink.write_batch(deliver(snapshot), sync_source="batch").failed == []
    assert hand_rows(database_url) == before


def test_growth_rewrites_only_the_new_hand(sink: Sink, database_url: str) -> None:
    doc = make_session(hands=8, seed=23)
    first = synth_record(trim_session(doc, 7), 0)
    assert sink.write_batch(deliver(first), sync_source="realtime").failed == []
    before = hand_rows(database_url)
    assert sink.write_batch(deliver(synth_record(doc, 10)), sync_source="realtime").failed == []
    after = hand_rows(database_url)
    assert {idx: after[idx] for idx in range(7)} == {idx: before[idx] for idx in range(7)}
    assert sorted(after) == [-1, *range(8)]
