"""The scenarios that run through `gfx-sync up` (Prefect server, deployments, watcher):
realtime, idle_cpu and burst. They share one system per runner, so `up` starts at most twice:
warm (the result) then stock (the baseline: Prefect's own Runner), each on a fresh database,
base folder and state dir. Within a system: realtime, then idle_cpu, then burst (warm only).

Clocks: file close times are `time.time()` here; commit times are when this process receives
the row's NOTIFY (delivered at commit); Prefect's run timestamps come from its server. All are
this machine's wall clock.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gfx_synth as synth
from bench.context import Bench
from bench.corpus import Corpus, CorpusFile, loguniform_hands, session_payloads
from bench.pg import row_count
from bench.report import Result, failed, fmt, fmt_ratio, ratio, summarize
from bench.scenarios.batch import close_engine, open_engine
from bench.system import (
    System,
    cpu_between,
    cpu_percent,
    epoch,
    events,
    flow_runs,
    iso,
    running_system,
    runs_started_since,
    snapshot,
    state_counts,
    state_times,
)
from deployments.warm.trigger_cover import COVER_KEY
from flows.watcher import FILE_ADDED_EVENT as FILE_ADDED
from gfx_sync.engine import Outcome
from gfx_sync.queue import ChangeKind

NAMES = ("realtime", "idle_cpu", "burst")
REALTIME_FLOW = "gfx-realtime-upsert"
BATCH_FLOW = "gfx-batch-upsert"
REALTIME_P50_MS, REALTIME_P95_MS = 300.0, 600.0
IDLE_TARGET_PCT = 1.0
BURST_TARGET_S = 30.0
STORM_SHARE = 0.02  # more realtime runs than 2% of the files would be a run storm
RUNS_SETTLE_S = 3.0  # after the last commit, before counting runs


# -- realtime ------------------------------------------------------------------------------------


def measure_realtime(
    bench: Bench, system: System, *, seed: int = 5, files: int | None = None
) -> dict[str, Any]:
    """New session files (1-3 hands) dropped into PC01 one at a time, `realtime_spacing_s`
    apart; the first `realtime_warmup` are reported apart (forkserver and connections warm).
    `files` (default `realtime_files`) measured; another `seed` gives other sessions."""
    profile = bench.profile
    count = profile.realtime_warmup + (profile.realtime_files if files is None else files)
    payloads = session_payloads(count, seed=seed, hands=lambda rng: rng.randint(1, 3))
    folder = system.folder("PC01").resolve()
    closed: dict[int, float] = {}
    paths: dict[int, str] = {}
    next_drop = started = time.time()
    cpu_before = snapshot(system.process.pid)
    bench.say(
        f"realtime ({system.runner}): dropping {count} files, {profile.realtime_spacing_s} s apart"
    )
    for session_id, _, data in payloads:
        time.sleep(max(0.0, next_drop - time.time()))
        path = folder / synth.session_file_name(session_id)
        with path.open("wb") as handle:
            handle.write(data)
        closed[session_id] = time.time()
        paths[session_id] = str(path)
        next_drop = closed[session_id] + profile.realtime_spacing_s
    keys = [("PC01", sid) for sid, _, _ in payloads]
    commits = system.listener.wait_for(keys, profile.realtime_wait_s)
    cpu = cpu_between(cpu_before, snapshot(system.process.pid))
    runs = runs_started_since(system.api_url, started)
    measured = [sid for sid, _, _ in payloads][profile.realtime_warmup :]
    latencies = [
        (commits[("PC01", sid)][0] - closed[sid]) * 1000
        for sid in measured
        if ("PC01", sid) in commits
    ]
    warmup = [
        (commits[("PC01", sid)][0] - closed[sid]) * 1000
        for sid, _, _ in payloads[: profile.realtime_warmup]
        if ("PC01", sid) in commits
    ]
    stages = _realtime_stages(system, measured, closed, paths, commits)
    written = [  # the trigger's clock_timestamp(): row written, before the commit
        (commits[("PC01", sid)][1] - closed[sid]) * 1000
        for sid in measured
        if ("PC01", sid) in commits
    ]
    return {
        "latencies_ms": latencies,
        "row_written_ms_p50": _median(written),
        "warmup_ms": warmup,
        "missing": len(measured) - len(latencies),
        "stages_ms": stages,
        "sync_sources": _sync_sources(system.url),
        # CPU per run started meanwhile (the realtime runs and the 5-s schedule's): what one
        # run costs the Prefect server, whose single event loop every stage goes through
        "runs_started": runs,
        "server_cpu_ms_per_run": 1000 * cpu["server_s"] / runs if runs else None,
        "gfx_cpu_ms_per_run": 1000 * cpu["gfx_s"] / runs if runs else None,
    }


def _realtime_stages(
    system: System,
    measured: list[int],
    closed: dict[int, float],
    paths: dict[int, str],
    commits: dict[tuple[str, int], tuple[float, float]],
) -> dict[str, Any]:
    """Where the time goes, per file, from the triggered run that carried its path:
    closed -> run created (watcher, event, trigger), created -> running (runner, process),
    running -> committed (the flow's code up to the commit). Only files committed by their own
    run count; a run drains every pending added file, so a late run's file may have been
    committed by an earlier run ("carried")."""
    first = min(closed.values()) - 1
    runs = flow_runs(system.api_url, REALTIME_FLOW, expected_start_time={"after_": iso(first)})
    by_path = {}
    for run in runs:
        path = (run.get("parameters") or {}).get("path")
        if path and path not in by_path:
            by_path[path] = run
    stages: dict[str, list[float]] = {
        "to_run_created": [],
        "to_running": [],
        "created_to_pending": [],
        "pending_to_running": [],
        "to_commit": [],
    }
    carried = 0
    per_file: list[tuple[float, float, float]] = []  # (closed->created, ->running, ->committed) ms
    for sid in measured:
        run = by_path.get(paths[sid])
        commit = commits.get(("PC01", sid))
        if run is None or commit is None:
            continue
        created, started = epoch(run.get("created")), epoch(run.get("start_time"))
        if created is None:
            continue
        if started is None or commit[0] < started:
            carried += 1
            continue
        to_created = (created - closed[sid]) * 1000
        to_running = (started - created) * 1000
        to_commit = (commit[0] - started) * 1000
        stages["to_run_created"].append(to_created)
        stages["to_running"].append(to_running)
        stages["to_commit"].append(to_commit)
        per_file.append((to_created, to_running, to_commit))
        states = state_times(system.api_url, run["id"])
        if "PENDING" in states and "RUNNING" in states:
            stages["created_to_pending"].append((states["PENDING"] - created) * 1000)
            stages["pending_to_running"].append((states["RUNNING"] - states["PENDING"]) * 1000)
    chains = _event_chains(system, measured, closed, paths, by_path)
    return {
        "runs": len(runs),
        "runs_by_state": state_counts(runs),
        "runs_covering_a_late_automation": sum(
            (run.get("idempotency_key") or "").startswith(COVER_KEY) for run in runs
        ),
        "event_chain_median": {
            name: _median([chain[index] for chain in chains])
            for index, name in enumerate(EVENT_CHAIN)
        },
        "event_chain_slowest": sorted(chains, key=sum, reverse=True)[:3],
        "files_committed_by_own_run": len(stages["to_commit"]),
        "files_carried_by_earlier_run": carried,
        **{name: _median(values) for name, values in stages.items()},
        "slowest_files": sorted(per_file, key=sum, reverse=True)[:3],  # where a tail comes from
    }


ACTION_TRIGGERED = "prefect.automation.action.triggered"
EVENT_CHAIN = ("closed->event", "->received", "->trigger fired", "->run created")


def _event_chains(
    system: System,
    measured: list[int],
    closed: dict[int, float],
    paths: dict[int, str],
    by_path: dict[str, dict[str, Any]],
) -> list[tuple[float, float, float, float]]:
    """Per file, closed -> run created split at the events Prefect keeps (ms, EVENT_CHAIN): the
    watcher's `gfx.file.added` (occurred, then received by the server), the automation's
    `prefect.automation.action.triggered` (occurred = when its trigger fired), the run's
    creation by the action."""
    since = min(closed.values()) - 1
    found = events(system.api_url, [FILE_ADDED, ACTION_TRIGGERED], since)
    added = {e["resource"].get("gfx.path"): e for e in found if e["event"] == FILE_ADDED}
    fired = {}
    for event in found:
        if event["event"] == ACTION_TRIGGERED:
            for related in event.get("related", []):
                if related.get("prefect.resource.role") == "triggering-event":
                    fired[related["prefect.resource.id"].removeprefix("prefect.event.")] = event
    chains = []
    for sid in measured:
        event, run = added.get(paths[sid]), by_path.get(paths[sid])
        trigger = fired.get(event["id"]) if event else None
        if event is None or run is None or trigger is None:
            continue
        times = [
            closed[sid],
            epoch(event["occurred"]),
            epoch(event["received"]),
            epoch(trigger["occurred"]),
            epoch(run["created"]),
        ]
        if None in times:
            continue
        chains.append(tuple((b - a) * 1000 for a, b in itertools.pairwise(times)))  # type: ignore[operator]
    return chains  # type: ignore[return-value]


def _event_chain_note(runner: str, stages: dict[str, Any]) -> list[str]:
    if not stages.get("event_chain_slowest"):
        return []
    medians = stages["event_chain_median"]
    slowest = "; ".join(" / ".join(fmt(ms) for ms in c) for c in stages["event_chain_slowest"])
    return [
        f"{runner} closed->run created, by Prefect's events ({' / '.join(EVENT_CHAIN)}, ms): "
        f"median {' / '.join(fmt(medians[name]) for name in EVENT_CHAIN)}; slowest {slowest}"
    ]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _sync_sources(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select sync_source, count(*) from public.gfx_sessions group by sync_source"
        ).fetchall()
    return {source: int(count) for source, count in rows}


# -- idle CPU --------------------------------------------------------------------------------------


def measure_idle(bench: Bench, system: System) -> dict[str, Any]:
    """CPU of `up`'s process tree over `idle_s` with no file changes (after `idle_settle_s`),
    the Prefect server apart; the batch deployment keeps running on its 5-s schedule."""
    profile = bench.profile
    bench.say(
        f"idle_cpu ({system.runner}): settling {profile.idle_settle_s:g} s, "
        f"then {profile.idle_s:g} s idle"
    )
    time.sleep(profile.idle_settle_s)
    started = time.time()
    before = snapshot(system.process.pid)
    time.sleep(profile.idle_s)
    after = snapshot(system.process.pid)
    wall = time.time() - started
    used = cpu_between(before, after)
    window = {"after_": iso(started), "before_": iso(started + wall)}
    batch_runs = flow_runs(system.api_url, BATCH_FLOW, expected_start_time=window)
    return {
        "wall_s": wall,
        **cpu_percent(used, wall),
        "processes": len(after.gfx),
        "batch_runs_due": len(batch_runs),
        "batch_runs_by_state": state_counts(batch_runs),
    }


# -- burst -----------------------------------------------------------------------------------------


def measure_burst(bench: Bench, system: System) -> dict[str, Any]:
    """`burst_files` new sessions written as fast as possible over the PC folders (a PC
    reconnecting, a folder copied in); timed from the first write to the last commit."""
    profile = bench.profile
    count = profile.burst_files
    payloads = session_payloads(count, seed=6, hands=loguniform_hands)
    files: list[CorpusFile] = []
    targets = []
    for index, (session_id, hands, data) in enumerate(payloads):
        pc_id = f"PC{index % profile.pcs + 1:02d}"
        path = system.folder(pc_id) / synth.session_file_name(session_id)
        targets.append((path, data))
        files.append(CorpusFile(pc_id, path, session_id, len(data), hands))
    bench.say(f"burst: writing {count} files at once")
    started = time.time()
    for path, data in targets:
        with path.open("wb") as handle:
            handle.write(data)
    written = time.time()
    commits = system.listener.wait_for([f.key for f in files], profile.burst_wait_s)
    last = max((seen for seen, _ in commits.values()), default=None)
    time.sleep(RUNS_SETTLE_S)
    window = {"after_": iso(started - 0.5), "before_": iso(time.time())}
    realtime = flow_runs(system.api_url, REALTIME_FLOW, expected_start_time=window)
    batch = flow_runs(system.api_url, BATCH_FLOW, expected_start_time=window)
    return {
        "files": files,
        "base": system.base,
        "committed": len(commits),
        "write_s": written - started,
        "from_start_s": None if last is None else last - started,
        "from_written_s": None if last is None else last - written,
        "realtime_runs": len(realtime),
        "realtime_runs_by_state": state_counts(realtime),
        "batch_runs_due": len(batch),
        "batch_runs_by_state": state_counts(batch),
        "mb": sum(f.size for f in files) / 1e6,
    }


def burst_direct(bench: Bench, files: list[CorpusFile], base: Path) -> float:
    """Baseline: the same files drained by the engine directly (no watcher, no Prefect)."""
    url = bench.pg.create_database("bench_burst_direct")
    corpus = Corpus(base, files)
    engine = open_engine(bench, bench.workdir("burst-direct"), corpus, url)
    try:
        engine.site.enqueue(engine.queue, corpus.paths, ChangeKind.ADDED)
        started = time.perf_counter()
        report = engine.drain()
        seconds = time.perf_counter() - started
    finally:
        close_engine(engine)
    if report.count(Outcome.SYNCED) != len(files) or row_count(url) != len(corpus.keys):
        raise RuntimeError("the direct drain did not commit every burst file")
    return seconds


# -- putting it together -----------------------------------------------------------------------


MEASURE: dict[str, Callable[[Bench, System], dict[str, Any]]] = {
    "realtime": measure_realtime,
    "idle_cpu": measure_idle,
    "burst": measure_burst,
}


def run(bench: Bench, selected: set[str]) -> list[Result]:
    """Measure the selected scenarios on the warm system, then the stock one (baselines)."""
    measured: dict[str, dict[str, Any]] = {"warm": {}, "stock": {}}
    for runner in ("warm", "stock"):
        wanted = [n for n in NAMES if n in selected and (runner == "warm" or n != "burst")]
        if not wanted:
            continue
        try:
            with running_system(bench, runner) as system:
                for name in wanted:
                    try:
                        measured[runner][name] = MEASURE[name](bench, system)
                    except Exception as exc:  # one scenario failing must not stop the others
                        measured[runner][name] = _error(exc)
        except Exception as exc:
            for name in wanted:
                measured[runner].setdefault(name, _error(exc))
    results = []
    if "realtime" in selected:
        results.append(
            _realtime_result(measured["warm"]["realtime"], measured["stock"]["realtime"])
        )
    if "idle_cpu" in selected:
        results.append(
            _idle_result(bench, measured["warm"]["idle_cpu"], measured["stock"]["idle_cpu"])
        )
    if "burst" in selected:
        results.append(_burst_result(bench, measured["warm"]["burst"]))
    return results


def _error(exc: Exception) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"}


def _realtime_result(warm: dict[str, Any], stock: dict[str, Any]) -> Result:
    measure = "file closed -> row committed (event -> triggered run)"
    if "error" in warm:
        return failed("realtime", measure, warm["error"])
    mine = summarize(warm["latencies_ms"])
    theirs = summarize(stock.get("latencies_ms", []))
    ratios = {"p50": ratio(mine["p50"], theirs["p50"]), "p95": ratio(mine["p95"], theirs["p95"])}
    stages = warm["stages_ms"]
    notes = [
        "warm median stages: closed->run created "
        f"{fmt(stages['to_run_created'])} ms, created->running {fmt(stages['to_running'])} ms "
        f"(->Pending {fmt(stages['created_to_pending'])}, Pending->Running "
        f"{fmt(stages['pending_to_running'])}), running->committed {fmt(stages['to_commit'])} ms"
    ]
    notes.extend(_event_chain_note("warm", stages))
    if warm.get("server_cpu_ms_per_run") is not None:
        notes.append(
            f"warm CPU per run started during the drops ({warm['runs_started']} runs, realtime "
            f"and scheduled): Prefect server {fmt(warm['server_cpu_ms_per_run'])} ms, gfx-sync "
            f"{fmt(warm['gfx_cpu_ms_per_run'])} ms"
        )
    if stages.get("slowest_files"):
        slowest = ", ".join(" / ".join(fmt(ms) for ms in file) for file in stages["slowest_files"])
        notes.append(
            "warm slowest files (closed->run created / ->running / ->committed, ms): "
            f"{slowest}; carried by an earlier run: {stages['files_carried_by_earlier_run']}; "
            f"runs the runner created for a late automation: "
            f"{stages['runs_covering_a_late_automation']} of {stages['runs']}"
        )
    if "error" in stock:
        notes.append(f"stock baseline failed: {stock['error']}")
    elif stock.get("stages_ms"):
        s = stock["stages_ms"]
        notes.append(
            f"stock median stages: {fmt(s['to_run_created'])} / {fmt(s['to_running'])} "
            f"({fmt(s['created_to_pending'])}, {fmt(s['pending_to_running'])}) / "
            f"{fmt(s['to_commit'])} ms"
        )
        notes.extend(_event_chain_note("stock", s))
    if warm["missing"] or stock.get("missing"):
        notes.append(f"not committed in time: warm {warm['missing']}, stock {stock.get('missing')}")
    met = (
        mine["p50"] is not None
        and mine["p95"] is not None
        and mine["p50"] <= REALTIME_P50_MS
        and mine["p95"] <= REALTIME_P95_MS
        and warm["missing"] == 0
    )
    return Result(
        scenario="realtime",
        measure=measure,
        unit="ms",
        figures=mine,
        baseline_name="the same through `gfx-sync up` with GFX_SYNC_RUNNER=stock (Prefect Runner)",
        baseline=theirs,
        ratios=ratios,
        ratio_meaning="warm / stock (lower is better)",
        target=f"p50 <= {REALTIME_P50_MS:g}, p95 <= {REALTIME_P95_MS:g} ms",
        met=met,
        cells={
            "result": f"p50 {fmt(mine['p50'])} / p95 {fmt(mine['p95'])} ms (n={mine['n']})",
            "baseline": f"p50 {fmt(theirs['p50'])} / p95 {fmt(theirs['p95'])} ms",
            "ratio": f"{fmt_ratio(ratios['p50'])} / {fmt_ratio(ratios['p95'])}",
        },
        notes=notes,
        details={"warm": warm, "stock": stock},
    )


def _idle_result(bench: Bench, warm: dict[str, Any], stock: dict[str, Any]) -> Result:
    measure = f"CPU, {bench.profile.idle_s:g} s idle, 5-s schedule on (% of one core)"
    if "error" in warm:
        return failed("idle_cpu", measure, warm["error"])
    mine, theirs = warm["gfx_pct"], stock.get("gfx_pct")
    share = ratio(mine, theirs)
    top = ", ".join(f"{k} {v:.2f}%" for k, v in list(warm["gfx_by_process_pct"].items())[:4])
    notes = [
        f"Prefect server (apart): warm {warm['server_pct']:.2f}%, "
        f"stock {fmt(stock.get('server_pct'), 2)}%",
        f"warm by process: {top}",
    ]
    if "error" in stock:
        notes.append(f"stock baseline failed: {stock['error']}")
    return Result(
        scenario="idle_cpu",
        measure=measure,
        unit="%",
        figures={"gfx_pct": mine, "server_pct": warm["server_pct"]},
        baseline_name="the same with GFX_SYNC_RUNNER=stock",
        baseline={"gfx_pct": theirs, "server_pct": stock.get("server_pct")},
        ratios={"gfx": share},
        ratio_meaning="warm / stock (lower is better)",
        target=f"<= {IDLE_TARGET_PCT:g}% of one core",
        met=mine <= IDLE_TARGET_PCT,
        cells={
            "result": f"{mine:.2f}% (+server {warm['server_pct']:.2f}%)",
            "baseline": f"{fmt(theirs, 2)}% (+server {fmt(stock.get('server_pct'), 2)}%)",
            "ratio": fmt_ratio(share),
        },
        notes=notes,
        details={"warm": warm, "stock": stock},
    )


def _burst_result(bench: Bench, warm: dict[str, Any]) -> Result:
    measure = f"{bench.profile.burst_files} files added at once -> all committed (up)"
    if "error" in warm:
        return failed("burst", measure, warm["error"])
    files: list[CorpusFile] = warm.pop("files")
    base: Path = warm.pop("base")
    mine = warm["from_start_s"]
    all_committed = warm["committed"] == len({f.key for f in files})
    storm_limit = max(1, int(STORM_SHARE * len(files)))
    no_storm = warm["realtime_runs"] <= storm_limit
    notes = [
        f"realtime runs {warm['realtime_runs']} (storm if > {storm_limit}), "
        f"batch runs due meanwhile {warm['batch_runs_due']} {warm['batch_runs_by_state']}; "
        f"writing took {warm['write_s']:.1f} s"
    ]
    direct: float | None = None
    try:
        bench.say("burst: direct-drain baseline")
        direct = burst_direct(bench, files, base)
    except Exception as exc:
        notes.append(f"direct-drain baseline failed: {type(exc).__name__}: {exc}")
    if not all_committed:
        notes.append(f"only {warm['committed']}/{len(files)} committed within the time bound")
    share = ratio(mine, direct)
    return Result(
        scenario="burst",
        measure=measure,
        unit="s",
        figures={"seconds": mine, "realtime_runs": warm["realtime_runs"]},
        baseline_name="the same files drained by SyncEngine directly (no watcher, no Prefect)",
        baseline={"seconds": direct},
        ratios={"over_direct": share},
        ratio_meaning="through gfx-sync up / direct drain (lower is better)",
        target=f"<= {BURST_TARGET_S:g} s, no run storm",
        met=all_committed and mine is not None and mine <= BURST_TARGET_S and no_storm,
        cells={
            "result": f"{fmt(mine)} s, {warm['realtime_runs']} realtime runs",
            "baseline": f"{fmt(direct)} s direct",
            "ratio": fmt_ratio(share),
        },
        notes=notes,
        details={**warm, "storm_limit": storm_limit, "direct_s": direct},
    )
