"""The Supabase REST sink, through supabase-py, through a PostgREST look-alike, into real Postgres.

What it promises: the request is PostgREST's upsert (merge-duplicates on the session key,
return=minimal, raw_json sent as a JSON object); the newest snapshot wins; failures are sorted
into outage / too big / bad data, so batches split or bisect only when that can help; the
service key never shows up in a message, a log line or a repr.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
from postgrest.exceptions import APIError
from pydantic import SecretStr
from supabase import ClientOptions, create_client

from gfx_sync.pokergfx import SessionRecord
from gfx_sync.schema import SESSION_COLUMNS
from gfx_sync.settings import load_settings
from gfx_sync.sinks import open_sink
from gfx_sync.sinks.base import Delivery, FailureKind, SyncEvent
from gfx_sync.sinks.supabase_rest import SupabaseRestSink, classify_rest_error, rest_row
from support.postgrest import PostgrestServer, RecordedRequest, run_postgrest
from support.records import SESSION_ID, deliver, make_record

BIG_ID = SESSION_ID  # 638964611175191251: far beyond 2**31, must stay a bigint end to end
HANG = 60.0  # the server "hangs" this long; the client gives up after HANG_TIMEOUT
HANG_TIMEOUT = 0.5


@pytest.fixture
def server(database_url: str) -> Iterator[PostgrestServer]:
    with run_postgrest(database_url) as server:
        yield server


@pytest.fixture
def sink(server: PostgrestServer) -> Iterator[SupabaseRestSink]:
    sink = SupabaseRestSink(server.url, SecretStr(server.key), timeout=5.0)
    yield sink
    sink.close()


def rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select gfx_pc_id, session_id, hand_count, file_hash, updated_at "
            "from gfx_sessions order by gfx_pc_id, session_id"
        ).fetchall()


def sessions(n: int, hands: int = 1) -> list[Delivery]:
    return deliver(*(make_record(BIG_ID + i, hands) for i in range(n)))


def upserts_then_events(server: PostgrestServer) -> tuple[list[RecordedRequest], RecordedRequest]:
    """A write that committed: its upserts, then one insert of its events (REST cannot carry
    them in the upsert's transaction)."""
    *upserts, events = server.requests
    assert {(r.method, r.path) for r in upserts} == {("POST", "/rest/v1/gfx_sessions")}
    assert (events.method, events.path) == ("POST", "/rest/v1/sync_events")
    return upserts, events


def with_event_title(record: SessionRecord, title: bytes) -> SessionRecord:
    return make_record(
        record.session_id,
        data=record.raw_json.replace(b'"EventTitle":""', b'"EventTitle":"' + title + b'"'),
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the request supabase-py sends -----------------------------------------------------------


def test_an_upsert_is_one_postgrest_upsert_request(
    sink: SupabaseRestSink, server: PostgrestServer
) -> None:
    batch = sessions(2, hands=3)
    sink.write_batch(batch, sync_source="realtime")

    [request], events = upserts_then_events(server)
    assert [event["event_type"] for event in events.body] == ["batch"]
    assert request.query["on_conflict"] == "site_id,gfx_pc_id,session_id"
    columns = request.query["columns"].split(",")  # each name quoted; the order is not stable
    assert sorted(columns) == sorted(f'"{name}"' for name in SESSION_COLUMNS)
    prefer = {p.strip() for p in request.headers["prefer"].split(",")}
    assert {"return=minimal", "resolution=merge-duplicates"} <= prefer
    assert request.headers["apikey"] == server.key
    assert request.headers["authorization"] == f"Bearer {server.key}"
    assert [row["session_id"] for row in request.body] == [BIG_ID, BIG_ID + 1]
    assert {row["site_id"] for row in request.body} == {"default"}
    for row, delivery in zip(request.body, batch, strict=True):
        record = delivery.record
        assert isinstance(row["session_id"], int) and row["session_id"] > 2**31
        assert row["raw_json"] == orjson.loads(record.raw_json)  # an object, not a string
        assert datetime.fromisoformat(row["file_mtime"]) == record.file_mtime
        assert row["sync_source"] == "realtime"


def test_events_are_one_insert_with_details_as_an_object(
    sink: SupabaseRestSink, server: PostgrestServer, database_url: str
) -> None:
    sink.record_events(
        [
            SyncEvent("batch", file_count=3, details={"ms": 12, "source": "realtime"}),
            SyncEvent("error", gfx_pc_id="PC01", session_id=BIG_ID, error="boom"),
        ]
    )
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/rest/v1/sync_events")
    assert "return=minimal" in request.headers["prefer"]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "select event_type, gfx_pc_id, session_id, file_count, error, details, "
            "jsonb_typeof(details) from sync_events order by id"
        ).fetchall()
    assert stored == [
        ("batch", None, None, 3, None, {"ms": 12, "source": "realtime"}, "object"),
        ("error", "PC01", BIG_ID, 0, "boom", {}, "object"),
    ]


# --- what lands in Postgres -------------------------------------------------------------------


def test_a_session_lands_with_every_value(sink: SupabaseRestSink, database_url: str) -> None:
    record = make_record(hands=3)
    result = sink.write_batch(deliver(record), sync_source="batch")
    assert result.committed == [0] and result.failed == [] and result.requests == 1
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            f"select {', '.join(SESSION_COLUMNS)}, jsonb_typeof(raw_json) from gfx_sessions"
        ).fetchone()
    assert stored == (
        "default",
        "PC01",
        BIG_ID,
        record.file_name,
        record.file_path,
        record.file_hash,
        record.file_size,
        record.file_mtime,
        orjson.loads(record.raw_json),
        "FEATURE_TABLE",
        "",
        "PokerGFX 3.2",
        3,
        record.session_created_at,
        "batch",
        "synced",
        "object",
    )


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 5])))
def test_growth_in_any_arrival_order_ends_with_the_newest(
    sink: SupabaseRestSink, database_url: str, order: tuple[int, ...]
) -> None:
    snapshots = {hands: make_record(hands=hands, mtime_offset=hands * 60) for hands in (1, 2, 5)}
    for hands in order:
        assert sink.write_batch(deliver(snapshots[hands]), sync_source="batch").failed == []
    [row] = rows(database_url)
    assert row[2:4] == (5, snapshots[5].file_hash)


def test_an_older_snapshot_after_a_newer_one_changes_nothing(
    sink: SupabaseRestSink, database_url: str
) -> None:
    sink.write_batch(deliver(make_record(hands=5)), sync_source="batch")
    before = rows(database_url)
    result = sink.write_batch(
        deliver(make_record(hands=2, mtime_offset=3600)), sync_source="backfill"
    )
    assert result.failed == []  # not an error: the database keeps the newer row
    assert rows(database_url) == before


def test_an_identical_resend_does_not_bump_updated_at(
    sink: SupabaseRestSink, database_url: str
) -> None:
    record = make_record(hands=2)
    sink.write_batch(deliver(record), sync_source="batch")
    before = rows(database_url)
    assert sink.write_batch(deliver(record), sync_source="batch").committed == [0]
    assert rows(database_url) == before


def test_several_snapshots_in_one_batch_send_only_the_newest(
    sink: SupabaseRestSink, server: PostgrestServer, database_url: str
) -> None:
    batch = deliver(*(make_record(hands=h, mtime_offset=h) for h in (3, 1, 7, 2)))
    result = sink.write_batch(batch, sync_source="batch")
    assert sorted(result.committed) == [0, 1, 2, 3]  # the older ones with the newest
    [request], _ = upserts_then_events(server)
    assert [row["hand_count"] for row in request.body] == [7]
    assert rows(database_url)[0][2] == 7


@pytest.mark.parametrize(("timeout", "connect"), [(7.5, 7.5), (30.0, 10.0)])
def test_requests_carry_the_sinks_timeouts_not_supabase_pys_120_s(
    timeout: float, connect: float
) -> None:
    seen: list[dict[str, float]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(201)

    transport = httpx.MockTransport(answer)
    sink = SupabaseRestSink(
        "https://example.supabase.co", SecretStr("k"), timeout=timeout, transport=transport
    )
    assert sink.write_batch(sessions(1), sync_source="batch").failed == []
    sink.close()
    timeouts = {"connect": connect, "read": timeout, "write": timeout, "pool": timeout}
    assert seen == [timeouts, timeouts]  # the upsert, then its events


# --- failures: classified, retryable or isolated ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "kind", "requests"),
    [
        pytest.param(503, None, FailureKind.OUTAGE, 1, id="503-gateway"),
        pytest.param(503, "PGRST000", FailureKind.OUTAGE, 1, id="503-db-unreachable"),
        pytest.param(504, "PGRST003", FailureKind.OUTAGE, 1, id="504-pool-timeout"),
        pytest.param(520, None, FailureKind.OUTAGE, 1, id="520-cloudflare"),
        pytest.param(429, None, FailureKind.OUTAGE, 1, id="429-rate-limited"),
        pytest.param(503, "53300", FailureKind.OUTAGE, 1, id="53300-too-many-connections"),
        pytest.param(500, "57014", FailureKind.OUTAGE, 5, id="57014-statement-timeout"),
        pytest.param(413, None, FailureKind.TOO_BIG, 5, id="413-payload-too-large"),
    ],
)
def test_a_failing_target_leaves_every_record_failed_and_retryable(
    sink: SupabaseRestSink,
    server: PostgrestServer,
    database_url: str,
    status: int,
    code: str | None,
    kind: FailureKind,
    requests: int,
) -> None:
    """An outage fails the batch in one request; too-big splits down to single records."""
    server.fail_next(status, code, "injected", times=100)
    batch = sessions(3)
    result = sink.write_batch(batch, sync_source="batch")
    assert result.committed == []
    assert [item_id for item_id, _ in result.failed] == [d.item_id for d in batch]
    assert {(e.kind, e.retryable) for _, e in result.failed} == {(kind, True)}
    assert result.requests == len(server.requests) == requests
    assert rows(database_url) == []


def test_a_statement_timeout_on_a_big_batch_splits_it_and_the_halves_commit(
    sink: SupabaseRestSink, server: PostgrestServer, database_url: str
) -> None:
    """Like Supabase's 8 s statement timeout: only batches over 2 rows are too slow."""
    server.fail_next(
        500,
        "57014",
        "canceling statement due to statement timeout",
        times=100,
        when=lambda request: len(request.body) > 2,
    )
    batch = sessions(8)
    result = sink.write_batch(batch, sync_source="batch")
    assert sorted(result.committed) == [d.item_id for d in batch]
    assert result.failed == []
    upserts, events = upserts_then_events(server)
    assert [len(r.body) for r in upserts] == [8, 4, 2, 2, 4, 2, 2]
    assert [(e["file_count"], e["details"]) for e in events.body] == [
        (8, {"source": "batch", "requests": 7})
    ]
    assert len(rows(database_url)) == 8


def test_a_record_the_database_rejects_is_isolated_and_the_rest_commit(
    sink: SupabaseRestSink, database_url: str
) -> None:
    """jsonb refuses \\u0000 (22P05 -> HTTP 400): that record fails for good, not its batch."""
    good = [d.record for d in sessions(5)]
    bad = with_event_title(make_record(BIG_ID + 99), b"\\u0000")
    result = sink.write_batch(deliver(*good[:2], bad, *good[2:]), sync_source="batch")
    assert sorted(result.committed) == [0, 1, 3, 4, 5]
    [(failed, error)] = result.failed
    assert failed == 2
    assert error.kind is FailureKind.PERMANENT and not error.retryable
    assert "22P05" in str(error) and "HTTP 400" in str(error)
    assert len(rows(database_url)) == 5


def test_a_refused_connection_is_an_outage(database_url: str) -> None:
    sink = SupabaseRestSink(f"http://127.0.0.1:{closed_port()}", SecretStr("k"), timeout=2.0)
    try:
        result = sink.write_batch(sessions(3), sync_source="batch")
    finally:
        sink.close()
    assert result.committed == [] and result.requests == 1
    assert {e.kind for _, e in result.failed} == {FailureKind.OUTAGE}
    assert "ConnectError" in str(result.failed[0][1])


def test_a_hanging_server_times_out_as_an_outage_without_more_requests(
    server: PostgrestServer, database_url: str
) -> None:
    server.delay(HANG)
    sink = SupabaseRestSink(server.url, SecretStr(server.key), timeout=HANG_TIMEOUT)
    try:
        result = sink.write_batch(sessions(3), sync_source="batch")
    finally:
        sink.close()
    assert result.committed == [] and len(server.requests) == 1
    assert {(e.kind, e.retryable) for _, e in result.failed} == {(FailureKind.OUTAGE, True)}
    assert "ReadTimeout" in str(result.failed[0][1])
    assert rows(database_url) == []


def test_a_timeout_on_a_large_batch_splits_it_once(
    server: PostgrestServer, database_url: str
) -> None:
    """A slow answer to a big body may be the body's fault: the halves get one chance."""
    server.delay(HANG, times=1)
    sink = SupabaseRestSink(
        server.url, SecretStr(server.key), timeout=HANG_TIMEOUT, split_on_timeout_bytes=100
    )
    try:
        result = sink.write_batch(sessions(4), sync_source="batch")
    finally:
        sink.close()
    assert len(result.committed) == 4 and result.failed == []
    upserts, _ = upserts_then_events(server)
    assert [len(r.body) for r in upserts] == [4, 2, 2]
    assert len(rows(database_url)) == 4


def test_two_timeouts_in_a_row_are_an_outage_and_stop_the_batch(
    server: PostgrestServer, database_url: str
) -> None:
    """A server that hangs on every request costs two timeouts, not one per split."""
    server.delay(HANG)
    sink = SupabaseRestSink(
        server.url, SecretStr(server.key), timeout=HANG_TIMEOUT, split_on_timeout_bytes=100
    )
    try:
        result = sink.write_batch(sessions(8), sync_source="batch")
    finally:
        sink.close()
    assert [len(r.body) for r in server.requests] == [8, 4]
    assert len(result.failed) == 8
    assert {e.kind for _, e in result.failed} == {FailureKind.OUTAGE}
    assert rows(database_url) == []


def test_a_database_behind_postgrest_that_is_down_is_an_outage(postgres_server_url: str) -> None:
    info = psycopg.conninfo.conninfo_to_dict(postgres_server_url)
    missing = psycopg.conninfo.make_conninfo(**{**info, "dbname": "gfx_no_such_database"})
    with run_postgrest(missing) as server:
        sink = SupabaseRestSink(server.url, SecretStr(server.key), timeout=5.0)
        try:
            result = sink.write_batch(sessions(2), sync_source="batch")
        finally:
            sink.close()
    assert {e.kind for _, e in result.failed} == {FailureKind.OUTAGE}
    assert "PGRST000" in str(result.failed[0][1]) and "HTTP 503" in str(result.failed[0][1])


def test_a_missing_table_is_an_outage_never_dead_lettered(
    sink: SupabaseRestSink, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("drop table gfx_sessions cascade")
    result = sink.write_batch(sessions(2), sync_source="batch")
    assert result.requests == 1
    assert {(e.kind, e.retryable) for _, e in result.failed} == {(FailureKind.OUTAGE, True)}
    assert "PGRST205" in str(result.failed[0][1]) and "migrations" in str(result.failed[0][1])


def test_a_rejected_key_is_an_outage_with_a_clear_message(
    server: PostgrestServer, database_url: str
) -> None:
    """Supabase's gateway answers 401 without a code: the status is what tells."""
    sink = SupabaseRestSink(server.url, SecretStr("not-the-service-key"), timeout=5.0)
    try:
        result = sink.write_batch(sessions(2), sync_source="batch")
    finally:
        sink.close()
    assert result.requests == 1
    [error] = {e for _, e in result.failed}
    assert error.kind is FailureKind.OUTAGE
    assert "HTTP 401" in str(error) and "SUPABASE_SERVICE_KEY" in str(error)
    assert rows(database_url) == []


def test_events_are_best_effort(
    sink: SupabaseRestSink, server: PostgrestServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_next(503, "PGRST000", "database is down")
    with caplog.at_level(logging.WARNING, logger="gfx_sync"):
        sink.record_events([SyncEvent("batch", file_count=1)])  # does not raise
    assert "could not record 1 sync events" in caplog.text and "PGRST000" in caplog.text


# --- the key stays secret --------------------------------------------------------------------


def test_the_service_key_never_appears_in_errors_logs_or_reprs(
    server: PostgrestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Rejected, unreachable, or echoed back by the server: the key is not in any text."""
    wrong_key = "sb_secret_wrong_" + server.key[-12:]
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    for url, key, echo in [
        (server.url, server.key, True),  # the server quotes the key in its error
        (server.url, wrong_key, True),
        (server.url, wrong_key, False),  # 401
        (f"http://127.0.0.1:{closed_port()}", server.key, False),
    ]:
        if echo:
            server.fail_next(400, "22023", f"invalid parameter near {key!r}")
        sink = SupabaseRestSink(url, SecretStr(key), timeout=2.0)
        result = sink.write_batch(sessions(1), sync_source="batch")
        sink.record_events([SyncEvent("batch")])
        sink.close()
        [(_, error)] = result.failed
        for text in (repr(sink), str(sink), str(error), repr(error)):
            assert key not in text
        if echo:
            assert "***" in str(error)
    assert server.key not in caplog.text and wrong_key not in caplog.text
    assert "could not record 1 sync events" in caplog.text  # the warnings were logged


# --- classify_rest_error, one failure class at a time ----------------------------------------


def api_error(code: str | None, message: str = "m") -> APIError:
    return APIError({"code": code, "message": message, "details": None, "hint": None})


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("57014", 500, FailureKind.TOO_SLOW),  # statement timeout: a smaller batch may pass
        ("54000", 500, FailureKind.TOO_BIG),
        (None, 413, FailureKind.TOO_BIG),
        ("413", None, FailureKind.TOO_BIG),  # supabase-py's code for a non-JSON 413 page
        ("PGRST000", 503, FailureKind.OUTAGE),
        ("PGRST001", 503, FailureKind.OUTAGE),
        ("PGRST002", 503, FailureKind.OUTAGE),
        ("PGRST003", 504, FailureKind.OUTAGE),
        ("53300", 503, FailureKind.OUTAGE),  # too many connections
        ("08006", 503, FailureKind.OUTAGE),  # connection failure
        ("40001", 500, FailureKind.OUTAGE),  # serialization failure: retry
        ("25006", 405, FailureKind.OUTAGE),  # read-only transaction (failover)
        (None, 503, FailureKind.OUTAGE),
        ("503", None, FailureKind.OUTAGE),
        (None, 520, FailureKind.OUTAGE),
        (None, 502, FailureKind.OUTAGE),
        (None, 500, FailureKind.OUTAGE),
        (None, 429, FailureKind.OUTAGE),
        (None, 408, FailureKind.OUTAGE),
        (None, 401, FailureKind.OUTAGE),  # bad key: every record alike, never dead-letter
        (None, 403, FailureKind.OUTAGE),
        ("PGRST301", 401, FailureKind.OUTAGE),
        ("42501", 403, FailureKind.OUTAGE),  # permission denied (RLS, grants)
        ("42P01", 404, FailureKind.OUTAGE),  # table missing
        ("PGRST205", 404, FailureKind.OUTAGE),
        ("PGRST204", 400, FailureKind.OUTAGE),  # column missing: migrations not applied
        (None, 404, FailureKind.OUTAGE),  # wrong URL
        (None, None, FailureKind.OUTAGE),  # nothing to go on: do not throw data away
        ("23505", 409, FailureKind.PERMANENT),
        ("23502", 400, FailureKind.PERMANENT),
        ("22P05", 400, FailureKind.PERMANENT),  # jsonb refuses \u0000
        ("22P02", 400, FailureKind.PERMANENT),
        ("21000", 400, FailureKind.PERMANENT),
        ("P0001", 400, FailureKind.PERMANENT),
        ("PGRST102", 400, FailureKind.PERMANENT),
        (None, 400, FailureKind.PERMANENT),
        (None, 422, FailureKind.PERMANENT),
        ("400", None, FailureKind.PERMANENT),
    ],
)
def test_api_errors_are_classified(code: str | None, status: int | None, kind: FailureKind) -> None:
    error = classify_rest_error(api_error(code), status=status)
    assert error.kind is kind
    assert error.retryable is (kind is not FailureKind.PERMANENT)


REQUEST = httpx.Request("POST", "http://supabase.invalid/rest/v1/gfx_sessions")


@pytest.mark.parametrize(
    ("exc", "large", "kind"),
    [
        (httpx.ConnectError("refused", request=REQUEST), False, FailureKind.OUTAGE),
        (httpx.ConnectTimeout("slow", request=REQUEST), True, FailureKind.OUTAGE),
        (httpx.PoolTimeout("pool", request=REQUEST), True, FailureKind.OUTAGE),
        (httpx.ReadError("reset", request=REQUEST), True, FailureKind.OUTAGE),
        (httpx.WriteError("broken pipe", request=REQUEST), True, FailureKind.OUTAGE),
        (httpx.RemoteProtocolError("goaway", request=REQUEST), True, FailureKind.OUTAGE),
        (httpx.ReadTimeout("slow", request=REQUEST), False, FailureKind.OUTAGE),
        (httpx.WriteTimeout("slow", request=REQUEST), False, FailureKind.OUTAGE),
        (httpx.ReadTimeout("slow", request=REQUEST), True, FailureKind.TOO_SLOW),
        (httpx.WriteTimeout("slow", request=REQUEST), True, FailureKind.TOO_SLOW),
        (TypeError("Object of type X is not JSON serializable"), False, FailureKind.PERMANENT),
    ],
)
def test_transport_errors_are_classified(exc: Exception, large: bool, kind: FailureKind) -> None:
    assert classify_rest_error(exc, large=large).kind is kind


# --- wiring and the test server itself --------------------------------------------------------


def test_open_sink_builds_a_working_rest_sink_for_a_supabase_target(
    server: PostgrestServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("SUPABASE_URL", server.url)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", server.key)
    sink = open_sink(load_settings())
    try:
        assert isinstance(sink, SupabaseRestSink)
        assert sink.write_batch(sessions(1), sync_source="batch").failed == []
    finally:
        sink.close()
    assert len(rows(database_url)) == 1


def test_the_test_server_reads_upserts_and_calls_functions_like_postgrest(
    server: PostgrestServer, database_url: str
) -> None:
    """The features a test may lean on: select filters, ignore-duplicates, representation, rpc."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "create function public.hands_of(pc text) returns bigint language sql as "
            "$$ select coalesce(sum(hand_count), 0) from gfx_sessions where gfx_pc_id = pc $$"
        )
    sink = SupabaseRestSink(server.url, SecretStr(server.key), timeout=5.0)
    sink.write_batch(deliver(*(make_record(BIG_ID + i, i + 1) for i in range(4))), sync_source="b")
    sink.close()
    http = httpx.Client(timeout=5.0)
    client = create_client(server.url, server.key, ClientOptions(httpx_client=http))
    table = client.table("gfx_sessions")
    found = (
        table.select("session_id,hand_count,raw_json")
        .eq("gfx_pc_id", "PC01")
        .in_("session_id", [BIG_ID + 1, BIG_ID + 3])
        .order("hand_count", desc=True)
        .limit(5)
        .execute()
        .data
    )
    assert [(r["session_id"], r["hand_count"], r["raw_json"]["ID"]) for r in found] == [
        (BIG_ID + 3, 4, BIG_ID + 3),
        (BIG_ID + 1, 2, BIG_ID + 1),
    ]
    newer = rest_row(make_record(BIG_ID, hands=9, mtime_offset=60), "b")
    ignored = table.upsert(
        newer, on_conflict="site_id,gfx_pc_id,session_id", ignore_duplicates=True
    )
    assert ignored.execute().data == []  # the conflicting row was skipped, nothing returned
    assert rows(database_url)[0][2] == 1
    assert client.rpc("hands_of", {"pc": "PC01"}).execute().data == 10
    with pytest.raises(APIError) as missing:
        client.table("no_such_table").select("*").execute()
    assert missing.value.code == "PGRST205"
    http.close()


def test_ping_says_whether_the_api_and_its_database_answer(
    sink: SupabaseRestSink, empty_database_url: str
) -> None:
    assert sink.ping(timeout=2.0) is True
    down = SupabaseRestSink(f"http://127.0.0.1:{closed_port()}", SecretStr("k"), timeout=2.0)
    assert down.ping(timeout=2.0) is False
    with run_postgrest(empty_database_url) as unmigrated:  # API up, table missing
        rest = SupabaseRestSink(unmigrated.url, SecretStr(unmigrated.key), timeout=2.0)
        assert rest.ping(timeout=2.0) is False
        rest.close()
