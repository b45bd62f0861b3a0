"""Prefect tasks around the core engine: drain the queue, rescan folders, report status."""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task

from gfx_sync.engine import DrainReport, Outcome
from gfx_sync.queue import REALTIME_LANE, Origin
from gfx_sync.sinks.base import SyncEvent
from gfx_sync.site import ScannedFile
from tasks import runtime


def log_report(report: DrainReport) -> None:
    logger = get_run_logger()
    for outcome in report.outcomes:
        if outcome.status == Outcome.SYNCED:
            logger.debug("synced %s (%s hands)", outcome.path, outcome.hand_count)
        else:
            logger.warning("%s %s: %s", outcome.status, outcome.path, outcome.detail)
    if report.claimed:
        logger.info("%s in %d batch(es)", report.summary(), report.batches)


class TargetUnavailableError(RuntimeError):
    """The target could not be reached: the files stay queued, and the run fails to alert."""


@task(task_run_name="drain {sync_source} queue")
def drain_queue(
    sync_source: str | None,
    realtime_only: bool = False,
    max_batches: int | None = None,
    sweep: bool = False,
    fail_on_outage: bool = False,
    wait_for_target: bool = False,
) -> dict[str, int]:
    """Claim, parse, upsert and acknowledge until nothing is due (or `max_batches`).

    `realtime_only`: only files the watcher saw appear (the realtime lane).
    `sweep`: also take added files the realtime path has left for `realtime_grace` seconds.
    `wait_for_target`: if the target is down, probe it for up to `outage_wait` seconds and
    drain as soon as it is back.
    """
    engine = runtime.engine()
    report = engine.drain(
        lanes=[REALTIME_LANE] if realtime_only else None,
        sync_source=sync_source,
        max_batches=max_batches,
        added_grace=engine.settings.realtime_grace if sweep else None,
        outage_wait=engine.settings.outage_wait if wait_for_target else 0.0,
    )
    log_report(report)
    if report.outage and fail_on_outage:
        pending = engine.queue.stats().pending
        raise TargetUnavailableError(
            f"target unavailable, {pending} change(s) stay queued: {report.outage}"
        )
    return report.summary()


@task
def scan(
    pcs: list[str] | None = None,
    pattern: str = "*.json",
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ScannedFile]:
    return list(
        runtime.site().scan(runtime.queue(), pcs=pcs, pattern=pattern, since=since, until=until)
    )


@task
def enqueue(files: list[ScannedFile], origin: str) -> int:
    """Persist the files as queue items (one transaction) before anything reads them."""
    return len(runtime.queue().enqueue_many([f.change(Origin(origin)) for f in files]))


@task
def rescan() -> dict[str, int]:
    """Queue what changed unseen in every enabled PC folder."""
    return runtime.site().rescan(runtime.queue(), Origin.RESCAN).summary()


@task
def record_recovery(summary: dict[str, int]) -> None:
    """A `recovery` row in sync_events, so the status views show rescans too."""
    runtime.engine().sink.record_events(
        [SyncEvent("recovery", file_count=summary.get("enqueued", 0), details=dict(summary))]
    )
