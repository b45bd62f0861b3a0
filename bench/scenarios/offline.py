"""offline: 1,000 files queued while the target is down -> all committed after it returns.

The target is "down" by the proxy refusing connections (and cutting open ones). A driver does
what the batch deployment does (flows/batch.py): a run every `flush_interval` (5 s) on the
shipped settings, skipping ticks while a run is still going; a run that finds the target down
probes it for up to `outage_wait` seconds and drains as soon as it answers.
`offline_down_runs` runs start while down; the target comes back half an interval after the
last of them started (a timer flips the proxy, whatever the driver is doing). Reported:
back -> all committed, and its two parts (back -> gfx-sync resumed: its probe answered or a
run started; then the drain itself). Baseline: the same with batch_size=1, time-budgeted and
extrapolated linearly if the budget runs out.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench.context import Bench
from bench.corpus import Corpus, write_corpus
from bench.pg import row_count, truncate, via_proxy
from bench.report import Result, fmt, fmt_ratio, ratio
from bench.scenarios.batch import close_engine, open_engine
from gfx_sync.engine import Outcome, SyncEngine
from gfx_sync.queue import ChangeKind
from gfx_sync.settings import Settings

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
    marks: dict[str, float] = {}  # "back": the target returned; "resumed": gfx-sync noticed

    def come_back() -> None:
        proxy.refuse(False)
        marks["back"] = time.perf_counter()

    ping = engine.sink.ping

    def noting_ping(*, timeout: float) -> bool:
        """The real probe; notes when it first found the target back (measurement only)."""
        answered = ping(timeout=timeout)
        if answered and "back" in marks:
            marks.setdefault("resumed", time.perf_counter())
        return answered

    engine.sink.ping = noting_ping  # type: ignore[method-assign]
    quiet = logging.getLogger("gfx_sync")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # outage warnings are expected here
    proxy.refuse(True)
    # The target returns half an interval after the last failing run started, whatever the
    # driver is doing then (a run may be probing it): a timer flips the proxy.
    timer = threading.Timer((profile.offline_down_runs - 0.5) * interval, come_back)
    try:
        engine.site.enqueue(engine.queue, corpus.paths, ChangeKind.MODIFIED)
        started = time.perf_counter()
        timer.start()
        next_run = started
        failed_runs = synced = 0
        deadline = started + profile.offline_down_runs * interval + profile.offline_wait_s
        while synced < total and time.perf_counter() < deadline:
            now = time.perf_counter()
            if now < next_run:
                time.sleep(next_run - now)
                continue
            if "back" in marks:
                marks.setdefault("resumed", now)  # a run that starts after the return
            committed, budget_spent = _scheduled_run(engine, marks, budget_s)
            synced += committed
            failed_runs += committed == 0
            if budget_spent:
                break  # extrapolate below
            while next_run <= time.perf_counter():
                next_run += interval  # a run still going when its tick came: tick skipped
        finished = time.perf_counter()
    finally:
        timer.cancel()
        if timer.is_alive():
            timer.join()
        proxy.refuse(False)
        quiet.setLevel(level)
        close_engine(engine)
    if "back" not in marks or "resumed" not in marks:
        raise RuntimeError("the target never came back within the time bound")
    if synced == 0:
        raise RuntimeError("nothing was committed after the target came back")
    back, resumed = marks["back"], marks["resumed"]
    drain = finished - resumed
    extrapolated = synced < total
    if extrapolated:
        drain = drain * total / synced
    elif row_count(url) != len(corpus.keys):
        raise RuntimeError("rows missing after the offline drain")
    return Recovery(
        back_to_all_s=(resumed - back) + drain,
        wait_s=resumed - back,
        drain_s=drain,
        failed_runs=failed_runs,
        synced=synced,
        total=total,
        extrapolated=extrapolated,
    )


def _scheduled_run(
    engine: SyncEngine, marks: dict[str, float], budget_s: float | None
) -> tuple[int, bool]:
    """One batch-deployment run, as `flows/batch.py` does it: drain until nothing is due,
    waiting up to `outage_wait` for an unreachable target. With a budget (the per-file
    baseline), drain in chunks and stop once `budget_s` has passed since the target returned.
    Returns (files committed, budget spent)."""
    synced = 0
    while True:
        report = engine.drain(
            max_batches=CHUNK_BATCHES if budget_s else None,
            outage_wait=engine.settings.outage_wait,
        )
        synced += report.count(Outcome.SYNCED)
        if not report.outcomes or report.outage or budget_s is None:
            return synced, False
        if "back" in marks and time.perf_counter() > marks["back"] + budget_s:
            return synced, True


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
        f"back -> drain resumed {mine.wait_s:.1f} s + drain {mine.drain_s:.1f} s "
        f"(flush_interval 5 s, outage_wait {Settings.model_fields['outage_wait'].default:g} s; "
        f"{mine.failed_runs} runs failed while down)"
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
