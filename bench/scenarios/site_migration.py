"""site_migration: upgrading a single-site database to sites in place (issue 13), and its lock.

A database at the schema before sites (migrations up to 20261205000000_hand_tables) is loaded
with `site_migration_rows` sessions (10,000; 500 with --quick) of realistic sizes: gfx_synth
documents, hands log-uniform over 1..173 as the batch corpus (mean ~33 hands, ~165 KB), spread
over 8 PCs, their hand rows derived by the trigger as a sync would. Then
20261206000000_sites.sql is applied through `apply_migrations`, as `gfx-sync migrate` does, while
two probes run against the same database, each on its own connection, one statement every
10 ms:
- a reader: `select ... from gfx_sessions` (a console or dashboard);
- a writer: `insert into sync_events` (any agent's commit writes one).
The longest time each probe waited is the lock the upgrade held on it: writers wait for the
whole transaction (the hand tables they derive into are re-keyed), readers of gfx_sessions only
for its last part (the migration locks gfx_sessions against readers after the hand tables).
The heap files of the tables are compared before and after: the same file means no row (no
raw_json) was rewritten.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

import gfx_synth as synth
from bench.context import Bench
from bench.corpus import loguniform_hands
from bench.report import Result, fmt
from gfx_sync.migrate import apply_migrations, migration_files

DATABASE = "bench_site_migration"
PREVIOUS_VERSION = "20261205000000_hand_tables"
SITES_VERSION = "20261206000000_sites"
PCS = 8
DISTINCT_DOCUMENTS = 200  # documents generated; rows reuse them under their own session ids
LOAD_CHUNK = 100  # rows per COPY transaction while loading
PROBE_PERIOD_S = 0.01
TABLES = ("gfx_sessions", "sync_events", "gfx_hands", "gfx_hand_players", "gfx_hand_actions")
MEASURE = "single-site database -> sites, in place: migration time, longest lock"


def rows_for(bench: Bench) -> int:
    return 500 if bench.profile.quick else 10_000


def migrate_until(url: str, last_version: str, scratch: Path) -> None:
    """The migrations up to `last_version` only, through the ledger."""
    folder = scratch / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    for path in migration_files():
        if path.stem <= last_version:
            shutil.copy(path, folder / path.name)
    apply_migrations(url, folder)


def load_sessions(url: str, rows: int, say: Any) -> dict[str, Any]:
    """`rows` sessions as the previous schema stored them; their hands derived by its trigger."""
    rng = random.Random(13)
    documents = [
        synth.session_bytes(synth.make_session(hands=loguniform_hands(rng), seed=n))
        for n in range(DISTINCT_DOCUMENTS)
    ]
    hand_counts = [document.count(b'"HandNum"') for document in documents]
    started = time.monotonic()
    raw_bytes = 0
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(0, rows, LOAD_CHUNK):
            with (
                conn.transaction(),
                conn.cursor().copy(
                    "copy public.gfx_sessions (gfx_pc_id, session_id, file_name, file_path, "
                    "file_hash, file_size, file_mtime, raw_json, hand_count) from stdin"
                ) as copy,
            ):
                for number in range(first, min(rows, first + LOAD_CHUNK)):
                    pick = number % DISTINCT_DOCUMENTS
                    document = documents[pick]
                    pc = f"PC{number % PCS + 1:02d}"
                    name = f"PGFX_live_data_export GameID={number + 1}.json"
                    copy.write_row(
                        (
                            pc,
                            number + 1,
                            name,
                            f"{pc}/hands/{name}",
                            f"hash-{number}",
                            len(document),
                            "2026-01-01T00:00:00Z",
                            document.decode(),
                            hand_counts[pick],
                        )
                    )
                    raw_bytes += len(document)
            if first and first % 2000 == 0:
                say(f"site_migration: {first}/{rows} sessions loaded")
        conn.execute(
            "insert into public.sync_events (event_type, gfx_pc_id, file_count) "
            "select 'batch', 'PC0' || (n %% 8 + 1), 1 from generate_series(1, %s) as n",
            (rows,),
        )
        conn.execute("vacuum analyze")
    return {"load_s": time.monotonic() - started, "raw_json_mb": raw_bytes / 1e6}


def table_facts(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        return {
            table: {
                "rows": conn.execute(f"select count(*) from public.{table}").fetchone()[0],  # type: ignore[index]
                "file": conn.execute(
                    "select pg_relation_filenode(%s)", (f"public.{table}",)
                ).fetchone()[0],  # type: ignore[index]
                "total_mb": conn.execute(
                    "select pg_total_relation_size(%s)", (f"public.{table}",)
                ).fetchone()[0]  # type: ignore[index]
                / 1e6,
            }
            for table in TABLES
        }


class Probe:
    """One statement every PROBE_PERIOD_S on a connection of its own; the longest it took."""

    def __init__(self, url: str, statement: str) -> None:
        self.statement = statement
        self.longest_s = 0.0
        self.samples = 0
        self._conn = psycopg.connect(url, autocommit=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._conn.execute(self.statement)  # type: ignore[arg-type]
            self.longest_s = max(self.longest_s, time.monotonic() - started)
            self.samples += 1
            self._stop.wait(PROBE_PERIOD_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._conn.close()


def run(bench: Bench) -> list[Result]:
    rows = rows_for(bench)
    folder = bench.workdir("site_migration")
    bench.pg._admin(
        f"drop database if exists {DATABASE} with (force)", f"create database {DATABASE}"
    )
    url = bench.pg.database_url(DATABASE)
    migrate_until(url, PREVIOUS_VERSION, folder)
    bench.say(f"site_migration: loading {rows} sessions (hands derived by the trigger)")
    loaded = load_sessions(url, rows, bench.say)
    before = table_facts(url)

    reader = Probe(url, "select session_id from public.gfx_sessions where session_id = 1")
    writer = Probe(url, "insert into public.sync_events (event_type) values ('recovery')")
    time.sleep(0.2)  # both probes running before the migration starts
    started = time.monotonic()
    applied = apply_migrations(url)
    migration_s = time.monotonic() - started
    time.sleep(0.2)
    reader.stop()
    writer.stop()
    if applied != [SITES_VERSION]:
        raise RuntimeError(f"expected only {SITES_VERSION} to be applied, got {applied}")

    after = table_facts(url)
    rewritten = [t for t in TABLES if t != "sync_events" and after[t]["file"] != before[t]["file"]]
    with psycopg.connect(url) as conn:
        sites = conn.execute("select array_agg(distinct site_id) from gfx_sessions").fetchone()[0]  # type: ignore[index]
    bench.pg._admin(f"drop database if exists {DATABASE} with (force)")

    figures = {
        "sessions": rows,
        "hands": before["gfx_hands"]["rows"],
        "players": before["gfx_hand_players"]["rows"],
        "actions": before["gfx_hand_actions"]["rows"],
        "raw_json_mb": round(loaded["raw_json_mb"], 1),
        "sessions_table_mb": round(before["gfx_sessions"]["total_mb"], 1),
        "migration_s": round(migration_s, 3),
        "reader_longest_wait_s": round(reader.longest_s, 3),
        "writer_longest_wait_s": round(writer.longest_s, 3),
        "probe_samples": reader.samples + writer.samples,
        "tables_rewritten": rewritten,
        "sites_after": sites,
        "load_s": round(loaded["load_s"], 1),
    }
    met = not rewritten and sites == ["default"]
    return [
        Result(
            scenario="site_migration",
            measure=MEASURE,
            unit="s",
            figures=figures,
            target="no row rewritten (same heap files), every row site 'default'",
            met=met,
            cells={
                "result": (
                    f"{rows} sessions ({figures['raw_json_mb']} MB raw_json, "
                    f"{figures['hands']} hands, {figures['actions']} actions): migration "
                    f"{fmt(migration_s, 2)} s; longest lock wait: reader "
                    f"{fmt(reader.longest_s, 2)} s, writer {fmt(writer.longest_s, 2)} s; "
                    f"tables rewritten: {', '.join(rewritten) or 'none'}"
                )
            },
        )
    ]
