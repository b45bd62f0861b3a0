"""`run()`: the programmatic entry point (the CLI and the smoke test both use it)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import REPO, SAMPLES
from bench.context import Bench, Profile, Say, stderr_say
from bench.report import table, write_json
from bench.scenarios import run_all


def run(
    names: Sequence[str],
    profile: Profile,
    *,
    out: Path | None = None,
    workdir: Path | None = None,
    keep: bool = False,
    say: Say | None = None,
) -> dict[str, Any]:
    """Run `names` (in table order) and return the results document, also written to `out`.

    Files, databases and logs go to a fresh temp dir (or `workdir`), removed at the end unless
    `keep`; every process started is stopped before this returns.
    """
    started_at = datetime.now(UTC)
    root = Path(tempfile.mkdtemp(prefix="gfx-bench-", dir=workdir))
    say = say or stderr_say(time.monotonic())
    load_before = os.getloadavg()
    try:
        with Bench(profile, root, say=say) as bench:
            results = run_all(bench, list(names))
    finally:
        if keep:
            say(f"kept the run's files in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    document = {
        "meta": {
            "started_at": started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "scenarios": list(names),
            "profile": profile.__dict__,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
            },
            "git": git_describe(),
            "real_samples": SAMPLES.is_dir(),
        },
        "results": [r.to_json() for r in results],
        "table": table(results),
    }
    if out is not None:
        write_json(out, document)
    return document


def git_describe() -> dict[str, Any]:
    """The commit measured, and whether the tree had changes (read-only git calls)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": bool(dirty)}
