"""The one function that turns a PokerGFX file into a record, pinned on real and bad input."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import orjson
import pytest

import gfx_synth as synth
from gfx_sync import pokergfx
from gfx_sync.pokergfx import (
    BadFileTimeError,
    EmptyFileError,
    FileTooLargeError,
    FileVanishedError,
    InvalidJsonError,
    NotPokerGfxSessionError,
    NotUtf8Error,
    PokerGfxError,
    SessionRecord,
    TruncatedJsonError,
    UnreadableFileError,
    newest_per_session,
    parse_session_bytes,
    read_session_file,
)
from support.samples import SAMPLES, needs_samples, sample_files

# What SOURCE.md and the format reference say each real sample holds.
EXPECTED = {
    "table-GG/1016/PGFX_live_data_export GameID=638962014211467634.json": (
        638962014211467634,
        "FEATURE_TABLE",
        18,
        "2025-10-16T08:50:21.146763+00:00",
        90538,
        "98f38ddf295b75b4",
    ),
    "table-GG/1017/new/PGFX_live_data_export GameID=638963043524931047.json": (
        638963043524931047,
        "FEATURE_TABLE",
        107,
        "2025-10-17T13:25:52.493104+00:00",
        505016,
        "1be5fe3ed47bf8f7",
    ),
    "table-GG/1018/PGFX_live_data_export GameID=638964611175191251.json": (
        638964611175191251,
        "FEATURE_TABLE",
        1,
        "2025-10-19T08:58:37.519125+00:00",
        4301,
        "be3ee6b548a610ef",
    ),
    "table-GG/1019/PGFX_live_data_export GameID=638964611175191251.json": (
        638964611175191251,
        "FEATURE_TABLE",
        2,
        "2025-10-19T08:58:37.519125+00:00",
        9732,
        "88270a9847980e0a",
    ),
    "table-pokercaster/1017/PGFX_live_data_export GameID=638965699523867148.json": (
        638965699523867148,
        "FINAL_TABLE",
        2,
        "2025-10-20T15:12:32.386714+00:00",
        10071,
        "e99dd8f561549757",
    ),
}

MTIME = datetime(2025, 10, 19, 9, 0, tzinfo=UTC)


def minimal_session(**overrides: object) -> dict:
    document: dict = {
        "CreatedDateTimeUTC": "2025-10-19T08:58:37.5191251Z",
        "EventTitle": "",
        "Hands": [{"HandNum": 1}],
        "ID": 638964611175191251,
        "Payouts": [0] * 10,
        "SoftwareVersion": "PokerGFX 3.2",
        "Type": "FEATURE_TABLE",
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def parse(data: bytes, name: str = "PGFX_live_data_export GameID=638964611175191251.json"):
    return parse_session_bytes(
        data,
        path=Path("/nas/PC01/hands") / name,
        pc_id="PC01",
        relative_path=f"PC01/hands/{name}",
        mtime=MTIME,
    )


@needs_samples
def test_every_real_sample_parses_to_its_known_values() -> None:
    files = sample_files()
    assert {str(p.relative_to(SAMPLES)) for p in files} == set(EXPECTED)
    for path in files:
        relative = str(path.relative_to(SAMPLES))
        record = read_session_file(path, pc_id="PC01", relative_path=relative)
        session_id, table_type, hands, created, size, hash_prefix = EXPECTED[relative]
        assert record.session_id == session_id
        assert record.session_id > 2**31  # needs BIGINT
        assert record.table_type == table_type
        assert record.hand_count == hands
        assert record.session_created_at is not None
        assert record.session_created_at.isoformat() == created
        assert record.file_size == size == len(record.raw_json)
        assert record.file_hash.startswith(hash_prefix)
        assert record.event_title == ""
        assert record.software_version == "PokerGFX 3.2"
        assert record.file_name == path.name and " " in record.file_name
        assert record.file_path == relative
        assert record.file_mtime == datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
        assert orjson.loads(record.raw_json)["ID"] == session_id  # kept whole


@needs_samples
def test_every_prefix_of_a_real_file_is_truncated_not_invalid() -> None:
    """A file read mid-rewrite must be recognised as 'try again', never as broken."""
    data = sample_files()[2].read_bytes()
    for cut in range(1, len(data), max(1, len(data) // 200)):
        with pytest.raises(TruncatedJsonError) as caught:
            parse(data[:cut])
        assert caught.value.retryable


def test_a_rewrite_cut_inside_a_multibyte_character_is_truncated_not_broken() -> None:
    """Non-ASCII names are common; a read that ends mid-character must mean 'try again'."""
    data = orjson.dumps(minimal_session(EventTitle="홀덤 Feature Table"))
    cut = data.index("홀".encode()) + 1  # inside the 3-byte character
    with pytest.raises(TruncatedJsonError) as caught:
        parse(data[:cut])
    assert caught.value.retryable


def test_large_junk_is_refused_without_parsing_it(tmp_path: Path) -> None:
    """A session is a JSON object; 50 MB that cannot be one must not reach orjson, which
    allocates about twelve times its input up front (~630 MB here) just to refuse it."""
    junk = tmp_path / "junk.json"
    junk.write_bytes(b"junk " * (10 * 1024 * 1024))
    tracemalloc.start()
    try:
        with pytest.raises(InvalidJsonError, match="expected a JSON object"):
            read_session_file(junk, pc_id="PC01", relative_path="PC01/hands/junk.json")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * junk.stat().st_size  # the bytes read, nothing proportional on top


def traced_peak(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_big_session_is_read_with_its_hands_counted_not_built() -> None:
    """The whole document as Python objects costs several times the file (a 50 MB session
    once peaked near 380 MB); a record needs only the header and the number of hands."""
    doc = synth.make_session(hands=2000, seed=9)
    data = synth.session_bytes(doc)
    assert len(data) > pokergfx.STREAMED_PARSE_BYTES  # the streamed reader's size

    records: list[SessionRecord] = []
    peak = traced_peak(lambda: records.append(parse(data)))
    assert records[0].hand_count == 2000 and records[0].session_id == doc["ID"]
    assert peak < 1.5 * len(data)  # the decoded text, and one hand at a time on top
    with mock.patch.object(pokergfx, "STREAMED_PARSE_BYTES", len(data) + 1):
        assert parse(data) == records[0]  # as orjson reads it whole

    cut = data[: len(data) * 3 // 4]  # a big file read mid-rewrite
    errors: list[PokerGfxError] = []

    def read_cut() -> None:
        try:
            parse(cut)
        except PokerGfxError as error:
            errors.append(error)

    assert traced_peak(read_cut) < 2 * len(cut)
    assert [type(e) for e in errors] == [TruncatedJsonError]


def test_seven_fractional_digits_are_parsed_as_utc() -> None:
    record = parse(orjson.dumps(minimal_session()))
    assert record.session_created_at == datetime(2025, 10, 19, 8, 58, 37, 519125, tzinfo=UTC)


def test_session_id_falls_back_to_the_game_id_in_the_file_name() -> None:
    record = parse(orjson.dumps(minimal_session(ID=None)))
    assert record.session_id == 638964611175191251


@pytest.mark.parametrize(
    ("data", "error", "retryable", "words"),
    [
        (b"", EmptyFileError, True, "empty"),
        (b'{"CreatedDateTimeUTC":"2025', TruncatedJsonError, True, "truncated"),
        (b"\xff\xfe{}", NotUtf8Error, False, "UTF-8"),
        (b'{"Hands": [1,,]}', InvalidJsonError, False, "invalid JSON"),
        (b"[1, 2, 3]", NotPokerGfxSessionError, False, "not a JSON object"),
        (b'{"ID": 5}', NotPokerGfxSessionError, False, "Hands"),
        (b'{"Hands": "x", "ID": 5}', NotPokerGfxSessionError, False, "Hands"),
        (orjson.dumps(minimal_session(ID=-3)), NotPokerGfxSessionError, False, "BIGINT"),
        (b'{"Hands": [], "ID": 18446744073709551616}', NotPokerGfxSessionError, False, "ID"),
        (
            orjson.dumps(minimal_session(CreatedDateTimeUTC="yesterday")),
            NotPokerGfxSessionError,
            False,
            "CreatedDateTimeUTC",
        ),
    ],
)
def test_bad_input_gets_a_typed_error_naming_the_file_and_cause(
    data: bytes, error: type[PokerGfxError], retryable: bool, words: str
) -> None:
    with pytest.raises(error) as caught:
        parse(data)
    assert caught.value.retryable is retryable
    assert "PGFX_live_data_export GameID=638964611175191251.json" in str(caught.value)
    assert words in str(caught.value)


def test_no_id_anywhere_is_not_a_session() -> None:
    with pytest.raises(NotPokerGfxSessionError, match="no ID field"):
        parse(orjson.dumps(minimal_session(ID=None)), name="export.json")


def test_file_system_refusals_are_typed(tmp_path: Path) -> None:
    def read(path: Path, **kwargs: int):
        return read_session_file(path, pc_id="PC01", relative_path=path.name, **kwargs)

    with pytest.raises(FileVanishedError):
        read(tmp_path / "gone.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(UnreadableFileError, match="directory"):
        read(tmp_path / "dir.json")
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    with pytest.raises(UnreadableFileError):
        read(loop)
    big = tmp_path / "big.json"
    big.write_bytes(orjson.dumps(minimal_session()) + b" " * 4096)
    with pytest.raises(FileTooLargeError, match="over the 1024"):
        read(big, max_bytes=1024)


TMPFS = Path("/dev/shm")  # keeps any time stamp; ext4 clamps to 1901..2446


@pytest.mark.skipif(not TMPFS.is_dir() or not os.access(TMPFS, os.W_OK), reason="no /dev/shm")
@pytest.mark.parametrize("mtime", [1e12, -1e12])
def test_a_modification_time_beyond_datetime_is_a_typed_error(tmp_path: Path, mtime: float) -> None:
    """Found by tests/test_pokergfx_fuzz.py: datetime.fromtimestamp raised a bare ValueError."""
    path = TMPFS / f"gfx-sync-test-{os.getpid()}-{tmp_path.name}.json"
    try:
        path.write_bytes(orjson.dumps(minimal_session()))
        os.utime(path, (mtime, mtime))
        if path.stat().st_mtime != mtime:
            pytest.skip("this tmpfs clamps time stamps too")
        with pytest.raises(BadFileTimeError, match="outside years 1-9999") as caught:
            read_session_file(path, pc_id="PC01", relative_path=path.name)
        assert str(path) in str(caught.value)
    finally:
        path.unlink(missing_ok=True)


def test_a_batch_keeps_only_the_newest_snapshot_of_each_session() -> None:
    one = parse(orjson.dumps(minimal_session(Hands=[{"HandNum": 1}])))
    two = parse(orjson.dumps(minimal_session(Hands=[{"HandNum": 1}, {"HandNum": 2}])))
    other = parse(orjson.dumps(minimal_session(ID=638962014211467634)))
    assert newest_per_session([two, one, other]) == [two, other]
    assert newest_per_session([one, two, other]) == [two, other]
