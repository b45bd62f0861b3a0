"""Smoke test of the benchmark harness (`python -m bench`): the cheapest scenarios that need no
Prefect (detection, batch, ceiling), with tiny counts, in-process.

It checks that a run produces complete results (figures, a baseline measured in the same run,
ratios, the target verdict, the table and the JSON file), never how fast anything was: the
machine is shared, and benchmarks report numbers rather than pass or fail.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.context import Profile
from bench.runner import run
from bench.scenarios.day import QUEUE_TABLES, simulate_days

SCENARIOS = ["detection", "batch", "ceiling"]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_quick_run_reports_figures_baselines_and_ratios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # the bench's Postgres changes it
    profile = Profile.smoke().with_(
        detection_files=8, batch_files=6, batch_repeats=1, per_file_budget_s=10.0, rtt_ms=2.0
    )
    out = tmp_path / "results.json"

    document = run(SCENARIOS, profile, out=out, workdir=tmp_path)

    assert orjson.loads(out.read_bytes()) == orjson.loads(orjson.dumps(document, default=str))
    results = {r["scenario"]: r for r in document["results"]}
    assert list(results) == SCENARIOS
    for name, result in results.items():
        assert result["error"] is None, (name, result["error"])
        assert result["measure"] and result["unit"] and result["target"], name
        assert result["met"] in (True, False), name
        assert result["baseline_name"] and result["baseline"], name
        assert result["ratio_meaning"] and result["ratios"], name
        assert all(_positive(v) for v in result["ratios"].values()), (name, result["ratios"])
        assert {"result", "baseline", "ratio"} <= result["cells"].keys(), name
        assert name in document["table"]

    detection = results["detection"]
    assert detection["figures"]["n"] == detection["baseline"]["n"] == 8
    for figures in (detection["figures"], detection["baseline"]):
        assert _positive(figures["p50"]) and figures["p95"] >= figures["p50"]

    batch = results["batch"]
    assert _positive(batch["figures"]["seconds"]) and _positive(batch["baseline"]["seconds"])
    corpus = batch["details"]["corpus"]
    assert corpus["files"] >= 6 and corpus["total_mb"] > 0
    assert batch["details"]["rtt_ms_measured"] > profile.rtt_ms * 0.5  # the proxy was in the path
    naive = batch["details"]["naive_run"]  # the second, naive baseline: a note, same run
    assert _positive(naive["seconds"]) and naive["files"] == corpus["files"]
    assert any(note.startswith("naive baseline") for note in batch["notes"])
    ceiling = results["ceiling"]
    assert ceiling["figures"]["seconds"] == batch["figures"]["seconds"]  # one shared measurement
    assert _positive(ceiling["baseline"]["seconds"])
    assert ceiling["details"]["connections"] == 2  # the ceiling writes over as many as gfx-sync
    assert all(_positive(s) for s in ceiling["details"]["one_connection_ceiling_runs_s"])
    assert document["meta"]["profile"]["quick"] is True


def test_the_queue_stays_bounded_through_broadcast_days_only_with_retention(
    tmp_path: Path,
) -> None:
    """queue_day's simulation (bench/scenarios/day.py), short: with retention the queue's rows
    reach a steady state once done items, logs and archived files' records age out; without
    it every table keeps growing."""
    shape = {"pcs": 2, "days": 4, "tick_minutes": 30}
    on = simulate_days(tmp_path / "on", retention=True, **shape)
    off = simulate_days(tmp_path / "off", retention=False, **shape)
    assert [day["files_on_disk"] for day in on] == [24, 48, 72, 72]  # three days kept on disk
    assert all(on[-1][table] == on[-2][table] for table in QUEUE_TABLES), on
    assert on[-1]["file_state"] == on[-1]["files_on_disk"]  # archived files forgotten
    for table in ("items", "synced_log", "writes"):
        assert off[-1][table] > off[-2][table] > on[-1][table], off
    assert off[-1]["file_state"] > off[-1]["files_on_disk"]  # records of archived files stay
