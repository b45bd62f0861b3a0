"""Export sessions, hands, players and actions to CSV (or Parquet), run by hand.

One file per table, named after the selection, in `output_dir` (default: `exports/` in the
state folder); a table artifact lists what was written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.hooks import announce_run_problem
from gfx_sync.derive import Selection
from tasks.hands import export_hands

SUMMARY_KEY = "gfx-export-summary"


@flow(
    name="gfx-export",
    on_failure=[announce_run_problem],
    on_crashed=[announce_run_problem],
    flow_run_name="export hands",
)
def export(
    pc: str | None = None,
    session: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    file_format: Literal["csv", "parquet"] = "csv",
    output_dir: str | None = None,
) -> list[dict[str, object]]:
    """`pc`, `session` and the window [since, until) of the sessions' last sync choose
    what is exported; each left out means all. Parquet needs pyarrow installed."""
    selection = Selection(pc=pc, session_id=session, since=since, until=until)
    report = export_hands(selection, file_format, output_dir)
    summary = report.rows()
    create_table_artifact(
        summary,
        key=SUMMARY_KEY,
        description=f"export ({report.format}) of {selection.describe()} to {report.folder}",
    )
    return summary
