"""The Postgres sink's own promises: failures are classified, timeouts fire, batches split."""

from __future__ import annotations

import socket
import threading
import tracemalloc
from collections.abc import Iterator

import orjson
import psycopg
import pytest

from gfx_sync.sinks.base import Delivery, FailureKind, SyncEvent
from gfx_sync.sinks.postgres import PostgresSink, classify_postgres_error, split_by_session
from support.events import event_rows
from support.records import SESSION_ID, deliver, make_record, session_document


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


QUARANTINED = SyncEvent(
    "quarantined", gfx_pc_id="PC01", file_path="PC01/hands/x.json", error="it's bad"
)
QUARANTINED_ROW = ("quarantined", "PC01", 0, "it's bad", {})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_an_outage_and_nothing_commits() -> None:
    sink = PostgresSink(f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres", timeout=2)
    result = sink.write_batch(
        deliver(make_record(), make_record(SESSION_ID + 1)), sync_source="batch"
    )
    assert result.committed == []
    assert {error.kind for _, error in result.failed} == {FailureKind.OUTAGE}
    assert result.requests == 1  # an outage is not split into more attempts


def test_a_target_that_accepts_and_hangs_times_out(silent_server: int) -> None:
    sink = PostgresSink(f"postgresql://postgres@127.0.0.1:{silent_server}/postgres", timeout=1)
    result = sink.write_batch(deliver(make_record()), sync_source="batch")
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
        result = sink.write_batch(deliver(make_record(1), make_record(2)), sync_source="batch")
    assert result.committed == []
    assert {e.kind for _, e in result.failed} == {FailureKind.OUTAGE}
    assert all("57014" in str(e) for _, e in result.failed)
    assert sink.write_batch(deliver(make_record(1)), sync_source="batch").committed  # lock gone
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
    batch = deliver(*(make_record(SESSION_ID + n) for n in range(8)))
    result = sink.write_batch(batch, sync_source="batch", events=[QUARANTINED])
    assert sorted(result.committed) == [d.item_id for d in batch]
    assert result.requests > 1
    assert session_count(database_url) == 8
    # The whole-batch transaction timed out in its merge: its events went with it, and the
    # split requests carry none; what really happened is recorded after, once.
    assert event_rows(database_url) == [
        QUARANTINED_ROW,
        ("batch", None, 8, None, {"source": "batch", "requests": result.requests}),
    ]


def test_a_missing_table_is_an_outage_not_bad_data(empty_database_url: str) -> None:
    """An unmigrated target fails every record alike: keep them queued, never dead-letter."""
    result = PostgresSink(empty_database_url).write_batch(
        deliver(make_record()), sync_source="batch"
    )
    [(_, error)] = result.failed
    assert error.kind is FailureKind.OUTAGE and "gfx_sessions" in str(error)


def test_the_password_is_not_in_error_messages() -> None:
    url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{closed_port()}/postgres"
    result = PostgresSink(url, timeout=1).write_batch(deliver(make_record()), sync_source="x")
    [(_, error)] = result.failed
    assert "hunter2-secret" not in str(error)


def test_the_sink_reconnects_after_the_server_drops_it(database_url: str) -> None:
    sink = PostgresSink(database_url)
    assert sink.write_batch(deliver(make_record()), sync_source="batch").failed == []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where application_name = 'gfx-sync'"
        )
    first = sink.write_batch(deliver(make_record(SESSION_ID + 1)), sync_source="batch")
    second = sink.write_batch(deliver(make_record(SESSION_ID + 2)), sync_source="batch")
    assert [e.kind for _, e in first.failed] in ([], [FailureKind.OUTAGE])
    assert second.failed == []


def session_count(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("select count(*) from gfx_sessions").fetchone()[0]


TRANSACTIONS_SQL = """
create table written_in (table_name text, transaction xid8);
create function note_transaction() returns trigger language plpgsql as $$
begin
    insert into written_in values (tg_table_name, pg_current_xact_id());
    return null;
end;
$$;
create trigger note_transaction after insert or update on gfx_sessions
    for each row execute function note_transaction();
create trigger note_transaction after insert on sync_events
    for each row execute function note_transaction();
"""


def writing_transactions(database_url: str) -> dict[str, set[str]]:
    """The (top-level) transactions that wrote each table, by table."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select table_name, transaction::text from written_in").fetchall()
    written: dict[str, set[str]] = {}
    for table, transaction in rows:
        written.setdefault(table, set()).add(transaction)
    return written


def test_events_commit_in_the_data_transaction(database_url: str) -> None:
    """The events given and the batch's own "batch" event ride in the data's transaction."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(TRANSACTIONS_SQL)  # type: ignore[arg-type]
    sink = PostgresSink(database_url)
    batch = deliver(make_record(), make_record(SESSION_ID + 1))
    result = sink.write_batch(batch, sync_source="batch", events=[QUARANTINED])
    assert result.committed == [0, 1] and result.failed == [] and result.requests == 1
    assert session_count(database_url) == 2
    assert event_rows(database_url) == [
        QUARANTINED_ROW,
        ("batch", None, 2, None, {"source": "batch", "requests": 1}),
    ]
    [transaction] = writing_transactions(database_url)["gfx_sessions"]
    assert writing_transactions(database_url) == {
        "gfx_sessions": {transaction},
        "sync_events": {transaction},
    }


def test_a_failing_events_insert_does_not_cost_the_data(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("alter table sync_events add constraint refuse_all check (false) not valid")
    sink = PostgresSink(database_url)
    result = sink.write_batch(deliver(make_record()), sync_source="batch", events=[QUARANTINED])
    assert result.committed == [0] and result.failed == []
    assert session_count(database_url) == 1 and event_rows(database_url) == []
    # The connection is clean afterwards: the next batch commits too.
    assert sink.write_batch(deliver(make_record(SESSION_ID + 1)), sync_source="batch").failed == []
    assert session_count(database_url) == 2


def test_events_do_not_commit_when_the_data_does_not(database_url: str) -> None:
    """A rejected batch rolls its events back with it; the split retries go without them; what
    really happened is recorded after, once (the failed record's error is the caller's)."""
    good = make_record()
    bad = make_record(
        SESSION_ID + 1,
        data=make_record(SESSION_ID + 1).raw_json.replace(
            b'"EventTitle":""', b'"EventTitle":"\\u0000"'
        ),
    )
    sink = PostgresSink(database_url)
    result = sink.write_batch(deliver(good, bad), sync_source="batch", events=[QUARANTINED])
    assert result.committed == [0]
    assert [item_id for item_id, _ in result.failed] == [1]
    assert session_count(database_url) == 1
    assert event_rows(database_url) == [
        QUARANTINED_ROW,
        ("batch", None, 1, None, {"source": "batch", "requests": 3}),
    ]


def test_ping_answers_for_a_live_server_only(
    database_url: str, empty_database_url: str, silent_server: int
) -> None:
    sink = PostgresSink(database_url)
    assert sink.ping(timeout=2.0) is True
    assert PostgresSink(empty_database_url).ping(timeout=2.0) is False  # up, not migrated
    assert sink.write_batch(deliver(make_record()), sync_source="batch").failed == []  # reuses it
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
    result = sink.write_batch(deliver(make_record()), sync_source="batch")
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
    result = PostgresSink(database_url).write_batch(deliver(record), sync_source="batch")
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
    result = sink.write_batch(deliver(good, bad), sync_source="batch")
    assert result.committed == [0]
    [(failed, error)] = result.failed
    assert failed == 1 and error.kind is FailureKind.PERMANENT
    assert "NUL" in str(error)
    assert sink.write_batch(deliver(make_record(SESSION_ID + 2)), sync_source="batch").failed == []
    assert session_count(database_url) == 2


def snapshot(session_id: int, hands: int, megabytes: float) -> Delivery:
    notes = "n" * int(megabytes * 1024 * 1024)
    data = orjson.dumps(session_document(session_id, hands, Notes=notes))
    return Delivery(session_id * 100 + hands, make_record(session_id, hands, data=data))


def test_a_big_file_is_sent_without_copies_of_its_json(database_url: str) -> None:
    """The COPY data of a big file is handed to libpq from the record's own bytes: memory
    for a 50 MB session stays near the file's size, not several times it."""
    big = snapshot(7, 1, 16)
    size = len(big.record.raw_json)
    sink = PostgresSink(database_url)
    sink.write_batch(deliver(make_record(SESSION_ID)), sync_source="batch")  # connected
    tracemalloc.start()
    try:
        result = sink.write_batch([big], sync_source="batch")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        sink.close()
    assert result.committed == [big.item_id]
    assert peak < size / 4, f"{peak} bytes allocated to send {size}"
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "select length(raw_json->>'Notes') from gfx_sessions where session_id = 7"
        ).fetchone()
    assert stored == (16 * 1024 * 1024,)


def test_a_split_keeps_each_session_in_one_part_and_balances_the_bytes() -> None:
    a = [snapshot(1, hands, 1) for hands in (1, 2, 3)]
    others = [snapshot(session, 1, 1) for session in (2, 3, 4)]
    parts = split_by_session([a[0], others[0], a[1], others[1], a[2], others[2]], 2)
    assert sorted(parts, key=len) == [a, others]  # 3 MB each
    assert len(split_by_session([*a, *others], 4)) == 4  # at most one part a session
    assert len(split_by_session([*a, *others], 8)) == 4


def test_a_batch_too_small_for_two_parts_or_of_one_session_is_not_split() -> None:
    small = [snapshot(session, 1, 0.4) for session in (1, 2, 3, 4)]  # under 2 minimums
    assert split_by_session(small, 2) == [small]
    one_session = [snapshot(1, hands, 1) for hands in (1, 2, 3)]
    assert split_by_session(one_session, 2) == [one_session]
    assert split_by_session([*small, *one_session], 1) == [[*small, *one_session]]
