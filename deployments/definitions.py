"""Where and when each flow runs: the deployments `gfx-sync up` serves.

prefect.yaml declares the same deployments for `prefect deploy --all` on a work pool.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from flows.backfill import backfill
from flows.batch import batch_upsert
from flows.realtime import realtime_upsert
from flows.recovery import recovery
from flows.watcher import FILE_ADDED_EVENT
from gfx_sync.settings import Settings

TAG = "gfx-sync"
REALTIME = "gfx-realtime-upsert/realtime"
BATCH = "gfx-batch-upsert/batch"
RECOVERY = "gfx-recovery/recovery"
BACKFILL = "gfx-backfill/backfill"


def file_added_trigger(settings: Settings) -> DeploymentEventTrigger:
    """One run per added file, at most one per `realtime_rate_limit` seconds during a burst.

    Events inside the rate-limit window start no run of their own: the running one drains
    every pending added file, and the batch deployment sweeps whatever is left.
    """
    return DeploymentEventTrigger(
        name="file added",
        expect={FILE_ADDED_EVENT},
        match={"prefect.resource.id": "gfx.file.*"},
        within=timedelta(seconds=settings.realtime_rate_limit),
        parameters={
            "path": "{{ event.resource['gfx.path'] }}",
            "pc_id": "{{ event.resource['gfx.pc'] }}",
        },
    )


def build_deployments(settings: Settings) -> list[RunnerDeployment]:
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    skip_if_busy = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    return [
        realtime_upsert.to_deployment(
            name="realtime",
            triggers=[file_added_trigger(settings)],
            concurrency_limit=one_at_a_time,
            tags=[TAG],
            description="Upsert added files; triggered by gfx.file.added events.",
        ),
        batch_upsert.to_deployment(
            name="batch",
            interval=timedelta(seconds=settings.flush_interval),
            concurrency_limit=skip_if_busy,
            tags=[TAG],
            description="Upsert pending modified files and due retries, in batches.",
        ),
        recovery.to_deployment(
            name="recovery",
            interval=timedelta(seconds=settings.recovery_interval),
            concurrency_limit=skip_if_busy,
            tags=[TAG],
            description="Rescan PC folders for missed changes and drain the offline queue.",
        ),
        backfill.to_deployment(
            name="backfill",
            tags=[TAG],
            description="Run by hand: (re)send files by PC, glob and time window.",
        ),
    ]
