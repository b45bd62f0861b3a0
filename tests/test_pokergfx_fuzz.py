"""Fuzzing the PokerGFX parser: any bytes, any name, any mutation of a faithful document
becomes either a `SessionRecord` or a `PokerGfxError` whose message names the file.

Never another exception (that would crash a drain instead of quarantining one file), never a
hang (hypothesis' deadline). `GFX_SYNC_FUZZ=soak` runs it long (tests/support/fuzz.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import gfx_synth as synth
from gfx_sync import pokergfx
from gfx_sync.pokergfx import (
    BIGINT_MAX,
    PokerGfxError,
    SessionRecord,
    parse_session_bytes,
    read_session_file,
)
from support.fuzz import fuzz_settings

MTIME = datetime(2025, 10, 19, 9, 0, tzinfo=UTC)
BASE_DOC = synth.make_session(hands=2, seed=3)
BASE_BYTES = synth.session_bytes(BASE_DOC)
NAME = synth.session_file_name(BASE_DOC["ID"])


def parse(data: bytes, name: str = NAME) -> SessionRecord | PokerGfxError:
    """The parser's answer: a record, or the typed error (anything else propagates)."""
    path = Path("/nas/PC01/hands") / name
    try:
        return parse_session_bytes(
            data, path=path, pc_id="PC01", relative_path=f"PC01/hands/{name}", mtime=MTIME
        )
    except PokerGfxError as error:
        assert str(path) in str(error), f"the error does not name the file: {error}"
        assert error.path == str(path) and error.reason
        return error


def check_record(record: SessionRecord, data: bytes) -> None:
    """What every accepted file must satisfy to be a valid `gfx_sessions` row."""
    assert 0 < record.session_id <= BIGINT_MAX
    assert record.file_size == len(data) and record.raw_json == data
    assert record.hand_count >= 0
    for text in (record.table_type, record.event_title, record.software_version):
        assert text is None or isinstance(text, str)
    assert record.session_created_at is None or record.session_created_at.tzinfo is not None
    orjson.loads(record.raw_json)  # what the sinks send is JSON


# --- arbitrary input -------------------------------------------------------------------------


@fuzz_settings()
@given(st.binary(max_size=4096))
@example(b"")
@example(b"\xef\xbb\xbf" + BASE_BYTES)  # a BOM
@example(BASE_BYTES[: len(BASE_BYTES) // 2])  # truncated mid-write
@example(b"[" * 5000 + b"]" * 5000)  # nested deeper than orjson's limit
@example(b'{"Hands":[],"ID":1e400}')
def test_any_bytes_are_a_record_or_a_typed_error(data: bytes) -> None:
    outcome = parse(data)
    if isinstance(outcome, SessionRecord):
        check_record(outcome, data)


@fuzz_settings()
@given(st.text(max_size=300), st.binary(max_size=200))
def test_any_json_text_is_a_record_or_a_typed_error(text: str, noise: bytes) -> None:
    data = text.encode("utf-8", "surrogatepass")
    for candidate in (data, data + noise, noise + data):
        outcome = parse(candidate)
        if isinstance(outcome, SessionRecord):
            check_record(outcome, candidate)


# --- structured mutations of a faithful document -----------------------------------------------

ODD_TEXT = st.sampled_from(
    [
        "",
        "\u0000",
        "\ud800",
        "\ufeff",
        "\u202e",
        "\U0001d518\U0001d52b\U0001d526",
        "Tisch 3 — \"Finale\" 'ü'",
        "a" * 10_000,
    ]
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, BIGINT_MAX, BIGINT_MAX + 1, 2**64, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=20), ODD_TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a document (key or index path), the root excluded."""
    found = []
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return found
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


LOCATIONS = _paths(BASE_DOC)
TOP_LEVEL = [loc for loc in LOCATIONS if len(loc) == 1]


def _parent(doc: Any, location: tuple) -> Any:
    for key in location[:-1]:
        doc = doc[key]
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    """A faithful document with a few structural edits, encoded (sometimes oddly)."""
    doc = json.loads(json.dumps(BASE_DOC))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        location = draw(st.sampled_from(TOP_LEVEL) | st.sampled_from(LOCATIONS))
        try:
            parent = _parent(doc, location)
            key = location[-1]
            parent[key]  # still there after earlier edits?
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["drop", "replace", "nest", "duplicate"]))
        if action == "drop":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(JSON_VALUES)
        elif action == "nest":
            depth = draw(st.integers(min_value=1, max_value=3000))
            parent[key] = [] if depth > 900 else parent[key]  # deep nesting: see encoding below
            if depth > 900:
                return _deeply_nested(doc, depth)
            for _ in range(depth % 50):
                parent[key] = [parent[key]]
        else:
            parent[key] = [parent[key], parent[key]]
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True).encode(
        "utf-8", "surrogatepass"
    )
    encoding = draw(st.sampled_from(["plain", "bom", "truncate", "trailing", "utf16"]))
    if encoding == "bom":
        data = b"\xef\xbb\xbf" + data
    elif encoding == "truncate":
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]
    elif encoding == "trailing":
        data += draw(st.sampled_from([b"\n", b"\x00", b"}", b" garbage", b"\r\n\r\n"]))
    elif encoding == "utf16":
        data = data.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    return data


def _deeply_nested(doc: dict, depth: int) -> bytes:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return (
        text.replace('"Payouts":', '"Payouts":' + "[" * depth, 1)
        .replace('"SoftwareVersion"', "]" * depth + ',"SoftwareVersion"', 1)
        .encode()
    )


@fuzz_settings(weight=2)
@given(mutated_documents())
def test_mutated_documents_are_a_record_or_a_typed_error(data: bytes) -> None:
    outcome = parse(data)
    if isinstance(outcome, SessionRecord):
        check_record(outcome, data)


def parse_streamed(data: bytes) -> SessionRecord | PokerGfxError:
    """`parse`, as a file of STREAMED_PARSE_BYTES or more is parsed (hands counted, not built)."""
    with mock.patch.object(pokergfx, "STREAMED_PARSE_BYTES", 0):
        return parse(data)


def same_answer(data: bytes) -> None:
    """Both readers of a file take the same files, to the same record, and refuse the same."""
    whole, streamed = parse(data), parse_streamed(data)
    if isinstance(whole, SessionRecord) or isinstance(streamed, SessionRecord):
        assert whole == streamed
    else:
        assert (type(streamed), streamed.retryable) == (type(whole), whole.retryable), (
            whole,
            streamed,
        )


@fuzz_settings(weight=2)
@given(st.one_of(mutated_documents(), st.binary(max_size=512)))
@example(BASE_BYTES)
@example(BASE_BYTES[:-1])
@example(b'{"Hands":[1e400],"ID":1}')
@example(b'{"Hands":[NaN],"ID":1}')
@example(b'{"Hands":["\\ud800"],"ID":1}')
@example(b'{"Hands":[' + b"[" * 5000 + b"]" * 5000 + b'],"ID":1}')
@example(b'{"Hands":[' + b"1" * 5000 + b'],"ID":1}')
@example(b'{"Hands":"x","ID":1}')
@example(b'{"Hands":[],"Hands":[1,2],"ID":1}')
def test_a_big_file_is_read_to_the_same_answer_with_its_hands_only_counted(data: bytes) -> None:
    same_answer(data)


@fuzz_settings()
@given(
    st.dictionaries(
        st.sampled_from(["ID", "Type", "EventTitle", "SoftwareVersion", "CreatedDateTimeUTC"]),
        JSON_VALUES,
    ),
    st.one_of(st.none(), st.text(max_size=40)),
)
def test_header_fields_of_any_type_are_a_record_or_a_typed_error(
    header: dict[str, Any], created: str | None
) -> None:
    doc = {**BASE_DOC, **header}
    if created is not None:
        doc["CreatedDateTimeUTC"] = created
    data = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
    outcome = parse(data)
    if isinstance(outcome, SessionRecord):
        check_record(outcome, data)
        if isinstance(header.get("ID"), float) and not math.isfinite(header["ID"]):
            pytest.fail("a non-finite ID became a session id")


@fuzz_settings()
@given(st.text(max_size=120).filter(lambda s: "/" not in s and "\x00" not in s))
def test_any_file_name_is_a_record_or_a_typed_error(stem: str) -> None:
    """Without an ID field, the session id comes from `GameID=<n>` in the name, if any."""
    doc = {k: v for k, v in BASE_DOC.items() if k != "ID"}
    data = orjson.dumps(doc)
    outcome = parse(data, name=f"{stem}.json")
    if isinstance(outcome, SessionRecord):
        check_record(outcome, data)
        match = re.search(r"GameID=([0-9]+)", stem)  # ASCII digits only, the first one
        assert match is not None and int(match.group(1)) == outcome.session_id


# --- through the file system ----------------------------------------------------------------


@fuzz_settings(weight=0.5)
@given(
    st.binary(max_size=2048) | mutated_documents(),
    st.one_of(st.none(), st.floats(min_value=-1e13, max_value=1e13)),
)
def test_reading_a_file_with_any_content_and_mtime_is_a_record_or_a_typed_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, mtime: float | None
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / NAME
    path.write_bytes(data)
    if mtime is not None:
        # a time the file system refuses leaves the file its own
        with contextlib.suppress(OSError, OverflowError, ValueError):
            os.utime(path, (mtime, mtime))
    try:
        record = read_session_file(path, pc_id="PC01", relative_path=f"PC01/hands/{NAME}")
    except PokerGfxError as error:
        assert str(path) in str(error)
        return
    check_record(record, data)
