"""queue_day and prefect_day: what a broadcast day leaves behind, compressed, with retention
and without. Both must stay bounded (issue 15).

queue_day: the durable queue through several broadcast days on a clock moved by hand (no
sleeping): PCs rewriting their session file every minute for 12 hours, a new session an hour,
an hourly recovery rescan, and the operator archiving session files older than three days off
the NAS. Each day ends with the queue's size and rows. Run twice in the same run: as shipped
(done items and logs dropped after RETENTION, records of vanished files forgotten by the
rescan) and with retention switched off, the baseline.

prefect_day: a 12-hour day of the 5-s batch schedule (8,640 runs, and 144 recovery runs)
made and settled on a local Prefect server, started as `up` starts it, the way the warm runner
settles a run with nothing to do (Completed "Skipped" straight from Scheduled), as fast as the
server takes them. The server's database size and its API latency at the start and at the end; then
the runs and their events are moved back in time past the run retention (a time warp, in the
server's own SQLite file) and the server's vacuum, on a short loop, is waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from bench.context import Bench
from bench.report import Result, fmt, fmt_ratio, ratio, summarize
from gfx_sync import queue as queue_module
from gfx_sync.queue import ChangeKind, DurableQueue, NewChange, Origin, SyncedFile
from gfx_sync.site import SessionFiles, rescan
from tests.support.clock import Clock

QUEUE_TABLES = ("items", "file_state", "synced_log", "writes")
BROADCAST_HOURS = 12
ARCHIVE_AFTER_DAYS = 3  # the operator moves older session files off the NAS


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def table_rows(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in QUEUE_TABLES}


def live_bytes(path: Path) -> int:
    """Pages in use (a SQLite file keeps freed pages for reuse; it does not shrink)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    return (pages - free) * size


def simulate_days(
    work: Path, *, pcs: int, days: int, tick_minutes: int, retention: bool
) -> list[dict[str, Any]]:
    """The queue through `days` broadcast days; its size and rows at the end of each."""
    base = work / "base"
    folders = {f"PC{n:02d}": base / f"PC{n:02d}" / "hands" for n in range(1, pcs + 1)}
    for folder in folders.values():
        folder.mkdir(parents=True)
    files = SessionFiles(base / "_error")
    clock = Clock(datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp())
    path = work / "queue.sqlite3"
    born: dict[Path, float] = {}  # session file -> when it was started (simulated)
    per_day: list[dict[str, Any]] = []
    # Off: nothing is old enough to drop, ever.
    cutoff = queue_module.RETENTION if retention else float("inf")
    with (
        mock.patch.object(queue_module, "RETENTION", cutoff),
        DurableQueue(path, clock=clock) as queue,
    ):
        for day in range(days):
            start = clock.now
            for tick in range(BROADCAST_HOURS * 60 // tick_minutes):
                minute = tick * tick_minutes
                changes = []
                for pc_id, folder in folders.items():
                    session = folder / f"session-d{day}-h{minute // 60:02d}.json"
                    if session not in born:
                        born[session] = clock.now
                    session.write_text('{"Hands": [' + ",".join(["{}"] * (minute % 60 + 1)) + "]}")
                    stat = session.stat()
                    kind = ChangeKind.ADDED if minute % 60 == 0 else ChangeKind.MODIFIED
                    changes.append(
                        NewChange(pc_id, str(session), kind, stat.st_size, stat.st_mtime)
                    )
                queue.enqueue_many(changes)
                claimed = queue.claim(len(changes), worker="bench")
                queue.ack_synced(
                    [SyncedFile(i.id, i.path, i.pc_id, i.size or 0, i.mtime or 0.0, "h")
                     for i in claimed],
                    source="batch", write_seconds=0.01,
                )  # fmt: skip
                if minute % 60 == 0:
                    rescan(queue, folders, files, Origin.RESCAN, forget_vanished=True)
                clock.now = start + (minute + tick_minutes) * 60
            clock.now = start + 86400  # the night: nothing written
            for session, started in list(born.items()):
                if clock.now - started > ARCHIVE_AFTER_DAYS * 86400:
                    session.unlink()
                    del born[session]
            rescan(queue, folders, files, Origin.RESCAN, forget_vanished=True)
            per_day.append(
                {
                    "day": day + 1,
                    "file_mb": file_bytes(path) / 1e6,
                    "live_mb": live_bytes(path) / 1e6,
                    "files_on_disk": len(born),
                    **table_rows(path),
                }
            )
    return per_day


def run_queue(bench: Bench) -> list[Result]:
    quick = bench.profile.quick
    shape = {"pcs": 2, "days": 4, "tick_minutes": 30} if quick else {
        "pcs": 10, "days": 7, "tick_minutes": 1}  # fmt: skip
    curves = {}
    for setting in ("on", "off"):
        bench.say(f"queue_day: {shape['days']} days, retention {setting}")
        work = bench.workdir(f"queue-day-{setting}")
        curves[setting] = simulate_days(work, retention=setting == "on", **shape)
    on, off = curves["on"][-1], curves["off"][-1]
    # Bounded: the last two days hold the same rows (a steady state), retention on.
    last, before = curves["on"][-1], curves["on"][-2]
    steady = all(last[t] == before[t] for t in QUEUE_TABLES)
    table = ["day | rows on (items/file_state/synced_log/writes) | rows off | live MB on | off"] + [
        f"{a['day']} | {'/'.join(str(a[t]) for t in QUEUE_TABLES)} | "
        f"{'/'.join(str(b[t]) for t in QUEUE_TABLES)} | {fmt(a['live_mb'], 2)} | "
        f"{fmt(b['live_mb'], 2)}"
        for a, b in zip(curves["on"], curves["off"], strict=True)
    ]
    share = ratio(on["live_mb"], off["live_mb"])
    return [
        Result(
            scenario="queue_day",
            measure=f"durable queue after {shape['days']} broadcast days, {shape['pcs']} PCs",
            unit="MB",
            figures={"live_mb": on["live_mb"], "file_mb": on["file_mb"], "curve": curves["on"]},
            baseline_name="the same days with retention switched off",
            baseline={"live_mb": off["live_mb"], "file_mb": off["file_mb"]},
            ratios={"live": share},
            ratio_meaning="queue size with retention / without (live pages)",
            target="bounded: the last two days hold the same rows",
            met=steady,
            cells={
                "result": f"{fmt(on['live_mb'], 2)} MB, {on['items']} items",
                "baseline": f"{fmt(off['live_mb'], 2)} MB, {off['items']} items",
                "ratio": fmt_ratio(share),
            },
            notes=["curve: " + "; ".join(table)],
            details={"curves": curves, "shape": shape},
        )
    ]


# -- prefect_day ----------------------------------------------------------------------------

RUNS_PER_DAY = BROADCAST_HOURS * 3600 // 5  # the 5-s batch schedule
RECOVERY_RUNS_PER_DAY = BROADCAST_HOURS * 3600 // 300
LATENCY_SAMPLES = 40
VACUUM_LOOP_S = 5.0
P95_NOISE = 1.5  # "API p95 unchanged": end / start at most this, for every request


def _prefect_timestamp(moment: datetime) -> str:
    """As Prefect's SQLite columns hold a time: UTC, naive text."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def api_latency(api_url: str, deployment_ids: list[str]) -> dict[str, Any]:
    """p50/p95 (ms) of what the stack asks the server again and again: the runner's poll for
    scheduled runs, the console's failed runs of the last day, the UI's newest runs."""
    since = _prefect_timestamp(datetime.now(UTC) - timedelta(days=1)).replace(" ", "T") + "Z"
    asks = {
        "scheduled poll": ("/deployments/get_scheduled_flow_runs",
                           {"deployment_ids": deployment_ids, "limit": 50}),
        "failed runs, 24 h": ("/flow_runs/filter", {
            "flow_runs": {"state": {"type": {"any_": ["FAILED", "CRASHED"]}},
                          "start_time": {"after_": since}}, "limit": 50}),
        "newest runs": ("/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 20}),
    }  # fmt: skip
    out: dict[str, Any] = {}
    with httpx.Client(base_url=api_url, timeout=30) as client:
        for name, (path, body) in asks.items():
            samples = []
            for _ in range(LATENCY_SAMPLES):
                started = time.perf_counter()
                client.post(path, json=body).raise_for_status()
                samples.append((time.perf_counter() - started) * 1000)
            out[name] = summarize(samples)
    return out


def flow_run_count(api_url: str) -> int:
    return int(httpx.post(f"{api_url}/flow_runs/count", json={}, timeout=30).json())


BUSY_RETRIES = 8


async def settle_runs(deployment_id: Any, count: int, concurrency: int = 2) -> int:
    """`count` runs made and settled as the warm runner settles a batch run with nothing
    to do: Completed "Skipped" straight from Scheduled. A step the server answers 503 (busy:
    SQLite takes one writer, and this compresses hours into minutes) is tried again after a
    pause; returns how many times that happened."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.states import Scheduled

    from deployments.warm.states import StateProposer

    busy = 0

    async def patiently(step: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal busy
        for attempt in range(BUSY_RETRIES):
            try:
                return await step()
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 503 or attempt == BUSY_RETRIES - 1:
                    raise
                busy += 1
                await asyncio.sleep(1 + attempt)
        raise AssertionError("unreachable")

    async with get_client() as client:
        proposer = StateProposer(lambda: client)
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                run = await patiently(
                    lambda: client.create_flow_run_from_deployment(
                        deployment_id, state=Scheduled(scheduled_time=datetime.now(UTC))
                    )
                )
                await patiently(lambda: proposer.skip(run))

        await asyncio.gather(*(one() for _ in range(count)))
    return busy


def warp_back(db: Path, by: timedelta, *, runs: bool) -> None:
    """Move every event (and, with `runs`, every flow run's end) back by `by`: as if the day
    were that long ago."""

    def back(text: str) -> str:
        return _prefect_timestamp(datetime.fromisoformat(text).replace(tzinfo=UTC) - by)

    tables = [("events", "occurred"), ("event_resources", "occurred")]
    if runs:
        tables.append(("flow_run", "end_time"))
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn, conn:
        for table, column in tables:
            rows = conn.execute(f"SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL")
            conn.executemany(
                f"UPDATE {table} SET {column} = ? WHERE id = ?",
                [(back(moment), row_id) for row_id, moment in rows.fetchall()],
            )


def count_rows(db: Path, query: str, *params: object) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(query, params).fetchone()[0]


def table_bytes(db: Path) -> dict[str, int]:
    """Bytes per table, its indexes included: events (and their resources) and the rest."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    parts = {"events": 0, "runs": 0}
    for name, size in rows:
        parts["events" if name.removeprefix("ix_").startswith("event") else "runs"] += size
    return parts


def wait_until(condition: Any, timeout: float) -> bool:
    """Poll `condition` each vacuum loop until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(VACUUM_LOOP_S / 2)
    return True


@contextlib.contextmanager
def vacuum_often() -> Iterator[None]:
    """The server's vacuum on a short loop (it runs hourly as shipped)."""
    key = "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS"
    with mock.patch.dict(os.environ, {key: str(VACUUM_LOOP_S)}):
        yield


def run_prefect(bench: Bench) -> list[Result]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.up import ROUTINE_EVENT_HOURS, ROUTINE_EVENTS, local_prefect_server
    from deployments.warm.served import register
    from flows.batch import batch_upsert
    from gfx_sync.settings import load_settings
    from tests.support.system import free_port

    quick = bench.profile.quick
    runs = 200 if quick else RUNS_PER_DAY + RECOVERY_RUNS_PER_DAY
    work = bench.workdir("prefect-day")
    settings = load_settings(
        base_path=work / "base", state_dir=work / "state", prefect_port=free_port()
    )
    db = settings.prefect_home / "prefect.db"
    retention = timedelta(hours=settings.run_retention_hours)
    routine = timedelta(hours=min(ROUTINE_EVENT_HOURS, settings.run_retention_hours))
    marks = ",".join("?" * len(ROUTINE_EVENTS))
    routine_query = f"SELECT count(*) FROM events WHERE event IN ({marks})"
    wait_s = 60 if quick else 900
    with (
        vacuum_often(),
        local_prefect_server(settings) as api_url,
        temporary_settings(updates={PREFECT_API_URL: api_url}),
    ):
        [deployment_id] = asyncio.run(register([batch_upsert.to_deployment(name="day")]))
        ids = [str(deployment_id)]
        start = {"latency": api_latency(api_url, ids), "bytes": table_bytes(db)}
        bench.say(f"prefect_day: settling {runs} runs")
        started = time.monotonic()
        busy = asyncio.run(settle_runs(deployment_id, runs))
        made_s = time.monotonic() - started
        end = {
            "latency": api_latency(api_url, ids),
            "bytes": table_bytes(db),
            "file_mb": file_bytes(db) / 1e6,
            "runs": flow_run_count(api_url),
            "routine_events": count_rows(db, routine_query, *ROUTINE_EVENTS),
        }
        bench.say(f"prefect_day: events moved back {routine} + 1 h; waiting for the vacuum")
        warp_back(db, routine + timedelta(hours=1), runs=False)
        wait_until(lambda: count_rows(db, routine_query, *ROUTINE_EVENTS) == 0, wait_s)
        routine_gone = {
            "routine_events": count_rows(db, routine_query, *ROUTINE_EVENTS),
            "runs": flow_run_count(api_url),
            "bytes": table_bytes(db),
        }
        bench.say(f"prefect_day: runs moved back {retention} + 1 h; waiting for the vacuum")
        warp_back(db, retention + timedelta(hours=1), runs=True)
        wait_until(lambda: flow_run_count(api_url) == 0, wait_s)
        after = {"runs": flow_run_count(api_url), "bytes": table_bytes(db)}
    grown = {part: end["bytes"][part] - start["bytes"][part] for part in ("runs", "events")}
    per_run_kb = {part: size / 1e3 / runs for part, size in grown.items()}

    # The schedule runs around the clock: the server holds `retention` worth of its runs, and
    # `routine` worth of their routine events.
    def held(period: timedelta) -> float:
        return period / timedelta(seconds=5) + period / timedelta(seconds=300)

    bound_mb = (per_run_kb["runs"] * held(retention) + per_run_kb["events"] * held(routine)) / 1e3
    unbounded_mb = sum(per_run_kb.values()) * held(retention) / 1e3
    p95 = {k: (start["latency"][k]["p95"], end["latency"][k]["p95"]) for k in start["latency"]}
    worst = max(ratio(b, a) or 0.0 for a, b in p95.values())
    lines = [f"{k}: p95 {fmt(a, 1)} -> {fmt(b, 1)} ms" for k, (a, b) in p95.items()]
    kept = routine_gone["runs"] == end["runs"] and routine_gone["routine_events"] == 0
    end_mb = sum(end["bytes"].values()) / 1e6
    return [
        Result(
            scenario="prefect_day",
            measure=f"Prefect server after {runs} settled runs (a 12-h day of the 5-s schedule)",
            unit="MB",
            figures={
                "mb": end_mb,
                "per_run_kb": per_run_kb,
                "held_mb": bound_mb,
                "runs_per_s": runs / made_s,
            },
            baseline_name="the same server before the day; held without the routine-event rule",
            baseline={"mb": sum(start["bytes"].values()) / 1e6, "held_mb": unbounded_mb},
            ratios={"api_p95_end_over_start": worst, "held": ratio(bound_mb, unbounded_mb)},
            ratio_meaning="API p95 at the end / at the start (worst of three requests); "
            "held with / without routine events kept shorter",
            target=f"bounded by retention; API p95 unchanged (<= {P95_NOISE:g}x)",
            met=kept and after["runs"] == 0 and worst <= P95_NOISE,
            cells={
                "result": f"{fmt(end_mb)} MB, {fmt(sum(per_run_kb.values()), 1)} KB/run; "
                f"held {fmt(bound_mb)} MB",
                "baseline": f"{fmt(sum(start['bytes'].values()) / 1e6)} MB; held "
                f"{fmt(unbounded_mb)} MB",
                "ratio": f"{fmt_ratio(worst)} p95",
            },
            notes=[
                *lines,
                f"per run: {fmt(per_run_kb['runs'], 1)} KB of run and states, "
                f"{fmt(per_run_kb['events'], 1)} KB of events (indexes included)",
                f"{runs} runs settled in {fmt(made_s, 1)} s ({fmt(runs / made_s, 1)}/s; the "
                f"server said busy (503) {busy} times, each step tried again)",
                f"time warp, events back {routine} + 1 h: routine events left "
                f"{routine_gone['routine_events']} of {end['routine_events']}, runs kept "
                f"{routine_gone['runs']} of {end['runs']}; runs back {retention} + 1 h: runs "
                f"left {after['runs']}",
                f"held = what the server keeps at steady state, the schedule running around "
                f"the clock: runs for {retention}, routine events for {routine}",
            ],
            details={"start": start, "end": end, "routine_gone": routine_gone, "after": after},
        )
    ]
