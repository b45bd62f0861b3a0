"""Rebuild the hand tables from the sessions already stored, run by hand.

For data synced before the hand tables existed, or after the derivation changed. Sessions
already derived from their current snapshot at the current version are skipped (`force`
derives them again: hands whose hash is unchanged are still left alone), so a run that
stopped half-way is finished by starting it again. Progress and a per-PC summary show in the
UI as artifacts.
"""

from __future__ import annotations

from datetime import datetime

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.hooks import announce_run_problem
from gfx_sync.derive import Selection
from tasks.hands import rebuild_hands

SUMMARY_KEY = "gfx-derive-summary"


@flow(
    name="gfx-derive",
    on_failure=[announce_run_problem],
    on_crashed=[announce_run_problem],
    flow_run_name="derive hands",
)
def derive(
    pc: str | None = None,
    session: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    force: bool = False,
) -> list[dict[str, object]]:
    """`pc`, `session` and the window [since, until) of the sessions' last sync choose
    what is derived; each left out means all."""
    selection = Selection(pc=pc, session_id=session, since=since, until=until)
    report = rebuild_hands(selection, force)
    summary = report.rows()
    create_table_artifact(
        summary,
        key=SUMMARY_KEY,
        description=(f"hand derivation (version {report.version}) per PC: {selection.describe()}"),
    )
    return summary
