"""memory: peak RSS of the batch path draining 500 files of ~500 KB (about 250 MB of JSON).

The drain runs in a child process (`python -m bench.scenarios.memory CHILD-ARGS`), so the peak
(VmHWM) is the batch path's alone. The child first records its peak after imports and
opening the engine and queue (the baseline: what any gfx-sync process costs), then drains
through the shipped settings (batch_size 500, 16 MB byte budget per batch) over the local
socket, and reports the peak again.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import REPO
from bench.context import Bench
from bench.corpus import fixed_hands, write_corpus
from bench.report import Result, fmt, fmt_ratio, ratio

TARGET_MB = 150.0
KB_PER_HAND = 5.0  # synth's sessions carry about this much per hand
CHILD_TIMEOUT_S = 600.0


def _peak_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the address space exec created; ru_maxrss
    does not do here: Linux keeps it across execve, so a child of the (big) bench process
    would start with the bench's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def child(args: dict[str, Any]) -> dict[str, Any]:
    """In the child: open the engine, record the peak so far, drain, record the peak."""
    from gfx_sync.engine import Outcome, SyncEngine
    from gfx_sync.queue import ChangeKind, DurableQueue
    from gfx_sync.settings import Settings, discover_pcs
    from gfx_sync.sinks import open_sink

    base = Path(args["base"])
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        base_path=base,
        state_dir=Path(args["state"]),
        registry_path=Path(args["state"]) / "no-registry.json",
        database_url=args["url"],
    )
    queue = DurableQueue(settings.resolved_queue_path, lease_seconds=settings.lease_seconds)
    sink = open_sink(settings, args["url"])  # as shipped: big batches on two connections
    engine = SyncEngine(settings, queue, sink, pcs=discover_pcs(base))
    engine.site.enqueue(engine.queue, [Path(p) for p in args["paths"]], ChangeKind.MODIFIED)
    before = _peak_mb()
    started = time.perf_counter()
    report = engine.drain()
    seconds = time.perf_counter() - started
    sink.close()
    queue.close()
    return {
        "peak_mb_before_drain": before,
        "peak_mb": _peak_mb(),
        "seconds": seconds,
        "synced": report.count(Outcome.SYNCED),
        "batches": report.batches,
    }


def drain_in_child(args_file: Path, args: dict[str, Any]) -> dict[str, Any]:
    """`child(args)` in a process of its own (its arguments passed in `args_file`)."""
    args_file.write_text(json.dumps(args))
    done = subprocess.run(
        [sys.executable, "-m", "bench.scenarios.memory", str(args_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"drain child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(bench: Bench) -> list[Result]:
    profile = bench.profile
    work = bench.workdir("memory")
    hands = max(1, round(profile.memory_file_kb / KB_PER_HAND))
    bench.say(f"memory: writing {profile.memory_files} files of {hands} hands")
    corpus = write_corpus(
        work / "base", profile.memory_files, seed=4, pcs=profile.pcs, hands=fixed_hands(hands)
    )
    url = bench.pg.create_database("bench_memory")
    args = {
        "base": str(corpus.base),
        "state": str(work / "state"),
        "url": url,
        "paths": [str(p) for p in corpus.paths],
    }
    bench.say("memory: draining in a child process")
    measured = drain_in_child(work / "child-args.json", args)
    if measured["synced"] != len(corpus.files):
        raise RuntimeError(f"memory child committed {measured['synced']}/{len(corpus.files)}")
    peak, before = measured["peak_mb"], measured["peak_mb_before_drain"]
    growth = ratio(peak, before)
    return [
        Result(
            scenario="memory",
            measure=f"peak RSS, drain of {len(corpus.files)} x ~{profile.memory_file_kb} KB files",
            unit="MB",
            figures={"peak_mb": peak, "drain_s": measured["seconds"]},
            baseline_name="the same child's peak before the drain (imports, engine, queue)",
            baseline={"peak_mb": before},
            ratios={"peak_over_baseline": growth},
            ratio_meaning="peak / peak before the drain",
            target=f"<= {TARGET_MB:g} MB",
            met=peak <= TARGET_MB,
            cells={
                "result": f"{fmt(peak)} MB",
                "baseline": f"{fmt(before)} MB before drain",
                "ratio": fmt_ratio(growth),
            },
            details={"corpus": corpus.describe(), "child": measured},
        )
    ]


if __name__ == "__main__":
    print(json.dumps(child(json.loads(Path(sys.argv[1]).read_text()))))
