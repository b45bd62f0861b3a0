"""sites: how one central Prefect server (`gfx-sync server` on PostgreSQL) grows with the
number of sites sharing it (issue 13).

Sites are added to one server in steps (`sites_counts`, e.g. 1, 5, 20). Each site is what
`gfx-sync deploy` registers (its deployments named for the site, the 5-s batch schedule, the
recovery schedule, the realtime trigger on its own events) and a simulated site agent: its 8
PCs each raise one `gfx.file.added` a minute (a session rewrite a minute, the realistic load),
and one settler for all sites settles every due run the way the warm runner settles a run with
nothing to do (Completed "Skipped" straight from Scheduled), so the server does a site's real
work of states and events without the sites' file traffic. Over `sites_window_s` of real time (no
compression: the schedule's 17,280 runs a day a site arrive at their real rate) it measures:

- the Prefect server's CPU (% of one core; its process tree) and memory (PSS);
- its database's growth (pg_database_size), per site and hour;
- the realtime path's API side: event emitted -> the triggered run exists (the run's created
  time), p50/p95 over the window, and how many triggered runs never came;
- runs settled and how many due runs were still waiting at the end (the server keeping up).

Baseline, same run: the first step (1 site) is the reference for the latency ratio.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from bench.context import Bench
from bench.report import Result, failed, fmt, fmt_ratio, ratio, summarize
from bench.system import cpu_between, cpu_percent, memory_mb, snapshot
from tests.support.central import CentralServer

PCS_PER_SITE = 8
REWRITE_PERIOD_S = 60.0  # one session rewrite per PC a minute
SETTLE_POLL_S = 1.0
SETTLERS = 4


def site_name(number: int) -> str:
    return f"site-{number:02d}"


def register_site(site: str) -> dict[str, str]:
    """The site's deployments as `gfx-sync deploy` builds them; returns name -> id."""
    from deployments.definitions import build_deployments
    from deployments.warm.served import register
    from gfx_sync.settings import load_settings

    deployments = build_deployments(load_settings(site=site))
    ids = asyncio.run(register(deployments))
    return {d.name: str(i) for d, i in zip(deployments, ids, strict=True)}


class Settler:
    """Settles every due run of the registered deployments, as each site's warm runner would
    (one query a poll for all of them), until stopped."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.deployment_ids: list[str] = []
        self.settled = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sites-settler", daemon=True)

    def start(self) -> Settler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        # Prefect's settings context is per thread: this one names the server too.
        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            asyncio.run(self._loop())

    async def _loop(self) -> None:
        from prefect.client.orchestration import get_client

        from deployments.warm.states import StateProposer

        async with get_client() as client:
            proposer = StateProposer(lambda: client)
            slots = asyncio.Semaphore(SETTLERS)

            async def settle(run: Any) -> None:
                async with slots:
                    try:
                        if await proposer.skip(run):
                            self.settled += 1
                    except Exception:  # a busy server: the run is taken again next poll
                        self.errors += 1

            while not self._stop.is_set():
                ids = [uuid.UUID(i) for i in self.deployment_ids]
                if ids:
                    due = await client.get_scheduled_flow_runs_for_deployments(
                        deployment_ids=ids, scheduled_before=datetime.now(UTC), limit=200
                    )
                    await asyncio.gather(*(settle(run) for run in due))
                await asyncio.sleep(SETTLE_POLL_S)


def raise_file_events(
    api_url: str, sites: list[str], stop: threading.Event, emitted: list[tuple[str, str, float]]
) -> None:
    """Every PC of every site raises one `gfx.file.added` per REWRITE_PERIOD_S, staggered
    evenly; each event's (site, path, time) is appended to `emitted`."""
    from tests.support.prefect_env import post_file_added

    sources = [(site, pc) for site in sites for pc in range(1, PCS_PER_SITE + 1)]
    interval = REWRITE_PERIOD_S / len(sources)
    turn = 0
    next_at = time.monotonic()
    with httpx.Client(base_url=api_url, timeout=30) as client:
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            site, pc = sources[turn % len(sources)]
            path = f"/nas/{site}/PC{pc:02d}/hands/step-{len(sites)}-rewrite-{turn}.json"
            sent = time.time()
            post_file_added(client, site, f"PC{pc:02d}", path)
            emitted.append((site, path, sent))
            turn += 1
            next_at += interval


def triggered_latencies(
    api_url: str, realtime_ids: list[str], emitted: list[tuple[str, str, float]]
) -> tuple[list[float], int]:
    """Event sent -> triggered run created (ms), matched by the run's `path` parameter."""
    created: dict[str, float] = {}
    with httpx.Client(base_url=api_url, timeout=60) as client:
        offset = 0
        while True:
            runs = client.post(
                "/flow_runs/filter",
                json={
                    "flow_runs": {"deployment_id": {"any_": realtime_ids}},
                    "limit": 200,
                    "offset": offset,
                },
            ).json()
            for run in runs:
                path = (run.get("parameters") or {}).get("path")
                if path:
                    moment = datetime.fromisoformat(run["created"]).timestamp()
                    created[path] = min(created.get(path, moment), moment)
            if len(runs) < 200:
                break
            offset += 200
    latencies = [(created[p] - sent) * 1000 for _, p, sent in emitted if p in created]
    return latencies, len(emitted) - len(latencies)


def database_bytes(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        (size,) = conn.execute("select pg_database_size(current_database())").fetchone()
    return int(size)


def late_runs(api_url: str, deployment_ids: list[str]) -> int:
    """Runs due more than 10 s ago and not started: the server (or the settler) falls behind."""
    before = datetime.fromtimestamp(time.time() - 10, UTC).isoformat()
    body = {
        "flow_runs": {
            "deployment_id": {"any_": deployment_ids},
            "state": {"type": {"any_": ["SCHEDULED"]}},
            "expected_start_time": {"before_": before},
        }
    }
    return int(httpx.post(f"{api_url}/flow_runs/count", json=body, timeout=60).json())


def measure_step(
    bench: Bench, server: CentralServer, sites: list[str],
    deployments: dict[str, dict[str, str]], settler: Settler,
) -> dict[str, Any]:  # fmt: skip
    window = bench.profile.sites_window_s
    api_url, database_url = server.api_url, server.database_url
    all_ids = [i for site in sites for i in deployments[site].values()]
    realtime_ids = [deployments[s][f"realtime-{s}"] for s in sites]
    settler.deployment_ids = all_ids
    time.sleep(bench.profile.sites_settle_s)  # the new sites' first runs and triggers settle
    stop, emitted = threading.Event(), []
    events = threading.Thread(
        target=raise_file_events, args=(api_url, sites, stop, emitted), name="sites-events"
    )
    trees = (server.process.pid, server.postgres_pid)
    size_before, settled_before = database_bytes(database_url), settler.settled
    before, started = [snapshot(pid) for pid in trees], time.time()
    events.start()
    time.sleep(window)
    stop.set()
    events.join()
    after, wall = [snapshot(pid) for pid in trees], time.time() - started
    time.sleep(5)  # the last events' runs are created
    size_after = database_bytes(database_url)
    latencies, missing = triggered_latencies(api_url, realtime_ids, emitted)
    server_cpu, postgres_cpu = (
        sum(cpu_percent(cpu_between(b, a), wall)[k] for k in ("gfx_pct", "server_pct"))
        for b, a in zip(before, after, strict=True)
    )
    grown_mb = (size_after - size_before) / 1e6
    return {
        "sites": len(sites),
        "window_s": wall,
        "server_cpu_pct": server_cpu,
        "postgres_cpu_pct": postgres_cpu,
        "server_pss_mb": sum(memory_mb(p.pid)["pss_mb"] for p in _tree(trees[0])),
        "postgres_pss_mb": sum(memory_mb(p.pid)["pss_mb"] for p in _tree(trees[1])),
        "db_mb": size_after / 1e6,
        "db_growth_mb_per_site_hour": grown_mb / len(sites) / (wall / 3600),
        "events": len(emitted),
        "event_to_run_ms": summarize(latencies),
        "triggered_missing": missing,
        "settled": settler.settled - settled_before,
        "settle_errors": settler.errors,
        "late_runs": late_runs(api_url, all_ids),
    }


def _tree(pid: int) -> Iterator[psutil.Process]:
    root = psutil.Process(pid)
    yield root
    yield from root.children(recursive=True)


def step_result(point: dict[str, Any], first: dict[str, Any] | None) -> Result:
    latency = point["event_to_run_ms"]
    base = first["event_to_run_ms"]["p50"] if first else None
    growth = ratio(latency["p50"], base)
    keeps_up = point["late_runs"] == 0 and point["triggered_missing"] == 0
    return Result(
        scenario="sites",
        measure=f"{point['sites']} site{'s' if point['sites'] > 1 else ''} on one server",
        unit="ms",
        figures={k: v for k, v in point.items()},
        baseline_name="the 1-site step of the same run",
        baseline={"event_to_run_p50_ms": base},
        ratios={"event_to_run_p50": growth},
        ratio_meaning="event -> triggered run p50, this step / 1 site",
        target="the server keeps up (no late run, every triggered run created)",
        met=keeps_up,
        cells={
            "result": (
                f"server CPU {point['server_cpu_pct']:.1f}% + PostgreSQL "
                f"{point['postgres_cpu_pct']:.1f}%, PSS {fmt(point['server_pss_mb'])} + "
                f"{fmt(point['postgres_pss_mb'])} MB; db "
                f"+{fmt(point['db_growth_mb_per_site_hour'], 2)} MB/site/h; "
                f"event -> run p50 {fmt(latency['p50'])} / p95 {fmt(latency['p95'])} ms "
                f"(n={latency['n']}, missing {point['triggered_missing']}); "
                f"{point['settled']} runs settled, {point['late_runs']} late"
            ),
            "baseline": f"{fmt(base)} ms" if base is not None else "-",
            "ratio": fmt_ratio(growth),
        },
    )


def run(bench: Bench) -> list[Result]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.support.central import central_prefect_server, debian_postgres_missing

    missing = debian_postgres_missing()
    counts = bench.profile.sites_counts
    if missing:
        return [failed("sites", f"{n} sites on one server", missing) for n in counts]
    results: list[Result] = []
    points: list[dict[str, Any]] = []
    work = bench.workdir("sites")
    os.environ.pop("PREFECT_API_URL", None)
    with (
        central_prefect_server(Path(work) / "central") as server,
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
    ):
        settler = Settler(server.api_url).start()
        deployments: dict[str, dict[str, str]] = {}
        try:
            for count in counts:
                for number in range(len(deployments) + 1, count + 1):
                    deployments[site_name(number)] = register_site(site_name(number))
                bench.say(f"sites: {count} sites, {bench.profile.sites_window_s:g} s")
                try:
                    point = measure_step(bench, server, list(deployments), deployments, settler)
                except Exception as exc:  # one step failing must not lose the others
                    results.append(failed("sites", f"{count} sites", repr(exc)))
                    continue
                points.append(point)
                results.append(step_result(point, points[0] if len(points) > 1 else None))
        finally:
            settler.stop()
    if results and points:
        results[0].notes = [
            f"each site: its deployments as `gfx-sync deploy` registers them (5-s batch, "
            f"recovery, realtime trigger on its own events), {PCS_PER_SITE} PCs raising one "
            "gfx.file.added a minute each; every due run settled as the warm runner settles an "
            "idle run (Completed Skipped straight from Scheduled), one settler for all sites",
            "server = `gfx-sync server` (Prefect server) on Debian's PostgreSQL 15; CPU (% of "
            "one core) and PSS of its process tree over the window, PostgreSQL's apart",
            "db growth = pg_database_size over the window, per site, scaled to an hour (the "
            "vacuum keeps 72 h of runs and 6 h of routine events: a site's steady-state share is "
            "about 72 x this rate for runs)",
        ]
    return results
