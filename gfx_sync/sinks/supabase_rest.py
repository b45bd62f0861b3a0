"""Supabase sink: upsert a batch through supabase-py (PostgREST), classify what went wrong.

The newest-wins rule lives in the database (BEFORE UPDATE trigger), so PostgREST's plain
merge-duplicates upsert has the same semantics as the Postgres sink's INSERT ... ON CONFLICT.

Why our own httpx client: supabase-py's default is 120 s for every phase, and its
`postgrest_client_timeout` option goes through a deprecated path that truncates floats with
`int()` (0.5 s would become 0). Passing `ClientOptions(httpx_client=...)` is the supported way,
and it also lets a response hook note the HTTP status, which `APIError` does not carry.

Timeouts: a read/write timeout on a request over `split_on_timeout_bytes` holding several
records is TOO_SLOW (a slow server may take the halves); any other timeout, or a second one in a
row within one batch, is OUTAGE. After an OUTAGE the rest of that batch fails at once without
more requests, so a hanging server costs at most two timeouts per batch, not one per split.
A timed-out upsert may still have committed: that is harmless, re-sending is idempotent.

Serialization cost, measured for a 16 MB batch (9 synth sessions, 17.9 MB body): orjson.loads
of raw_json ~90 ms, supabase-py's stdlib `json.dumps` of the body ~145 ms, ~90 MB peak memory.
supabase-py always re-encodes the body itself (no raw-JSON passthrough), so sending
pre-serialized bytes would mean bypassing `upsert()`; a quarter second per 16 MB is small next
to uploading 16 MB and Postgres parsing it into jsonb (~27 MB/s), so it stays simple.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod
from pydantic import SecretStr
from supabase import Client, ClientOptions, create_client

from gfx_sync.pokergfx import SessionRecord
from gfx_sync.schema import (
    CONFLICT_COLUMNS,
    EVENTS_TABLE,
    SESSIONS_TABLE,
    iso,
    session_row,
)
from gfx_sync.settings import DEFAULT_SITE
from gfx_sync.sinks.base import (
    Delivery,
    FailureKind,
    SinkError,
    SyncEvent,
    WriteResult,
    events_left_after,
    write_batch_splitting,
)
from gfx_sync.sinks.postgres import (
    OUTAGE_SQLSTATE_CLASSES,
    PERMISSION_HINT,
    PERMISSION_SQLSTATE,
    TOO_BIG_SQLSTATES,
    TOO_SLOW_SQLSTATES,
)

log = logging.getLogger(__name__)

SPLIT_ON_TIMEOUT_BYTES = 1024 * 1024
MAX_DETAIL_CHARS = 300
# PostgREST's own codes that mean "this target is down or misconfigured", not "bad data".
PGRST_OUTAGE = {
    "PGRST000": "PostgREST cannot connect to the database",
    "PGRST001": "PostgREST cannot connect to the database (internal error)",
    "PGRST002": "PostgREST cannot build its schema cache",
    "PGRST003": "PostgREST timed out waiting for a pool connection",
    "PGRST106": "schema not exposed by the Data API",
    "PGRST202": "function not found: apply supabase/migrations",
    "PGRST204": "column not found in the schema cache: apply supabase/migrations",
    "PGRST205": "table not found in the schema cache: apply supabase/migrations",
    "PGRST301": "the service key was rejected (JWT)",
    "PGRST302": "the service key was rejected (no credentials)",
    "PGRST303": "the service key was rejected (JWT claims)",
}
RETRYABLE_STATUSES = {408, 425, 429}


def classify_rest_error(
    exc: BaseException, *, status: int | None = None, large: bool = False
) -> SinkError:
    """Outage (retry later, whole batch), too big (split), or data the database rejects.

    `status` is the HTTP status when known (APIError drops it); `large` says the request held
    several records and many bytes, so a read/write timeout may be the server being slow on it.
    Configuration problems (bad key, missing table) are OUTAGE: they hit every record alike and
    must never dead-letter data.
    """
    if isinstance(exc, APIError):
        return _classify_api_error(exc, status)
    name = type(exc).__name__
    text = str(exc).strip() or "no message"
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout) and large:
        return SinkError(FailureKind.TOO_SLOW, f"[timeout] {name} on a large batch: {text}")
    if isinstance(exc, httpx.TimeoutException):
        return SinkError(FailureKind.OUTAGE, f"[timeout] {name}: {text}")
    if isinstance(exc, httpx.HTTPError):  # connect, network, protocol, proxy errors
        return SinkError(FailureKind.OUTAGE, f"[connection] {name}: {text}")
    if isinstance(exc, TypeError | ValueError):  # could not encode the body: never sent
        return SinkError(FailureKind.PERMANENT, f"[client] {name}: {text}")
    return SinkError(FailureKind.OUTAGE, f"[unexpected] {name}: {text}")


def _classify_api_error(exc: APIError, status: int | None) -> SinkError:
    code = (exc.code or "").strip()
    if status is None and len(code) == 3 and code.isdigit():
        status = int(code)  # supabase-py's fallback for a non-JSON error body
    message = _describe(exc, code, status)
    if status == 413 or code in TOO_BIG_SQLSTATES:
        return SinkError(FailureKind.TOO_BIG, message)
    if code in TOO_SLOW_SQLSTATES:
        return SinkError(FailureKind.TOO_SLOW, message)
    if code in PGRST_OUTAGE:
        return SinkError(FailureKind.OUTAGE, f"{message} ({PGRST_OUTAGE[code]})")
    if _is_sqlstate(code):
        if code == "42P01":
            return SinkError(FailureKind.OUTAGE, f"{message} (apply supabase/migrations)")
        if code == PERMISSION_SQLSTATE:
            return SinkError(FailureKind.OUTAGE, f"{message} ({PERMISSION_HINT})")
        if code.startswith(OUTAGE_SQLSTATE_CLASSES):
            return SinkError(FailureKind.OUTAGE, message)
        return SinkError(FailureKind.PERMANENT, message)
    if status in (401, 403):
        return SinkError(FailureKind.OUTAGE, f"{message} (check SUPABASE_SERVICE_KEY)")
    if status == 404:
        return SinkError(FailureKind.OUTAGE, f"{message} (check SUPABASE_URL and migrations)")
    if status is None or status >= 500 or status in RETRYABLE_STATUSES:
        return SinkError(FailureKind.OUTAGE, message)
    return SinkError(FailureKind.PERMANENT, message)


def _is_sqlstate(code: str) -> bool:
    return len(code) == 5 and code.isalnum() and code == code.upper()


def _describe(exc: APIError, code: str, status: int | None) -> str:
    parts = [f"[{code or 'no code'}] APIError: {exc.message or 'no message'}"]
    if exc.details:
        parts.append(f"details: {str(exc.details)[:MAX_DETAIL_CHARS]}")
    if exc.hint:
        parts.append(f"hint: {str(exc.hint)[:MAX_DETAIL_CHARS]}")
    if status is not None:
        parts.append(f"HTTP {status}")
    return "; ".join(parts)


def rest_row(record: SessionRecord, sync_source: str, site: str = DEFAULT_SITE) -> dict[str, Any]:
    """A `gfx_sessions` row as JSON values: raw_json parsed, so jsonb stores an object."""
    row = session_row(record, sync_source, site)
    row["raw_json"] = orjson.loads(record.raw_json)
    row["file_mtime"] = iso(record.file_mtime)
    row["session_created_at"] = iso(record.session_created_at)
    return row


@dataclass(slots=True)
class _BatchState:
    """Per write_batch: an OUTAGE stops further requests; timeouts in a row become an OUTAGE."""

    outage: SinkError | None = None
    timeouts_in_a_row: int = 0


class SupabaseRestSink:
    name = "supabase"

    def __init__(
        self,
        url: str,
        key: SecretStr | str,
        *,
        timeout: float = 15.0,
        transport: httpx.BaseTransport | None = None,
        split_on_timeout_bytes: int = SPLIT_ON_TIMEOUT_BYTES,
        site: str = DEFAULT_SITE,
    ) -> None:
        self._url = url
        self.site = site  # every row written (sessions, sync events) carries it
        self._key = key if isinstance(key, SecretStr) else SecretStr(key)
        self._timeout = timeout
        self._split_on_timeout_bytes = split_on_timeout_bytes
        self._lock = threading.Lock()
        self._seen = threading.local()  # the last response's HTTP status, per thread
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            http2=transport is None,  # as supabase-py's own client; h2 only over TLS anyway
            follow_redirects=True,
            event_hooks={"response": [self._note_status]},
        )
        self._client: Client = create_client(
            url,
            self._key.get_secret_value(),
            options=ClientOptions(httpx_client=self._http, postgrest_client_retry=False),
        )

    def __repr__(self) -> str:
        return f"SupabaseRestSink(url={self._url!r}, timeout={self._timeout!r}, site={self.site!r})"

    def write_batch(
        self,
        deliveries: Sequence[Delivery],
        *,
        sync_source: str,
        events: Sequence[SyncEvent] = (),
    ) -> WriteResult:
        """One request at a time (a batch is one request already). `events` cannot share a
        REST request with the upsert: they are recorded after it, with the "batch" event."""
        state = _BatchState()
        try:
            with self._lock:
                result = write_batch_splitting(
                    deliveries, lambda batch: self._send(batch, sync_source, state)
                )
        except Exception:
            self.record_events(events)  # nothing is known to have committed
            raise
        self.record_events(events_left_after(events, result, sync_source))
        return result

    def record_events(self, events: Sequence[SyncEvent]) -> None:
        if not events:
            return
        rows = [
            {
                "site_id": self.site,
                "event_type": e.event_type,
                "gfx_pc_id": e.gfx_pc_id,
                "file_path": e.file_path,
                "session_id": e.session_id,
                "file_count": e.file_count,
                "error": e.error,
                "details": orjson.loads(orjson.dumps(e.details, default=str)),
            }
            for e in events
        ]
        with self._lock:
            try:
                self._execute(
                    self._client.table(EVENTS_TABLE).insert(rows, returning=ReturnMethod.minimal)
                )
            except Exception as exc:
                error = classify_rest_error(exc, status=self._last_status())
                log.warning("could not record %d sync events: %s", len(events), self._redact(error))

    def ping(self, *, timeout: float) -> bool:
        """One small read through PostgREST into the table: the API and the database answer.

        `timeout` is not applied: the client's own (request_timeout) bounds the request."""
        with self._lock:
            try:
                self._execute(self._client.table(SESSIONS_TABLE).select("session_id").limit(1))
                return True
            except Exception as exc:  # any failure means "not now"; never raise from a probe
                log.debug("ping: %s", self._redact(classify_rest_error(exc)))
                return False

    def close(self) -> None:
        with self._lock:
            self._http.close()

    def _send(self, records: Sequence[SessionRecord], sync_source: str, state: _BatchState) -> None:
        if state.outage is not None:
            raise state.outage  # the target is down: do not knock again within this batch
        large = (
            len(records) > 1
            and state.timeouts_in_a_row == 0
            and sum(r.file_size for r in records) > self._split_on_timeout_bytes
        )
        try:
            rows = [rest_row(r, sync_source, self.site) for r in records]
            self._execute(
                self._client.table(SESSIONS_TABLE).upsert(
                    rows,
                    on_conflict=",".join(CONFLICT_COLUMNS),
                    returning=ReturnMethod.minimal,
                )
            )
        except (APIError, httpx.HTTPError, TypeError, ValueError) as exc:
            if isinstance(exc, httpx.TimeoutException):
                state.timeouts_in_a_row += 1
            error = classify_rest_error(exc, status=self._last_status(), large=large)
            error = SinkError(error.kind, self._redact(error))
            if error.kind is FailureKind.OUTAGE:
                state.outage = error
            raise error from None  # the httpx exception holds the request and its headers
        state.timeouts_in_a_row = 0

    def _execute(self, query: Any) -> None:
        self._seen.status = None
        query.execute()

    def _note_status(self, response: httpx.Response) -> None:
        self._seen.status = response.status_code

    def _last_status(self) -> int | None:
        return getattr(self._seen, "status", None)

    def _redact(self, error: BaseException) -> str:
        """Belt and braces: a server or proxy that echoes the key must not put it in our logs."""
        return str(error).replace(self._key.get_secret_value(), "***")
