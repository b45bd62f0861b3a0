"""detection: a file written and closed -> the change durable in the queue.

gfx-sync: `FolderWatcher` with a real `DurableQueue` and its default native reader (inotify on
Linux); the time is taken in its callback, which runs right after the enqueue transaction
committed. Baseline: a bare `watchfiles.watch` loop with the same step and debounce, timed when
it yields. Also measured, in the notes: `FolderWatcher` with the watchfiles reader (its fallback
where inotify is missing). Half the writes create a file, half rewrite one in place (as
PokerGFX does); the variants run in alternating rounds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import watchfiles

import gfx_synth as synth
from bench.context import Bench
from bench.corpus import pc_folder, sample_payloads, session_payloads
from bench.report import Result, fmt, fmt_ratio, ratio, summarize
from gfx_sync.queue import DurableQueue
from gfx_sync.watcher import (
    DEFAULT_DEBOUNCE_MS,
    DEFAULT_STEP_MS,
    RUST_TIMEOUT_MS,
    DetectedChange,
    FolderWatcher,
    NativeReader,
    WatchTarget,
)

WAIT_S = 2.0  # per file: a change not seen by then counts as missed
READY_S = 10.0
TARGET_P50_MS = 5.0


class Sightings:
    """When each path was reported (perf_counter), for whichever watch is running."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = {}
        self._sizes: dict[str, list[int | None]] = {}
        self._cond = threading.Condition()

    def saw(self, paths: list[tuple[str, int | None]]) -> None:
        now = time.perf_counter()
        with self._cond:
            for path, size in paths:
                self._times.setdefault(path, []).append(now)
                self._sizes.setdefault(path, []).append(size)
            self._cond.notify_all()

    def first_after(self, path: str, since: float, timeout: float) -> tuple[float, int | None]:
        """The first report of `path` at or after `since` (NaN if none within `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                times = self._times.get(path, [])
                for when, size in zip(times, self._sizes.get(path, []), strict=True):
                    if when >= since:
                        return when, size
                left = deadline - time.monotonic()
                if left <= 0:
                    return float("nan"), None
                self._cond.wait(left)


class _Writer:
    """Writes the next file: a new one, or an in-place rewrite of an earlier one."""

    def __init__(self, folder: Path, payloads: list[bytes], seed: int) -> None:
        self.folder = folder
        self.payloads = payloads
        self.rng = random.Random(seed)
        self.written: list[Path] = []
        self.count = 0

    def write(self) -> tuple[Path, float, int]:
        data = self.payloads[self.count % len(self.payloads)]
        if self.count % 2 == 1 and self.written:
            path = self.rng.choice(self.written)
        else:
            path = self.folder / synth.session_file_name(900_000_000_000 + self.count)
            self.written.append(path)
        self.count += 1
        with path.open("wb") as handle:
            handle.write(data)
        return path, time.perf_counter(), len(data)


def _measure(
    writer: _Writer,
    sightings: Sightings,
    count: int,
    gap_s: float,
) -> tuple[list[float], int, int]:
    """Write `count` files one at a time; latency (ms) of each, misses, size matches."""
    latencies: list[float] = []
    missed = size_matched = 0
    for _ in range(count):
        path, closed, size = writer.write()
        seen, seen_size = sightings.first_after(str(path), closed, WAIT_S)
        if seen != seen:  # NaN
            missed += 1
        else:
            latencies.append(max(0.0, seen - closed) * 1000)
            size_matched += seen_size == size
        time.sleep(gap_s * (0.5 + writer.rng.random()))
    return latencies, missed, size_matched


def _wait_ready(writer_folder: Path, sightings: Sightings) -> None:
    """A watch needs a moment to register: write a probe until it is reported."""
    probe = writer_folder / "ready-probe.json"
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        since = time.perf_counter()
        probe.write_bytes(b"{}")
        seen, _ = sightings.first_after(str(probe), since, 0.2)
        if seen == seen:
            return
    raise RuntimeError(f"the watch on {writer_folder} did not report anything in {READY_S}s")


def _raw_watch(folder: Path, sightings: Sightings, stop: threading.Event) -> None:
    for batch in watchfiles.watch(
        folder,
        watch_filter=None,
        debounce=DEFAULT_DEBOUNCE_MS,
        step=DEFAULT_STEP_MS,
        stop_event=stop,
        rust_timeout=RUST_TIMEOUT_MS,
        raise_interrupt=False,
        recursive=True,
    ):
        sightings.saw([(path, None) for _, path in batch])


def _run_variant(
    start: Callable[[Sightings], Callable[[], None]],
    writer: _Writer,
    count: int,
    gap_s: float,
) -> tuple[list[float], int, int]:
    sightings = Sightings()
    stop = start(sightings)
    try:
        _wait_ready(writer.folder, sightings)
        return _measure(writer, sightings, count, gap_s)
    finally:
        stop()


def run(bench: Bench) -> list[Result]:
    profile = bench.profile
    work = bench.workdir("detection")
    base = work / "base"
    folder = pc_folder(base, "PC01").resolve()
    payloads = [
        data for _, _, data in session_payloads(24, seed=1, hands=lambda r: r.randint(1, 30))
    ]
    payloads += sample_payloads()
    queue = DurableQueue(work / "queue.sqlite3")
    target = WatchTarget("PC01", folder, polling=False)

    def start_raw(sightings: Sightings) -> Callable[[], None]:
        stop = threading.Event()
        thread = threading.Thread(target=_raw_watch, args=(folder, sightings, stop), daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(10)

        return halt

    def watcher_starter(reader: NativeReader) -> Callable[[Sightings], Callable[[], None]]:
        def start_watcher(sightings: Sightings) -> Callable[[], None]:
            def seen(changes: list[DetectedChange]) -> None:
                sightings.saw([(str(c.path), c.size) for c in changes])

            watcher = FolderWatcher(
                [target],
                queue,
                on_added=seen,
                on_modified=seen,
                error_dir=base / "_error",
                native_reader=reader,
            )
            readers[reader] = "inotify" if watcher.uses_inotify else "watchfiles"
            thread = threading.Thread(target=watcher.run, daemon=True)
            thread.start()

            def halt() -> None:
                watcher.stop()
                thread.join(15)

            return halt

        return start_watcher

    readers: dict[str, str] = {}
    variants = {
        "raw": start_raw,
        "gfx": watcher_starter("auto"),
        "gfx_watchfiles": watcher_starter("watchfiles"),
    }
    writer = _Writer(folder, payloads, seed=7)
    latencies: dict[str, list[float]] = {name: [] for name in variants}
    missed = dict.fromkeys(variants, 0)
    size_matched = 0
    half = max(1, profile.detection_files // 2)
    try:
        for round_number in range(2):  # raw, gfx, gfx_watchfiles, raw, ...: drift hits all alike
            bench.say(f"detection: round {round_number + 1}/2, {half} files per variant")
            for name, start in variants.items():
                lat, miss, matched = _run_variant(start, writer, half, profile.detection_gap_s)
                latencies[name] += lat
                missed[name] += miss
                if name == "gfx":
                    size_matched += matched
        stats = queue.stats()
    finally:
        queue.close()

    gfx = latencies["gfx"]
    mine, theirs = summarize(gfx), summarize(latencies["raw"])
    fallback = summarize(latencies["gfx_watchfiles"])
    ratios = {"p50": ratio(mine["p50"], theirs["p50"]), "p95": ratio(mine["p95"], theirs["p95"])}
    met = mine["p50"] is not None and mine["p50"] <= TARGET_P50_MS and missed["gfx"] == 0
    return [
        Result(
            scenario="detection",
            measure="file closed -> change in queue",
            unit="ms",
            figures=mine,
            baseline_name="bare watchfiles loop, same step/debounce (yield time)",
            baseline=theirs,
            ratios=ratios,
            ratio_meaning="gfx-sync / baseline (lower is better)",
            target=f"p50 <= {TARGET_P50_MS:g} ms",
            met=met,
            cells={
                "result": f"p50 {fmt(mine['p50'], 2)} / p95 {fmt(mine['p95'], 2)} ms",
                "baseline": f"p50 {fmt(theirs['p50'], 2)} / p95 {fmt(theirs['p95'], 2)} ms",
                "ratio": f"{fmt_ratio(ratios['p50'])} / {fmt_ratio(ratios['p95'])}",
            },
            notes=[
                f"FolderWatcher reader: {readers.get('auto')}; with the watchfiles reader "
                f"(fallback): p50 {fmt(fallback['p50'], 2)} / p95 {fmt(fallback['p95'], 2)} ms",
                *(
                    [f"missed (not reported within {WAIT_S:g} s): {missed}"]
                    if any(missed.values())
                    else []
                ),
            ],
            details={
                "reader": readers.get("auto"),
                "watchfiles_reader": fallback,
                "files_per_variant": len(gfx) + missed["gfx"],
                "missed": missed,
                "reported_with_final_size": size_matched,
                "queue_pending_after": stats.pending,
                "step_ms": DEFAULT_STEP_MS,
                "debounce_ms": DEFAULT_DEBOUNCE_MS,
                "payload_kb_mean": round(sum(map(len, payloads)) / len(payloads) / 1e3, 1),
            },
        )
    ]
