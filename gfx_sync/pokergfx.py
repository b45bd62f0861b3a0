"""PokerGFX session files -> `SessionRecord`: the one function that turns a file into a row.

Real exports are compact JSON whose `Hands` key sorts first, so a file read mid-rewrite is
truncated JSON: that error is marked retryable, and the caller waits for the file to settle
before giving up on it. tests/test_pokergfx.py pins the real samples' values.
"""

from __future__ import annotations

import hashlib
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
    try:
        document = orjson.loads(data)  # validates UTF-8 itself: no decoded copy of the file
    except orjson.JSONDecodeError as exc:
        raise _json_error(path, data, exc) from None
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


def _json_error(path: Path, data: bytes, exc: orjson.JSONDecodeError) -> PokerGfxError:
    """Why orjson refused the bytes: cut short (still being written), not UTF-8, or bad JSON.

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
    if exc.pos >= len(data.rstrip()):
        return TruncatedJsonError(path, f"truncated JSON at byte {exc.pos}")
    return InvalidJsonError(path, f"invalid JSON at byte {exc.pos}: {exc.msg}")


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
