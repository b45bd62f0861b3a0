"""A central Prefect server as a venue group runs it: `gfx-sync server` on a PostgreSQL of its
own (Debian's PostgreSQL 15 packages, which include the pg_trgm extension Prefect needs and
the embedded pgserver lacks), both started by the tests and stopped at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from .system import free_port, stop_child, wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SERVER_START_SECONDS = 300.0  # the first start runs Prefect's migrations on PostgreSQL


def debian_postgres_missing() -> str | None:
    """Why the central server cannot run here, or None."""
    if not (PG_BIN / "initdb").exists():
        return f"Debian's PostgreSQL 15 is not installed ({PG_BIN}; apt install postgresql-15)"
    return None


def _as_postgres() -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--"]


@dataclass
class Cluster:
    url: str  # its `postgres` database, as the superuser `postgres`
    data: Path

    @property
    def pid(self) -> int:
        """The postmaster's (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def debian_postgres() -> Iterator[Cluster]:
    """A throwaway cluster on a free loopback port (trust auth, no fsync)."""
    # Not under pytest's temp folder: it is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="gfx-central-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    run = [*_as_postgres()]
    subprocess.run(
        [*run, PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--locale=C"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    subprocess.run(
        [*run, PG_BIN / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w",
         "start"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        yield Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", data)
    finally:
        subprocess.run(
            [*run, PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class CentralServer:
    api_url: str
    database_url: str  # the Prefect server's own database (psycopg form)
    process: subprocess.Popen[str]
    postgres_pid: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def central_prefect_server(state_dir: Path) -> Iterator[CentralServer]:
    """`gfx-sync server` on a fresh PostgreSQL database; stopped by SIGTERM at the end."""
    with debian_postgres() as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("create database prefect")
        database_url = cluster.url.rsplit("/", 1)[0] + "/prefect"
        port = free_port()
        state_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "GFX_SYNC_STATE_DIR": str(state_dir),
            "GFX_SYNC_PREFECT_PORT": str(port),
            "GFX_SYNC_PREFECT_DATABASE_URL": database_url.replace(
                "postgresql://", "postgresql+asyncpg://", 1
            ),
        }
        env.pop("PREFECT_API_URL", None)
        log_path = state_dir / "gfx-sync-server.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "deployments.app", "server"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        server = CentralServer(
            f"http://127.0.0.1:{port}/api", database_url, process, cluster.pid, log_path
        )
        try:
            wait_for(
                lambda: "Prefect server on" in server.log() or process.poll() is not None,
                timeout=SERVER_START_SECONDS,
                interval=0.5,
            )
            if process.poll() is not None:
                raise AssertionError(f"gfx-sync server exited:\n{server.log()[-3000:]}")
            yield server
        finally:
            stop_child(process, grace=60)
