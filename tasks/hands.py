"""Prefect tasks around the hand tables: rebuild them from stored sessions, export them."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from gfx_sync.derive import Progress, RebuildReport, Selection, open_hand_store, rebuild
from gfx_sync.export import ExportReport, check_format, default_folder, export, export_url
from tasks import runtime


class ProgressBar:
    """A progress artifact, created before the first session and updated at each whole percent
    (not per session: a rebuild of thousands of sessions would flood the API)."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._artifact: UUID | None = None
        self._shown = -1

    def __call__(self, progress: Progress) -> None:
        percent = int(100 * progress.done / progress.total) if progress.total else 100
        if self._artifact is None:
            self._artifact = create_progress_artifact(float(percent), description=self.description)
            self._shown = percent
        elif percent > self._shown:
            update_progress_artifact(self._artifact, float(percent))
            self._shown = percent


@task(task_run_name="derive hands")
def rebuild_hands(selection: Selection, force: bool = False) -> RebuildReport:
    """Derive the selected sessions not yet current (all with `force`), reporting progress."""
    logger = get_run_logger()
    store = open_hand_store(runtime.settings())
    try:
        report = rebuild(
            store, selection, force=force, on_progress=ProgressBar("hand derivation progress")
        )
    finally:
        store.close()
    logger.info(
        "%s: %d session(s) selected, %d derived (version %d), %d hand(s) written",
        selection.describe(),
        report.selected,
        report.derived,
        report.version,
        report.hands_written,
    )
    return report


@task(task_run_name="export hands")
def export_hands(
    selection: Selection, file_format: str = "csv", output_dir: str | None = None
) -> ExportReport:
    """Write the selection's sessions, hands, players and actions into one file per table."""
    settings = runtime.settings()
    check_format(file_format)  # before starting a database for nothing
    folder = Path(output_dir) if output_dir else default_folder(settings)
    report = export(export_url(settings), selection, folder, file_format, site=settings.site)
    get_run_logger().info(
        "%s: wrote %s",
        selection.describe(),
        ", ".join(f"{t.file} ({t.rows} rows)" for t in report.tables),
    )
    return report
