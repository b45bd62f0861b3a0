"""Hand tables (issue 14): derived in the database from each session's raw_json, in step.

The expected values here are an independent reading of the files in plain Python: nothing is
shared with the SQL derivation (supabase/migrations/20261205000000_hand_tables.sql). Failures
name the table, key and field only: the real samples hold real players' names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from gfx_sync.sinks.base import Sink
from gfx_sync.sinks.postgres import PostgresSink
from gfx_sync.sinks.supabase_rest import SupabaseRestSink
from gfx_synth import make_session, session_bytes, trim_session
from support.migrations import apply_until
from support.postgrest import run_postgrest
from support.records import deliver, make_record
from support.roles import as_user, attempt
from support.samples import needs_samples, sample_files

HAND_TABLES = ("gfx_hands", "gfx_hand_players", "gfx_hand_actions", "gfx_hand_derivations")
DURATION = re.compile(r"^(-?)P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


# --- an independent reading of a session document --------------------------------------------


def jsonb_text(value: Any) -> str:
    """PostgreSQL's text form of a jsonb value: keys by length then bytes, ", " and ": "."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{jsonb_text(k)}: {jsonb_text(value[k])}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def seconds(duration: str) -> float:
    match = DURATION.match(duration)
    assert match, duration
    sign, days, hours, minutes, secs = match.groups()
    total = (
        Decimal(days or 0) * 86400
        + Decimal(hours or 0) * 3600
        + Decimal(minutes or 0) * 60
        + Decimal(secs or 0)
    )
    return float(-total if sign else total)


def utc(text: str) -> datetime:
    """ "2025-10-16T09:37:01.4537919Z" to the microsecond (PostgreSQL rounds the 7th digit)."""
    head, _, fraction = text.rstrip("Z").partition(".")
    whole = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    micros = round(Decimal("0." + (fraction or "0")) * 1_000_000)
    return whole + timedelta(microseconds=int(micros))


def street(cards_seen: int) -> str:
    if cards_seen == 0:
        return "preflop"
    return "flop" if cards_seen <= 3 else "turn" if cards_seen == 4 else "river"


def expected_hand(hand: dict) -> dict[str, Any]:
    blinds = hand["FlopDrawBlinds"]
    events = hand["Events"]
    boards: dict[int, list[str]] = {}
    for event in events:
        if event["EventType"] == "BOARD CARD":
            boards.setdefault(event["BoardNum"], []).append(event["BoardCards"])
    return {
        "hand_num": hand["HandNum"],
        "started_at": utc(hand["StartDateTimeUTC"]),
        "duration_seconds": seconds(hand["Duration"]),
        "recording_offset": hand["RecordingOffsetStart"],
        "recording_offset_seconds": seconds(hand["RecordingOffsetStart"]),
        "game_variant": hand["GameVariant"],
        "game_class": hand["GameClass"],
        "bet_structure": hand["BetStructure"],
        "ante_amt": hand["AnteAmt"],
        "blind_level": blinds["BlindLevel"],
        "small_blind_amt": blinds["SmallBlindAmt"],
        "big_blind_amt": blinds["BigBlindAmt"],
        "third_blind_amt": blinds["ThirdBlindAmt"],
        "button_seat": blinds["ButtonPlayerNum"],
        "small_blind_seat": blinds["SmallBlindPlayerNum"],
        "big_blind_seat": blinds["BigBlindPlayerNum"],
        "third_blind_seat": blinds["ThirdBlindPlayerNum"],
        "num_boards": hand["NumBoards"],
        "run_it_times": hand["RunItNumTimes"],
        "board_cards": [" ".join(boards[n]) for n in sorted(boards)],
        "final_pot": max((e["Pot"] for e in events), default=None),
        "player_count": len(hand["Players"]),
        "action_count": len(events),
        "hand_hash": hashlib.md5(jsonb_text(hand).encode()).hexdigest(),
    }


def expected_players(hand: dict) -> dict[int, dict[str, Any]]:
    players = {}
    for player in hand["Players"]:
        cards = " ".join(player.get("HoleCards") or []).split()  # missing: unknown
        players[player["PlayerNum"]] = {
            "name": player["Name"],
            "long_name": player["LongName"],
            "hole_card_1": cards[0] if cards else None,
            "hole_card_2": cards[1] if len(cards) > 1 else None,
            "start_stack": player["StartStackAmt"],
            "end_stack": player["EndStackAmt"],
            "net": player["EndStackAmt"] - player["StartStackAmt"],
            "cumulative_winnings": player["CumulativeWinningsAmt"],
            "straddle_amt": player["BlindBetStraddleAmt"],
            "sitting_out": player["SittingOut"],
            "elimination_rank": player["EliminationRank"],
            "vpip_percent": Decimal(str(player["VPIPPercent"])),
            "pfr_percent": Decimal(str(player["PreFlopRaisePercent"])),
            "aggression_percent": Decimal(str(player["AggressionFrequencyPercent"])),
            "went_to_showdown_percent": Decimal(str(player["WentToShowDownPercent"])),
        }
    return players


def expected_actions(hand: dict) -> dict[int, dict[str, Any]]:
    actions = {}
    per_board: dict[int, int] = {}
    for seq, event in enumerate(hand["Events"]):
        if event["EventType"] == "BOARD CARD":
            per_board[event["BoardNum"]] = per_board.get(event["BoardNum"], 0) + 1
            seen = per_board[event["BoardNum"]]
        else:
            seen = max(per_board.values(), default=0)
        actions[seq] = {
            "event_type": event["EventType"],
            "player_num": event["PlayerNum"],
            "bet_amt": event["BetAmt"],
            "pot": event["Pot"],
            "board_num": event["BoardNum"],
            "board_card": event["BoardCards"],
            "num_cards_drawn": event["NumCardsDrawn"],
            "street": street(seen),
        }
    return actions


# --- reading the tables -------------------------------------------------------------------------


def table(conn: psycopg.Connection, name: str, pc_id: str, key: tuple[str, ...]) -> dict:
    """Rows of `name` for one PC, by key, as column -> value."""
    cursor = conn.execute(f"select * from public.{name} where gfx_pc_id = %s", (pc_id,))
    columns = [c.name for c in cursor.description or []]
    rows = {}
    for values in cursor.fetchall():
        row = dict(zip(columns, values, strict=True))
        rows[tuple(row[k] for k in key)] = row
    return rows


def mismatches(label: str, expected: dict, actual: dict) -> list[str]:
    """Field names whose values differ (never the values: real names must not reach a log)."""
    found = []
    for field, want in expected.items():
        got = actual[field]
        if isinstance(want, datetime):  # the 7th fractional digit is rounded away
            same = got is not None and abs(got - want) <= timedelta(microseconds=1)
        else:
            same = got == want
        if not same:
            found.append(f"{label}.{field}")
    return found


def check_session(conn: psycopg.Connection, pc_id: str, doc: dict) -> list[str]:
    """Every derived field of every hand, player and action of `doc`: the fields that differ."""
    hands = table(conn, "gfx_hands", pc_id, ("session_id", "hand_idx"))
    players = table(conn, "gfx_hand_players", pc_id, ("hand_idx", "player_num"))
    actions = table(conn, "gfx_hand_actions", pc_id, ("hand_idx", "seq"))
    problems = []
    if sorted(hands) != [(doc["ID"], idx) for idx in range(len(doc["Hands"]))]:
        problems.append("gfx_hands: hand positions")
    for idx, hand in enumerate(doc["Hands"]):
        row = hands.get((doc["ID"], idx))
        if row is None:
            continue
        problems += mismatches(f"hand {idx}", expected_hand(hand), row)
        want_players = expected_players(hand)
        if sorted(k[1] for k in players if k[0] == idx) != sorted(want_players):
            problems.append(f"hand {idx}: player numbers")
        for num, want in want_players.items():
            if (idx, num) in players:
                problems += mismatches(f"hand {idx} player {num}", want, players[idx, num])
        want_actions = expected_actions(hand)
        if sorted(k[1] for k in actions if k[0] == idx) != sorted(want_actions):
            problems.append(f"hand {idx}: action positions")
        for seq, want in want_actions.items():
            if (idx, seq) in actions:
                problems += mismatches(f"hand {idx} event {seq}", want, actions[idx, seq])
    return problems


def write(sink: Sink, doc: dict, *, pc_id: str = "PC01", mtime_offset: float = 0.0) -> None:
    record = make_record(doc["ID"], data=session_bytes(doc), pc_id=pc_id, mtime_offset=mtime_offset)
    result = sink.write_batch(deliver(record), sync_source="realtime")
    assert result.failed == [] and result.committed == [0]


def error_events(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select file_path, session_id, error, details->'hand_idx', details->>'field' "
            "from sync_events where event_type = 'error' order by id"
        ).fetchall()


def versions(database_url: str, pc_id: str = "PC01") -> dict[int, tuple]:
    """hand_idx -> (row version, derived_at): both change when a hand row is rewritten."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select hand_idx, xmin::text, derived_at from gfx_hands where gfx_pc_id = %s",
            (pc_id,),
        ).fetchall()
    return {idx: (xmin, at) for idx, xmin, at in rows}


@pytest.fixture
def pg_sink(database_url: str) -> Iterator[PostgresSink]:
    sink = PostgresSink(database_url, timeout=30.0)
    yield sink
    sink.close()


# --- fidelity: the five real samples ------------------------------------------------------------


@needs_samples
def test_every_derived_field_of_the_real_samples(database_url: str, pg_sink: Sink) -> None:
    files = sample_files()
    assert len(files) == 5
    docs = {}
    for n, path in enumerate(files):
        pc_id = f"PC{n}"
        docs[pc_id] = json.loads(path.read_bytes())
        record = make_record(0, data=path.read_bytes(), pc_id=pc_id)
        assert pg_sink.write_batch(deliver(record), sync_source="batch").failed == []
    with psycopg.connect(database_url) as conn:
        for pc_id, doc in docs.items():
            assert check_session(conn, pc_id, doc) == [], pc_id
        derived = conn.execute(
            "select gfx_pc_id, hands, errors, version = gfx_hands_derivation_version() "
            "from gfx_hand_derivations order by gfx_pc_id"
        ).fetchall()
    assert derived == [(pc, len(doc["Hands"]), 0, True) for pc, doc in docs.items()]
    assert error_events(database_url) == []
    big = next(pc for pc, doc in docs.items() if len(doc["Hands"]) == 107)
    assert sum(len(h["Players"]) for h in docs[big]["Hands"]) == 800  # as counted in SOURCE.md
    check_views(database_url, big, docs[big])


def check_views(database_url: str, pc_id: str, doc: dict) -> None:
    """The views against the same independent reading: per-player stats, showdowns, chips."""
    stats: dict[str, dict[str, Any]] = {}
    showdowns = []
    for hand in doc["Hands"]:
        events = hand["Events"]
        pot = max((e["Pot"] for e in events), default=None)
        folded = {e["PlayerNum"] for e in events if e["EventType"] == "FOLD"}
        in_at_end = [
            p for p in hand["Players"] if not p["SittingOut"] and p["PlayerNum"] not in folded
        ]
        showdowns.append(bool(events) and len(in_at_end) >= 2)
        voluntary = set()
        for action in expected_actions(hand).values():
            if action["street"] == "preflop" and action["event_type"] in ("BET", "CALL", "ALL IN"):
                voluntary.add(action["player_num"])
        for p in hand["Players"]:
            s = stats.setdefault(p["Name"], {"hands": 0, "vpip": 0, "net": 0, "won": None})
            s["hands"] += not p["SittingOut"]
            s["vpip"] += p["PlayerNum"] in voluntary
            net = p["EndStackAmt"] - p["StartStackAmt"]
            s["net"] += net
            if net > 0 and pot is not None:
                s["won"] = max(s["won"] or 0, pot)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select name, hands, vpip_hands, net, biggest_pot_won "
            "from gfx_player_session_stats where gfx_pc_id = %s",
            (pc_id,),
        ).fetchall()
        notable = conn.execute(
            "select showdown from gfx_notable_hands where gfx_pc_id = %s order by hand_idx",
            (pc_id,),
        ).fetchall()
        chips = conn.execute(
            "select count(*), sum(end_stack) from gfx_chip_counts where gfx_pc_id = %s", (pc_id,)
        ).fetchone()
    got = {name: {"hands": h, "vpip": v, "net": n, "won": w} for name, h, v, n, w in rows}
    assert sorted(got) == sorted(stats), "player names in gfx_player_session_stats"
    wrong = [
        f"stats of player #{i}" for i, name in enumerate(sorted(stats)) if got[name] != stats[name]
    ]
    assert wrong == []
    assert [s for (s,) in notable] == showdowns
    players = [p for h in doc["Hands"] for p in h["Players"]]
    assert chips == (len(players), sum(p["EndStackAmt"] for p in players))


# --- generated edge cases ---------------------------------------------------------------------


def test_repeated_hand_num_and_a_hand_without_events(database_url: str, pg_sink: Sink) -> None:
    doc = make_session(hands=6, seed=3, aborted_last_hand=True)
    assert doc["Hands"][-1]["HandNum"] == doc["Hands"][-2]["HandNum"]
    assert doc["Hands"][-1]["Events"] == []
    write(pg_sink, doc)
    with psycopg.connect(database_url) as conn:
        assert check_session(conn, "PC01", doc) == []
        last = conn.execute(
            "select final_pot, action_count, board_cards from gfx_hands where hand_idx = 5"
        ).fetchone()
    assert last == (None, 0, [])
    assert error_events(database_url) == []


def test_unknown_hole_cards_are_nulls(database_url: str, pg_sink: Sink) -> None:
    doc = make_session(hands=2, seed=4)
    doc["Hands"][0]["Players"][0]["HoleCards"] = [""]
    del doc["Hands"][0]["Players"][1]["HoleCards"]
    seat, other = (p["PlayerNum"] for p in doc["Hands"][0]["Players"][:2])
    write(pg_sink, doc)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select player_num, hole_card_1, hole_card_2 from gfx_hand_players "
            "where hand_idx = 0 and player_num in (%s, %s) order by player_num",
            (seat, other),
        ).fetchall()
        assert check_session(conn, "PC01", doc) == []
    assert sorted(rows) == sorted([(seat, None, None), (other, None, None)])


def test_two_boards_run_it_twice(database_url: str, pg_sink: Sink) -> None:
    doc = make_session(hands=1, seed=5)
    hand = doc["Hands"][0]
    hand["NumBoards"], hand["RunItNumTimes"] = 2, 2
    template = {"BetAmt": 0, "DateTimeUTC": None, "EventType": "BOARD CARD", "NumCardsDrawn": 0}
    first = [
        {**template, "BoardCards": c, "BoardNum": 1, "PlayerNum": 0, "Pot": 0}
        for c in ("2c", "3d", "4h", "5s", "6c")
    ]
    second = [
        {**template, "BoardCards": c, "BoardNum": 2, "PlayerNum": 0, "Pot": 0}
        for c in ("7d", "8h", "9s", "tc", "jd")
    ]
    preflop = [e for e in hand["Events"] if e["EventType"] != "BOARD CARD"][:2]
    hand["Events"] = [*preflop, *first, *second]
    write(pg_sink, doc)
    with psycopg.connect(database_url) as conn:
        assert check_session(conn, "PC01", doc) == []
        board_cards, streets = conn.execute(
            "select h.board_cards, array_agg(a.street order by a.seq) from gfx_hands h "
            "join gfx_hand_actions a using (gfx_pc_id, session_id, hand_idx) group by 1"
        ).fetchone()
    assert board_cards == ["2c 3d 4h 5s 6c", "7d 8h 9s tc jd"]
    per_board = ["flop"] * 3 + ["turn", "river"]
    assert streets == ["preflop"] * len(preflop) + per_board + per_board


def test_a_hand_being_played_is_replaced_whole_the_others_stay(
    database_url: str, pg_sink: Sink
) -> None:
    full = make_session(hands=4, seed=6)
    partial = json.loads(json.dumps(full))
    partial["Hands"][-1]["Events"] = partial["Hands"][-1]["Events"][:3]
    partial["Hands"][-1]["Players"] = partial["Hands"][-1]["Players"][:-1]
    write(pg_sink, partial)
    before = versions(database_url)
    write(pg_sink, full, mtime_offset=30)
    after = versions(database_url)
    assert {idx: after[idx] for idx in range(3)} == {idx: before[idx] for idx in range(3)}
    assert after[3] != before[3]
    with psycopg.connect(database_url) as conn:
        assert check_session(conn, "PC01", full) == []


def test_bad_keys_skip_their_hand_the_session_still_syncs(database_url: str, pg_sink: Sink) -> None:
    doc = make_session(hands=5, seed=7)
    doc["Hands"][1]["AnteAmt"] = "abc"
    del doc["Hands"][2]["Players"][1]["PlayerNum"]
    doc["Hands"][3]["Events"][0]["Pot"] = [1]
    write(pg_sink, doc)
    path = f"PC01/hands/PGFX_live_data_export GameID={doc['ID']}.json"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select hand_count from gfx_sessions").fetchall() == [(5,)]
        assert conn.execute("select hand_idx from gfx_hands order by 1").fetchall() == [
            (0,),
            (4,),
        ]
        assert conn.execute("select hands, errors from gfx_hand_derivations").fetchone() == (5, 3)
    nums = [h["HandNum"] for h in doc["Hands"]]
    assert error_events(database_url) == [
        (
            path,
            doc["ID"],
            f"{path}: hand tables: hand 1 (HandNum {nums[1]}): field AnteAmt: expected a "
            'whole number, got "abc"',
            1,
            "AnteAmt",
        ),
        (
            path,
            doc["ID"],
            f"{path}: hand tables: hand 2 (HandNum {nums[2]}): field Players[1].PlayerNum: "
            "expected a seat number, got nothing",
            2,
            "Players[1].PlayerNum",
        ),
        (
            path,
            doc["ID"],
            f"{path}: hand tables: hand 3 (HandNum {nums[3]}): field Events[0].Pot: expected a "
            "whole number, got [1]",
            3,
            "Events[0].Pot",
        ),
    ]
    # The file grows: the bad hands are not reported again, the new hand is derived.
    grown = make_session(hands=6, seed=7)
    grown["Hands"][:5] = doc["Hands"]
    write(pg_sink, grown, mtime_offset=30)
    assert len(error_events(database_url)) == 3
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select hand_idx from gfx_hands order by 1").fetchall() == [
            (0,),
            (4,),
            (5,),
        ]


# Values PostgreSQL's jsonb_to_record would read without complaint ("7" as a number, 7 as text,
# 1 as true, the one negative bigger than the largest positive), each in its own hand of one
# session with nothing else wrong: every one must still be an error naming its field. (Values it
# refuses, like 1.5 for an integer or a date that is not one, are in the test above.) Where: ""
# the hand, "FlopDrawBlinds", "Players[0]", "Events[0]".
SILENTLY_READABLE = [
    ("", "HandNum", "7"),
    ("", "NumBoards", -2147483648),
    ("", "RunItNumTimes", "1"),
    ("", "AnteAmt", "100"),
    ("", "GameVariant", 7),
    ("", "GameClass", True),
    ("", "BetStructure", ["NOLIMIT"]),
    ("FlopDrawBlinds", "BlindLevel", "1"),
    ("FlopDrawBlinds", "SmallBlindAmt", "200"),
    ("FlopDrawBlinds", "BigBlindAmt", -9223372036854775808),
    ("FlopDrawBlinds", "ThirdBlindAmt", "0"),
    ("FlopDrawBlinds", "ButtonPlayerNum", "7"),
    ("FlopDrawBlinds", "SmallBlindPlayerNum", -2147483648),
    ("FlopDrawBlinds", "BigBlindPlayerNum", "9"),
    ("FlopDrawBlinds", "ThirdBlindPlayerNum", "0"),
    ("Players[0]", "Name", 7),
    ("Players[0]", "LongName", False),
    ("Players[0]", "HoleCards", ["As", 1]),
    ("Players[0]", "StartStackAmt", "1000"),
    ("Players[0]", "EndStackAmt", "1000"),
    ("Players[0]", "CumulativeWinningsAmt", -9223372036854775808),
    ("Players[0]", "BlindBetStraddleAmt", "0"),
    ("Players[0]", "SittingOut", 1),
    ("Players[0]", "EliminationRank", "1"),
    ("Players[0]", "VPIPPercent", "12.5"),
    ("Players[0]", "PreFlopRaisePercent", "0"),
    ("Players[0]", "AggressionFrequencyPercent", "1"),
    ("Players[0]", "WentToShowDownPercent", "50"),
    ("Events[0]", "EventType", 7),
    ("Events[0]", "PlayerNum", "2"),
    ("Events[0]", "BetAmt", "600"),
    ("Events[0]", "Pot", "800"),
    ("Events[0]", "BoardNum", "0"),
    ("Events[0]", "BoardCards", 5),
    ("Events[0]", "NumCardsDrawn", "0"),
]


def test_values_of_another_type_are_never_read_silently(database_url: str, pg_sink: Sink) -> None:
    doc = make_session(hands=len(SILENTLY_READABLE) + 3, seed=14)
    for n, (where, field, value) in enumerate(SILENTLY_READABLE, start=1):
        hand = doc["Hands"][n]
        target = {
            "": hand,
            "FlopDrawBlinds": hand["FlopDrawBlinds"],
            "Players[0]": hand["Players"][0],
            "Events[0]": hand["Events"][0] if hand["Events"] else None,
        }[where]
        assert target is not None and field in target, (where, field)
        target[field] = value
    # a player's own seat number as a string: not a duplicate seat, only of another type
    last = len(SILENTLY_READABLE) + 1
    player = doc["Hands"][last]["Players"][0]
    player["PlayerNum"] = str(player["PlayerNum"])
    write(pg_sink, doc)
    expected = {
        n: f"{where}.{field}" if where else field
        for n, (where, field, _) in enumerate(SILENTLY_READABLE, start=1)
    }
    expected[last] = "Players[0].PlayerNum"
    reported = {idx: field for _, _, _, idx, field in error_events(database_url)}
    assert reported == expected
    with psycopg.connect(database_url) as conn:
        derived = conn.execute("select hand_idx from gfx_hands order by 1").fetchall()
    assert derived == [(0,), (last + 1,)]


def test_a_hand_that_is_not_an_object_and_hands_that_are_not_a_list(
    database_url: str, pg_sink: Sink
) -> None:
    doc = make_session(hands=2, seed=8)
    doc["Hands"].append(42)
    write(pg_sink, doc)
    [(_, _, error, idx, field)] = error_events(database_url)
    assert (idx, field) == (2, "hand")
    assert error.endswith("hand 2 (HandNum ?): field hand: expected an object, got 42")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from gfx_hands").fetchone() == (2,)
        # Hands of another type: nothing derived, the session row stays, the rows go
        conn.execute(
            "update gfx_sessions set raw_json = jsonb_set(raw_json, '{Hands}', '\"x\"'), "
            "file_hash = 'other', hand_count = 9"
        )
        conn.commit()
        assert conn.execute("select count(*) from gfx_hands").fetchone() == (0,)
    assert error_events(database_url)[-1][2].endswith('field Hands: expected a list, got "x"')


# --- the derivation's own rules ---------------------------------------------------------------


def test_derive_returns_what_it_wrote_and_a_version_bump_rewrites_all(
    database_url: str, pg_sink: Sink
) -> None:
    doc = make_session(hands=3, seed=9)
    write(pg_sink, doc)
    with psycopg.connect(database_url) as conn:
        pc, session = "PC01", doc["ID"]
        assert conn.execute("select gfx_derive_hands(%s, %s)", (pc, session)).fetchone() == (0,)
        conn.execute("delete from gfx_hands where hand_idx = 1")
        assert conn.execute("select gfx_derive_hands(%s, %s)", (pc, session)).fetchone() == (1,)
        conn.execute("update gfx_hand_derivations set version = version - 1")
        assert conn.execute("select gfx_derive_hands(%s, %s)", (pc, session)).fetchone() == (3,)
        assert conn.execute("select gfx_derive_hands('PC01', 1)").fetchone() == (0,)
        assert check_session(conn, pc, doc) == []


DURATIONS = [
    "PT1M43.6794974S",
    "P739539DT13H37M1.4537919S",
    "-PT5S",
    "P1D",
    "PT1H",
    "PT2M",
    "P1DT2H",
    "P1DT3M",
    "PT1H3S",
    "PT2M3.5S",
    "-P2DT1H0M0.0000001S",
    "P1DT",
]
NOT_DURATIONS = ["P", "PT", "5", "PT1.S", "P1H", "PT1D", "PT1S2M", "--PT1S", "PT.5S", "pt1s", ""]


def test_every_form_of_duration_reads_as_the_independent_reading(database_url: str) -> None:
    """gfx_hands_seconds, which both paths use, cuts the text at its designators."""
    with psycopg.connect(database_url) as conn:
        for text in DURATIONS:
            got = conn.execute("select gfx_hands_seconds(%s, 'Duration')", (text,)).fetchone()
            assert got == (seconds(text),), text
        for text in NOT_DURATIONS:
            with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
                conn.execute("select gfx_hands_seconds(%s, 'Duration')", (text,))
            conn.rollback()
            assert raised.value.diag.message_detail == "Duration", text
        assert conn.execute("select gfx_hands_seconds(null, 'Duration')").fetchone() == (None,)


ORPHANS = """
    select (select count(*) from gfx_hand_players c where not exists (
                select 1 from gfx_hands h where (h.gfx_pc_id, h.session_id, h.hand_idx)
                                              = (c.gfx_pc_id, c.session_id, c.hand_idx))),
           (select count(*) from gfx_hand_actions c where not exists (
                select 1 from gfx_hands h where (h.gfx_pc_id, h.session_id, h.hand_idx)
                                              = (c.gfx_pc_id, c.session_id, c.hand_idx)))
"""


def child_counts(conn: psycopg.Connection) -> tuple[int, int]:
    row = conn.execute(
        "select (select count(*) from gfx_hand_players), (select count(*) from gfx_hand_actions)"
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_players_and_actions_never_outlive_their_hand(database_url: str, pg_sink: Sink) -> None:
    """They have no foreign key to gfx_hands: the derivation and gfx_hands' triggers keep them."""
    doc = make_session(hands=107, seed=15, aborted_last_hand=True)
    playing = trim_session(doc, 107)
    playing["Hands"][-2]["Events"] = playing["Hands"][-2]["Events"][:2]  # still being played
    playing["Hands"][-2]["Players"] = playing["Hands"][-2]["Players"][:-1]
    for snapshot, offset in ((trim_session(doc, 50), 0.0), (trim_session(doc, 1), 10.0)):
        write(pg_sink, snapshot, mtime_offset=offset)
    write(pg_sink, playing, mtime_offset=20)
    write(pg_sink, doc, mtime_offset=30)  # hand 105 replaced whole
    with psycopg.connect(database_url) as conn:
        assert conn.execute(ORPHANS).fetchone() == (0, 0)
        assert check_session(conn, "PC01", doc) == []
        full = child_counts(conn)
        expected = (
            sum(len(h["Players"]) for h in doc["Hands"]),
            sum(len(h["Events"]) for h in doc["Hands"]),
        )
        assert full == expected
        # a snapshot of fewer hands (written directly: the sink's newest-wins would refuse it)
        conn.execute(
            "update gfx_sessions set raw_json = jsonb_set(raw_json, '{Hands}', "
            "(raw_json -> 'Hands') - 106 - 105 - 104), file_hash = 'fewer', "
            "file_mtime = file_mtime + interval '1 minute'"
        )
        assert conn.execute(ORPHANS).fetchone() == (0, 0)
        assert conn.execute("select max(hand_idx) from gfx_hand_actions").fetchone() == (103,)
        # a hand deleted alone takes its rows; the derivation puts all three back
        conn.execute("delete from gfx_hands where hand_idx = 7")
        assert conn.execute(ORPHANS).fetchone() == (0, 0)
        assert conn.execute("select gfx_derive_hands('PC01', %s)", (doc["ID"],)).fetchone() == (1,)
        kept = child_counts(conn)
        # the session's key changes: its rows follow it (ON UPDATE CASCADE, then the trigger)
        conn.execute(
            "update gfx_sessions set gfx_pc_id = 'PC02', file_hash = 'moved', "
            "file_mtime = file_mtime + interval '1 minute'"
        )
        assert conn.execute(ORPHANS).fetchone() == (0, 0)
        assert conn.execute(
            "select count(*) from gfx_hand_players where gfx_pc_id = 'PC02'"
        ).fetchone() == (kept[0],)
        conn.commit()
        conn.execute("truncate gfx_sessions cascade")
        assert child_counts(conn) == (0, 0)


def test_deleting_a_session_deletes_its_hand_rows(database_url: str, pg_sink: Sink) -> None:
    write(pg_sink, make_session(hands=2, seed=10))
    with psycopg.connect(database_url) as conn:
        conn.execute("delete from gfx_sessions")
        for name in HAND_TABLES:
            assert conn.execute(f"select count(*) from {name}").fetchone() == (0,), name


# --- both sinks ---------------------------------------------------------------------------------


def test_both_sinks_give_identical_hand_tables(database_url: str, pg_sink: Sink) -> None:
    doc = make_session(hands=12, seed=11, aborted_last_hand=True)
    steps = [(trim_session(doc, 5), 0.0), (trim_session(doc, 1), 10.0), (doc, 20.0)]
    for snapshot, offset in steps:
        write(pg_sink, snapshot, pc_id="PCA", mtime_offset=offset)
    with run_postgrest(database_url) as server:
        rest = SupabaseRestSink(server.url, SecretStr(server.key), timeout=30.0)
        try:
            for snapshot, offset in steps:
                write(rest, snapshot, pc_id="PCB", mtime_offset=offset)
        finally:
            rest.close()
    with psycopg.connect(database_url) as conn:
        for name in HAND_TABLES:
            cursor = conn.execute(f"select * from {name} order by 1, 2, 3")
            columns = [c.name for c in cursor.description or []]
            kept = [i for i, c in enumerate(columns) if c not in ("gfx_pc_id", "derived_at")]
            by_pc: dict[str, list[tuple]] = {"PCA": [], "PCB": []}
            for row in cursor.fetchall():
                by_pc[row[0]].append(tuple(row[i] for i in kept))
            if name == "gfx_hand_derivations":  # each PC's own file path, same content
                assert len(by_pc["PCA"]) == len(by_pc["PCB"]) == 1
            else:
                assert by_pc["PCA"] == by_pc["PCB"] and by_pc["PCA"], name
        assert check_session(conn, "PCB", doc) == []


# --- row-level security -------------------------------------------------------------------------


def test_writer_writes_authenticated_reads_anon_nothing(
    database_url: str, writer_user: str, pg_sink: Sink
) -> None:
    write(pg_sink, make_session(hands=2, seed=12))
    views = ("gfx_player_session_stats", "gfx_chip_counts", "gfx_notable_hands")
    for relation in (*HAND_TABLES, *views):
        error = attempt(database_url, "anon", f"select * from public.{relation}")
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), relation
        assert attempt(database_url, "authenticated", f"select * from public.{relation}") is None
    for name in HAND_TABLES:
        for statement in (f"delete from public.{name}", f"update public.{name} set session_id = 1"):
            for role in ("anon", "authenticated"):
                error = attempt(database_url, role, statement)
                assert isinstance(error, psycopg.errors.InsufficientPrivilege), (role, statement)
    with psycopg.connect(database_url) as conn:
        conn.execute("set role authenticated")
        assert conn.execute("select count(*) from public.gfx_hands").fetchone() == (2,)
        assert conn.execute("select count(*) from public.gfx_chip_counts").fetchone()[0] > 0
    for statement in ("delete from public.gfx_hands", "select gfx_derive_hands('PC01', 1)"):
        error = attempt(database_url, "authenticated", statement)
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), statement
    writer = as_user(database_url, writer_user)
    with psycopg.connect(writer) as conn:
        conn.execute("update public.gfx_hands set final_pot = 1 where hand_idx = 0")
        conn.execute("delete from public.gfx_hand_actions where hand_idx = 1")
        conn.execute("delete from public.gfx_hands where hand_idx = 0")
        derived = conn.execute("select gfx_derive_hands('PC01', session_id) from gfx_sessions")
        assert derived.fetchone() == (1,)  # hand 0 again; hand 1's hash still matches


def test_a_writer_role_session_write_derives_hands_under_rls(
    database_url: str, writer_user: str
) -> None:
    sink = PostgresSink(as_user(database_url, writer_user), timeout=30.0)
    try:
        write(sink, make_session(hands=3, seed=13))
    finally:
        sink.close()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from gfx_hands").fetchone() == (3,)
        assert conn.execute("select errors from gfx_hand_derivations").fetchone() == (0,)


def test_the_migration_is_idempotent(empty_database_url: str, tmp_path: Path) -> None:
    """Applied again to a database at its own version (a later file re-keys its views on the
    site: see tests/test_sites_data.py for that file's own idempotency)."""
    migration = Path(__file__).resolve().parents[1] / (
        "supabase/migrations/20261205000000_hand_tables.sql"
    )
    apply_until(empty_database_url, migration.stem, tmp_path)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        before = conn.execute("select count(*) from pg_policies").fetchone()
        conn.execute(migration.read_text(encoding="utf-8"))  # type: ignore[arg-type]
        assert conn.execute("select count(*) from pg_policies").fetchone() == before
