"""psycopg's internals, in one place, behind a version check (the core's counterpart of
`deployments/compat.py`, which holds Prefect's; the core may not import from there).

The Postgres sink sends a batch as ONE simple-protocol query: `BEGIN; ...; COPY ... FROM
STDIN`, the rows, then the merge and `COMMIT`, so the server runs the statements after the
COPY as soon as the data ends: one round trip a batch. psycopg's public `cursor.copy()` takes a
lone COPY only (start, data, end, then the next statement, each waiting for the server), so
this drives the connection with psycopg's generators, its wait loop and its lock, which are
not public API. On a psycopg version it was not tested with (or if any of those moved),
`copy_then` sends the same statements through the public API instead: the same outcome, in
three round trips, with a warning at first use.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psycopg
from psycopg import pq

log = logging.getLogger(__name__)

# psycopg releases the one-query COPY was tested with (pyproject pins psycopg>=3.3,<3.4).
TESTED_PSYCOPG_SERIES = ("3.3.",)
# Every private name it uses, as "module:attribute": checked before the first batch (and
# `Connection.lock`, an attribute of each connection, not of the class).
PSYCOPG_INTERNALS = (
    "psycopg.generators:execute",
    "psycopg.generators:copy_to",
    "psycopg.generators:fetch_many",
    "psycopg.waiting:Wait",
    "psycopg:Connection.wait",
)
COPY_CHUNK = 128 * 1024  # bytes handed to libpq at a time (psycopg's own COPY uses the same)


def one_query_copy_unsupported(installed: str | None = None) -> str | None:
    """Why the one-query COPY cannot be used with this psycopg (`installed`: its version,
    None: the installed one), or None when it can."""
    try:
        found = installed or version("psycopg")
    except PackageNotFoundError:
        return "psycopg's version is unknown"
    if not found.startswith(TESTED_PSYCOPG_SERIES):
        tested = ", ".join(f"{series}x" for series in TESTED_PSYCOPG_SERIES)
        return f"psycopg {found} is not a version gfx-sync was tested with ({tested})"
    for internal in PSYCOPG_INTERNALS:
        if _resolve(internal) is None:
            return f"psycopg {found} has no {internal}"
    return None


def _resolve(internal: str) -> object | None:
    module_name, _, attributes = internal.partition(":")
    try:
        found: object = __import__(module_name, fromlist=["_"])
        for attribute in attributes.split("."):
            found = getattr(found, attribute)
    except (ImportError, AttributeError):
        return None
    return found


@functools.cache
def _copy_implementation() -> Callable[[psycopg.Connection, str, Iterable[bytes], str], None]:
    problem = one_query_copy_unsupported()
    if problem is None:
        return _copy_in_one_query
    log.warning("%s: batches are sent through psycopg's public API (more round trips)", problem)
    return _copy_in_steps


def copy_then(conn: psycopg.Connection, head: str, rows: Iterable[bytes], tail: str) -> None:
    """Run `head` (statements ending in `COPY ... FROM STDIN`), send `rows` (the COPY's data,
    in pieces of any size: rows or parts of rows), then run `tail`: in one round trip where
    psycopg allows it, else in three.

    Raises the first failing statement's error as psycopg would (with its SQLSTATE); a row
    that cannot be formatted (any exception from `rows`) fails the COPY before its data ends,
    so nothing after it runs, and is re-raised.
    """
    _copy_implementation()(conn, head, rows, tail)


def _copy_in_steps(conn: psycopg.Connection, head: str, rows: Iterable[bytes], tail: str) -> None:
    """Public API only: the statements before the COPY, the COPY, then `tail`. Without
    parameters psycopg sends each as a simple query, so several statements may go at once."""
    before, _, copy = head.rpartition("; ")
    if before:
        conn.execute(before)  # type: ignore[arg-type]
    with conn.cursor() as cursor, cursor.copy(copy) as data:  # type: ignore[arg-type]
        for chunk in _chunks(rows):
            data.write(chunk)
    conn.execute(tail)  # type: ignore[arg-type]


def _copy_in_one_query(
    conn: psycopg.Connection, head: str, rows: Iterable[bytes], tail: str
) -> None:
    from psycopg import generators

    pgconn = conn.pgconn
    encoding = conn.info.encoding
    with conn.lock:
        pgconn.send_query(f"{head}; {tail}".encode(encoding))
        started = conn.wait(generators.execute(pgconn))
        if not started or started[-1].status != pq.ExecStatus.COPY_IN:
            _raise_first_error(started, encoding)
            raise psycopg.ProgrammingError(f"no COPY in: {head[:80]!r}")
        try:
            for chunk in _chunks(rows):
                conn.wait(generators.copy_to(pgconn, chunk))
        except BaseException as exc:
            with contextlib.suppress(psycopg.Error):  # the server's answer: "COPY canceled"
                message = f"error from Python: {type(exc).__qualname__}".encode()
                conn.wait(_copy_end(pgconn, message))
            raise
        _raise_first_error(conn.wait(_copy_end(pgconn, None)), encoding)


def _chunks(pieces: Iterable[bytes]) -> Iterator[bytes | memoryview]:
    """The pieces of COPY data in chunks of about COPY_CHUNK bytes (one libpq call each):
    small pieces joined, a big one (a big file's JSON) sent from where it is, never copied."""
    chunk = bytearray()
    for piece in pieces:
        if len(piece) >= COPY_CHUNK:
            if chunk:
                yield bytes(chunk)
                chunk.clear()
            view = memoryview(piece)
            for start in range(0, len(view), COPY_CHUNK):
                yield view[start : start + COPY_CHUNK]
            continue
        chunk += piece
        if len(chunk) >= COPY_CHUNK:
            yield bytes(chunk)
            chunk.clear()
    if chunk:
        yield bytes(chunk)


def _copy_end(pgconn: Any, error: bytes | None) -> Any:
    """A psycopg generator: end (or fail) the COPY data and read every result left, the
    COPY's and the tail's."""
    from psycopg import generators
    from psycopg.waiting import Wait

    while pgconn.put_copy_end(error) == 0:
        while not (yield Wait.W):
            continue
    while True:
        while not (yield Wait.W):
            continue
        if pgconn.flush() == 0:
            break
    return (yield from generators.fetch_many(pgconn))


def _raise_first_error(results: Sequence[Any], encoding: str) -> None:
    for result in results:
        if result.status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.NONFATAL_ERROR):
            raise psycopg.errors.error_from_result(result, encoding=encoding)


# -- uvicorn ------------------------------------------------------------------------------
# uvicorn's serve loop wakes ten times a second (`Server.main_loop`: refresh the Date header,
# notice `should_exit`). The console is idle nearly all the time, so it ticks once a second
# instead, overriding that method, which is not documented API: only on the uvicorn series
# this was tested with; on another, uvicorn's own Server runs as it is.
TESTED_UVICORN_SERIES = ("0.55.",)
CONSOLE_TICK_SECONDS = 1.0


def quiet_uvicorn_server(config: Any, installed: str | None = None) -> Any:
    """A `uvicorn.Server` for `config` that ticks once a second where that is known to be
    safe (`installed`: uvicorn's version, None: the installed one), else uvicorn's own.
    uvicorn is imported here, not with this module: the sinks import it too."""
    import uvicorn

    if not (installed or version("uvicorn")).startswith(TESTED_UVICORN_SERIES):
        return uvicorn.Server(config)
    return _one_tick_a_second()(config)


@functools.cache
def _one_tick_a_second() -> type:
    import asyncio

    import uvicorn

    class OneTickASecond(uvicorn.Server):
        async def main_loop(self) -> None:
            # on_tick(0): a counter that is a multiple of ten refreshes the Date header.
            while not await self.on_tick(0):
                await asyncio.sleep(CONSOLE_TICK_SECONDS)

    return OneTickASecond
