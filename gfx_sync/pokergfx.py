"""PokerGFX session files -> `SessionRecord`: the one function that turns a file into a row.

Real exports are compact JSON whose `Hands` key sorts first, so a file read mid-rewrite is
truncated JSON: that error is marked retryable, and the caller waits for the file to settle
before giving up on it. tests/test_pokergfx.py pins the real samples' values.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

BIGINT_MAX = 2**63 - 1
GAME_ID_IN_NAME = re.compile(r"GameID=(\d+)")
LEADING_WHITESPACE = re.compile(rb"[ \t\r\n]*")
JSON_VALUE_STARTS = frozenset(b'["-0123456789tfn')
JSON_WHITESPACE = re.compile(r"[ \t\r\n]*")
# Files this big are parsed with their hands counted, not built (_load_document).
STREAMED_PARSE_BYTES = 2 * 1024 * 1024
# orjson refuses a lone surrogate escape and the standard library takes it: files with any
# surrogate escape are left to orjson.
LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class PokerGfxError(Exception):
    """A file that cannot become a record. The message names the file and the cause."""

    retryable = False

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TruncatedJsonError(PokerGfxError):
    """Likely still being written: try again once size and mtime settle."""

    retryable = True


class EmptyFileError(PokerGfxError):
    """Created but not yet written."""

    retryable = True


class FileVanishedError(PokerGfxError):
    """Deleted or renamed between the event and the read: nothing to sync."""


class UnreadableFileError(PokerGfxError):
    """Permission denied, a directory, a loop of links, or another OS refusal."""


class BadFileTimeError(PokerGfxError):
    """The file's modification time is not a date (a GFX PC or NAS with a wrong clock)."""


class OutsideBaseError(PokerGfxError):
    """A path under the base folder that leads out of it (a symlink): never read, never copied."""


class FileTooLargeError(PokerGfxError):
    pass


class NotUtf8Error(PokerGfxError):
    pass


class InvalidJsonError(PokerGfxError):
    pass


class NotPokerGfxSessionError(PokerGfxError):
    """Valid JSON that is not a PokerGFX session export."""


class _SessionHeader(BaseModel):
    """The top-level fields gfx-sync reads; `Hands` is kept whole, not validated hand by hand."""

    model_config = ConfigDict(extra="allow", strict=False)

    Hands: list[Any]
    ID: int | None = None
    Type: str | None = None
    EventTitle: str | None = None
    SoftwareVersion: str | None = None
    CreatedDateTimeUTC: str | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One snapshot of one table session, shaped like a `gfx_sessions` row."""

    gfx_pc_id: str
    session_id: int
    file_name: str
    file_path: str
    file_hash: str
    file_size: int
    file_mtime: datetime
    raw_json: bytes = field(repr=False)
    table_type: str | None
    event_title: str | None
    software_version: str | None
    hand_count: int
    session_created_at: datetime | None
    file_mtime_epoch: float = field(default=0.0, repr=False)  # exactly as os.stat gave it

    @property
    def key(self) -> tuple[str, int]:
        return (self.gfx_pc_id, self.session_id)

    @property
    def recency(self) -> tuple[int, datetime, str]:
        """Which snapshot is newer: more hands, then later mtime, then hash as a tiebreak.

        The database trigger `gfx_sessions_keep_newest` applies the same order.
        """
        return (self.hand_count, self.file_mtime, self.file_hash)


def newest_per_session(records: list[SessionRecord]) -> list[SessionRecord]:
    """A batch may hold several snapshots of one session; only the newest is sent."""
    newest: dict[tuple[str, int], SessionRecord] = {}
    for record in records:
        current = newest.get(record.key)
        if current is None or record.recency > current.recency:
            newest[record.key] = record
    return list(newest.values())


def parse_created_at(value: str | None) -> datetime | None:
    """`2025-10-16T08:50:21.1467634Z`: 7 fractional digits, UTC (3.11's fromisoformat takes it)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_session_file(
    path: Path,
    *,
    pc_id: str,
    relative_path: str,
    max_bytes: int = 128 * 1024 * 1024,
    within: Path | None = None,
) -> SessionRecord:
    """Read, check and describe one PokerGFX file. Raises a `PokerGfxError` subclass.

    `within`: the file actually opened must lie inside this folder (the base): a symlink out
    of it raises `OutsideBaseError` before a byte is read.
    """
    data, stat = _read_bytes(path, max_bytes, within)
    return parse_session_bytes(
        data,
        path=path,
        pc_id=pc_id,
        relative_path=relative_path,
        mtime=_mtime(path, stat.st_mtime),
        mtime_epoch=stat.st_mtime,
    )


def _mtime(path: Path, epoch: float) -> datetime:
    """A file system may hold times `datetime` cannot (tmpfs, SMB: far past or future)."""
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (ValueError, OverflowError, OSError):
        raise BadFileTimeError(
            path, f"modification time {epoch!r} is outside years 1-9999 (wrong clock?)"
        ) from None


def parse_session_bytes(
    data: bytes,
    *,
    path: Path,
    pc_id: str,
    relative_path: str,
    mtime: datetime,
    mtime_epoch: float | None = None,
) -> SessionRecord:
    first = LEADING_WHITESPACE.match(data).end()  # type: ignore[union-attr]
    if first == len(data):
        raise EmptyFileError(path, "empty file (being created?)")
    if data[first : first + 1] != b"{":
        raise _not_an_object(path, data, first)
    document = _load_document(data, path)
    if not isinstance(document, dict):
        raise NotPokerGfxSessionError(path, "top level is not a JSON object")
    try:
        header = _SessionHeader.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise NotPokerGfxSessionError(path, f"not a PokerGFX session ({problems})") from None
    try:
        created_at = parse_created_at(header.CreatedDateTimeUTC)
    except ValueError:
        raise NotPokerGfxSessionError(
            path, f"CreatedDateTimeUTC {header.CreatedDateTimeUTC!r} is not a timestamp"
        ) from None
    return SessionRecord(
        gfx_pc_id=pc_id,
        session_id=_session_id(header, path),
        file_name=path.name,
        file_path=relative_path,
        file_hash=hashlib.sha256(data).hexdigest(),
        file_size=len(data),
        file_mtime=mtime,
        raw_json=data,
        table_type=header.Type,
        event_title=header.EventTitle,
        software_version=header.SoftwareVersion,
        hand_count=len(header.Hands),
        session_created_at=created_at,
        file_mtime_epoch=mtime.timestamp() if mtime_epoch is None else mtime_epoch,
    )


def _load_document(data: bytes, path: Path) -> Any:
    """The parsed file; a big one (STREAMED_PARSE_BYTES or more) with its hands counted, not
    built: orjson builds the whole document at several times the file's size, while a record
    needs only the top-level fields and the number of hands. Where the two readers could
    disagree, orjson decides."""
    if len(data) >= STREAMED_PARSE_BYTES:
        refusal = _streamed_refusal(data)
        if isinstance(refusal, tuple):
            message, position = refusal
            raise _json_error(path, data, message, position)
        if refusal is not None:
            return refusal
    try:
        return orjson.loads(data)  # validates UTF-8 itself: no decoded copy of the file
    except orjson.JSONDecodeError as exc:
        raise _json_error(path, data, exc.msg, exc.pos) from None


def _streamed_refusal(data: bytes) -> Any:
    """`_counted_hands_document` of the bytes, or (message, byte position) where it refused
    them, or None where orjson is to decide. Nothing returned holds on to the decoded text
    (a JSONDecodeError does), so the caller's next copy is the only one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None  # orjson refuses it, and _json_error says how it is not UTF-8
    if LONE_SURROGATE_ESCAPE.search(text):
        return None
    try:
        return _counted_hands_document(text)
    except json.JSONDecodeError as exc:  # between values: the position is exact
        return exc.msg, _byte_position(text, exc.pos)
    except _BadValue as bad:
        bad_value_at = _byte_position(text, bad.at)
    except (ValueError, RecursionError):
        return None  # what only orjson refuses (NaN, overflow, depth)
    del text
    try:  # orjson reads on from the value refused: cut short, or bad?
        orjson.loads(data[bad_value_at:])
    except orjson.JSONDecodeError as exc:
        return exc.msg, bad_value_at + exc.pos
    return None


def _byte_position(text: str, at: int) -> int:
    return at if text.isascii() else len(text[:at].encode("utf-8"))


def _counted_hands_document(text: str) -> Any:
    """A top-level object read value by value with the standard library's decoder: each hand
    is decoded (validated) and dropped, and `Hands` becomes a list of as many `None`s (the
    record keeps only its length). What orjson would refuse and the standard library takes
    raises ValueError here (NaN, Infinity, numbers beyond a double); text with surrogate
    escapes never comes here (LONE_SURROGATE_ESCAPE)."""
    decode = _value
    at = _skip_space(text, 0)
    if not text.startswith("{", at):  # an array or a scalar: orjson's type check says so
        return orjson.loads(text)
    document: dict[str, Any] = {}
    at = _skip_space(text, at + 1)
    closed = text.startswith("}", at)
    at = at + 1 if closed else at
    while not closed:
        if not text.startswith('"', at):
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, at
            )
        key, at = decode(text, at)
        at = _skip_space(text, at)
        if not text.startswith(":", at):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, at)
        at = _skip_space(text, at + 1)
        if key == "Hands" and text.startswith("[", at):
            count, at = _count_items(text, at + 1, decode)
            document[key] = [None] * count
        else:
            document[key], at = decode(text, at)
        at, closed = _after_member(text, at, "}")
    if _skip_space(text, at) != len(text):
        raise json.JSONDecodeError("Extra data", text, _skip_space(text, at))
    return document


class _BadValue(Exception):
    """The standard library refused the value at `at` (its error positions inside a value,
    e.g. an unterminated string, do not say whether the text was cut short)."""

    def __init__(self, at: int) -> None:
        self.at = at


def _value(text: str, at: int) -> tuple[Any, int]:
    try:
        return _STRICT_JSON.raw_decode(text, at)
    except json.JSONDecodeError:
        raise _BadValue(at) from None


def _count_items(text: str, at: int, decode: Any) -> tuple[int, int]:
    """The items of the array opened just before `at`, decoded one at a time and counted."""
    at = _skip_space(text, at)
    if text.startswith("]", at):
        return 0, at + 1
    count, closed = 0, False
    while not closed:
        _, at = decode(text, at)
        count += 1
        at, closed = _after_member(text, at, "]")
    return count, at


def _after_member(text: str, at: int, closing: str) -> tuple[int, bool]:
    """Past the `,` before the next member, or past `closing` (then True)."""
    at = _skip_space(text, at)
    if text.startswith(",", at):
        return _skip_space(text, at + 1), False
    if text.startswith(closing, at):
        return at + 1, True
    raise json.JSONDecodeError("Expecting ',' delimiter", text, at)


def _skip_space(text: str, at: int) -> int:
    return JSON_WHITESPACE.match(text, at).end()  # type: ignore[union-attr]


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # orjson refuses numbers that overflow a double
        raise ValueError(literal)
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity: the standard library's extension, not JSON


_STRICT_JSON = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constants)


def _not_an_object(path: Path, data: bytes, first: int) -> PokerGfxError:
    """A session is a JSON object: anything else is refused before parsing, because orjson
    allocates about twelve times the input up front (50 MB of junk cost ~630 MB to refuse)."""
    if data[first] in JSON_VALUE_STARTS:
        return NotPokerGfxSessionError(path, "top level is not a JSON object")
    try:
        data[first : first + 4].decode("utf-8")
    except UnicodeDecodeError as bad:
        cut_by_the_slice = bad.reason == "unexpected end of data" and first + 4 < len(data)
        if not cut_by_the_slice:
            return NotUtf8Error(path, f"not UTF-8 (byte {first + bad.start})")
    return InvalidJsonError(path, f"invalid JSON at byte {first}: expected a JSON object")


def _json_error(path: Path, data: bytes, message: str, position: int) -> PokerGfxError:
    """Why the bytes were refused (`position`: where, in bytes): cut short (still being
    written), not UTF-8, or bad JSON.

    Only failed files pay for the UTF-8 check's decoded copy. A rewrite read mid-way can end
    inside a multi-byte character (non-ASCII player or event names): that is truncation too.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        if bad.reason == "unexpected end of data":
            return TruncatedJsonError(
                path, f"truncated inside a UTF-8 character at byte {bad.start}"
            )
        return NotUtf8Error(path, f"not UTF-8 (byte {bad.start})")
    if position >= len(data.rstrip()):
        return TruncatedJsonError(path, f"truncated JSON at byte {position}")
    return InvalidJsonError(path, f"invalid JSON at byte {position}: {message}")


def _session_id(header: _SessionHeader, path: Path) -> int:
    session_id = header.ID
    if session_id is None:
        match = GAME_ID_IN_NAME.search(path.name)
        if match is None:
            raise NotPokerGfxSessionError(path, "no ID field and no GameID=<n> in the file name")
        session_id = int(match.group(1))
    if not 0 < session_id <= BIGINT_MAX:
        raise NotPokerGfxSessionError(path, f"ID {session_id} does not fit a positive BIGINT")
    return session_id


def _read_bytes(
    path: Path, max_bytes: int, within: Path | None = None
) -> tuple[bytes, os.stat_result]:
    try:
        with open(path, "rb") as handle:
            if within is not None:
                _check_within(path, handle.fileno(), within)
            stat = os.fstat(handle.fileno())
            if stat.st_size > max_bytes:
                raise FileTooLargeError(path, f"{stat.st_size} bytes is over the {max_bytes} limit")
            # Sized to the file, not to max_bytes: read(n) allocates n bytes up front.
            data = handle.read(stat.st_size + 1)
            if len(data) > stat.st_size:  # grew since fstat: being rewritten, read the rest
                data += handle.read(max_bytes + 1 - len(data))
            if len(data) > max_bytes:
                raise FileTooLargeError(path, f"{len(data)} bytes is over the {max_bytes} limit")
            return data, stat
    except FileNotFoundError:
        raise FileVanishedError(path, "file no longer exists (deleted or renamed)") from None
    except IsADirectoryError:
        raise UnreadableFileError(path, "is a directory, not a file") from None
    except PermissionError:
        raise UnreadableFileError(path, "permission denied") from None
    except OSError as exc:
        raise UnreadableFileError(path, exc.strerror or str(exc)) from None


def _check_within(path: Path, fd: int, within: Path) -> None:
    """Where the open file really is (Linux: its /proc fd link, so a symlink swapped after the
    check cannot fool it; elsewhere the resolved path)."""
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        opened = os.path.realpath(path)
    root = os.path.realpath(within)
    if opened != root and not opened.startswith(root.rstrip(os.sep) + os.sep):
        raise OutsideBaseError(path, f"leads outside the base folder {within} (to {opened})")
