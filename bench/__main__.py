"""`python -m bench [--only a,b] [--quick] [--out PATH] [--rtt-ms N] [--keep]`: run the
benchmarks, print one table, write the results as JSON (default `bench/results/<time>.json`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from bench import RESULTS_DIR
from bench.context import Profile, stderr_say
from bench.report import Result, footnotes
from bench.runner import run
from bench.scenarios import ORDER, parse_only

ISOLATED_PREFIXES = ("GFX_SYNC_", "SUPABASE_", "PREFECT_API_URL", "PREFECT_HOME")


def _isolate_environment() -> list[str]:
    """The bench configures gfx-sync itself: settings from this shell must not leak in."""
    removed = [k for k in os.environ if k.startswith(ISOLATED_PREFIXES)]
    for key in removed:
        del os.environ[key]
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", metavar="SCENARIO[,..]", help=f"of: {', '.join(ORDER)}")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/<time>.json)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round trip the proxy adds")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (files, logs)")
    args = parser.parse_args(argv)
    try:
        names = parse_only(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    say = stderr_say(time.monotonic())
    removed = _isolate_environment()
    if removed:
        say(f"ignoring {', '.join(sorted(removed))} from the environment")
    profile = (Profile.smoke() if args.quick else Profile.full()).with_(rtt_ms=args.rtt_ms)
    out = args.out or RESULTS_DIR / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    document = run(names, profile, out=out, keep=args.keep, say=say)
    results = [Result(**r) for r in document["results"]]
    print(document["table"])
    notes = footnotes(results)
    if notes:
        print("\n" + notes)
    print(f"\nresults: {out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
