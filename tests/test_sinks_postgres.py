"""The Postgres sink's own promises: failures are classified, timeouts fire, batches split."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import orjson
import psycopg
import pytest

from gfx_sync.sinks.base import FailureKind, SyncEvent
from gfx_sync.sinks.postgres import PostgresSink, classify_postgres_error
from support.records import SESSION_ID, make_record, session_document


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers: a hung target."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_an_outage_and_nothing_commits() -> None:
    sink = PostgresSink(f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres", timeout=2)
    result = sink.write_batch([make_record(), make_record(SESSION_ID + 1)], sync_source="batch")
    assert result.committed == []
    assert {error.kind for _, error in result.failed} == {FailureKind.OUTAGE}
    assert result.requests == 1  # an outage is not split into more attempts


def test_a_target_that_accepts_and_hangs_times_out(silent_server: int) -> None:
    sink = PostgresSink(f"postgresql://postgres@127.0.0.1:{silent_server}/postgres", timeout=1)
    result = sink.write_batch([make_record()], sync_source="batch")
    [(_, error)] = result.failed
    assert error.kind is FailureKind.OUTAGE


def test_statement_timeout_is_a_too_slow_batch(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("set statement_timeout = 50")
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            conn.execute("select pg_sleep(1)")
    assert classify_postgres_error(caught.value).kind is FailureKind.TOO_SLOW


def test_a_locked_table_is_an_outage_not_a_bad_record(database_url: str) -> None:
    """Found by the fault suite: a statement timeout that persists down to one record used to
    count as that record's failure, so a long lock dead-lettered good data."""
    sink = PostgresSink(database_url, timeout=1)
    with psycopg.connect(database_url) as locker, locker.transaction():
        locker.execute("lock table gfx_sessions in access exclusive mode")
        result = sink.write_batch([make_record(1), make_record(2)], sync_source="batch")
    assert result.committed == []
    assert {e.kind for _, e in result.failed} == {FailureKind.OUTAGE}
    assert all("57014" in str(e) for _, e in result.failed)
    assert sink.write_batch([make_record(1)], sync_source="batch").committed  # lock gone
    sink.close()


def test_a_batch_that_times_out_is_split_until_it_fits(database_url: str) -> None:
    """A trigger makes batches of more than 2 rows slow; the sink splits and all rows commit."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "create function slow_big_batches() returns trigger language plpgsql as $$ "
            "begin if (select count(*) from gfx_sessions_incoming) > 2 then "
            "perform pg_sleep(5); end if; return new; end $$"
        )
        conn.execute(
            "create trigger slow before insert on gfx_sessions for each row "
            "execute function slow_big_batches()"
        )
    sink = PostgresSink(database_url, timeout=1)
    records = [make_record(SESSION_ID + n) for n in range(8)]
    result = sink.write_batch(
        records, sync_source="batch", events=[SyncEvent("batch", file_count=8)]
    )
    assert sorted(r.session_id for r in result.committed) == [r.session_id for r in records]
    assert result.requests > 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from gfx_sessions").fetchone() == (8,)
        # The whole-batch transaction timed out in its merge: its events went with it, and
        # the split requests carry none (the caller records what really happened).
        assert conn.execute("select count(*) from sync_events").fetchone() == (0,)
    assert not result.events_recorded


def test_a_missing_table_is_an_outage_not_bad_data(empty_database_url: str) -> None:
    """An unmigrated target fails every record alike: keep them queued, never dead-letter."""
    result = PostgresSink(empty_database_url).write_batch([make_record()], sync_source="batch")
    [(_, error)] = result.failed
    assert error.kind is FailureKind.OUTAGE and "gfx_sessions" in str(error)


def test_the_password_is_not_in_error_messages() -> None:
    url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{closed_port()}/postgres"
    [(_, error)] = PostgresSink(url, timeout=1).write_batch([make_record()], sync_source="x").failed
    assert "hunter2-secret" not in str(error)


def test_the_sink_reconnects_after_the_server_drops_it(database_url: str) -> None:
    sink = PostgresSink(database_url)
    assert sink.write_batch([make_record()], sync_source="batch").failed == []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name = 'gfx-sync'"
        )
    first = sink.write_batch([make_record(SESSION_ID + 1)], sync_source="batch")
    second = sink.write_batch([make_record(SESSION_ID + 2)], sync_source="batch")
    assert [e.kind for _, e in first.failed] in ([], [FailureKind.OUTAGE])
    assert second.failed == []


def event_rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select event_type, gfx_pc_id, file_count, error, details from sync_events order by id"
        ).fetchall()


def session_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("select count(*) from gfx_sessions").fetchone()[0]


def test_events_commit_in_the_data_transaction(database_url: str) -> None:
    sink = PostgresSink(database_url)
    events = [
        SyncEvent("quarantined", gfx_pc_id="PC01", file_path="PC01/hands/x.json", error="it's bad"),
        SyncEvent("batch", file_count=2, details={"source": "batch", "requests": 1}),
    ]
    records = [make_record(), make_record(SESSION_ID + 1)]
    result = sink.write_batch(records, sync_source="batch", events=events)
    assert result.events_recorded and result.failed == [] and result.requests == 1
    assert session_count(database_url) == 2
    assert event_rows(database_url) == [
        ("quarantined", "PC01", 0, "it's bad", {}),
        ("batch", None, 2, None, {"source": "batch", "requests": 1}),
    ]


def test_a_failing_events_insert_does_not_cost_the_data(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("alter table sync_events add constraint refuse_all check (false) not valid")
    sink = PostgresSink(database_url)
    result = sink.write_batch(
        [make_record()], sync_source="batch", events=[SyncEvent("batch", file_count=1)]
    )
    assert [r.session_id for r in result.committed] == [SESSION_ID]
    assert result.failed == [] and not result.events_recorded
    assert session_count(database_url) == 1 and event_rows(database_url) == []
    # The connection is clean afterwards: the next batch commits too.
    assert sink.write_batch([make_record(SESSION_ID + 1)], sync_source="batch").failed == []
    assert session_count(database_url) == 2


def test_events_do_not_commit_when_the_data_does_not(database_url: str) -> None:
    """A rejected batch rolls its events back with it; the split retries go without them."""
    good = make_record()
    bad = make_record(
        SESSION_ID + 1,
        data=make_record(SESSION_ID + 1).raw_json.replace(
            b'"EventTitle":""', b'"EventTitle":"\\u0000"'
        ),
    )
    sink = PostgresSink(database_url)
    result = sink.write_batch(
        [good, bad], sync_source="batch", events=[SyncEvent("batch", file_count=2)]
    )
    assert [r.session_id for r in result.committed] == [SESSION_ID]
    assert [r.session_id for r, _ in result.failed] == [SESSION_ID + 1]
    assert not result.events_recorded
    assert session_count(database_url) == 1 and event_rows(database_url) == []


def test_ping_answers_for_a_live_server_only(
    database_url: str, empty_database_url: str, silent_server: int
) -> None:
    sink = PostgresSink(database_url)
    assert sink.ping(timeout=2.0) is True
    assert PostgresSink(empty_database_url).ping(timeout=2.0) is False  # up, not migrated
    assert sink.write_batch([make_record()], sync_source="batch").failed == []  # reuses it
    refused = PostgresSink(f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres")
    assert refused.ping(timeout=2.0) is False
    hung = PostgresSink(f"postgresql://postgres@127.0.0.1:{silent_server}/postgres", timeout=30)
    assert hung.ping(timeout=1.0) is False  # bounded by the ping's timeout, not the sink's


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://gfx:pw-canary-1@[::1/gfx",  # libpq quotes the whole string back
        "postgresq://gfx:pw-canary-1@127.0.0.1/gfx",
        "host=127.0.0.1 port=notaport password=pw-canary-1",
        f"postgresql://gfx:pw-canary-1@127.0.0.1:{closed_port()}/gfx",
    ],
)
def test_a_connection_failure_is_an_outage_without_the_password(url: str) -> None:
    """Found by tests/test_security_secrets.py's audit: a connection string libpq could not
    parse came back verbatim in the error (queue, logs, Prefect) and dead-lettered files."""
    sink = PostgresSink(url, timeout=2)
    result = sink.write_batch([make_record()], sync_source="batch")
    [(_, error)] = result.failed
    assert error.kind is FailureKind.OUTAGE
    assert "pw-canary-1" not in str(error) and "pw-canary-1" not in repr(sink)
    assert error.__cause__ is None  # a traceback would print libpq's text


def test_copy_sends_the_files_bytes_and_text_with_copy_specials_exactly(database_url: str) -> None:
    """One round trip per batch formats the COPY rows itself: backslashes, tabs, newlines and
    carriage returns (in the JSON's whitespace and strings, and in names) arrive unchanged."""
    name = "tab\there\\back\nline\r\x08\x0b\x0c ünï"
    data = (
        b'{\r\n\t"Hands": [ {"Note": "a\\\\b\\t\\n\\"q\\" \\u00e9"} ],\n'
        b'\t"ID": 7, "EventTitle": "' + name.encode().replace(b"\\", b"\\\\")
        .replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        .replace(b"\x08", b"\\b").replace(b"\x0b", b"\\u000b").replace(b"\x0c", b"\\f")
        + b'", "Type": null}\n'
    )  # fmt: skip
    record = make_record(7, data=data)
    assert record.event_title == name
    result = PostgresSink(database_url).write_batch([record], sync_source="batch")
    assert result.failed == []
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select event_title, raw_json = %s::jsonb, table_type, file_size, file_mtime "
            "from gfx_sessions",
            (data.decode(),),
        ).fetchone()
    assert row == (name, True, None, len(data), record.file_mtime)


def test_a_row_that_cannot_be_sent_fails_alone_and_the_connection_stays_usable(
    database_url: str,
) -> None:
    """A NUL in a text field is refused before sending (as psycopg's COPY refused it): the
    COPY is cancelled mid-stream, that record fails permanently, its batch-mates commit."""
    good = make_record()
    bad = make_record(
        SESSION_ID + 1, data=orjson.dumps(session_document(SESSION_ID + 1, EventTitle="a\x00b"))
    )
    sink = PostgresSink(database_url)
    result = sink.write_batch([good, bad], sync_source="batch")
    assert [r.session_id for r in result.committed] == [SESSION_ID]
    [(failed, error)] = result.failed
    assert failed.session_id == SESSION_ID + 1 and error.kind is FailureKind.PERMANENT
    assert "NUL" in str(error)
    assert sink.write_batch([make_record(SESSION_ID + 2)], sync_source="batch").failed == []
    assert session_count(database_url) == 2
