"""Invented PokerGFX 3.2 session files, faithful to the real format, for tests and benchmarks.

Why: real exports carry real people's names and hole cards, so they stay in ../shared and never
enter the repository. This package makes look-alikes with invented data: the same keys at every
level, the same value types, the same encoding (compact, keys sorted, ASCII), the same growth
pattern (one file rewritten in place as hands are added, earlier hands byte-identical) and sizes
in the real range (about 4.3-5 KB per hand), so benchmarks move real-sized bytes.

Why a package of its own, beside `gfx_sync`: it is test and benchmark code, not shipped with the
agent. Its parts:
- `dotnet_time`: .NET ticks, PokerGFX's UTC strings and XML durations;
- `sessions`: session documents, the table carried from hand to hand, the players' stats;
- `holdem`: one hand of no-limit hold'em, played with exact bookkeeping;
- `writers`: bytes and file names as PokerGFX writes them, in-place rewrites, a NAS-shaped corpus.

No Prefect here: stdlib and orjson only.
"""

from gfx_synth.dotnet_time import (
    TICKS_PER_MICROSECOND,
    TICKS_PER_SECOND,
    format_created_utc,
    format_duration,
    format_ticks_utc,
    parse_duration,
    ticks_from_created_utc,
    ticks_from_datetime,
    ticks_from_timedelta,
)
from gfx_synth.holdem import (
    ALL_IN,
    BET,
    BOARD_CARD,
    CALL,
    CHECK,
    CHIP_UNIT,
    EVENT_TYPES,
    FOLD,
    RANKS,
    SUITS,
)
from gfx_synth.sessions import (
    BLIND_LADDER,
    DEFAULT_CREATED_AT,
    DEFAULT_LOCAL_OFFSET,
    DEFAULT_PLAYERS,
    FIRST_NAMES,
    MULTI_WORD_SURNAMES,
    PAYOUT_SLOTS,
    SEED_STEP,
    SINGLE_SURNAMES,
    SOFTWARE_VERSION,
    STUD_LIMITS,
    SURNAMES,
    append_aborted_hand,
    grow_session,
    make_session,
    trim_session,
)
from gfx_synth.writers import (
    FILE_NAME_PREFIX,
    make_corpus,
    session_bytes,
    session_file_name,
    write_in_chunks,
    write_session,
)

__all__ = [
    "ALL_IN",
    "BET",
    "BLIND_LADDER",
    "BOARD_CARD",
    "CALL",
    "CHECK",
    "CHIP_UNIT",
    "DEFAULT_CREATED_AT",
    "DEFAULT_LOCAL_OFFSET",
    "DEFAULT_PLAYERS",
    "EVENT_TYPES",
    "FILE_NAME_PREFIX",
    "FIRST_NAMES",
    "FOLD",
    "MULTI_WORD_SURNAMES",
    "PAYOUT_SLOTS",
    "RANKS",
    "SEED_STEP",
    "SINGLE_SURNAMES",
    "SOFTWARE_VERSION",
    "STUD_LIMITS",
    "SUITS",
    "SURNAMES",
    "TICKS_PER_MICROSECOND",
    "TICKS_PER_SECOND",
    "append_aborted_hand",
    "format_created_utc",
    "format_duration",
    "format_ticks_utc",
    "grow_session",
    "make_corpus",
    "make_session",
    "parse_duration",
    "session_bytes",
    "session_file_name",
    "ticks_from_created_utc",
    "ticks_from_datetime",
    "ticks_from_timedelta",
    "trim_session",
    "write_in_chunks",
    "write_session",
]
