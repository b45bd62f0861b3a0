"""Invented PokerGFX 3.2 sessions: whole documents, grown hand by hand by a hold'em simulator.

What the data models (read off the real files; see docs in ../shared/reference):
- `RecordingOffsetStart` is the hand's start on the GFX PC's local clock, counted from
  0001-01-01 (see `gfx_synth.dotnet_time` for the time forms).
- Each hand is played by `gfx_synth.holdem` (events, pots, stacks).
- `Name` is the surname, `LongName` is "First Surname"; cards are lowercase ranks ("10c", "kd").

Determinism: hand i of a session depends only on (seed, session ID, i) and the hands before it,
so `grow_session(make_session(hands=k, seed=s), n - k, seed=s) == make_session(hands=n, seed=s)`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gfx_synth.dotnet_time import (
    TICKS_PER_SECOND,
    format_duration,
    format_ticks_utc,
    parse_duration,
    ticks_from_created_utc,
    ticks_from_datetime,
    ticks_from_timedelta,
)
from gfx_synth.holdem import ALL_IN, BET, BOARD_CARD, CALL, CHECK, FOLD, Deal, chips

SOFTWARE_VERSION = "PokerGFX 3.2"
PAYOUT_SLOTS = 10
DEFAULT_PLAYERS = 8
# Invented defaults: a fixed instant (seeds shift it) and the GFX PC's local clock offset.
DEFAULT_CREATED_AT = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
DEFAULT_LOCAL_OFFSET = timedelta(hours=4)
SEED_STEP = timedelta(hours=1, minutes=3, seconds=7, microseconds=123457)

# Invented names (checked in tests against the real samples' names). Name is the surname, as in
# the real files; a few surnames have two words, so some Names hold a space too.
FIRST_NAMES = (
    "Mira", "Tobiah", "Ilsa", "Oren", "Kasimir", "Liesel", "Anouk", "Dorian", "Yelka", "Bram",
    "Saskia", "Corvin", "Elodie", "Joran", "Nadira", "Piet", "Rhoswen", "Soren", "Talitha",
    "Vesna",
)  # fmt: skip
SINGLE_SURNAMES = (
    "Ashgrove", "Brannigan", "Castellane", "Dunmore", "Eskeland", "Fairweather", "Grelling",
    "Hollowell", "Ivarsen", "Jessop", "Kettleby", "Lindqvar", "Marchetto", "Northam", "Orsolini",
    "Pellegrew", "Quennell", "Rowntree", "Tremaine", "Voskuijlen", "Whitlock", "Yardley",
)  # fmt: skip
MULTI_WORD_SURNAMES = ("De Vallier", "Van Oosten", "Del Mercato", "La Rocheval")
SURNAMES = SINGLE_SURNAMES + MULTI_WORD_SURNAMES

# (small blind, big blind); the ante is the big blind, paid by the big blind (BB_ANTE_BB1ST).
BLIND_LADDER = (
    (100, 200), (200, 300), (200, 400), (300, 600), (400, 800), (500, 1000), (600, 1200),
    (800, 1600), (1000, 2000), (1500, 3000), (2000, 4000), (2500, 5000), (3000, 6000),
    (4000, 8000), (5000, 10000), (6000, 12000), (8000, 16000), (10000, 20000), (15000, 30000),
    (20000, 40000), (25000, 50000), (30000, 60000), (40000, 80000), (50000, 100000),
    (100000, 200000),
)  # fmt: skip
STUD_LIMITS = {"BringInAmt": 0, "BringInPlayerNum": 1, "HighLimitAmt": 0, "LowLimitAmt": 0}
_SEAT_PREFERENCE = (2, 3, 4, 5, 6, 7, 8, 9, 1, 10)  # real tables use seats 2-9, seldom 1


# --- sessions ----------------------------------------------------------------------------------


def make_session(
    *,
    hands: int,
    seed: int = 0,
    created_at: datetime | None = None,
    table_type: str = "FEATURE_TABLE",
    players: int = DEFAULT_PLAYERS,
    local_offset: timedelta = DEFAULT_LOCAL_OFFSET,
    aborted_last_hand: bool = False,
    created_ticks: int | None = None,
) -> dict:
    """A whole session document with `hands` invented hands; `ID` = ticks of the creation time.

    Without `created_at`/`created_ticks` the creation time is a fixed instant shifted by the
    seed (distinct IDs per seed) whose 7th fractional digit is not 0, as in real files: a reader
    that goes through `datetime` (microseconds) loses that digit, and tests should see it.
    `created_ticks` sets the exact ticks (`datetime` cannot hold the 7th digit).
    `aborted_last_hand=True` ends the session with the real files' quirk: the last hand repeats
    the previous `HandNum` and has zero events (see `append_aborted_hand`)."""
    if hands < 0:
        raise ValueError("hands must be >= 0")
    if not 2 <= players <= len(_SEAT_PREFERENCE):
        raise ValueError(f"players must be 2..{len(_SEAT_PREFERENCE)}")
    if aborted_last_hand and hands < 2:
        raise ValueError("aborted_last_hand needs hands >= 2 (it repeats the previous hand)")
    if created_at is not None and created_ticks is not None:
        raise ValueError("give created_at or created_ticks, not both")
    if created_ticks is None:
        if created_at is None:
            created_ticks = ticks_from_datetime(DEFAULT_CREATED_AT + seed * SEED_STEP)
            created_ticks += 1 + seed % 9
        else:
            created_ticks = ticks_from_datetime(created_at)
    doc: dict[str, Any] = {
        "CreatedDateTimeUTC": format_ticks_utc(created_ticks),
        "EventTitle": "",
        "Hands": [],
        "ID": created_ticks,
        "Payouts": [0] * PAYOUT_SLOTS,
        "SoftwareVersion": SOFTWARE_VERSION,
        "Type": table_type,
    }
    normal = hands - 1 if aborted_last_hand else hands
    _extend(
        doc, normal, seed=seed, players=players, offset_ticks=ticks_from_timedelta(local_offset)
    )
    if aborted_last_hand:
        doc["Hands"].append(_aborted_hand(doc, seed=seed, repeat_hand_num=True))
    return doc


def grow_session(
    doc: dict, extra_hands: int, *, seed: int = 0, players: int = DEFAULT_PLAYERS
) -> dict:
    """The next snapshot of a live session: a new dict with `extra_hands` more hands.

    Earlier hands stay byte-identical and top-level fields unchanged, as in real growth.
    The table (seats, stacks, button, blinds, clock) continues from the last hand; `players`
    only matters when the session has no hands yet."""
    if extra_hands < 0:
        raise ValueError("extra_hands must be >= 0")
    grown = _copy(doc)
    offset = ticks_from_timedelta(DEFAULT_LOCAL_OFFSET)
    if grown["Hands"]:
        offset = _local_offset_ticks(grown["Hands"][-1])
    _extend(grown, extra_hands, seed=seed, players=players, offset_ticks=offset)
    return grown


def trim_session(doc: dict, hands: int) -> dict:
    """An earlier snapshot of the same session: a new dict with only the first `hands` hands."""
    if not 0 <= hands <= len(doc["Hands"]):
        raise ValueError(f"hands must be 0..{len(doc['Hands'])}, got {hands}")
    trimmed = _copy({**doc, "Hands": doc["Hands"][:hands]})
    return trimmed


def append_aborted_hand(doc: dict, *, seed: int = 0, repeat_hand_num: bool = True) -> dict:
    """A new dict ending in the real data's odd hand: zero events, no hole cards read, stacks
    unchanged; by default it repeats the previous `HandNum` (seen in real files)."""
    if not doc["Hands"]:
        raise ValueError("an aborted hand needs a previous hand to copy the table from")
    grown = _copy(doc)
    grown["Hands"].append(_aborted_hand(grown, seed=seed, repeat_hand_num=repeat_hand_num))
    return grown


# --- the table: state carried from hand to hand --------------------------------------------------


@dataclass
class _Seat:
    num: int
    name: str
    long_name: str
    stack: int
    first_stack: int  # stack when the player sat down: CumulativeWinningsAmt counts from it


@dataclass
class _Stats:
    """Running counts behind the four percentages PokerGFX shows per player."""

    played: int = 0
    vpip: int = 0
    pfr: int = 0
    aggressive: int = 0
    passive: int = 0
    saw_flop: int = 0
    showdown: int = 0

    def fields(self) -> dict[str, int]:
        def pct(part: int, whole: int) -> int:
            return part * 100 // whole if whole else 0

        return {
            "AggressionFrequencyPercent": pct(self.aggressive, self.aggressive + self.passive),
            "PreFlopRaisePercent": pct(self.pfr, self.played),
            "VPIPPercent": pct(self.vpip, self.played),
            "WentToShowDownPercent": pct(self.showdown, self.saw_flop),
        }


@dataclass
class _Table:
    seats: list[_Seat]
    button: int | None  # seat number of the last hand's button
    level: int
    hands_at_level: int
    hands_per_level: int
    hand_num: int
    last_end: int  # ticks: start + duration of the last hand (or session creation)
    first_hand: bool
    stats: dict[tuple[int, str], _Stats] = field(default_factory=dict)
    used_names: set[str] = field(default_factory=set)


def _copy(doc: dict) -> dict:
    return orjson.loads(orjson.dumps(doc))


def _session_rng(seed: int, session_id: int) -> random.Random:
    return random.Random(f"gfx-synth/session/{seed}/{session_id}")


def _hand_rng(seed: int, session_id: int, index: int) -> random.Random:
    return random.Random(f"gfx-synth/hand/{seed}/{session_id}/{index}")


def _new_player(
    rng: random.Random, used: set[str], surnames: Iterable[str] = SURNAMES
) -> tuple[str, str]:
    """An invented (Name, LongName) not yet used in this session: Name is the surname."""
    pool = [(f, s) for f in FIRST_NAMES for s in surnames if f"{f} {s}" not in used]
    if not pool:  # every invented name is taken: reuse (still invented)
        pool = [(f, s) for f in FIRST_NAMES for s in surnames]
    first, surname = rng.choice(pool)
    used.add(f"{first} {surname}")
    return surname, f"{first} {surname}"


def _table_from_doc(doc: dict, *, seed: int, players: int) -> _Table:
    """Rebuild the table from the document alone, so any snapshot can be grown."""
    session = _session_rng(seed, doc["ID"])
    start_level = session.choice((0, 0, 1, 2, 3, 4, 5, 6, 7, 8))
    hands_per_level = session.randint(10, 20)
    hands = doc["Hands"]
    if not hands:
        seat_nums = sorted(_SEAT_PREFERENCE[:players])
        used: set[str] = set()
        bb = BLIND_LADDER[start_level][1]
        equal = 50_000 if start_level == 0 else None
        seats = []
        for i, num in enumerate(seat_nums):
            # One multi-word surname per table, so a Name with a space is always present.
            surnames = MULTI_WORD_SURNAMES if i == 0 else SURNAMES
            name, long_name = _new_player(session, used, surnames)
            stack = equal or chips(bb * session.uniform(40, 250))
            seats.append(_Seat(num, name, long_name, stack, stack))
        # Shuffle who sits where, keeping seat numbers sorted as in the real files.
        people = [(s.name, s.long_name) for s in seats]
        session.shuffle(people)
        for seat, (name, long_name) in zip(seats, people, strict=True):
            seat.name, seat.long_name = name, long_name
        created = ticks_from_created_utc(doc["CreatedDateTimeUTC"])
        first_delay = session.randrange(5 * 60 * TICKS_PER_SECOND, 50 * 60 * TICKS_PER_SECOND)
        return _Table(
            seats=seats,
            button=session.choice(seat_nums),
            level=start_level,
            hands_at_level=0,
            hands_per_level=hands_per_level,
            hand_num=0,
            last_end=created + first_delay,
            first_hand=True,
            used_names=used,
        )
    last = hands[-1]
    seats = [
        _Seat(
            p["PlayerNum"],
            p["Name"],
            p["LongName"],
            p["EndStackAmt"],
            p["EndStackAmt"] - p["CumulativeWinningsAmt"],
        )
        for p in last["Players"]
    ]
    blinds = last["FlopDrawBlinds"]
    big = blinds["BigBlindAmt"]
    level = next((i for i, (_, b) in enumerate(BLIND_LADDER) if b >= big), len(BLIND_LADDER) - 1)
    at_level = 0
    for hand in reversed(hands):
        if hand["FlopDrawBlinds"]["BigBlindAmt"] != big:
            break
        at_level += 1
    table = _Table(
        seats=seats,
        button=blinds["ButtonPlayerNum"],
        level=level,
        hands_at_level=at_level,
        hands_per_level=hands_per_level,
        hand_num=last["HandNum"],
        last_end=ticks_from_created_utc(last["StartDateTimeUTC"])
        + parse_duration(last["Duration"]),
        first_hand=False,
        used_names={p["LongName"] for hand in hands for p in hand["Players"]},
    )
    for hand in hands:
        _add_stats(table.stats, hand)
    return table


def _local_offset_ticks(hand: dict) -> int:
    """The GFX PC's clock offset: `RecordingOffsetStart` is the start on the local clock."""
    return parse_duration(hand["RecordingOffsetStart"]) - ticks_from_created_utc(
        hand["StartDateTimeUTC"]
    )


def _extend(doc: dict, count: int, *, seed: int, players: int, offset_ticks: int) -> None:
    """Append `count` played hands to `doc` in place (callers pass a fresh dict)."""
    if count == 0:
        return
    table = _table_from_doc(doc, seed=seed, players=players)
    for _ in range(count):
        rng = _hand_rng(seed, doc["ID"], len(doc["Hands"]))
        hand = _play_hand(table, rng, offset_ticks)
        doc["Hands"].append(hand)


def _next_seat(nums: list[int], after: int | None) -> int:
    if after is None:
        return nums[0]
    return next((n for n in nums if n > after), nums[0])


def _play_hand(table: _Table, rng: random.Random, offset_ticks: int) -> dict:
    """Deal and play one hand of no-limit hold'em with invented players; update the table."""
    for seat in table.seats:
        if seat.stack <= 0:  # busted: a new player sits down in the same seat
            name, long_name = _new_player(rng, table.used_names)
            stack = chips(BLIND_LADDER[table.level][1] * rng.uniform(40, 150))
            seat.name, seat.long_name, seat.stack, seat.first_stack = name, long_name, stack, stack
    if not table.first_hand and table.hands_at_level >= table.hands_per_level:
        table.level = min(table.level + 1, len(BLIND_LADDER) - 1)
        table.hands_at_level = 0
    small, big = BLIND_LADDER[table.level]
    nums = [s.num for s in table.seats]
    button = table.button if table.first_hand else _next_seat(nums, table.button)
    table.button = button
    table.first_hand = False
    table.hands_at_level += 1
    table.hand_num += 1

    play = Deal(rng, {s.num: s.stack for s in table.seats}, nums, button, small, big)
    play.run()
    cards = play.hole_cards

    start = table.last_end + rng.randrange(28 * TICKS_PER_SECOND, 47 * TICKS_PER_SECOND)
    seconds = 24 + 5.5 * len(play.events) + rng.uniform(-8, 45)
    duration = int(max(seconds, 8.0) * TICKS_PER_SECOND) + rng.randrange(TICKS_PER_SECOND)
    table.last_end = start + duration

    hand: dict[str, Any] = {
        "AnteAmt": big,
        "BetStructure": "NOLIMIT",
        "BombPotAmt": 0,
        "Description": "",
        "Duration": format_duration(duration),
        "Events": play.events,
        "FlopDrawBlinds": {
            "AnteType": "BB_ANTE_BB1ST",
            "BigBlindAmt": big,
            "BigBlindPlayerNum": play.bb_player,
            "BlindLevel": 0,
            "ButtonPlayerNum": button,
            "SmallBlindAmt": small,
            "SmallBlindPlayerNum": play.sb_player,
            "ThirdBlindAmt": 0,
            "ThirdBlindPlayerNum": 0,
        },
        "GameClass": "FLOP",
        "GameVariant": "HOLDEM",
        "HandNum": table.hand_num,
        "NumBoards": 1,
        "Players": [],
        "RecordingOffsetStart": format_duration(start + offset_ticks),
        "RunItNumTimes": 1,
        "StartDateTimeUTC": format_ticks_utc(start),
        "StudLimits": dict(STUD_LIMITS),
    }
    start_stacks = {s.num: s.stack for s in table.seats}
    for seat in table.seats:
        seat.stack = play.end_stacks[seat.num]
    hand["Players"] = [
        _player_entry(seat, start_stacks[seat.num], cards[seat.num]) for seat in table.seats
    ]
    # The percentages include this hand: count it first, then fill them in.
    _add_stats(table.stats, hand)
    for entry, seat in zip(hand["Players"], table.seats, strict=True):
        entry.update(table.stats[(seat.num, seat.long_name)].fields())
    return hand


def _player_entry(seat: _Seat, start_stack: int, hole_cards: str) -> dict:
    """One `Players` entry; the four percentages are filled in once the hand is counted."""
    return {
        "BlindBetStraddleAmt": 0,
        "CumulativeWinningsAmt": seat.stack - seat.first_stack,
        "EliminationRank": -1,
        "EndStackAmt": seat.stack,
        "HoleCards": [hole_cards],
        "LongName": seat.long_name,
        "Name": seat.name,
        "PlayerNum": seat.num,
        "SittingOut": False,
        "StartStackAmt": start_stack,
    }


def _aborted_hand(doc: dict, *, seed: int, repeat_hand_num: bool) -> dict:
    """The real files' odd hand: same table as the last hand, zero events, cards unread."""
    last = doc["Hands"][-1]
    rng = _hand_rng(seed, doc["ID"], len(doc["Hands"]))
    offset = _local_offset_ticks(last)
    start = (
        ticks_from_created_utc(last["StartDateTimeUTC"])
        + parse_duration(last["Duration"])
        + rng.randrange(28 * TICKS_PER_SECOND, 47 * TICKS_PER_SECOND)
    )
    duration = rng.randrange(4 * 60 * TICKS_PER_SECOND, 10 * 60 * TICKS_PER_SECOND)
    hand = _copy(last)
    hand.update(
        Duration=format_duration(duration),
        Events=[],
        HandNum=last["HandNum"] if repeat_hand_num else last["HandNum"] + 1,
        RecordingOffsetStart=format_duration(start + offset),
        StartDateTimeUTC=format_ticks_utc(start),
    )
    for player in hand["Players"]:
        player.update(StartStackAmt=player["EndStackAmt"], HoleCards=[""])
    return hand


def _add_stats(stats: dict[tuple[int, str], _Stats], hand: dict) -> None:
    """Count one hand into the running stats, from its events alone (so replay == generation)."""
    events = hand["Events"]
    if not events:
        return
    preflop = True
    board = False
    vpip: set[int] = set()
    pfr: set[int] = set()
    folded: set[int] = set()
    folded_preflop: set[int] = set()
    aggressive: dict[int, int] = {}
    passive: dict[int, int] = {}
    for event in events:
        kind, num = event["EventType"], event["PlayerNum"]
        if kind == BOARD_CARD:
            preflop, board = False, True
        elif kind == FOLD:
            folded.add(num)
            if preflop:
                folded_preflop.add(num)
        elif kind in (BET, ALL_IN):
            aggressive[num] = aggressive.get(num, 0) + 1
            if preflop:
                vpip.add(num)
                pfr.add(num)
        elif kind in (CALL, CHECK):
            passive[num] = passive.get(num, 0) + 1
            if preflop and kind == CALL:
                vpip.add(num)
    nums = [p["PlayerNum"] for p in hand["Players"]]
    live = [n for n in nums if n not in folded]
    showdown = board and len(live) >= 2
    for player in hand["Players"]:
        num = player["PlayerNum"]
        entry = stats.setdefault((num, player["LongName"]), _Stats())
        entry.played += 1
        entry.vpip += num in vpip
        entry.pfr += num in pfr
        entry.aggressive += aggressive.get(num, 0)
        entry.passive += passive.get(num, 0)
        if board and num not in folded_preflop:
            entry.saw_flop += 1
            entry.showdown += showdown and num in live
