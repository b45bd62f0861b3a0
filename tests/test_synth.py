"""Specification of `gfx_synth`: invented PokerGFX 3.2 sessions that look like real ones.

Two kinds of checks:
- self-contained ones, which spell out the format (keys, types, encoding, growth) and always run;
- real-sample ones, which hold the generator and this spec against the real exports in
  ../shared/samples/pokergfx, and skip when that folder is absent.

The real samples hold real people's names and cards: these tests compare them programmatically
and report only counts, indexes, key paths and type names, never values.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from time import monotonic
from typing import Any

import orjson
import pytest

from gfx_synth import (
    EVENT_TYPES,
    append_aborted_hand,
    format_created_utc,
    format_duration,
    format_ticks_utc,
    grow_session,
    make_corpus,
    make_session,
    parse_duration,
    session_bytes,
    session_file_name,
    ticks_from_created_utc,
    ticks_from_datetime,
    trim_session,
    write_in_chunks,
    write_session,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "pokergfx"
NO_SAMPLES = (
    "../shared/samples/pokergfx not present: real-sample checks need the shared folder "
    "(CI always has it)"
)
# "About 4.3-5 KB per hand" (format reference); the real samples span 4301-5036 bytes per hand.
BYTES_PER_HAND = (4300, 5100)

# The format, key path -> type names, as read off the real exports (checked against them below).
SCHEMA: dict[str, set[str]] = {
    "$": {"dict"},
    "$.CreatedDateTimeUTC": {"str"},
    "$.EventTitle": {"str"},
    "$.Hands": {"list"},
    "$.ID": {"int"},
    "$.Payouts": {"list"},
    "$.Payouts[]": {"int"},
    "$.SoftwareVersion": {"str"},
    "$.Type": {"str"},
    "$.Hands[]": {"dict"},
    **{
        f"$.Hands[].{key}": {kind}
        for key, kind in {
            "AnteAmt": "int",
            "BetStructure": "str",
            "BombPotAmt": "int",
            "Description": "str",
            "Duration": "str",
            "Events": "list",
            "FlopDrawBlinds": "dict",
            "GameClass": "str",
            "GameVariant": "str",
            "HandNum": "int",
            "NumBoards": "int",
            "Players": "list",
            "RecordingOffsetStart": "str",
            "RunItNumTimes": "int",
            "StartDateTimeUTC": "str",
            "StudLimits": "dict",
        }.items()
    },
    **{
        f"$.Hands[].FlopDrawBlinds.{key}": {"str" if key == "AnteType" else "int"}
        for key in (
            "AnteType",
            "BigBlindAmt",
            "BigBlindPlayerNum",
            "BlindLevel",
            "ButtonPlayerNum",
            "SmallBlindAmt",
            "SmallBlindPlayerNum",
            "ThirdBlindAmt",
            "ThirdBlindPlayerNum",
        )
    },
    **{
        f"$.Hands[].StudLimits.{key}": {"int"}
        for key in ("BringInAmt", "BringInPlayerNum", "HighLimitAmt", "LowLimitAmt")
    },
    "$.Hands[].Players[]": {"dict"},
    **{
        f"$.Hands[].Players[].{key}": {kind}
        for key, kind in {
            "AggressionFrequencyPercent": "int",
            "BlindBetStraddleAmt": "int",
            "CumulativeWinningsAmt": "int",
            "EliminationRank": "int",
            "EndStackAmt": "int",
            "HoleCards": "list",
            "LongName": "str",
            "Name": "str",
            "PlayerNum": "int",
            "PreFlopRaisePercent": "int",
            "SittingOut": "bool",
            "StartStackAmt": "int",
            "VPIPPercent": "int",
            "WentToShowDownPercent": "int",
        }.items()
    },
    "$.Hands[].Players[].HoleCards[]": {"str"},
    "$.Hands[].Events[]": {"dict"},
    **{
        f"$.Hands[].Events[].{key}": kinds
        for key, kinds in {
            "BetAmt": {"int"},
            "BoardCards": {"NoneType", "str"},
            "BoardNum": {"int"},
            "DateTimeUTC": {"NoneType"},
            "EventType": {"str"},
            "NumCardsDrawn": {"int"},
            "PlayerNum": {"int"},
            "Pot": {"int"},
        }.items()
    },
}

# What the string values look like (regexes hold on every real value too; checked below).
UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z")
DURATION = re.compile(r"PT(?:\d+M)?\d+(?:\.\d{1,7})?S")
LOCAL_OFFSET = re.compile(r"P\d+DT(?:\d+H)?(?:\d+M)?\d+(?:\.\d{1,7})?S")
CARD = r"(?:[2-9]|10|[jqka])[cdhs]"
HOLE_CARDS = re.compile(rf"{CARD} {CARD}|")
BOARD_CARD = re.compile(CARD)
CONSTANTS = {
    "BetStructure": "NOLIMIT",
    "BombPotAmt": 0,
    "Description": "",
    "GameClass": "FLOP",
    "GameVariant": "HOLDEM",
    "NumBoards": 1,
    "RunItNumTimes": 1,
}


# --- helpers ----------------------------------------------------------------------------------


def structure(docs: list[dict]) -> tuple[dict[str, set[str]], dict[str, set[frozenset[str]]]]:
    """Union over documents: key path -> type names, and dict path -> the key sets seen."""
    types: dict[str, set[str]] = defaultdict(set)
    key_sets: dict[str, set[frozenset[str]]] = defaultdict(set)

    def walk(value: Any, path: str) -> None:
        types[path].add(type(value).__name__)
        if isinstance(value, dict):
            key_sets[path].add(frozenset(value))
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                walk(item, f"{path}[]")

    for doc in docs:
        walk(doc, "$")
    return dict(types), dict(key_sets)


def schema_key_sets() -> dict[str, set[frozenset[str]]]:
    """The one key set each dict path of SCHEMA must have."""
    dict_paths = [path for path, kinds in SCHEMA.items() if kinds == {"dict"}]
    return {
        parent: {
            frozenset(
                path[len(parent) + 1 :]
                for path in SCHEMA
                if path.startswith(parent + ".")
                and "." not in path[len(parent) + 1 :]
                and "[" not in path[len(parent) + 1 :]
            )
        }
        for parent in dict_paths
    }


def pot_mismatches(hand: dict) -> tuple[int, int]:
    """Replay the pot: (events checked, events whose Pot disagrees).

    Blinds and the big-blind ante are in the pot before the first event; `Pot` is the pot
    before the action; `BetAmt` is the player's total on the street after the action."""
    blinds = hand["FlopDrawBlinds"]
    pot = blinds["SmallBlindAmt"] + blinds["BigBlindAmt"] + hand["AnteAmt"]
    street = {blinds["SmallBlindPlayerNum"]: blinds["SmallBlindAmt"]}
    street[blinds["BigBlindPlayerNum"]] = blinds["BigBlindAmt"]
    checked = wrong = 0
    previous_was_board = False
    for event in hand["Events"]:
        kind = event["EventType"]
        if kind == "BOARD CARD":
            if not previous_was_board:
                street = {}
            previous_was_board = True
            continue
        previous_was_board = False
        if kind == "FOLD":
            continue
        checked += 1
        wrong += event["Pot"] != pot
        if kind in ("BET", "CALL", "ALL IN"):
            pot += event["BetAmt"] - street.get(event["PlayerNum"], 0)
            street[event["PlayerNum"]] = event["BetAmt"]
    return checked, wrong


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hands_of(docs: list[dict]) -> list[dict]:
    return [hand for doc in docs for hand in doc["Hands"]]


@pytest.fixture(scope="module")
def real() -> list[tuple[Path, bytes, dict]]:
    """The real exports as (path, bytes, document); skips without ../shared."""
    if not SAMPLES.is_dir():
        pytest.skip(NO_SAMPLES)
    files = sorted(SAMPLES.rglob("*.json"))
    assert files, "the samples folder exists but holds no *.json"
    return [(path, path.read_bytes(), json.loads(path.read_bytes())) for path in files]


@pytest.fixture(scope="module")
def generated() -> list[dict]:
    """A spread of invented sessions: table sizes, both table types, the aborted-hand quirk."""
    return [
        make_session(hands=40, seed=1),
        make_session(hands=25, seed=2, players=6),
        make_session(hands=25, seed=3, players=9, table_type="FINAL_TABLE"),
        make_session(hands=12, seed=4, players=7, aborted_last_hand=True),
        make_session(hands=1, seed=5),
    ]


# --- time: ticks and text ---------------------------------------------------------------------


def test_ticks_are_dotnet_datetime_ticks() -> None:
    assert ticks_from_datetime(datetime(1, 1, 1)) == 0
    assert ticks_from_datetime(datetime(1970, 1, 1, tzinfo=UTC)) == 621_355_968_000_000_000
    assert ticks_from_datetime(datetime(2000, 1, 1, tzinfo=UTC)) == 630_822_816_000_000_000
    one_microsecond_later = datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert ticks_from_datetime(one_microsecond_later) == 630_822_816_000_000_010


def test_ticks_use_utc_and_treat_naive_as_utc() -> None:
    aware = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=3)))
    assert ticks_from_datetime(aware) == ticks_from_datetime(datetime(2024, 6, 1, 9, 0))
    assert ticks_from_datetime(aware) == ticks_from_datetime(datetime(2024, 6, 1, 9, 0, tzinfo=UTC))


def test_created_utc_has_seven_fractional_digits_and_keeps_the_seventh() -> None:
    dt = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    assert format_created_utc(dt) == "2024-02-29T23:59:59.9999990Z"
    assert format_created_utc(datetime(2024, 3, 1, tzinfo=UTC)) == "2024-03-01T00:00:00.0000000Z"
    text = "2024-02-29T23:59:59.9999991Z"
    assert ticks_from_created_utc(text) == ticks_from_datetime(dt) + 1
    assert format_ticks_utc(ticks_from_created_utc(text)) == text
    with pytest.raises(ValueError):
        ticks_from_created_utc("2024-02-29 23:59:59")


def test_durations_are_written_like_dotnet_xmlconvert() -> None:
    second = 10_000_000
    assert format_duration(0) == "PT0S"
    assert format_duration(5 * second) == "PT5S"
    assert format_duration(65 * second + second // 10) == "PT1M5.1S"  # trailing zeros cut
    assert format_duration(67 * second + 2_718_282) == "PT1M7.2718282S"
    assert format_duration(3600 * second) == "PT1H"
    local = (739_000 * 86_400 + 13 * 3600 + 7) * second + 1_415_926
    assert format_duration(local) == "P739000DT13H7.1415926S"  # zero minutes left out
    rng = random.Random(0)
    for ticks in [rng.randrange(10**16) for _ in range(500)] + [1, second, 86_400 * second]:
        assert parse_duration(format_duration(ticks)) == ticks


# --- the document -------------------------------------------------------------------------------


def test_session_top_level_fields() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    doc = make_session(hands=3, seed=7, created_at=created, table_type="FINAL_TABLE")
    assert list(doc) == [
        "CreatedDateTimeUTC",
        "EventTitle",
        "Hands",
        "ID",
        "Payouts",
        "SoftwareVersion",
        "Type",
    ]
    assert doc["CreatedDateTimeUTC"] == "2026-01-02T03:04:05.6789010Z"
    assert doc["ID"] == ticks_from_datetime(created)
    assert doc["EventTitle"] == ""
    assert doc["Payouts"] == [0] * 10
    assert doc["SoftwareVersion"] == "PokerGFX 3.2"
    assert doc["Type"] == "FINAL_TABLE"
    assert len(doc["Hands"]) == 3


def test_id_is_the_ticks_of_created_utc_including_the_seventh_digit() -> None:
    for seed in range(12):
        doc = make_session(hands=1, seed=seed)
        assert doc["ID"] == ticks_from_created_utc(doc["CreatedDateTimeUTC"])
        assert doc["ID"] % 10 != 0, "default IDs carry a 7th digit, as real ones do"
    exact = make_session(hands=1, created_ticks=638_000_000_000_000_007)
    assert exact["ID"] == 638_000_000_000_000_007
    assert exact["CreatedDateTimeUTC"].endswith("0000007Z")
    assert exact["ID"] > 2**31 - 1, "IDs need BIGINT"


def test_generated_documents_follow_the_schema(generated: list[dict]) -> None:
    types, key_sets = structure(generated)
    assert types == SCHEMA
    assert key_sets == schema_key_sets(), "every dict at a path has the same keys"


def test_string_values_look_like_pokergfx(generated: list[dict]) -> None:
    for doc in generated:
        assert UTC_TIME.fullmatch(doc["CreatedDateTimeUTC"])
    for hand in hands_of(generated):
        assert UTC_TIME.fullmatch(hand["StartDateTimeUTC"])
        assert DURATION.fullmatch(hand["Duration"])
        assert LOCAL_OFFSET.fullmatch(hand["RecordingOffsetStart"])
        assert {key: hand[key] for key in CONSTANTS} == CONSTANTS
        assert hand["FlopDrawBlinds"]["AnteType"] == "BB_ANTE_BB1ST"
        for player in hand["Players"]:
            assert len(player["HoleCards"]) == 1
            assert HOLE_CARDS.fullmatch(player["HoleCards"][0])
        for event in hand["Events"]:
            assert event["EventType"] in EVENT_TYPES
            assert event["DateTimeUTC"] is None
            if event["EventType"] == "BOARD CARD":
                assert BOARD_CARD.fullmatch(event["BoardCards"])
                assert (event["BoardNum"], event["PlayerNum"], event["Pot"]) == (1, 0, 0)
            else:
                assert event["BoardCards"] is None


def test_every_event_type_and_unread_hole_cards_occur() -> None:
    """The generator exercises the whole vocabulary, including the rarer forms."""
    docs = [make_session(hands=40, seed=seed) for seed in range(5)]
    kinds = {event["EventType"] for hand in hands_of(docs) for event in hand["Events"]}
    assert kinds == set(EVENT_TYPES)
    cards = [p["HoleCards"] for hand in hands_of(docs) for p in hand["Players"]]
    assert [""] in cards
    assert any(c[0].startswith("10") or " 10" in c[0] for c in cards)


def test_hands_are_consistent_poker(generated: list[dict]) -> None:
    """Pots replay exactly, chips are conserved, cards are dealt once, seats are sorted."""
    for hand in hands_of(generated):
        _, wrong = pot_mismatches(hand)
        assert wrong == 0
        assert sum(p["EndStackAmt"] - p["StartStackAmt"] for p in hand["Players"]) == 0
        assert all(p["EndStackAmt"] >= 0 for p in hand["Players"])
        cards = [c for p in hand["Players"] for c in p["HoleCards"][0].split()]
        cards += [e["BoardCards"] for e in hand["Events"] if e["EventType"] == "BOARD CARD"]
        assert len(cards) == len(set(cards))
        assert len([e for e in hand["Events"] if e["EventType"] == "BOARD CARD"]) in (0, 3, 4, 5)
        seats = [p["PlayerNum"] for p in hand["Players"]]
        assert seats == sorted(seats)
        blinds = hand["FlopDrawBlinds"]
        assert {blinds["ButtonPlayerNum"], blinds["SmallBlindPlayerNum"]} <= set(seats)
        assert blinds["BigBlindPlayerNum"] in seats
        assert hand["AnteAmt"] == blinds["BigBlindAmt"]
        for player in hand["Players"]:
            for key in ("AggressionFrequencyPercent", "PreFlopRaisePercent", "VPIPPercent"):
                assert 0 <= player[key] <= 100


def test_hands_follow_each_other(generated: list[dict]) -> None:
    """Numbers count up, stacks carry over, the clock moves on, the local offset is fixed."""
    for doc in generated[:3]:
        hands = doc["Hands"]
        assert [h["HandNum"] for h in hands] == list(range(1, len(hands) + 1))
        offsets = {
            parse_duration(h["RecordingOffsetStart"])
            - ticks_from_created_utc(h["StartDateTimeUTC"])
            for h in hands
        }
        assert offsets == {4 * 3600 * 10_000_000}
        assert ticks_from_created_utc(hands[0]["StartDateTimeUTC"]) > doc["ID"]
        for before, after in pairwise(hands):
            end = ticks_from_created_utc(before["StartDateTimeUTC"]) + parse_duration(
                before["Duration"]
            )
            assert ticks_from_created_utc(after["StartDateTimeUTC"]) > end
            seat_end = {p["PlayerNum"]: p["EndStackAmt"] for p in before["Players"]}
            seat_name = {p["PlayerNum"]: p["LongName"] for p in before["Players"]}
            for player in after["Players"]:
                num = player["PlayerNum"]
                if player["LongName"] == seat_name[num]:
                    assert player["StartStackAmt"] == seat_end[num]
                else:  # a busted player's seat was taken by a new player
                    assert seat_end[num] == 0
                    assert player["CumulativeWinningsAmt"] == (
                        player["EndStackAmt"] - player["StartStackAmt"]
                    )


def test_names_are_invented_with_spaces(generated: list[dict]) -> None:
    for doc in generated:
        players = [p for hand in doc["Hands"] for p in hand["Players"]]
        assert all(" " in p["LongName"] for p in players)
        assert all(p["LongName"].endswith(" " + p["Name"]) for p in players), "Name = surname"
        assert any(" " in p["Name"] for p in players), "some surnames have two words"
        per_hand = [len({p["LongName"] for p in hand["Players"]}) for hand in doc["Hands"]]
        assert per_hand == [len(hand["Players"]) for hand in doc["Hands"]]


def test_deterministic_per_seed() -> None:
    assert session_bytes(make_session(hands=20, seed=3)) == session_bytes(
        make_session(hands=20, seed=3)
    )
    a, b = make_session(hands=20, seed=3), make_session(hands=20, seed=4)
    assert a["ID"] != b["ID"]
    assert a["Hands"][0]["Players"] != b["Hands"][0]["Players"]
    fixed = datetime(2025, 5, 5, tzinfo=UTC)
    c = make_session(hands=5, seed=3, created_at=fixed)
    d = make_session(hands=5, seed=4, created_at=fixed)
    assert c["ID"] == d["ID"] and session_bytes(c) != session_bytes(d)


def test_bytes_per_hand_in_the_real_range() -> None:
    docs = [make_session(hands=40, seed=seed) for seed in range(5)]
    per_hand = sum(len(session_bytes(d)) for d in docs) / sum(len(d["Hands"]) for d in docs)
    assert BYTES_PER_HAND[0] <= per_hand <= BYTES_PER_HAND[1]
    for players in (6, 7, 9):
        docs = [make_session(hands=40, seed=seed, players=players) for seed in range(5)]
        size = sum(len(session_bytes(d)) for d in docs) / sum(len(d["Hands"]) for d in docs)
        assert BYTES_PER_HAND[0] <= size <= BYTES_PER_HAND[1], f"{players} players"


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        make_session(hands=-1)
    with pytest.raises(ValueError):
        make_session(hands=3, players=1)
    with pytest.raises(ValueError):
        make_session(hands=1, aborted_last_hand=True)
    with pytest.raises(ValueError):
        make_session(hands=1, created_at=datetime.now(UTC), created_ticks=1)
    with pytest.raises(ValueError):
        grow_session(make_session(hands=1), -1)
    assert make_session(hands=0)["Hands"] == []


# --- encoding -----------------------------------------------------------------------------------


def test_session_bytes_are_compact_sorted_ascii_one_line() -> None:
    doc = make_session(hands=5, seed=1)
    data = session_bytes(doc)
    assert data == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii")
    assert data.isascii()
    assert not data.startswith(b"\xef\xbb\xbf")
    assert b"\n" not in data and not data.endswith(b"\n")
    assert data.startswith(b'{"CreatedDateTimeUTC":"')
    assert data.index(b'"Hands":[') < data.index(b'"ID":'), "Hands is written before ID"
    hand = session_bytes(doc["Hands"][0])
    assert hand.startswith(b'{"AnteAmt":') and b'"StudLimits":{"BringInAmt":0,' in hand


def test_session_bytes_escape_non_ascii() -> None:
    doc = make_session(hands=1, seed=1)
    doc["Hands"][0]["Players"][0]["LongName"] = "Zoë Ångström"
    data = session_bytes(doc)
    assert data.isascii() and b"Zo\\u00eb \\u00c5ngstr\\u00f6m" in data
    assert json.loads(data) == doc


# --- growth -------------------------------------------------------------------------------------


def test_grow_keeps_earlier_hands_byte_identical_and_top_level_unchanged() -> None:
    first = make_session(hands=1, seed=11)
    snapshots = [first]
    for extra in (1, 3, 10, 30):
        snapshots.append(grow_session(snapshots[-1], extra, seed=11))
    for earlier, later in pairwise(snapshots):
        kept = len(earlier["Hands"])
        assert [session_bytes(h) for h in later["Hands"][:kept]] == [
            session_bytes(h) for h in earlier["Hands"]
        ]
        assert {k: v for k, v in later.items() if k != "Hands"} == {
            k: v for k, v in earlier.items() if k != "Hands"
        }
        # As on disk: the old file up to the end of its last hand is a prefix of the new one.
        old = session_bytes(earlier)
        assert session_bytes(later).startswith(old[: old.rindex(b'],"ID":')])
    hashes = [sha(session_bytes(s)) for s in snapshots]
    assert len(set(hashes)) == len(hashes), "every growth step changes the file's hash"
    assert [len(s["Hands"]) for s in snapshots] == [1, 2, 5, 15, 45]


def test_grow_does_not_touch_its_input_and_continues_the_same_session() -> None:
    doc = make_session(hands=10, seed=5)
    before = session_bytes(doc)
    grown = grow_session(doc, 15, seed=5)
    assert session_bytes(doc) == before
    assert session_bytes(grown) == session_bytes(make_session(hands=25, seed=5))
    assert session_bytes(grow_session(doc, 0, seed=5)) == before


def test_trim_gives_an_earlier_snapshot() -> None:
    doc = make_session(hands=30, seed=6)
    assert session_bytes(trim_session(doc, 12)) == session_bytes(make_session(hands=12, seed=6))
    assert trim_session(doc, 0)["Hands"] == []
    assert trim_session(doc, 30) == doc and trim_session(doc, 30) is not doc
    with pytest.raises(ValueError):
        trim_session(doc, 31)


# --- quirks seen in real files --------------------------------------------------------------------


def test_aborted_last_hand_repeats_the_hand_number_and_has_no_events() -> None:
    doc = make_session(hands=8, seed=9, aborted_last_hand=True)
    *_, previous, last = doc["Hands"]
    assert last["HandNum"] == previous["HandNum"] == 7
    assert last["Events"] == []
    assert all(p["HoleCards"] == [""] for p in last["Players"])
    assert all(p["StartStackAmt"] == p["EndStackAmt"] for p in last["Players"])
    assert last["FlopDrawBlinds"] == previous["FlopDrawBlinds"]
    assert last["StartDateTimeUTC"] > previous["StartDateTimeUTC"]
    # The table goes on after it: next number, the button moves.
    grown = grow_session(doc, 2, seed=9)
    assert [h["HandNum"] for h in grown["Hands"]][-3:] == [7, 8, 9]
    new = grown["Hands"][-2]
    assert new["FlopDrawBlinds"]["ButtonPlayerNum"] != last["FlopDrawBlinds"]["ButtonPlayerNum"]


def test_zero_event_hand_without_a_repeated_number() -> None:
    doc = append_aborted_hand(make_session(hands=3, seed=2), repeat_hand_num=False)
    assert [h["HandNum"] for h in doc["Hands"]] == [1, 2, 3, 4]
    assert doc["Hands"][-1]["Events"] == []
    with pytest.raises(ValueError):
        append_aborted_hand(make_session(hands=0))


# --- files ----------------------------------------------------------------------------------------


def test_file_name_has_the_space() -> None:
    assert session_file_name(638000000000000007) == (
        "PGFX_live_data_export GameID=638000000000000007.json"
    )
    with pytest.raises(ValueError):
        session_file_name(-1)


def test_write_session_rewrites_the_same_file_in_place(tmp_path: Path) -> None:
    doc = make_session(hands=2, seed=1)
    path = write_session(tmp_path / "PC01" / "hands", doc)
    assert path.name == session_file_name(doc["ID"])
    assert path.read_bytes() == session_bytes(doc)
    inode = path.stat().st_ino
    grown = grow_session(doc, 3, seed=1)
    assert write_session(path.parent, grown) == path
    assert path.stat().st_ino == inode, "rewritten in place, not replaced by a rename"
    assert path.read_bytes() == session_bytes(grown)
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary files"


def test_write_in_chunks_exposes_truncated_json_mid_write(tmp_path: Path) -> None:
    path = write_session(tmp_path, make_session(hands=1, seed=1))
    data = session_bytes(make_session(hands=3, seed=1))
    seen: list[bytes] = []
    write_in_chunks(path, data, chunk_size=4096, on_chunk=lambda _: seen.append(path.read_bytes()))
    assert len(seen) == -(-len(data) // 4096)
    assert all(data.startswith(snapshot) for snapshot in seen)
    for snapshot in seen[:-1]:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(snapshot)
    assert seen[-1] == data == path.read_bytes()
    with pytest.raises(ValueError):
        write_in_chunks(path, data, chunk_size=0)


def test_write_in_chunks_pauses_between_chunks(tmp_path: Path) -> None:
    path = tmp_path / "slow.json"
    times: list[float] = []
    write_in_chunks(
        path, b"x" * 30, chunk_size=10, pause=0.02, on_chunk=lambda _: times.append(monotonic())
    )
    assert len(times) == 3 and times[-1] - times[0] >= 0.035
    assert path.read_bytes() == b"x" * 30


def test_make_corpus_lays_out_pcs_like_the_nas(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path / "a", pcs=3, sessions_per_pc=4, hands=(2, 6), seed=1)
    assert len(paths) == 12
    assert {p.parent.relative_to(tmp_path / "a").as_posix() for p in paths} == {
        "PC01/hands",
        "PC02/hands",
        "PC03/hands",
    }
    ids = set()
    for path in paths:
        doc = orjson.loads(path.read_bytes())
        assert path.name == session_file_name(doc["ID"])
        assert 2 <= len(doc["Hands"]) <= 6
        assert doc["ID"] == ticks_from_created_utc(doc["CreatedDateTimeUTC"])
        ids.add(doc["ID"])
    assert len(ids) == 12
    again = make_corpus(tmp_path / "b", pcs=3, sessions_per_pc=4, hands=(2, 6), seed=1)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


# --- against the real exports (skip without ../shared) --------------------------------------------


def test_real_samples_follow_the_same_schema(real: list[tuple[Path, bytes, dict]]) -> None:
    types, key_sets = structure([doc for _, _, doc in real])
    assert types == SCHEMA
    assert key_sets == schema_key_sets()


def test_generated_structure_equals_real_structure(
    real: list[tuple[Path, bytes, dict]], generated: list[dict]
) -> None:
    """Same key sets at every level and the same value types, as a union over all files."""
    assert structure(generated) == structure([doc for _, _, doc in real])


def test_real_values_match_the_spec_patterns(real: list[tuple[Path, bytes, dict]]) -> None:
    """The patterns and constants above describe the real data (counts only, no values)."""
    bad: dict[str, int] = defaultdict(int)
    for _, _, doc in real:
        bad["CreatedDateTimeUTC"] += not UTC_TIME.fullmatch(doc["CreatedDateTimeUTC"])
        bad["Payouts"] += doc["Payouts"] != [0] * 10
        bad["EventTitle"] += doc["EventTitle"] != ""
        bad["SoftwareVersion"] += doc["SoftwareVersion"] != "PokerGFX 3.2"
        for hand in doc["Hands"]:
            bad["StartDateTimeUTC"] += not UTC_TIME.fullmatch(hand["StartDateTimeUTC"])
            bad["Duration"] += not DURATION.fullmatch(hand["Duration"])
            bad["RecordingOffsetStart"] += not LOCAL_OFFSET.fullmatch(hand["RecordingOffsetStart"])
            bad["constants"] += {key: hand[key] for key in CONSTANTS} != CONSTANTS
            bad["AnteType"] += hand["FlopDrawBlinds"]["AnteType"] != "BB_ANTE_BB1ST"
            for player in hand["Players"]:
                bad["HoleCards"] += len(player["HoleCards"]) != 1 or not HOLE_CARDS.fullmatch(
                    player["HoleCards"][0]
                )
                bad["LongName has a space"] += " " not in player["LongName"]
                bad["Name is the surname"] += not player["LongName"].endswith(" " + player["Name"])
            for event in hand["Events"]:
                bad["EventType"] += event["EventType"] not in EVENT_TYPES
                bad["DateTimeUTC"] += event["DateTimeUTC"] is not None
                if event["EventType"] == "BOARD CARD":
                    bad["BoardCards"] += not BOARD_CARD.fullmatch(event["BoardCards"])
    assert {key: count for key, count in bad.items() if count} == {}


def test_real_pots_and_chips_follow_the_modelled_rules(
    real: list[tuple[Path, bytes, dict]],
) -> None:
    """The Pot/BetAmt model the generator uses holds on real hands (a few real events
    disagree, e.g. around all-ins); chips are conserved in every real hand."""
    checked = wrong = unbalanced = 0
    for _, _, doc in real:
        for hand in doc["Hands"]:
            c, w = pot_mismatches(hand)
            checked, wrong = checked + c, wrong + w
            unbalanced += sum(p["EndStackAmt"] - p["StartStackAmt"] for p in hand["Players"]) != 0
    assert checked > 500
    assert wrong / checked < 0.03
    assert unbalanced == 0


def test_session_bytes_reencodes_real_files_identically(
    real: list[tuple[Path, bytes, dict]],
) -> None:
    """The encoder is PokerGFX's: decoding a real file and encoding it again gives its bytes."""
    differing = [
        index
        for index, (_, data, _) in enumerate(real)
        if sha(session_bytes(json.loads(data))) != sha(data)
    ]
    assert differing == []


def test_real_id_is_the_ticks_of_created_utc_and_names_the_file(
    real: list[tuple[Path, bytes, dict]],
) -> None:
    not_ticks = [
        index
        for index, (_, _, doc) in enumerate(real)
        if ticks_from_created_utc(doc["CreatedDateTimeUTC"]) != doc["ID"]
    ]
    misnamed = [
        index
        for index, (path, _, doc) in enumerate(real)
        if path.name != session_file_name(doc["ID"])
    ]
    assert (not_ticks, misnamed) == ([], [])


def test_real_growth_keeps_earlier_hands(real: list[tuple[Path, bytes, dict]]) -> None:
    """Two snapshots of one real session: what `grow_session` imitates."""
    by_id: dict[int, list[dict]] = defaultdict(list)
    for _, _, doc in real:
        by_id[doc["ID"]].append(doc)
    pairs = [
        sorted(docs, key=lambda d: len(d["Hands"])) for docs in by_id.values() if len(docs) > 1
    ]
    assert pairs, "the samples hold two snapshots of one session"
    for small, large, *_ in pairs:
        kept = len(small["Hands"])
        assert len(large["Hands"]) > kept
        same = [
            session_bytes(a) == session_bytes(b)
            for a, b in zip(small["Hands"], large["Hands"][:kept], strict=True)
        ]
        header_kept = all(small[key] == large[key] for key in small if key != "Hands")
        assert all(same) and header_kept


def test_real_files_show_the_modelled_quirks(real: list[tuple[Path, bytes, dict]]) -> None:
    repeated = zero_events = 0
    for _, _, doc in real:
        numbers = [hand["HandNum"] for hand in doc["Hands"]]
        repeated += len(numbers) != len(set(numbers))
        zero_events += sum(not hand["Events"] for hand in doc["Hands"])
    assert repeated >= 1 and zero_events >= 1


def test_generated_names_are_not_real_names(
    real: list[tuple[Path, bytes, dict]], generated: list[dict]
) -> None:
    real_names = {
        player[key]
        for _, _, doc in real
        for hand in doc["Hands"]
        for player in hand["Players"]
        for key in ("Name", "LongName")
    }
    corpus = generated + [make_session(hands=60, seed=seed, players=9) for seed in range(10)]
    ours = {
        player[key]
        for hand in hands_of(corpus)
        for player in hand["Players"]
        for key in ("Name", "LongName")
    }
    collisions = len(ours & real_names)
    assert collisions == 0, f"{collisions} invented names equal a real one"


def test_generated_bytes_per_hand_within_the_real_files_range(
    real: list[tuple[Path, bytes, dict]],
) -> None:
    real_per_hand = [len(data) / len(doc["Hands"]) for _, data, doc in real]
    low, high = min(real_per_hand), max(real_per_hand)
    for players in (7, 8):
        docs = [make_session(hands=40, seed=seed, players=players) for seed in range(5)]
        size = sum(len(session_bytes(d)) for d in docs) / sum(len(d["Hands"]) for d in docs)
        assert low <= size <= high, f"{players} players: {size:.0f} B/hand"
    real_mean = sum(len(data) for _, data, _ in real) / sum(len(doc["Hands"]) for *_, doc in real)
    mixed = [
        make_session(hands=30, seed=seed, players=players)
        for seed, players in enumerate((6, 7, 7, 8, 8, 8, 9))
    ]
    mixed_mean = sum(len(session_bytes(d)) for d in mixed) / sum(len(d["Hands"]) for d in mixed)
    assert abs(mixed_mean - real_mean) / real_mean < 0.06
