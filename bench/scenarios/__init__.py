"""The scenarios, in the order of the printed table.

Most are a function `run(bench) -> list[Result]`. realtime, idle_cpu and burst go through
`gfx-sync up` and are measured together (see `bench.scenarios.prefect`), so that the system
starts once per runner. console and console_idle start their own two (console on and off) and
are measured together too (`bench.scenarios.console`).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from bench.context import Bench
from bench.report import Result, failed

ORDER = (
    "detection",
    "realtime",
    "batch",
    "ceiling",
    "offline",
    "burst",
    "idle_cpu",
    "memory",
    "console",
    "console_idle",
    "hands",
    "file_size",
    "queue_day",
    "prefect_day",
    "footprint",
    "scale",
    "sustained",
    "sites",
    "isolation",
    "site_migration",
)
PREFECT = frozenset({"realtime", "burst", "idle_cpu"})
ALIASES = {
    "batch_ceiling": "ceiling",
    "idle": "idle_cpu",
    "offline_drain": "offline",
    "console_latency": "console",
    "filesize": "file_size",
}
MEASURES = {
    "detection": "file closed -> change in queue",
    "realtime": "file closed -> row committed",
    "batch": "modified files -> committed",
    "ceiling": "share of raw COPY + merge",
    "offline": "queued files -> committed after outage",
    "burst": "files added at once -> committed",
    "idle_cpu": "idle CPU",
    "memory": "peak RSS of the batch path",
    "console": "commit -> row shown in the console page",
    "console_idle": "idle CPU and memory of the console",
    "hands": "hand tables on vs off: realtime, batch, ceiling share",
    "file_size": "peak RSS and throughput of a drain by file size",
    "queue_day": "durable queue after broadcast days, retention on vs off",
    "prefect_day": "Prefect server database and API after a 12-h day of runs",
    "footprint": "PSS of the whole stack, idle and under load",
    "scale": "start-up rescan, watcher memory, inotify watches, idle CPU by PC folders",
    "sustained": "many PCs rewriting for minutes: file -> row, CPU, queue depth over time",
    "sites": "one central Prefect server by number of sites: CPU, memory, db growth, API",
    "isolation": "one site in trouble (killed, link cut, NAS gone): the other site's realtime",
    "site_migration": "single-site database -> sites, in place: migration time, longest lock",
}


def _simple() -> dict[str, Callable[[Bench], list[Result]]]:
    from bench.scenarios import (
        batch,
        console,
        day,
        detection,
        filesize,
        footprint,
        hands,
        isolation,
        memory,
        offline,
        scale,
        site_migration,
        sites,
        sustained,
    )

    return {
        "detection": detection.run,
        "batch": batch.run_batch,
        "ceiling": batch.run_ceiling,
        "offline": offline.run,
        "memory": memory.run,
        "console": console.run,  # both console rows: one `up` with the console, one without
        "console_idle": console.run_idle,
        "hands": hands.run,  # hand tables off and on, in one run
        "file_size": filesize.run,
        "queue_day": day.run_queue,
        "prefect_day": day.run_prefect,
        "footprint": footprint.run,
        "scale": scale.run,  # one row per point of its curve
        "sustained": sustained.run,
        "sites": sites.run,  # one row per site count
        "isolation": isolation.run,  # one row per phase
        "site_migration": site_migration.run,
    }


def parse_only(text: str | None) -> list[str]:
    """`--only a,b` -> known names in table order; raises ValueError naming unknown ones."""
    if not text:
        return list(ORDER)
    names = {ALIASES.get(n.strip(), n.strip()) for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(ORDER))
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(ORDER)}")
    return [n for n in ORDER if n in names]


def run_all(bench: Bench, names: list[str]) -> list[Result]:
    """Run the selected scenarios (no-Prefect ones first, then the Prefect group); a scenario
    that raises becomes an ERROR row and the others still run. Rows are kept by scenario and
    measure: a scenario may print a curve (several rows), and a row returned twice (a shared
    measurement) is printed once."""
    simple = _simple()
    results: dict[tuple[str, str], Result] = {}
    for name in [n for n in names if n not in PREFECT]:
        bench.say(f"== {name}")
        started = time.monotonic()
        try:
            for result in simple[name](bench):
                results[(result.scenario, result.measure)] = result
        except Exception as exc:
            traceback.print_exc()
            _replace_with_error(results, name, f"{type(exc).__name__}: {exc}")
        _set_seconds(results, name, time.monotonic() - started)
    prefect_names = {n for n in names if n in PREFECT}
    if prefect_names:
        from bench.scenarios import prefect

        bench.say(f"== {', '.join(sorted(prefect_names))} (through gfx-sync up)")
        started = time.monotonic()
        try:
            for result in prefect.run(bench, prefect_names):
                results[(result.scenario, result.measure)] = result
        except Exception as exc:
            traceback.print_exc()
            for name in prefect_names:
                _replace_with_error(results, name, f"{type(exc).__name__}: {exc}")
        for name in prefect_names:
            _set_seconds(results, name, time.monotonic() - started)
    return [r for n in ORDER for (scenario, _), r in results.items() if scenario == n]


def _replace_with_error(results: dict[tuple[str, str], Result], name: str, error: str) -> None:
    for key in [key for key in results if key[0] == name]:
        del results[key]
    results[(name, MEASURES[name])] = failed(name, MEASURES[name], error)


def _set_seconds(results: dict[tuple[str, str], Result], name: str, seconds: float) -> None:
    for (scenario, _), result in results.items():
        if scenario == name:
            result.seconds = seconds
