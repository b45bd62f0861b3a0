"""Invented PokerGFX 3.2 session files, faithful to the real format, for tests and benchmarks.

Why: real exports carry real people's names and hole cards, so they stay in ../shared and never
enter the repository. This module makes look-alikes with invented data: the same keys at every
level, the same value types, the same encoding (compact, keys sorted, ASCII), the same growth
pattern (one file rewritten in place as hands are added, earlier hands byte-identical) and sizes
in the real range (about 4.3-5 KB per hand), so benchmarks move real-sized bytes.

What the data models (read off the real files; see docs in ../shared/reference):
- `ID` is the .NET `DateTime.Ticks` of `CreatedDateTimeUTC` (100 ns steps since 0001-01-01).
- Times are 7-digit UTC strings; `Duration` and `RecordingOffsetStart` are XML durations as .NET
  writes them (zero parts left out, trailing zeros of the fraction cut); `RecordingOffsetStart`
  is the hand's start on the GFX PC's local clock, counted from 0001-01-01.
- Events: `Pot` is the pot before the action (0 for FOLD and BOARD CARD); `BetAmt` is the
  player's total on the current street after the action (0 for FOLD and CHECK). Blinds and the
  big-blind ante (`BB_ANTE_BB1ST`) are in the pot before the first event. Chips are conserved.
- `Name` is the surname, `LongName` is "First Surname"; cards are lowercase ranks ("10c", "kd").

Determinism: hand i of a session depends only on (seed, session ID, i) and the hands before it,
so `grow_session(make_session(hands=k, seed=s), n - k, seed=s) == make_session(hands=n, seed=s)`.
No Prefect here: stdlib and orjson only.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

SOFTWARE_VERSION = "PokerGFX 3.2"
FILE_NAME_PREFIX = "PGFX_live_data_export GameID="
TICKS_PER_SECOND = 10_000_000
TICKS_PER_MICROSECOND = 10
PAYOUT_SLOTS = 10
DEFAULT_PLAYERS = 8
# Invented defaults: a fixed instant (seeds shift it) and the GFX PC's local clock offset.
DEFAULT_CREATED_AT = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
DEFAULT_LOCAL_OFFSET = timedelta(hours=4)
_SEED_STEP = timedelta(hours=1, minutes=3, seconds=7, microseconds=123457)
_EPOCH = datetime(1, 1, 1)

# Event types exactly as PokerGFX spells them (with a space in two of them).
FOLD, BET, CHECK, CALL, ALL_IN, BOARD_CARD = "FOLD", "BET", "CHECK", "CALL", "ALL IN", "BOARD CARD"
EVENT_TYPES = (FOLD, BET, CHECK, CALL, ALL_IN, BOARD_CARD)

RANKS = ("2", "3", "4", "5", "6", "7", "8", "9", "10", "j", "q", "k", "a")
SUITS = ("c", "d", "h", "s")

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
CHIP_UNIT = 100
STUD_LIMITS = {"BringInAmt": 0, "BringInPlayerNum": 1, "HighLimitAmt": 0, "LowLimitAmt": 0}
_SEAT_PREFERENCE = (2, 3, 4, 5, 6, 7, 8, 9, 1, 10)  # real tables use seats 2-9, seldom 1
_UNKNOWN_HOLE_CARDS = 0.02  # share of players whose cards the RFID reader missed
# Action probabilities (see _Style) at a full table and at a short one; sizes in between blend.
_TIGHT_AT, _LOOSE_AT = 9, 6
_TIGHT_STYLE = (0.90, 0.015, 0.76, 0.19, 0.07, 0.30, 0.57, 0.34)
_LOOSE_STYLE = (0.62, 0.05, 0.45, 0.45, 0.18, 0.48, 0.35, 0.52)

_CREATED_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,7}))?Z")
_DURATION_RE = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:\.(\d{1,7}))?S)?)?")


# --- time: .NET ticks and the two text forms PokerGFX writes ---------------------------------


def ticks_from_datetime(dt: datetime) -> int:
    """.NET `DateTime.Ticks` (100 ns since 0001-01-01): the real files' `ID`. Naive means UTC."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return _timedelta_ticks(dt - _EPOCH)


def format_ticks_utc(ticks: int) -> str:
    """Ticks as PokerGFX writes a UTC time: always 7 fractional digits and a `Z`."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    dt = _EPOCH + timedelta(seconds=seconds)
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
        f"T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{fraction:07d}Z"
    )


def format_created_utc(dt: datetime) -> str:
    """`CreatedDateTimeUTC` text, e.g. "2025-03-14T09:26:53.5897931Z" (7 fractional digits)."""
    return format_ticks_utc(ticks_from_datetime(dt))


def ticks_from_created_utc(text: str) -> int:
    """Exact ticks of a PokerGFX UTC time, keeping the 7th digit that `datetime` cannot hold."""
    match = _CREATED_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a PokerGFX UTC time: {text!r}")
    *parts, fraction = match.groups()
    whole = datetime(*(int(p) for p in parts))
    return ticks_from_datetime(whole) + int((fraction or "").ljust(7, "0"))


def format_duration(ticks: int) -> str:
    """An XML duration as .NET's XmlConvert writes a TimeSpan: "PT1M7.2718282S"."""
    if ticks < 0:
        raise ValueError("negative durations are not produced by PokerGFX")
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if seconds or fraction:
        clock += str(seconds) + (f".{fraction:07d}".rstrip("0") if fraction else "") + "S"
    if clock:
        text += "T" + clock
    return text if text != "P" else "PT0S"


def parse_duration(text: str) -> int:
    """Ticks of an XML duration written by `format_duration` (or by PokerGFX)."""
    match = _DURATION_RE.fullmatch(text)
    if match is None or text in ("P", "PT"):
        raise ValueError(f"not an XML duration: {text!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    total = ((int(days or 0) * 24 + int(hours or 0)) * 60 + int(minutes or 0)) * 60
    total += int(seconds or 0)
    return total * TICKS_PER_SECOND + int((fraction or "").ljust(7, "0"))


# --- encoding and files ----------------------------------------------------------------------


def session_bytes(doc: dict) -> bytes:
    """Bytes exactly as PokerGFX writes them: compact one-line JSON, keys sorted at every level,
    ASCII, no BOM, no trailing newline. orjson for speed; the stdlib when escaping is needed."""
    data = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    if not data.isascii():
        data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return data


def session_file_name(session_id: int) -> str:
    """The real file name, with its space: "PGFX_live_data_export GameID=<id>.json"."""
    if isinstance(session_id, bool) or not isinstance(session_id, int) or session_id < 0:
        raise ValueError(f"session id must be a non-negative int, got {session_id!r}")
    return f"{FILE_NAME_PREFIX}{session_id}.json"


def write_session(folder: Path, doc: dict) -> Path:
    """Write the session file in place (truncate and write the same inode, no rename), as
    PokerGFX does: a watcher must see the same modify events a GFX PC produces."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / session_file_name(doc["ID"])
    with path.open("wb") as handle:
        handle.write(session_bytes(doc))
    return path


def write_in_chunks(
    path: Path,
    data: bytes,
    *,
    chunk_size: int,
    pause: float = 0.0,
    on_chunk: Callable[[int], None] | None = None,
) -> None:
    """Rewrite a file slowly: truncate, then write and flush one chunk at a time, so a reader
    can catch it mid-write (truncated JSON). `on_chunk(bytes_written)` runs after each flush,
    for tests that read at a known point instead of racing a thread."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    with path.open("wb") as handle:
        for start in range(0, len(data), chunk_size):
            handle.write(data[start : start + chunk_size])
            handle.flush()
            written = min(start + chunk_size, len(data))
            if on_chunk is not None:
                on_chunk(written)
            if pause > 0 and written < len(data):
                time.sleep(pause)


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
            created_ticks = ticks_from_datetime(DEFAULT_CREATED_AT + seed * _SEED_STEP)
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
    _extend(doc, normal, seed=seed, players=players, offset_ticks=_timedelta_ticks(local_offset))
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
    offset = _timedelta_ticks(DEFAULT_LOCAL_OFFSET)
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


def make_corpus(
    root: Path,
    *,
    pcs: int,
    sessions_per_pc: int,
    hands: tuple[int, int] = (1, 40),
    seed: int = 0,
) -> list[Path]:
    """Benchmark input laid out like the NAS: `<root>/PC01/hands/PGFX_live_data_export ...json`.

    Every session has its own creation time, so IDs (and file names) never collide."""
    low, high = hands
    if not 0 <= low <= high:
        raise ValueError(f"hands must be a (low, high) range with 0 <= low <= high, got {hands}")
    base = ticks_from_datetime(DEFAULT_CREATED_AT + seed * _SEED_STEP)
    paths: list[Path] = []
    for pc in range(1, pcs + 1):
        folder = root / f"PC{pc:02d}" / "hands"
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(sessions_per_pc):
            rng = random.Random(f"gfx-synth/corpus/{seed}/{pc}/{number}")
            slot = number * pcs + (pc - 1)
            created = base + slot * 7 * 60 * TICKS_PER_SECOND
            created += rng.randrange(360 * TICKS_PER_SECOND)
            doc = make_session(
                hands=rng.randint(low, high),
                seed=rng.randrange(2**31),
                created_ticks=created,
                table_type="FINAL_TABLE" if rng.random() < 0.15 else "FEATURE_TABLE",
                players=rng.choice((6, 7, 7, 8, 8, 8, 9)),
            )
            paths.append(write_session(folder, doc))
    return paths


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


def _chips(amount: float, minimum: int = CHIP_UNIT) -> int:
    return max(minimum, round(amount / CHIP_UNIT) * CHIP_UNIT)


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
            stack = equal or _chips(bb * session.uniform(40, 250))
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


def _timedelta_ticks(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + (
        delta.microseconds * TICKS_PER_MICROSECOND
    )


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
            stack = _chips(BLIND_LADDER[table.level][1] * rng.uniform(40, 150))
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

    play = _Deal(rng, {s.num: s.stack for s in table.seats}, nums, button, small, big)
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


# --- one hand of no-limit hold'em ---------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    """Action probabilities. Short tables play looser (real 6-handed hands have ~18 events,
    9-handed ~12), which keeps bytes per hand in the real range at every table size."""

    open_fold: float
    limp: float
    raised_fold: float
    raised_call: float
    option_raise: float
    lead: float
    bet_fold: float
    bet_call: float

    @staticmethod
    def for_table(players: int) -> _Style:
        loose = min(1.0, max(0.0, (_TIGHT_AT - players) / (_TIGHT_AT - _LOOSE_AT)))
        return _Style(
            *(t + (lo - t) * loose for t, lo in zip(_TIGHT_STYLE, _LOOSE_STYLE, strict=True))
        )


class _Deal:
    """Plays one hand: blinds, four betting rounds, board cards, showdown with side pots.

    Decisions are random but plausible; the bookkeeping (Pot, BetAmt, stacks) is exact."""

    def __init__(
        self,
        rng: random.Random,
        stacks: dict[int, int],
        nums: list[int],
        button: int,
        small: int,
        big: int,
    ) -> None:
        self.rng = rng
        self.style = _Style.for_table(len(nums))
        self.stacks = dict(stacks)
        self.big = big
        i = nums.index(button)
        order = nums[i + 1 :] + nums[: i + 1]  # left of the button first, button last
        if len(nums) == 2:
            self.sb_player, self.bb_player = button, order[0]
            self.preflop_order = [button, order[0]]
            self.postflop_order = [order[0], button]
        else:
            self.sb_player, self.bb_player = order[0], order[1]
            self.preflop_order = order[2:] + order[:2]
            self.postflop_order = order
        self.contrib = dict.fromkeys(nums, 0)
        self.street = dict.fromkeys(nums, 0)
        self.folded: set[int] = set()
        self.all_in: set[int] = set()
        self.pot = 0
        self.events: list[dict[str, Any]] = []
        deck = [rank + suit for rank in RANKS for suit in SUITS]
        rng.shuffle(deck)
        self.hole_cards = {
            num: "" if rng.random() < _UNKNOWN_HOLE_CARDS else f"{deck[2 * k]} {deck[2 * k + 1]}"
            for k, num in enumerate(nums)
        }
        self.board = deck[2 * len(nums) : 2 * len(nums) + 5]
        self.end_stacks: dict[int, int] = {}
        self._post(self.bb_player, big, street=False)  # BB_ANTE_BB1ST: the ante first
        self._post(self.sb_player, small)
        self._post(self.bb_player, big)

    def _post(self, num: int, amount: int, *, street: bool = True) -> None:
        paid = min(amount, self.stacks[num])
        self.stacks[num] -= paid
        self.contrib[num] += paid
        self.pot += paid
        if street:
            self.street[num] += paid
        if self.stacks[num] == 0:
            self.all_in.add(num)

    def live(self) -> list[int]:
        return [n for n in self.contrib if n not in self.folded]

    def can_act(self, num: int) -> bool:
        return num not in self.folded and num not in self.all_in

    def _event(self, kind: str, num: int, bet: int, pot: int, card: str | None = None) -> None:
        self.events.append(
            {
                "BetAmt": bet,
                "BoardCards": card,
                "BoardNum": 1 if kind == BOARD_CARD else 0,
                "DateTimeUTC": None,
                "EventType": kind,
                "NumCardsDrawn": 0,
                "PlayerNum": num,
                "Pot": pot,
            }
        )

    def run(self) -> None:
        self._betting(self.preflop_order, preflop=True, current=self.big)
        dealt = 0
        for count in (3, 1, 1):
            if len(self.live()) <= 1:
                break
            for card in self.board[dealt : dealt + count]:
                self._event(BOARD_CARD, 0, 0, 0, card)
            dealt += count
            self.street = dict.fromkeys(self.street, 0)
            if sum(self.can_act(n) for n in self.live()) >= 2:
                self._betting(self.postflop_order, preflop=False, current=0)
        self._settle()

    def _betting(self, order: list[int], *, preflop: bool, current: int) -> None:
        last_raise = self.big
        pending = [n for n in order if self.can_act(n)]
        while pending:
            if len(self.live()) <= 1:
                return
            num = pending.pop(0)
            if not self.can_act(num):
                continue
            owe = current - self.street[num]
            others = any(self.can_act(n) for n in self.live() if n != num)
            if owe <= 0 and not others:
                continue
            kind, to = self._decide(num, owe, current, last_raise, preflop, others)
            if kind == FOLD:
                self.folded.add(num)
                self._event(FOLD, num, 0, 0)
                continue
            if kind == CHECK:
                self._event(CHECK, num, 0, self.pot)
                continue
            self._event(kind, num, to, self.pot)
            added = to - self.street[num]
            self.stacks[num] -= added
            self.contrib[num] += added
            self.street[num] = to
            self.pot += added
            if self.stacks[num] == 0:
                self.all_in.add(num)
            if to > current:  # a bet or raise: everyone else acts again
                last_raise = max(last_raise, to - current)
                current = to
                i = order.index(num)
                pending = [n for n in order[i + 1 :] + order[:i] if self.can_act(n)]

    def _decide(
        self, num: int, owe: int, current: int, last_raise: int, preflop: bool, others: bool
    ) -> tuple[str, int]:
        """A random but plausible action, with sizes rounded to the chip unit."""
        rng, stack, street, style = self.rng, self.stacks[num], self.street[num], self.style
        most = street + stack  # all in
        roll = rng.random()
        if owe <= 0:
            if roll < (style.option_raise if preflop else style.lead):
                size = current * rng.uniform(3, 4) if preflop else self.pot * rng.uniform(0.3, 0.8)
                to = max(_chips(size), current + last_raise)
                return (ALL_IN, most) if to >= most or roll < 0.004 else (BET, to)
            return CHECK, 0
        if preflop and current == self.big:  # nobody has raised yet
            fold, call = style.open_fold, style.limp
        elif preflop:
            fold, call = style.raised_fold, style.raised_call
        else:
            fold, call = style.bet_fold, style.bet_call
        if roll < fold:
            return FOLD, 0
        if roll < fold + call or not others:
            return (ALL_IN, most) if owe >= stack else (CALL, current)
        if preflop and current == self.big:
            size = self.big * rng.uniform(2.0, 3.0)
        else:
            size = current * rng.uniform(2.3, 3.3)
        to = max(_chips(size), current + last_raise)
        return (ALL_IN, most) if to >= most or roll > 0.985 else (BET, to)

    def _settle(self) -> None:
        """Pay the pot: each layer of contributions goes to the best eligible contender
        (a random ranking stands in for hand strength). Chips are conserved exactly."""
        contenders = self.live()
        ranking = self.rng.sample(contenders, len(contenders))
        winnings = dict.fromkeys(self.contrib, 0)
        previous = 0
        for level in sorted({self.contrib[n] for n in contenders}):
            layer = sum(min(c, level) - min(c, previous) for c in self.contrib.values())
            winner = next(n for n in ranking if self.contrib[n] >= level)
            winnings[winner] += layer
            previous = level
        # Chips folded players put in above every contender's level (cannot happen in a legal
        # hand, kept for safety) go to the best contender.
        leftover = sum(max(0, c - previous) for c in self.contrib.values())
        winnings[ranking[0]] += leftover
        self.end_stacks = {n: self.stacks[n] + winnings[n] for n in self.contrib}
