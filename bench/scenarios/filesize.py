"""file_size: peak memory and throughput of a drain, by session file size (about 1 KB to 50 MB).

One file per size, each drained in a child process of its own (`bench.scenarios.memory`'s
child: the shipped settings, the Postgres sink over the local socket), so each peak (VmHWM)
is that drain's alone. Baseline: the same child's peak before the drain (imports, engine,
queue), so the ratio says how much a file of that size adds. The hand tables' trigger runs in
the database, not in the measured process; its time is in the drain's seconds.

A realtime run drains the same way in a child forked from the warm runner's forkserver: its
peak is the forkserver's size plus the same growth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gfx_synth as synth
from bench.context import Bench
from bench.report import Result, fmt, fmt_ratio, ratio
from bench.scenarios.memory import drain_in_child

TARGET_MB = 200.0  # issue 15: a 50 MB session synced, the whole process
HANDS = (0, 20, 200, 2000, 10000)  # about 0.3 KB, 100 KB, 1 MB, 10 MB, 50 MB
QUICK_HANDS = (0, 20, 200)


def drain_one(work: Path, path: Path, url: str) -> dict[str, Any]:
    state = work / f"state-{path.stat().st_size}"
    state.mkdir()
    args = {"base": str(work / "base"), "state": str(state), "url": url, "paths": [str(path)]}
    measured = drain_in_child(state / "child-args.json", args)
    if measured["synced"] != 1:
        raise RuntimeError(f"{path.name}: not committed ({measured})")
    return measured


def run(bench: Bench) -> list[Result]:
    work = bench.workdir("file-size")
    folder = work / "base" / "PC01" / "hands"
    folder.mkdir(parents=True)
    url = bench.pg.create_database("bench_file_size")
    curve = []
    for index, hands in enumerate(QUICK_HANDS if bench.profile.quick else HANDS):
        doc = synth.make_session(hands=hands, seed=30 + index)
        path = synth.write_session(folder, doc)
        size_mb = path.stat().st_size / 1024 / 1024
        bench.say(f"file_size: {hands} hands, {size_mb:.2f} MB: draining in a child process")
        measured = drain_one(work, path, url)
        curve.append(
            {
                "hands": hands,
                "mb": size_mb,
                "peak_mb": measured["peak_mb"],
                "before_mb": measured["peak_mb_before_drain"],
                "seconds": measured["seconds"],
                "mb_per_s": size_mb / measured["seconds"] if measured["seconds"] else None,
            }
        )
    biggest = curve[-1]
    growth = ratio(biggest["peak_mb"], biggest["before_mb"])
    table = ["size MB | hands | peak MB | added MB | drain s | MB/s"] + [
        f"{fmt(c['mb'], 2)} | {c['hands']} | {fmt(c['peak_mb'])} | "
        f"{fmt(c['peak_mb'] - c['before_mb'])} | {fmt(c['seconds'], 2)} | {fmt(c['mb_per_s'])}"
        for c in curve
    ]
    return [
        Result(
            scenario="file_size",
            measure=f"peak RSS draining one file, up to {fmt(biggest['mb'])} MB",
            unit="MB",
            figures={"peak_mb": biggest["peak_mb"], "curve": curve},
            baseline_name="the same child's peak before the drain (imports, engine, queue)",
            baseline={"peak_mb": biggest["before_mb"]},
            ratios={"peak_over_baseline": growth},
            ratio_meaning="peak / peak before the drain (largest file)",
            target=f"<= {TARGET_MB:g} MB for a 50 MB file",
            met=biggest["mb"] >= 45 and biggest["peak_mb"] <= TARGET_MB,
            cells={
                "result": f"{fmt(biggest['peak_mb'])} MB ({fmt(biggest['mb'])} MB file)",
                "baseline": f"{fmt(biggest['before_mb'])} MB before drain",
                "ratio": fmt_ratio(growth),
            },
            notes=["curve: " + "; ".join(table)],
            details={"curve": curve},
        )
    ]
