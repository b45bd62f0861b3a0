"""hands: what the hand tables cost the sync, measured with their derivation off and on in one run.

The hand rows are derived in the database, by a trigger on `gfx_sessions` (the migration
`*_hand_tables.sql`), so "off" is the same schema with that trigger disabled: the sync as it
was before hand tables. Three figures, each off and on, interleaved so the machine's drift
falls on both alike:
- realtime: one warm `gfx-sync up`; new session files (1-3 hands, as the realtime row) dropped
  in blocks, off / on / off / on; file closed -> row committed (NOTIFY at commit).
- batch: the batch row's corpus (real samples included) drained by the engine, off then on,
  `batch_repeats` times: all new sessions (every hand derived), then every generated file
  rewritten one hand longer (only that hand derived: a broadcast's steady state).
- ceiling share: the raw COPY + merge over the same connections, off and on, divided by the
  batch time of the same setting.
Target (issue 14): with hand tables on, each figure within 10% of off.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

import gfx_synth as synth
from bench.context import Bench
from bench.corpus import Corpus, write_corpus
from bench.pg import via_proxy
from bench.report import Result, fmt, fmt_ratio, ratio, summarize
from bench.scenarios.batch import close_engine, copy_merge_ceiling, drain_timed, open_engine
from bench.scenarios.prefect import measure_realtime
from bench.system import running_system
from gfx_sync.engine import Outcome
from gfx_sync.queue import ChangeKind

DERIVE_TRIGGER = "gfx_sessions_derive_hands"
TOLERANCE = 1.10  # on / off at most this
BLOCKS = ("off", "on", "off", "on")


def set_derivation(url: str, on: bool) -> None:
    """Enable or disable the hand tables' trigger (the bench's database: its owner)."""
    action = "enable" if on else "disable"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"alter table public.gfx_sessions {action} trigger {DERIVE_TRIGGER}")  # type: ignore[arg-type]


def hand_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from public.gfx_hands").fetchone()[0]


def measure_realtime_blocks(bench: Bench) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {"off": [], "on": []}
    per_block = max(4, bench.profile.realtime_files // 2)
    with running_system(bench, "warm", name="hands") as system:
        for number, setting in enumerate(BLOCKS):
            set_derivation(system.url, setting == "on")
            bench.say(f"hands: realtime block {number + 1}/{len(BLOCKS)}, hand tables {setting}")
            block = measure_realtime(bench, system, seed=40 + number, files=per_block)
            if block["missing"]:
                raise RuntimeError(f"{block['missing']} files not committed in block {number}")
            latencies[setting].extend(block["latencies_ms"])
        hands = hand_rows(system.url)
    if not hands:
        raise RuntimeError("no hand rows after the 'on' blocks: the derivation did not run")
    return {"latencies_ms": latencies, "hand_rows": hands}


def grown_snapshots(corpus: Corpus) -> dict[Path, bytes]:
    """Each generated file's next snapshot, one hand more (the real samples stay as they are):
    what a batch run meets during a broadcast."""
    return {
        f.path: synth.session_bytes(
            synth.grow_session(orjson.loads(f.path.read_bytes()), 1, seed=f.session_id % 997)
        )
        for f in corpus.files
        if not f.real
    }


def drain_growth_timed(
    bench: Bench, work: Path, corpus: Corpus, url: str, grown: dict[Path, bytes]
) -> float:
    """The corpus stored (drain_timed), then every file rewritten one hand longer: the time
    to commit those modified files."""
    originals = {path: path.read_bytes() for path in grown}
    try:
        drain_timed(bench, work, corpus, url, batch_size=500)
        for path, data in grown.items():
            path.write_bytes(data)
        engine = open_engine(bench, work, corpus, url, batch_size=500)
        try:
            engine.site.enqueue(engine.queue, list(grown), ChangeKind.MODIFIED)
            started = time.perf_counter()
            report = engine.drain()
            seconds = time.perf_counter() - started
        finally:
            close_engine(engine)
        if report.count(Outcome.SYNCED) != len(grown):
            raise RuntimeError(f"{report.count(Outcome.SYNCED)}/{len(grown)} grown files synced")
        return seconds
    finally:
        for path, data in originals.items():
            path.write_bytes(data)


def measure_batch(bench: Bench) -> dict[str, Any]:
    profile = bench.profile
    work = bench.workdir("hands-batch")
    corpus = write_corpus(work / "base", profile.batch_files, seed=2, pcs=profile.pcs, samples=True)
    grown = grown_snapshots(corpus)
    direct = bench.pg.create_database("bench_hands")
    url = via_proxy(direct, bench.proxy.port)
    connections = bench.settings(work, corpus.base, url).write_connections
    drains: dict[str, list[float]] = {"off": [], "on": []}
    growth: dict[str, list[float]] = {"off": [], "on": []}
    ceilings: dict[str, list[float]] = {"off": [], "on": []}
    for repeat in range(profile.batch_repeats):
        for setting in ("off", "on"):
            set_derivation(direct, setting == "on")
            drains[setting].append(drain_timed(bench, work, corpus, url, batch_size=500).seconds)
            ceilings[setting].append(copy_merge_ceiling(corpus, url, connections))
            growth[setting].append(drain_growth_timed(bench, work, corpus, url, grown))
            bench.say(
                f"hands: batch {repeat + 1}/{profile.batch_repeats}, hand tables {setting}: "
                f"new {drains[setting][-1]:.2f} s, ceiling {ceilings[setting][-1]:.2f} s, "
                f"grown by a hand {growth[setting][-1]:.2f} s"
            )
    hands = hand_rows(direct)
    return {
        "corpus": corpus.describe(),
        "drain_s": drains,
        "growth_s": growth,
        "grown_files": len(grown),
        "ceiling_s": ceilings,
        "hand_rows_at_the_end": hands,
    }


def run(bench: Bench) -> list[Result]:
    realtime = measure_realtime_blocks(bench)
    batch = measure_batch(bench)
    on, off = (summarize(realtime["latencies_ms"][k]) for k in ("on", "off"))
    drain = {k: statistics.median(v) for k, v in batch["drain_s"].items()}
    growth = {k: statistics.median(v) for k, v in batch["growth_s"].items()}
    share = {k: ratio(statistics.median(batch["ceiling_s"][k]), drain[k]) for k in drain}
    ratios = {
        "realtime_p50": ratio(on["p50"], off["p50"]),
        "realtime_p95": ratio(on["p95"], off["p95"]),
        "batch_seconds": ratio(drain["on"], drain["off"]),
        "batch_growth_seconds": ratio(growth["on"], growth["off"]),
        "ceiling_share": ratio(share["on"], share["off"]),
    }
    met = all(
        value is not None
        and (value >= 1 / TOLERANCE if key == "ceiling_share" else value <= TOLERANCE)
        for key, value in ratios.items()
    )

    def figures(realtime_figures: dict[str, Any], setting: str) -> dict[str, Any]:
        return {
            "realtime": realtime_figures,
            "batch_seconds": drain[setting],
            "batch_growth_seconds": growth[setting],
            "ceiling_share": share[setting],
        }

    def cell(realtime_figures: dict[str, Any], setting: str) -> str:
        return (
            f"rt p50 {fmt(realtime_figures['p50'])} / p95 {fmt(realtime_figures['p95'])} ms; "
            f"batch new {fmt(drain[setting], 2)} s, grown {fmt(growth[setting], 2)} s; "
            f"share {fmt(share[setting], 2)}"
        )

    files = batch["corpus"]["files"]
    return [
        Result(
            scenario="hands",
            measure="hand tables on: realtime, batch, ceiling share",
            unit="ms / s",
            figures=figures(on, "on"),
            baseline_name="the same with the hand tables' trigger disabled (the sync without them)",
            baseline=figures(off, "off"),
            ratios=ratios,
            ratio_meaning="on / off (realtime, batch: lower is better; share: higher)",
            target=f"each within {round((TOLERANCE - 1) * 100)}% of off",
            met=met,
            cells={
                "result": cell(on, "on"),
                "baseline": cell(off, "off"),
                "ratio": " / ".join(fmt_ratio(v) for v in ratios.values()),
            },
            notes=[
                f"realtime: blocks {' / '.join(BLOCKS)} on one warm `up`, "
                f"{realtime['hand_rows']} hand rows written by the 'on' blocks",
                f"batch: {files} new files ({batch['corpus']['total_mb']} MB, real samples "
                f"included), then {batch['grown_files']} of them grown by one hand; off then on, "
                f"{len(batch['drain_s']['on'])} repeats; ratios: realtime p50 / p95 / batch of "
                "new files / batch of grown files / ceiling share",
            ],
            details={"realtime_ms": realtime["latencies_ms"], "batch": batch},
        )
    ]
