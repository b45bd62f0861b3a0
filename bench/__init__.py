"""gfx-sync benchmarks: `python -m bench` (or `make bench`) measures each path against a
baseline taken in the same run, on real-shaped data, and prints one table plus a JSON file.

Everything it needs is started here and stopped at the end: an embedded PostgreSQL in a temp
dir, a delaying proxy in front of it, and `gfx-sync up` (with its own Prefect server) for the
scenarios that go through Prefect. Only loopback addresses are used.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples" / "pokergfx"
RESULTS_DIR = REPO / "bench" / "results"
