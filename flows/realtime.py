"""Realtime upsert: triggered by `gfx.file.added` events; drains every pending added file.

One run drains all pending added items, not just its own file, so a burst of events needs
only a few runs (the trigger is rate-limited and the deployment runs one at a time).
"""

from __future__ import annotations

from pathlib import PurePath

from prefect import flow
from prefect.runtime import flow_run

from flows.hooks import announce_run_problem
from tasks.sync import drain_queue


def _run_name() -> str:
    parameters = flow_run.parameters
    name = PurePath(parameters.get("path") or "").name or "pending files"
    return f"realtime {parameters.get('pc_id') or ''} {name}".replace("  ", " ")


@flow(
    name="gfx-realtime-upsert",
    on_failure=[announce_run_problem],
    on_crashed=[announce_run_problem],
    flow_run_name=_run_name,
)
def realtime_upsert(path: str = "", pc_id: str = "") -> dict[str, int]:
    """`path`/`pc_id` name the file whose event triggered the run (for the UI)."""
    return drain_queue(sync_source="realtime", realtime_only=True)
