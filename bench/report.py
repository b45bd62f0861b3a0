"""Results: one `Result` per table row, summary statistics, the printed table and the JSON file.

Why every row carries a baseline and a ratio: the machine is shared and noisy, so an absolute
figure alone says little; the same measurement of a reference path, taken minutes apart in the
same run, shows how much of it is the machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Result:
    scenario: str
    measure: str
    unit: str
    figures: dict[str, Any]  # gfx-sync's numbers (in `unit` unless the key says otherwise)
    baseline_name: str | None = None
    baseline: dict[str, Any] | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)
    ratio_meaning: str = ""
    target: str = ""
    met: bool | None = None
    cells: dict[str, str] = field(default_factory=dict)  # result / baseline / ratio, as printed
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0  # wall time the scenario took (shared phases counted once)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def failed(scenario: str, measure: str, error: str) -> Result:
    return Result(scenario, measure, "", {}, error=error, cells={"result": "ERROR"})


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50, p95, mean, min, max (p95 by linear interpolation; None without data)."""
    data = sorted(values)
    if not data:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "min": None, "max": None}
    return {
        "n": len(data),
        "p50": statistics.median(data),
        "p95": percentile(data, 95),
        "mean": statistics.fmean(data),
        "min": data[0],
        "max": data[-1],
    }


def percentile(sorted_data: Sequence[float], pct: float) -> float:
    if len(sorted_data) == 1:
        return sorted_data[0]
    position = (len(sorted_data) - 1) * pct / 100
    low = int(position)
    high = min(low + 1, len(sorted_data) - 1)
    return sorted_data[low] + (sorted_data[high] - sorted_data[low]) * (position - low)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0 or numerator < 0:
        return None
    return numerator / denominator


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def met_cell(result: Result) -> str:
    if result.error:
        return "ERROR"
    return {True: "yes", False: "NO", None: "-"}[result.met]


COLUMNS = ("scenario", "measure", "result", "baseline", "ratio", "target", "met")


def table(results: Sequence[Result]) -> str:
    """One plain-text table, one row per result (long cells are kept whole)."""
    rows = [COLUMNS] + [
        (
            r.scenario,
            r.measure,
            r.cells.get("result", ""),
            r.cells.get("baseline", "-"),
            r.cells.get("ratio", "-"),
            r.target,
            met_cell(r),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def footnotes(results: Sequence[Result]) -> str:
    lines = []
    for r in results:
        if r.error:
            lines.append(f"- {r.scenario}: ERROR {r.error}")
        if r.baseline_name:
            lines.append(f"- {r.scenario}: baseline = {r.baseline_name}; ratio = {r.ratio_meaning}")
        lines.extend(f"- {r.scenario}: {note}" for note in r.notes)
    return "\n".join(dict.fromkeys(lines))  # a curve's rows share their baseline line: once


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str)
    )
