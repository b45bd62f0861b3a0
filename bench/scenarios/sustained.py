"""sustained: many PCs rewriting their live sessions for minutes, through `gfx-sync up` (issue 15).

`sustained_pcs` PC folders, each with one live session that its PC rewrites in place every
`sustained_period_s`, one hand longer each time (the PCs staggered evenly), for
`sustained_minutes`. A rewrite is a modified file: it goes the batch way (the 5-s schedule),
not the realtime one. Each rewrite is timed from the file closed to the commit of its row
with that many hands (NOTIFY at commit carries the hand count). A rewrite whose row was
overtaken by the next rewrite before it committed is counted as superseded (the newer one
committed instead; newest wins); a rewrite never committed, nor overtaken, is lost.

Per minute: rewrites, their p50/p95, commits, CPU of gfx-sync's processes and of the Prefect
server (% of one core), and the durable queue's deepest point (pending + in flight, sampled
every `SAMPLE_S`); the queue's slope over the second half says whether the agent keeps up.

Baseline, same run and system: single rewrites on the idle system before the load, timed the
same way (what one modified file costs, the 5-s schedule included).
"""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import gfx_synth as synth
from bench.context import Bench
from bench.corpus import pc_folder
from bench.pg import CommitListener
from bench.report import Result, fmt, fmt_ratio, percentile, ratio, summarize
from bench.scenarios.scale import open_queue, pc_id, session_id
from bench.system import System, cpu_between, running_system, snapshot
from gfx_sync.settings import Settings

SAMPLE_S = 2.0
FLUSH_INTERVAL_S = Settings.model_fields["flush_interval"].default  # the batch schedule
BASELINE_REWRITES = 6
BASELINE_SPACING_S = 1.5
Write = tuple[tuple[str, int], int, float]  # (PC, session), hands, closed at


class Rewriter:
    """Each PC's live session rewritten in place, one hand longer, every `period` seconds,
    under the base folder `populate` was given."""

    def __init__(self, pcs: int, period: float) -> None:
        self.base: Path | None = None
        self.pcs = pcs
        self.period = period
        self.hands = dict.fromkeys(range(pcs), 1)
        self.writes: list[Write] = []

    def key(self, pc: int) -> tuple[str, int]:
        return pc_id(pc), session_id(pc, 0, 1)

    def populate(self, base: Path) -> None:
        """Each PC's first snapshot (one hand), written before `up` starts."""
        self.base = base
        for pc in range(self.pcs):
            self._write(pc, record=False)

    def rewrite(self, pc: int) -> None:
        self.hands[pc] += 1
        self._write(pc, record=True)

    def run(self, stop: threading.Event, seconds: float) -> None:
        interval = self.period / self.pcs
        next_at, ends = time.monotonic(), time.monotonic() + seconds
        turn = 0
        while next_at < ends and not stop.wait(max(0.0, next_at - time.monotonic())):
            self.rewrite(turn % self.pcs)
            turn += 1
            next_at += interval

    def _write(self, pc: int, *, record: bool) -> None:
        assert self.base is not None, "populate first"
        pc_name, created = self.key(pc)
        doc = synth.make_session(hands=self.hands[pc], created_ticks=created, seed=pc)
        synth.write_session(pc_folder(self.base, pc_name), doc)
        if record:
            self.writes.append(((pc_name, created), self.hands[pc], time.time()))


class Sampler:
    """The queue's depth every SAMPLE_S, and the CPU of `up`'s tree each minute."""

    def __init__(self, system: System, state: Path) -> None:
        self.system = system
        self.state = state
        self.depth: list[tuple[float, int]] = []
        self.cpu: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sustained-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        queue = open_queue(self.state)
        try:
            shot, shot_at = snapshot(self.system.process.pid), time.monotonic()
            while not self._stop.wait(SAMPLE_S):
                stats = queue.stats()
                self.depth.append((time.time(), stats.pending + stats.inflight))
                if time.monotonic() - shot_at >= 60:
                    shot, shot_at = self._cpu_since(shot, shot_at)
            if time.monotonic() - shot_at >= SAMPLE_S:  # the last, partial minute
                self._cpu_since(shot, shot_at)
        finally:
            queue.close()

    def _cpu_since(self, shot: Any, shot_at: float) -> tuple[Any, float]:
        now, now_at = snapshot(self.system.process.pid), time.monotonic()
        used, wall = cpu_between(shot, now), now_at - shot_at
        self.cpu.append(
            {"gfx_pct": 100 * used["gfx_s"] / wall, "server_pct": 100 * used["server_s"] / wall}
        )
        return now, now_at


def match(writes: list[Write], history: list[tuple[tuple[str, int], int, float]]) -> dict:
    """Each write's latency (ms), or superseded (a later rewrite committed first), or lost."""
    commits: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
    for key, hands, seen in history:
        commits[key].append((seen, hands))
    for found in commits.values():
        found.sort()
    latencies: list[tuple[float, float]] = []  # (closed at, ms)
    superseded = lost = 0
    for key, hands, closed in writes:
        found = commits.get(key, [])
        start = bisect.bisect_left(found, (closed, -1))
        later = [(seen, count) for seen, count in found[start:] if count >= hands]
        if not later:
            lost += 1
        elif later[0][1] == hands:
            latencies.append((closed, (later[0][0] - closed) * 1000))
        else:
            superseded += 1
    return {"latencies": latencies, "superseded": superseded, "lost": lost}


def baseline_rewrites(bench: Bench, rewriter: Rewriter, listener: CommitListener) -> list[float]:
    """Single rewrites on the idle system, one at a time."""
    first = len(rewriter.writes)
    for number in range(BASELINE_REWRITES):
        rewriter.rewrite(number % rewriter.pcs)
        key, hands, _ = rewriter.writes[-1]
        wait_for_hands(listener, key, hands, bench.profile.realtime_wait_s)
        time.sleep(BASELINE_SPACING_S)
    found = match(rewriter.writes[first:], list(listener.history))
    del rewriter.writes[first:]
    return [ms for _, ms in found["latencies"]]


def wait_for_hands(
    listener: CommitListener, key: tuple[str, int], hands: int, timeout: float
) -> None:
    """Until a row of `key` with at least `hands` hands committed (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(k == key and count >= hands for k, count, _ in list(listener.history)):
            return
        time.sleep(0.05)


def slope_per_minute(depth: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of the queue depth over the second half of the writing (items per
    minute); growing means above 1% of the writes a minute."""
    half = depth[len(depth) // 2 :]
    if len(half) < 3:
        return None
    times = [t for t, _ in half]
    values = [float(v) for _, v in half]
    return statistics.linear_regression(times, values).slope * 60


def run(bench: Bench) -> list[Result]:
    profile = bench.profile
    pcs, period = profile.sustained_pcs, profile.sustained_period_s
    seconds = profile.sustained_minutes * 60
    rewriter = Rewriter(pcs, period)
    with running_system(
        bench, "warm", name="sustained", pcs=pcs, populate=rewriter.populate
    ) as system:
        keys = [rewriter.key(pc) for pc in range(pcs)]
        first = system.listener.wait_for(keys, profile.scale_sync_wait_s)
        if len(first) < pcs:
            raise RuntimeError(f"{len(first)}/{pcs} sessions committed at the start")
        baseline = baseline_rewrites(bench, rewriter, system.listener)
        bench.say(f"sustained: {pcs} PCs, a rewrite each every {period:g} s, {seconds:g} s")
        sampler = Sampler(system, system_state(system)).start()
        stop = threading.Event()
        started = time.time()
        try:
            rewriter.run(stop, seconds)
        finally:
            stop.set()
        last_key, last_hands, _ = rewriter.writes[-1]
        wait_for_hands(system.listener, last_key, last_hands, 120.0)
        drained_at = time.time()
        sampler.stop()
        found = match(rewriter.writes, list(system.listener.history))
    return [result(bench, rewriter, found, sampler, baseline, started, drained_at)]


def system_state(system: System) -> Path:
    """`up`'s state folder: the bench's layout puts it beside the base folder."""
    return system.base.parent / "state"


def result(
    bench: Bench,
    rewriter: Rewriter,
    found: dict[str, Any],
    sampler: Sampler,
    baseline: list[float],
    started: float,
    drained_at: float,
) -> Result:
    profile = bench.profile
    all_ms = [ms for _, ms in found["latencies"]]
    figures = summarize(all_ms)
    figures["p99"] = percentile(sorted(all_ms), 99) if all_ms else None
    base = summarize(baseline)
    ratios = {"p50": ratio(figures["p50"], base["p50"]), "p95": ratio(figures["p95"], base["p95"])}
    minutes: list[dict[str, Any]] = []
    for minute in range(int(profile.sustained_minutes + 0.999)):
        low, high = started + 60 * minute, started + 60 * (minute + 1)
        in_minute = [ms for closed, ms in found["latencies"] if low <= closed < high]
        writes = sum(1 for _, _, closed in rewriter.writes if low <= closed < high)
        depth = [d for t, d in sampler.depth if low <= t < high]
        cpu = sampler.cpu[minute] if minute < len(sampler.cpu) else {}
        summary = summarize(in_minute)
        minutes.append(
            {
                "minute": minute + 1,
                "writes": writes,
                "p50_ms": summary["p50"],
                "p95_ms": summary["p95"],
                "committed": len(in_minute),
                "gfx_cpu_pct": cpu.get("gfx_pct"),
                "server_cpu_pct": cpu.get("server_pct"),
                "max_queue_depth": max(depth, default=None),
            }
        )
    ends = started + profile.sustained_minutes * 60
    slope = slope_per_minute([(t, d) for t, d in sampler.depth if t <= ends])
    growing_at = 0.01 * len(rewriter.writes) / profile.sustained_minutes  # 1% of writes/min
    curve = "; ".join(
        f"min {m['minute']}: {m['writes']} writes, p50 {fmt(m['p50_ms'])} / p95 "
        f"{fmt(m['p95_ms'])} ms, CPU gfx {fmt(m['gfx_cpu_pct'], 1)}% server "
        f"{fmt(m['server_cpu_pct'], 1)}%, queue max {m['max_queue_depth']}"
        for m in minutes
    )
    bound_ms = 2000 * FLUSH_INTERVAL_S
    met = (
        found["lost"] == 0
        and figures["p95"] is not None
        and figures["p95"] <= bound_ms
        and (slope is None or slope <= growing_at)
    )
    return Result(
        scenario="sustained",
        measure=(
            f"{rewriter.pcs} PCs rewriting every {profile.sustained_period_s:g} s for "
            f"{profile.sustained_minutes:g} min: file closed -> row"
        ),
        unit="ms",
        figures={
            **figures,
            "writes": len(rewriter.writes),
            "superseded": found["superseded"],
            "lost": found["lost"],
            "queue_slope_per_min": slope,
            "drain_after_s": round(drained_at - started - profile.sustained_minutes * 60, 1),
        },
        baseline_name="single rewrites on the idle system, the same path (5-s batch schedule)",
        baseline=base,
        ratios=ratios,
        ratio_meaning="under load / idle (lower is better)",
        target=f"0 lost; p95 <= {bound_ms / 1000:g} s (two batch periods); queue not growing",
        met=met,
        cells={
            "result": (
                f"p50 {fmt(figures['p50'])} / p95 {fmt(figures['p95'])} / p99 "
                f"{fmt(figures['p99'])} ms (n={figures['n']}); {found['superseded']} superseded, "
                f"{found['lost']} lost; queue slope {fmt(slope, 2)}/min"
            ),
            "baseline": f"p50 {fmt(base['p50'])} / p95 {fmt(base['p95'])} ms",
            "ratio": f"{fmt_ratio(ratios['p50'])} / {fmt_ratio(ratios['p95'])}",
        },
        notes=[
            "a rewrite is a modified file: the batch way (5-s schedule), so its latency is "
            "about half the schedule plus the batch; new files (the realtime way) are the "
            "realtime and scale rows",
            f"per minute: {curve}",
        ],
        details={"minutes": minutes, "queue_depth": sampler.depth},
    )
