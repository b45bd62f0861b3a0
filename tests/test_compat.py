"""psycopg's internals behind a version check: the one-query COPY and its public-API stand-in
give the same outcome on a real Postgres, and an untested psycopg gets the stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import psycopg
import pytest

from gfx_sync import compat

Copy = Callable[[psycopg.Connection, str, Iterable[bytes], str], None]
BOTH = pytest.mark.parametrize(
    "copy", [compat._copy_in_one_query, compat._copy_in_steps], ids=["one query", "steps"]
)
HEAD = (
    "begin; create temporary table incoming (n int, t text) on commit drop; "
    "copy incoming (n, t) from stdin"
)
TAIL = "insert into kept select n, t from incoming; commit"


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("create table kept (n int primary key, t text)")
        yield connection


def kept(conn: psycopg.Connection) -> list[tuple[int, str]]:
    return conn.execute("select n, t from kept order by n").fetchall()


def test_the_installed_psycopg_is_a_tested_one() -> None:
    assert compat.one_query_copy_unsupported() is None


def test_an_untested_psycopg_or_a_moved_internal_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (
        compat.one_query_copy_unsupported("3.4.0")
    ) == "psycopg 3.4.0 is not a version gfx-sync was tested with (3.3.x)"
    moved = (*compat.PSYCOPG_INTERNALS, "psycopg.generators:no_such_generator")
    monkeypatch.setattr(compat, "PSYCOPG_INTERNALS", moved)
    assert compat.one_query_copy_unsupported() == (
        f"psycopg {psycopg.__version__} has no psycopg.generators:no_such_generator"
    )


def test_an_untested_psycopg_sends_batches_through_the_public_api(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    compat._copy_implementation.cache_clear()
    monkeypatch.setattr(compat, "TESTED_PSYCOPG_SERIES", ("9.9.",))
    try:
        assert compat._copy_implementation() is compat._copy_in_steps
    finally:
        compat._copy_implementation.cache_clear()
    assert "is not a version gfx-sync was tested with" in caplog.text
    assert "public API" in caplog.text


@BOTH
def test_rows_then_the_tail_commit_together(conn: psycopg.Connection, copy: Copy) -> None:
    rows = [f"{n}\tsession {n}\n".encode() for n in range(3000)]  # several COPY chunks
    copy(conn, HEAD, rows, TAIL)
    assert len(kept(conn)) == 3000 and kept(conn)[-1] == (2999, "session 2999")


@BOTH
def test_a_row_that_fails_to_format_stops_the_copy_and_nothing_commits(
    conn: psycopg.Connection, copy: Copy
) -> None:
    def rows() -> Iterator[bytes]:
        yield b"1\tfine\n"
        raise ValueError("cannot format row 2")

    with pytest.raises(ValueError, match="row 2"):
        copy(conn, HEAD, rows(), TAIL)
    conn.rollback()
    assert kept(conn) == []


@BOTH
def test_a_failing_statement_raises_with_its_sqlstate(conn: psycopg.Connection, copy: Copy) -> None:
    copy(conn, HEAD, [b"1\tfirst\n"], TAIL)
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        copy(conn, HEAD, [b"1\tagain\n"], TAIL)
    assert caught.value.sqlstate == "23505"
    conn.rollback()
    assert kept(conn) == [(1, "first")]


def test_the_console_ticks_once_a_second_only_on_a_tested_uvicorn() -> None:
    """The override serves as uvicorn's own Server does (the console tests run on it); on
    an untested uvicorn, uvicorn's own Server is used as it is."""
    import asyncio
    import socket

    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app = Starlette(routes=[Route("/", lambda _: PlainTextResponse("ok"))])
    config = uvicorn.Config(app, log_config=None, lifespan="off")
    assert type(compat.quiet_uvicorn_server(config, installed="0.99.0")) is uvicorn.Server
    server = compat.quiet_uvicorn_server(config)
    assert isinstance(server, uvicorn.Server) and type(server) is not uvicorn.Server

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))

    async def serve_then_stop() -> tuple[str, str | None]:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{sock.getsockname()[1]}/")
        server.should_exit = True
        await task  # returns within a tick
        return response.text, response.headers.get("date")

    text, date = asyncio.run(serve_then_stop())
    assert text == "ok" and date  # the Date header is kept fresh by the tick
