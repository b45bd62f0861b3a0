"""batch and ceiling: 500 modified files -> committed by `SyncEngine.drain` + `PostgresSink`,
through the proxy that adds a 20 ms round trip.

- batch: against the same engine with batch_size=1 (one upsert per file), same data.
- ceiling: against psycopg alone doing the least the database needs: the same bytes COPYed
  into a temporary table and one INSERT ... ON CONFLICT, in one transaction on each of as many
  connections as gfx-sync writes a big batch over (`write_connections`), at once. The same on
  one connection is a note.
- naive (a note on the batch row, not its baseline): what a simple shipper does, psycopg
  alone, one autocommit statement per file: the shared upsert (`upsert_sessions_sql`) over a
  one-row source, the file's row as parameters. About one round trip per file, plus its bytes.
  No hashing, no JSON parsing, no queue; newest snapshot per session picked client-side (the
  real samples hold two snapshots of one session, as gfx-sync's batches can).

Both rows share one set of measurements (taken once, gfx-sync and the ceiling interleaved), so
the table shows the same gfx-sync figure twice. Only `drain` is timed: enqueueing is the
watcher's work. Each repeat starts from an empty table and a fresh queue.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.context import Bench
from bench.corpus import Corpus, CorpusFile, write_corpus
from bench.pg import round_trip_ms, row_count, truncate, via_proxy
from bench.report import Result, fmt, fmt_ratio, ratio
from gfx_sync.engine import Outcome, SyncEngine
from gfx_sync.pokergfx import read_session_file
from gfx_sync.queue import ChangeKind, DurableQueue
from gfx_sync.schema import (
    CONFLICT_COLUMNS,
    SESSION_COLUMNS,
    SESSIONS_TABLE,
    session_row,
    upsert_sessions_sql,
)
from gfx_sync.settings import discover_pcs
from gfx_sync.sinks import open_sink

SPEEDUP_TARGET = 20.0
CEILING_TARGET = 0.8
CHUNK_BATCHES = 25  # a budgeted drain checks its budget this often
CACHE_KEY = "batch"


@dataclass
class DrainTiming:
    seconds: float  # measured, or extrapolated to all files if the budget ran out
    files: int  # files settled in the measured time
    total_files: int
    batches: int
    requests: int
    extrapolated: bool = False

    @property
    def measured_seconds(self) -> float:
        return self.seconds * self.files / self.total_files if self.extrapolated else self.seconds

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def open_engine(bench: Bench, work: Path, corpus: Corpus, url: str, **overrides: Any) -> SyncEngine:
    """A fresh queue and sink on the shipped settings (plus `overrides`)."""
    settings = bench.settings(work, corpus.base, url, **overrides)
    queue_path = work / f"queue-{time.monotonic_ns()}.sqlite3"
    queue = DurableQueue(queue_path, lease_seconds=settings.lease_seconds)
    sink = open_sink(settings, url)
    return SyncEngine(settings, queue, sink, pcs=discover_pcs(corpus.base))


def close_engine(engine: SyncEngine) -> None:
    engine.sink.close()
    engine.queue.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{engine.queue.path}{suffix}").unlink(missing_ok=True)


def drain_timed(
    bench: Bench,
    work: Path,
    corpus: Corpus,
    url: str,
    *,
    batch_size: int,
    budget_s: float | None = None,
) -> DrainTiming:
    """Enqueue every file as MODIFIED, then time `drain` until all are committed (or the budget
    runs out: then the time is extrapolated linearly to all files, and flagged)."""
    truncate(url)
    engine = open_engine(bench, work, corpus, url, batch_size=batch_size)
    try:
        engine.site.enqueue(engine.queue, corpus.paths, ChangeKind.MODIFIED)
        total = len(corpus.files)
        settled = synced = batches = requests = 0
        started = time.perf_counter()
        while True:
            report = engine.drain(max_batches=CHUNK_BATCHES if budget_s else None)
            settled += report.claimed
            synced += report.count(Outcome.SYNCED)
            batches += report.batches
            requests += report.requests
            elapsed = time.perf_counter() - started
            if not report.outcomes or report.outage or settled >= total:
                break
            if budget_s is not None and elapsed > budget_s:
                break
    finally:
        close_engine(engine)
    if report.outage:
        raise RuntimeError(f"the target was unreachable during the drain: {report.outage}")
    if settled < total:
        return DrainTiming(
            elapsed * total / max(1, settled), settled, total, batches, requests, True
        )
    if synced != total:
        raise RuntimeError(f"{total - synced} of {total} files were not committed")
    rows = row_count(url)
    if rows != len(corpus.keys):
        raise RuntimeError(f"{rows} rows after the drain, expected {len(corpus.keys)}")
    return DrainTiming(elapsed, settled, total, batches, requests)


def copy_merge_ceiling(corpus: Corpus, url: str, connections: int = 1) -> float:
    """The same bytes, the least work: one COPY into a temp table and one merge statement, on
    each of `connections` connections at once (the newest snapshots dealt out by size)."""
    truncate(url)
    newest: dict[tuple[str, int], Any] = {}
    for f in corpus.files:
        kept = newest.get(f.key)
        if kept is None or (f.hands, f.size) > (kept.hands, kept.size):
            newest[f.key] = f
    by_size = sorted(newest.values(), key=lambda f: f.size, reverse=True)
    parts = [by_size[i::connections] for i in range(connections)]
    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(functools.partial(_copy_merge, corpus, url), parts))
    elapsed = time.perf_counter() - started
    if row_count(url) != len(corpus.keys):
        raise RuntimeError("the ceiling's merge did not write every row")
    return elapsed


def _copy_merge(corpus: Corpus, url: str, files: list[CorpusFile]) -> None:
    columns = "gfx_pc_id, session_id, file_name, file_path, file_hash, file_size, file_mtime, "
    columns += "raw_json, hand_count"
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns.split(", ")[2:])
    with psycopg.connect(url, prepare_threshold=None) as conn, conn.transaction():
        conn.execute(
            "create temporary table incoming (like public.gfx_sessions including defaults) "
            "on commit drop"
        )
        with conn.cursor().copy(f"copy incoming ({columns}) from stdin") as copy:  # type: ignore[arg-type]
            for f in files:
                data = f.path.read_bytes()
                mtime = datetime.fromtimestamp(f.path.stat().st_mtime, UTC)
                relative = f.path.relative_to(corpus.base).as_posix()
                copy.write_row(
                    [f.pc_id, f.session_id, f.path.name, relative, "", len(data), mtime,
                     data.decode(), f.hands]
                )  # fmt: skip
        conn.execute(
            f"insert into public.gfx_sessions ({columns}) select {columns} from incoming "  # type: ignore[arg-type]
            f"on conflict ({', '.join(CONFLICT_COLUMNS)}) do update set {updates}"
        )


@dataclass
class NaiveTiming:
    seconds: float  # measured, or extrapolated to all files if the budget ran out
    files: int  # statements run in the measured time
    total_files: int
    extrapolated: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def naive_per_statement(corpus: Corpus, url: str, *, budget_s: float | None = None) -> NaiveTiming:
    """One autocommit INSERT ... ON CONFLICT per file, in file order: the shared upsert
    statement over a one-row source (the parameters cast to the table's column types), the
    row built by gfx-sync's own parser. The trigger keeps the newest snapshot of a session."""
    truncate(url)
    started = time.perf_counter()
    done = 0
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        types = dict(
            conn.execute(  # type: ignore[arg-type]
                "select attname, format_type(atttypid, atttypmod) from pg_attribute "
                f"where attrelid = 'public.{SESSIONS_TABLE}'::regclass and attnum > 0"
            ).fetchall()
        )
        one_row = ", ".join(f"%s::{types[c]} as {c}" for c in SESSION_COLUMNS)
        statement = upsert_sessions_sql(f"(select {one_row}) as incoming")
        for f in corpus.files:
            record = read_session_file(
                f.path, pc_id=f.pc_id, relative_path=f.path.relative_to(corpus.base).as_posix()
            )
            row = session_row(record, "batch")
            row["raw_json"] = record.raw_json.decode("utf-8")
            conn.execute(statement, [row[c] for c in SESSION_COLUMNS])  # type: ignore[arg-type]
            done += 1
            if budget_s is not None and time.perf_counter() - started > budget_s:
                break
    elapsed = time.perf_counter() - started
    total = len(corpus.files)
    if done < total:
        return NaiveTiming(elapsed * total / done, done, total, True)
    if row_count(url) != len(corpus.keys):
        raise RuntimeError("the naive per-statement upserts did not write every row")
    return NaiveTiming(elapsed, done, total)


def measurements(bench: Bench) -> dict[str, Any]:
    """gfx-sync (batched) and the ceiling interleaved `batch_repeats` times, then the per-file
    baseline once. Cached: the batch and ceiling rows read the same numbers."""
    if CACHE_KEY in bench.cache:
        return bench.cache[CACHE_KEY]
    profile = bench.profile
    work = bench.workdir("batch")
    bench.say(f"batch: writing {profile.batch_files} files")
    corpus = write_corpus(work / "base", profile.batch_files, seed=2, pcs=profile.pcs, samples=True)
    direct = bench.pg.create_database("bench_batch")
    url = via_proxy(direct, bench.proxy.port)
    rtt = round_trip_ms(url)
    connections = bench.settings(work, corpus.base, url).write_connections
    gfx: list[DrainTiming] = []
    ceiling: list[float] = []
    one_connection: list[float] = []
    for repeat in range(profile.batch_repeats):
        gfx.append(drain_timed(bench, work, corpus, url, batch_size=500))
        ceiling.append(copy_merge_ceiling(corpus, url, connections))
        one_connection.append(copy_merge_ceiling(corpus, url))
        bench.say(
            f"batch: repeat {repeat + 1}/{profile.batch_repeats}: gfx-sync {gfx[-1].seconds:.2f} s "
            f"({gfx[-1].batches} batches), ceiling {ceiling[-1]:.2f} s on {connections} "
            f"connections, {one_connection[-1]:.2f} s on one"
        )
    bench.say(f"batch: per-file baseline (budget {profile.per_file_budget_s:.0f} s)")
    per_file = drain_timed(
        bench, work, corpus, url, batch_size=1, budget_s=profile.per_file_budget_s
    )
    bench.say(f"batch: per-file {per_file.seconds:.1f} s ({per_file.files} files measured)")
    naive = naive_per_statement(corpus, url, budget_s=profile.per_file_budget_s)
    bench.say(f"batch: naive per-statement {naive.seconds:.1f} s ({naive.files} files measured)")
    result = {
        "corpus": corpus.describe(),
        "rtt_ms_measured": rtt,
        "gfx": gfx,
        "gfx_median_s": statistics.median(t.seconds for t in gfx),
        "ceiling_s": ceiling,
        "ceiling_median_s": statistics.median(ceiling),
        "connections": connections,
        "one_connection_s": one_connection,
        "one_connection_median_s": statistics.median(one_connection),
        "per_file": per_file,
        "naive": naive,
    }
    bench.cache[CACHE_KEY] = result
    return result


def _common_details(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "corpus": m["corpus"],
        "rtt_ms_measured": round(m["rtt_ms_measured"], 2),
        "gfx_runs": [t.to_json() for t in m["gfx"]],
        "connections": m["connections"],
        "ceiling_runs_s": m["ceiling_s"],
        "one_connection_ceiling_runs_s": m["one_connection_s"],
        "per_file_run": m["per_file"].to_json(),
        "naive_run": m["naive"].to_json(),
    }


def run_batch(bench: Bench) -> list[Result]:
    m = measurements(bench)
    mine, per_file = m["gfx_median_s"], m["per_file"]
    speedup = ratio(per_file.seconds, mine)
    mb = m["corpus"]["total_mb"]
    files = m["corpus"]["files"]
    notes = [f"{files} files, {mb} MB; proxy round trip measured {m['rtt_ms_measured']:.1f} ms"]
    if per_file.extrapolated:
        notes.append(
            f"per-file baseline extrapolated from {per_file.files}/{per_file.total_files} files "
            f"({per_file.measured_seconds:.0f} s measured)"
        )
    naive = m["naive"]
    naive_ratio = ratio(naive.seconds, mine)
    notes.append(
        "naive baseline, psycopg alone, one autocommit INSERT ... ON CONFLICT per file (the "
        f"shared upsert, same proxy): {fmt(naive.seconds, 1)} s"
        + (f" (extrapolated from {naive.files}/{naive.total_files} files)" * naive.extrapolated)
        + f"; gfx-sync {fmt_ratio(naive_ratio)} faster"
    )
    return [
        Result(
            scenario="batch",
            measure=f"{files} modified files -> committed ({bench.profile.rtt_ms:g} ms RTT)",
            unit="s",
            figures={"seconds": mine, "mb_per_s": mb / mine, "files_per_s": files / mine},
            baseline_name="the same engine with batch_size=1 (one upsert per file)",
            baseline={"seconds": per_file.seconds, "extrapolated": per_file.extrapolated},
            ratios={"speedup": speedup, "speedup_vs_naive": naive_ratio},
            ratio_meaning="baseline / gfx-sync (speed-up, higher is better)",
            target=f">= {SPEEDUP_TARGET:g}x faster",
            met=speedup is not None and speedup >= SPEEDUP_TARGET,
            cells={
                "result": f"{fmt(mine, 2)} s ({fmt(mb / mine)} MB/s)",
                "baseline": f"{fmt(per_file.seconds)} s" + (" (extrap.)" * per_file.extrapolated),
                "ratio": f"{fmt_ratio(speedup)} faster",
            },
            notes=notes,
            details=_common_details(m),
        )
    ]


def run_ceiling(bench: Bench) -> list[Result]:
    m = measurements(bench)
    mine, ceiling = m["gfx_median_s"], m["ceiling_median_s"]
    share = ratio(ceiling, mine)
    return [
        Result(
            scenario="ceiling",
            measure="same files: share of the raw COPY + merge speed",
            unit="s",
            figures={"seconds": mine},
            baseline_name=(
                "psycopg alone: one COPY into a temp table + one INSERT ON CONFLICT on each of "
                f"{m['connections']} connections at once (as many as gfx-sync writes over)"
            ),
            baseline={"seconds": ceiling},
            ratios={"share_of_ceiling": share},
            ratio_meaning="ceiling time / gfx-sync time (1.0 = as fast as the ceiling)",
            target=f">= {CEILING_TARGET:g} of ceiling",
            met=share is not None and share >= CEILING_TARGET,
            cells={
                "result": f"{fmt(mine, 2)} s",
                "baseline": f"{fmt(ceiling, 2)} s",
                "ratio": f"{fmt(share, 2)} of ceiling",
            },
            notes=[
                f"ceiling on {m['connections']} connections (gfx-sync writes a big batch over "
                f"as many); on one connection it is {fmt(m['one_connection_median_s'], 2)} s, "
                f"and gfx-sync {fmt(ratio(m['one_connection_median_s'], mine), 2)} of that"
            ],
            details=_common_details(m),
        )
    ]
