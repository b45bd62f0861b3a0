"""The .NET time codec of PokerGFX files: ticks and the two text forms PokerGFX writes.

- `ID` is the .NET `DateTime.Ticks` of `CreatedDateTimeUTC` (100 ns steps since 0001-01-01).
- Times are 7-digit UTC strings ("2025-03-14T09:26:53.5897931Z"); `datetime` holds only 6
  digits, so exact values travel as ticks.
- `Duration` and `RecordingOffsetStart` are XML durations as .NET writes them (zero parts left
  out, trailing zeros of the fraction cut).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

TICKS_PER_SECOND = 10_000_000
TICKS_PER_MICROSECOND = 10
_EPOCH = datetime(1, 1, 1)

_CREATED_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,7}))?Z")
_DURATION_RE = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:\.(\d{1,7}))?S)?)?")


def ticks_from_datetime(dt: datetime) -> int:
    """.NET `DateTime.Ticks` (100 ns since 0001-01-01): the real files' `ID`. Naive means UTC."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return ticks_from_timedelta(dt - _EPOCH)


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


def ticks_from_timedelta(delta: timedelta) -> int:
    """Exact ticks of a `timedelta` (no float rounding)."""
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + (
        delta.microseconds * TICKS_PER_MICROSECOND
    )
