"""offline: 1,000 files queued while the target is down -> all committed after it returns.

The target is "down" by the proxy refusing connections (and cutting open ones). A driver does
what the batch deployment does: a drain every `flush_interval` (5 s) on the shipped settings,
skipping ticks while a drain is still running. `offline_down_runs` runs fail while down; the
target comes back half an interval after the last failed run, so the first drain after it
starts ~2.5 s later. Reported: back -> all committed, and its two parts (wait for the next
scheduled run, then the drain itself). Baseline: the same with batch_size=1, time-budgeted
and extrapolated linearly if the budget runs out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from bench.context import Bench
from bench.corpus import Corpus, write_corpus
from bench.pg import row_count, truncate, via_proxy
from bench.report import Result, fmt, fmt_ratio, ratio
from bench.scenarios.batch import close_engine, open_engine
from gfx_sync.engine import Outcome, SyncEngine
from gfx_sync.queue import Change

TARGET_S = 10.0
CHUNK_BATCHES = 25


@dataclass
class Recovery:
    back_to_all_s: float  # extrapolated to all files when `extrapolated`
    wait_s: float  # back -> the first drain after it started
    drain_s: float  # that drain start -> all committed (or extrapolated)
    failed_runs: int
    synced: int
    total: int
    extrapolated: bool

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def recover(
    bench: Bench, corpus: Corpus, url: str, *, batch_size: int, budget_s: float | None
) -> Recovery:
    profile = bench.profile
    proxy = bench.proxy
    work = bench.root / "offline"
    truncate(url)
    engine = open_engine(bench, work, corpus, url, batch_size=batch_size)
    interval = engine.settings.flush_interval
    total = len(corpus.files)
    quiet = logging.getLogger("gfx_sync")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # outage warnings are expected here
    proxy.refuse(True)
    try:
        engine.enqueue_paths(corpus.paths, Change.MODIFIED)
        started = time.perf_counter()
        back_at = started + (profile.offline_down_runs - 0.5) * interval
        next_run = started
        back: float | None = None
        first_drain: float | None = None
        failed_runs = synced = 0
        deadline = started + profile.offline_down_runs * interval + profile.offline_wait_s
        while synced < total and time.perf_counter() < deadline:
            now = time.perf_counter()
            if back is None and now >= back_at:
                proxy.refuse(False)
                back = time.perf_counter()
                continue
            if now < next_run:
                time.sleep(min(next_run, back_at if back is None else next_run) - now)
                continue
            if back is not None and first_drain is None:
                first_drain = now
            run_deadline = None if budget_s is None or back is None else now + budget_s
            synced += _scheduled_run(engine, run_deadline)
            if back is None:
                failed_runs += 1
            elif run_deadline is not None and time.perf_counter() > run_deadline:
                break  # budget spent: extrapolate below
            while next_run <= time.perf_counter():
                next_run += interval  # a run still going when its tick came: tick skipped
        finished = time.perf_counter()
    finally:
        proxy.refuse(False)
        quiet.setLevel(level)
        close_engine(engine)
    if back is None or first_drain is None:
        raise RuntimeError("the target never came back within the time bound")
    if synced == 0:
        raise RuntimeError("nothing was committed after the target came back")
    drain = finished - first_drain
    extrapolated = synced < total
    if extrapolated:
        drain = drain * total / synced
    elif row_count(url) != len(corpus.keys):
        raise RuntimeError("rows missing after the offline drain")
    return Recovery(
        back_to_all_s=(first_drain - back) + drain,
        wait_s=first_drain - back,
        drain_s=drain,
        failed_runs=failed_runs,
        synced=synced,
        total=total,
        extrapolated=extrapolated,
    )


def _scheduled_run(engine: SyncEngine, deadline: float | None) -> int:
    """One batch-deployment run: drain until nothing is due (checking the budget, if any);
    returns how many files it committed."""
    synced = 0
    while True:
        report = engine.drain(max_batches=CHUNK_BATCHES if deadline else None)
        synced += report.count(Outcome.SYNCED)
        if not report.outcomes or report.outage or deadline is None:
            return synced
        if time.perf_counter() > deadline:
            return synced


def run(bench: Bench) -> list[Result]:
    profile = bench.profile
    work = bench.workdir("offline")
    bench.say(f"offline: writing {profile.offline_files} files")
    corpus = write_corpus(
        work / "base", profile.offline_files, seed=3, pcs=profile.pcs, samples=True
    )
    url = via_proxy(bench.pg.create_database("bench_offline"), bench.proxy.port)
    mine = recover(bench, corpus, url, batch_size=500, budget_s=None)
    bench.say(f"offline: gfx-sync back -> all committed {mine.back_to_all_s:.1f} s")
    theirs = recover(bench, corpus, url, batch_size=1, budget_s=profile.offline_budget_s)
    bench.say(f"offline: per-file baseline {theirs.back_to_all_s:.1f} s")
    speedup = ratio(theirs.back_to_all_s, mine.back_to_all_s)
    notes = [
        f"back -> next scheduled run {mine.wait_s:.1f} s + drain {mine.drain_s:.1f} s "
        f"(flush_interval 5 s; {mine.failed_runs} runs failed while down)"
    ]
    if theirs.extrapolated:
        notes.append(f"per-file baseline extrapolated from {theirs.synced}/{theirs.total} files")
    return [
        Result(
            scenario="offline",
            measure=f"{mine.total} queued files, target back -> all committed",
            unit="s",
            figures={
                "seconds": mine.back_to_all_s,
                "wait_s": mine.wait_s,
                "drain_s": mine.drain_s,
            },
            baseline_name="the same with batch_size=1 (one upsert per file)",
            baseline={"seconds": theirs.back_to_all_s, "extrapolated": theirs.extrapolated},
            ratios={"speedup": speedup},
            ratio_meaning="baseline / gfx-sync (speed-up, higher is better)",
            target=f"<= {TARGET_S:g} s",
            met=mine.back_to_all_s <= TARGET_S,
            cells={
                "result": f"{fmt(mine.back_to_all_s)} s (drain {fmt(mine.drain_s)} s)",
                "baseline": f"{fmt(theirs.back_to_all_s)} s" + (" (extrap.)" * theirs.extrapolated),
                "ratio": f"{fmt_ratio(speedup)} faster",
            },
            notes=notes,
            details={
                "corpus": corpus.describe(),
                "gfx": mine.to_json(),
                "per_file": theirs.to_json(),
            },
        )
    ]
