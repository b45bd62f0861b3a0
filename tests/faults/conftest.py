"""Fixtures of the fault-injection suite: a rig per scenario and the report of all verdicts.

A rig is a fresh migrated database behind a fault proxy, a NAS folder, a state folder, and the
real `gfx-sync up` started on demand (its own Prefect server, the deployments, the warm runner
and the watcher). Scenarios inject faults, run the producer, then hand the judge's verdict to
`report`, which prints one table at the end of the session and writes it as JSON.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from bench.proxy import ProxyProcess, Upstream, unix_socket_of
from support.faults import PCS, Rig, Verdict, format_report

_verdicts: list[Verdict] = []


@contextlib.contextmanager
def open_rig(
    postgres_server_url: str,
    root: Path,
    *,
    template: str = "gfx_sync_template",
    site: str | None = None,
) -> Iterator[Rig]:
    """A fresh copy of the migrated template (or of `template0`: an empty database, which
    gfx-sync must migrate) behind a fault proxy, with folders under `root`; `site`: the
    GFX_SYNC_SITE its agent runs as."""
    name = f"gfx_faults_{os.getpid()}_{abs(hash(root)) % 10**8}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"create database {name} template {template}")
    info = psycopg.conninfo.conninfo_to_dict(postgres_server_url)
    database_url = psycopg.conninfo.make_conninfo(**(info | {"dbname": name}))
    upstream = Upstream(unix_path=unix_socket_of(str(info["host"]), info.get("port")))
    base, state = root / "nas", root / "state"
    for pc in PCS:
        (base / pc / "hands").mkdir(parents=True)
    state.mkdir()
    try:
        with ProxyProcess(upstream) as proxy:
            yield Rig(base, state, database_url, proxy, site=site)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


@contextlib.contextmanager
def site_rig(rig: Rig, root: Path, site: str) -> Iterator[Rig]:
    """Another site writing into `rig`'s database: its own NAS and state folders and fault
    proxy (one site's link can be cut alone), the same PC names."""
    base, state = root / "nas", root / "state"
    for pc in PCS:
        (base / pc / "hands").mkdir(parents=True)
    state.mkdir(parents=True)
    with ProxyProcess(rig.proxy.upstream) as proxy:
        yield Rig(base, state, rig.database_url, proxy, site=site)


@pytest.fixture
def rig(postgres_server_url: str, migrated_template: str, tmp_path: Path) -> Iterator[Rig]:
    with open_rig(postgres_server_url, tmp_path) as rig:
        yield rig


@pytest.fixture(scope="module")
def module_rig(
    postgres_server_url: str, migrated_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    """One rig for a module whose scenarios share one `up` (producers set `shared_table`)."""
    with open_rig(postgres_server_url, tmp_path_factory.mktemp("rig")) as rig:
        yield rig


@pytest.fixture
def report() -> Iterator[list[Verdict]]:
    """Hand verdicts to the session report (they are printed even when a scenario fails)."""
    verdicts: list[Verdict] = []
    yield verdicts
    _verdicts.extend(verdicts)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _verdicts:
        return
    terminalreporter.section("fault-injection report")
    terminalreporter.write_line(format_report(_verdicts))
    out = Path(os.environ.get("GFX_SYNC_FAULTS_REPORT", ".faults-report.json"))
    with contextlib.suppress(OSError):
        out.write_bytes(orjson.dumps([v.as_dict() for v in _verdicts], option=orjson.OPT_INDENT_2))
        terminalreporter.write_line(f"(also written to {out.resolve()})")
