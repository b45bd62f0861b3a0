"""A small PostgREST look-alike over a real Postgres, for tests only.

PostgREST cannot run on this machine (no binary, no Docker), so the REST sink is tested through
supabase-py against this Starlette app. It implements only what gfx-sync calls, with PostgREST's
semantics: insert/upsert via `json_populate_recordset` (so Postgres casts the JSON, and jsonb
columns receive objects), merge-/ignore-duplicates, `columns=`, `return=minimal|representation`,
GET with eq/neq/gt/gte/lt/lte/is/in filters, order and limit, RPC with named arguments, and
PostgREST's error bodies and SQLSTATE -> HTTP status mapping. A bad key gets the 401 Supabase's
gateway (not PostgREST) answers: a JSON body without a code.

Fault injection: `fail_next` (answer with an error without touching the database), `delay`
(hang before answering, so client timeouts fire), and `requests` (what the client sent).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import uvicorn
from psycopg import sql
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

RESERVED_PARAMS = {"select", "order", "limit", "offset", "columns", "on_conflict"}
COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
EXACT_STATUS = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "53400": 500,
    "P0001": 400,
    "42883": 404,
    "42P01": 404,
    "42P17": 500,
    "42501": 403,  # 401 for an anonymous role; the service role is not anonymous
}
PREFIX_STATUS = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
    "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500,
    "F0": 500, "HV": 500, "P0": 500, "XX": 500,
}  # fmt: skip


def http_status(sqlstate: str) -> int:
    """PostgREST's table (docs.postgrest.org, errors): anything unlisted is a 400."""
    return EXACT_STATUS.get(sqlstate) or PREFIX_STATUS.get(sqlstate[:2], 400)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None


@dataclass(slots=True)
class _Fault:
    status: int
    body: dict[str, Any]
    remaining: int
    when: Callable[[RecordedRequest], bool] | None


class PostgrestError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, "details": details, "hint": None}


@dataclass
class PostgrestServer:
    database_url: str
    key: str = field(repr=False)
    statement_timeout_ms: int | None = None
    role: str | None = "service_role"  # the role the key's JWT names; None: the URL's user
    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list, repr=False)
    _faults: list[_Fault] = field(default_factory=list, repr=False)
    _delay: tuple[float, int | None] = field(default=(0.0, None), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closing: threading.Event = field(default_factory=threading.Event, repr=False)

    def fail_next(
        self,
        status: int,
        code: str | None = None,
        message: str = "injected failure",
        *,
        times: int = 1,
        when: Callable[[RecordedRequest], bool] | None = None,
    ) -> None:
        """Answer the next `times` requests (matching `when`) with this error, DB untouched.

        `code=None` sends a body without a code, as a gateway or proxy does.
        """
        body: dict[str, Any] = {"message": message}
        if code is not None:
            body |= {"code": code, "details": None, "hint": None}
        with self._lock:
            self._faults.append(_Fault(status, body, times, when))

    def delay(self, seconds: float, *, times: int | None = None) -> None:
        """Hang `seconds` before answering the next `times` requests (all, if None).

        A request whose client gave up meanwhile is dropped, not run: tests see no late commit.
        """
        with self._lock:
            self._delay = (seconds, times)

    # --- request handling --------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body, invalid_json = (orjson.loads(raw) if raw else None), False
        except orjson.JSONDecodeError:
            body, invalid_json = None, True
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers=dict(request.headers),
            body=body,
        )
        self.requests.append(recorded)
        if await self._hang_if_asked() and await request.is_disconnected():
            return Response(status_code=499)  # the client gave up meanwhile: never run it
        fault = self._take_fault(recorded)
        if fault is not None:
            return _json(fault.status, fault.body)
        key_ok = request.headers.get("apikey") == self.key
        if not key_ok or request.headers.get("authorization") != f"Bearer {self.key}":
            return _json(401, {"message": "Invalid API key", "hint": "Double check your key."})
        if invalid_json:
            return _json(400, PostgrestError(400, "PGRST102", "Empty or invalid json").body)
        try:
            status, payload = await run_in_threadpool(self._run, request, body)
        except PostgrestError as exc:
            return _json(exc.status, exc.body)
        if payload is None:
            return Response(status_code=status)
        return Response(payload, status_code=status, media_type="application/json")

    def _run(self, request: Request, body: Any) -> tuple[int, bytes | None]:
        """Whole request in one transaction; SQL errors become PostgREST error bodies."""
        params = request.path_params
        try:
            conn = psycopg.connect(self.database_url, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise PostgrestError(
                503,
                "PGRST000",
                "Could not connect with the database due to an incorrect db-uri "
                "or due to the database not running.",
                str(exc).strip(),
            ) from None
        try:
            with conn, conn.transaction():
                if self.role is not None:  # as PostgREST: the JWT role, so RLS applies
                    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(self.role)))
                if self.statement_timeout_ms is not None:
                    conn.execute(f"set local statement_timeout = {int(self.statement_timeout_ms)}")
                if "function" in params:
                    return self._rpc(conn, params["function"], body or {})
                if request.method == "GET":
                    return 200, self._select(conn, params["table"], request)
                return self._insert(conn, params["table"], request, body)
        except psycopg.Error as exc:
            sqlstate = exc.sqlstate or "XX000"
            diag = exc.diag
            error = PostgrestError(
                http_status(sqlstate),
                sqlstate,
                diag.message_primary or str(exc).strip(),
                diag.message_detail,
            )
            error.body["hint"] = diag.message_hint
            raise error from None

    def _insert(
        self, conn: psycopg.Connection, table: str, request: Request, body: Any
    ) -> tuple[int, bytes | None]:
        rows = body if isinstance(body, list) else [body]
        if not all(isinstance(r, dict) for r in rows):
            raise PostgrestError(400, "PGRST102", "Empty or invalid json")
        known = _columns(conn, table)
        if "columns" in request.query_params:
            columns = [c.strip().strip('"') for c in request.query_params["columns"].split(",")]
        else:
            columns = list(rows[0]) if rows else []
            if any(set(r) != set(columns) for r in rows):
                raise PostgrestError(400, "PGRST102", "All object keys must match")
        _check_columns(table, columns, known)
        prefer = _prefer(request)
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))
        query = sql.SQL(
            "insert into public.{t} ({cols}) select {cols} "
            "from json_populate_recordset(null::public.{t}, %s::json) _"
        ).format(t=sql.Identifier(table), cols=cols)
        resolution = prefer.get("resolution")
        if resolution in ("merge-duplicates", "ignore-duplicates"):
            if "on_conflict" in request.query_params:
                target = [c.strip() for c in request.query_params["on_conflict"].split(",")]
                _check_columns(table, target, known)
            else:
                target = _primary_key(conn, table)
            conflict = sql.SQL(", ").join(map(sql.Identifier, target))
            if resolution == "ignore-duplicates":
                action = sql.SQL("do nothing")
            else:
                action = sql.SQL("do update set ") + sql.SQL(", ").join(
                    sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in columns
                )
            query += sql.SQL(" on conflict ({}) ").format(conflict) + action
        data = orjson.dumps(rows).decode()
        if prefer.get("return") == "representation":
            wrapped = sql.SQL(
                "with ins as ({q} returning *) select coalesce(json_agg(ins), '[]')::text from ins"
            ).format(q=query)
            return 201, _fetch_text(conn, wrapped, [data]).encode()
        conn.execute(query, [data])
        return 201, None

    def _select(self, conn: psycopg.Connection, table: str, request: Request) -> bytes:
        known = _columns(conn, table)
        select = request.query_params.get("select", "*")
        names = [c.strip().strip('"') for c in select.split(",")] if select != "*" else []
        _check_columns(table, names, known)
        chosen = sql.SQL(", ").join(map(sql.Identifier, names)) if names else sql.SQL("*")
        where: list[sql.Composable] = []
        values: list[Any] = []
        for name, value in request.query_params.multi_items():
            if name in RESERVED_PARAMS:
                continue
            _check_columns(table, [name], known)
            clause, args = _filter(name, value)
            where.append(clause)
            values.extend(args)
        query = sql.SQL("select {cols} from public.{t}").format(
            cols=chosen, t=sql.Identifier(table)
        )
        if where:
            query += sql.SQL(" where ") + sql.SQL(" and ").join(where)
        if "order" in request.query_params:
            query += sql.SQL(" order by ") + sql.SQL(", ").join(
                _order(term, table, known) for term in request.query_params["order"].split(",")
            )
        for clause in ("limit", "offset"):
            if clause in request.query_params:
                query += sql.SQL(f" {clause} ") + sql.Literal(int(request.query_params[clause]))
        wrapped = sql.SQL("select coalesce(json_agg(r), '[]')::text from ({q}) r").format(q=query)
        return _fetch_text(conn, wrapped, values).encode()

    def _rpc(
        self, conn: psycopg.Connection, function: str, args: dict[str, Any]
    ) -> tuple[int, bytes | None]:
        found = conn.execute(
            "select p.proretset, t.typtype, t.typname from pg_proc p "
            "join pg_namespace n on n.oid = p.pronamespace join pg_type t on t.oid = p.prorettype "
            "where n.nspname = 'public' and p.proname = %s",
            [function],
        ).fetchone()
        if found is None:
            raise PostgrestError(
                404,
                "PGRST202",
                f"Could not find the function public.{function}"
                f"({', '.join(sorted(args))}) in the schema cache",
            )
        returns_set, type_kind, type_name = found
        call = sql.SQL("public.{f}({a})").format(
            f=sql.Identifier(function),
            a=sql.SQL(", ").join(sql.SQL("{} => %s").format(sql.Identifier(name)) for name in args),
        )
        values = [_as_text(v) for v in args.values()]  # str binds as `unknown`: Postgres casts
        if type_name == "void":
            conn.execute(sql.SQL("select {}").format(call), values)
            return 204, None
        if returns_set or type_kind == "c":
            text = _fetch_text(
                conn,
                sql.SQL("select coalesce(json_agg(r), '[]')::text from {} r").format(call),
                values,
            )
            rows = orjson.loads(text)
            return 200, orjson.dumps(rows if returns_set else (rows[0] if rows else None))
        return 200, _fetch_text(conn, sql.SQL("select to_json({})::text").format(call), values)

    # --- faults ------------------------------------------------------------------------------

    def _take_fault(self, request: RecordedRequest) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.when is None or fault.when(request):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    async def _hang_if_asked(self) -> bool:
        with self._lock:
            seconds, times = self._delay
            if seconds <= 0:
                return False
            if times is not None:
                self._delay = (seconds if times > 1 else 0.0, times - 1)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._closing.is_set():
            await asyncio.sleep(0.02)
        return True


def _json(status: int, body: dict[str, Any]) -> Response:
    headers = {"Proxy-Status": f"PostgREST; error={body['code']}"} if body.get("code") else None
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _prefer(request: Request) -> dict[str, str]:
    prefer: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for item in header.split(","):
            name, _, value = item.strip().partition("=")
            prefer[name] = value
    return prefer


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    """From the catalog, whatever the request's role may do: PostgREST's schema cache is built
    by its own connection role, so a role without privileges gets 42501, not "no such table"."""
    names = [
        row[0]
        for row in conn.execute(
            "select attname from pg_attribute "
            "where attrelid = to_regclass(format('public.%%I', %s::text)) "
            "and attnum > 0 and not attisdropped order by attnum",
            [table],
        )
    ]
    if not names:
        raise PostgrestError(
            404, "PGRST205", f"Could not find the table 'public.{table}' in the schema cache"
        )
    return names


def _check_columns(table: str, columns: list[str], known: list[str]) -> None:
    for column in columns:
        if column not in known:
            raise PostgrestError(
                400,
                "PGRST204",
                f"Could not find the '{column}' column of '{table}' in the schema cache",
            )


def _primary_key(conn: psycopg.Connection, table: str) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "select a.attname from pg_index i join pg_attribute a "
            "on a.attrelid = i.indrelid and a.attnum = any(i.indkey) "
            "where i.indrelid = to_regclass(format('public.%%I', %s::text)) and i.indisprimary",
            [table],
        )
    ]


def _filter(column: str, expression: str) -> tuple[sql.Composable, list[Any]]:
    operator, _, value = expression.partition(".")
    col = sql.Identifier(column)
    if operator in COMPARISONS:
        return sql.SQL("{} " + COMPARISONS[operator] + " %s").format(col), [value]
    if operator == "is" and value in ("null", "true", "false"):
        return sql.SQL("{} is " + value).format(col), []
    if operator == "in" and value.startswith("(") and value.endswith(")"):
        items = _split_list(value[1:-1])
        if not items:
            return sql.SQL("false"), []
        marks = sql.SQL(", ").join(sql.Placeholder() for _ in items)
        return sql.SQL("{} in ({})").format(col, marks), items
    raise PostgrestError(400, "PGRST100", f'"failed to parse filter ({expression})"')


def _split_list(text: str) -> list[str]:
    """`a,"b,c",d` -> [a, b,c, d]: PostgREST's quoting for values holding commas."""
    items, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += char
    if current or items:
        items.append(current)
    return items


def _order(term: str, table: str, known: list[str]) -> sql.Composable:
    column, *modifiers = term.strip().split(".")
    _check_columns(table, [column], known)
    words = {"asc": "asc", "desc": "desc", "nullsfirst": "nulls first", "nullslast": "nulls last"}
    if any(m not in words for m in modifiers):
        raise PostgrestError(400, "PGRST100", f'"failed to parse order ({term})"')
    return sql.SQL(" ").join([sql.Identifier(column), *(sql.SQL(words[m]) for m in modifiers)])


def _fetch_text(conn: psycopg.Connection, query: sql.Composable, values: list[Any]) -> str:
    row = conn.execute(query, values).fetchone()
    return row[0] if row and row[0] is not None else "null"


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


@contextmanager
def run_postgrest(
    database_url: str,
    *,
    key: str | None = None,
    statement_timeout_ms: int | None = None,
    role: str | None = "service_role",
    port: int = 0,
) -> Iterator[PostgrestServer]:
    """Serve on 127.0.0.1 (`port`, or an ephemeral one) in a thread;
    `create_client(server.url, key)` works.

    Each request runs as `role` (`SET LOCAL ROLE`), as PostgREST does with the key's JWT role:
    Supabase's service key is `service_role`, so the REST path is tested under RLS.
    """
    server = PostgrestServer(
        database_url,
        key or f"sb_secret_test_{secrets.token_urlsafe(16)}",
        statement_timeout_ms,
        role,
    )
    app = Starlette(
        routes=[
            Route("/rest/v1/rpc/{function}", server.handle, methods=["POST"]),
            Route("/rest/v1/{table}", server.handle, methods=["GET", "POST"]),
        ]
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
    )
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not runner.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test PostgREST server did not start")
        time.sleep(0.01)
    try:
        yield server
    finally:
        server._closing.set()
        runner.should_exit = True
        thread.join(timeout=10)
        sock.close()
