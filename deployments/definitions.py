"""Where and when each flow runs: the deployments `gfx-sync up` serves.

prefect.yaml, for `prefect deploy --all` on a work pool, is written from this module with the
watcher's deployment added (`python -m deployments.prefect_yaml > prefect.yaml`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from flows.backfill import backfill
from flows.batch import batch_upsert
from flows.derive import derive
from flows.export import export
from flows.realtime import realtime_upsert
from flows.recovery import recovery
from flows.watcher import FILE_ADDED_EVENT, RUN, watcher
from gfx_sync.queue import REALTIME_LANE
from gfx_sync.settings import Settings

TAG = "gfx-sync"
WORK_POOL = "gfx-sync"  # for `prefect deploy --all`; `gfx-sync up` needs none
REALTIME = "gfx-realtime-upsert/realtime"
BATCH = "gfx-batch-upsert/batch"
RECOVERY = "gfx-recovery/recovery"
BACKFILL = "gfx-backfill/backfill"
DERIVE = "gfx-derive/derive"
EXPORT = "gfx-export/export"


def file_added_trigger() -> DeploymentEventTrigger:
    """One run per added file that leads a burst (see flows.watcher.AddedFileAnnouncer)."""
    return DeploymentEventTrigger(
        name="file added",
        expect={FILE_ADDED_EVENT},
        match={"prefect.resource.id": "gfx.file.*", "gfx.trigger": RUN},
        parameters={
            "path": "{{ event.resource['gfx.path'] }}",
            "pc_id": "{{ event.resource['gfx.pc'] }}",
        },
    )


@dataclass(frozen=True)
class DeploymentSpec:
    """A deployment, the flow behind it, and how the warm runner treats its runs."""

    flow: Flow
    deployment: RunnerDeployment
    time_limit: float  # a run still going after this is stopped and reported Crashed
    idle_check: dict[str, object] | None  # `DurableQueue.has_due` arguments; None: always run

    @property
    def trigger(self) -> DeploymentEventTrigger | None:
        """The event trigger behind its runs, if it has one."""
        triggers = [t for t in self.deployment.triggers if isinstance(t, DeploymentEventTrigger)]
        return triggers[0] if triggers else None

    @property
    def target(self) -> str:
        return f"{self.flow.fn.__module__}:{self.flow.fn.__name__}"


def deployment_specs(settings: Settings) -> list[DeploymentSpec]:
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
    )
    skip_if_busy = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    return [
        DeploymentSpec(
            realtime_upsert,
            realtime_upsert.to_deployment(
                name="realtime",
                triggers=[file_added_trigger()],
                concurrency_limit=one_at_a_time,
                tags=[TAG],
                description="Upsert added files; triggered by gfx.file.added events.",
            ),
            time_limit=600,
            idle_check={"lanes": [REALTIME_LANE]},
        ),
        DeploymentSpec(
            batch_upsert,
            batch_upsert.to_deployment(
                name="batch",
                interval=timedelta(seconds=settings.flush_interval),
                concurrency_limit=skip_if_busy,
                tags=[TAG],
                description="Upsert pending modified files and due retries, in batches.",
            ),
            time_limit=900,
            idle_check={"added_grace": settings.realtime_grace},
        ),
        DeploymentSpec(
            recovery,
            recovery.to_deployment(
                name="recovery",
                interval=timedelta(seconds=settings.recovery_interval),
                concurrency_limit=skip_if_busy,
                tags=[TAG],
                description="Rescan PC folders for missed changes and drain the offline queue.",
            ),
            time_limit=3600,
            idle_check=None,
        ),
        DeploymentSpec(
            backfill,
            backfill.to_deployment(
                name="backfill",
                tags=[TAG],
                description="Run by hand: (re)send files by PC, glob and time window.",
            ),
            time_limit=24 * 3600,
            idle_check=None,
        ),
        DeploymentSpec(
            derive,
            derive.to_deployment(
                name="derive",
                tags=[TAG],
                description=(
                    "Run by hand: rebuild the hand tables from stored sessions by PC, session "
                    "and time window."
                ),
            ),
            time_limit=24 * 3600,
            idle_check=None,
        ),
        DeploymentSpec(
            export,
            export.to_deployment(
                name="export",
                tags=[TAG],
                description=(
                    "Run by hand: write sessions, hands, players and actions to CSV or Parquet."
                ),
            ),
            time_limit=6 * 3600,
            idle_check=None,
        ),
    ]


def build_deployments(settings: Settings) -> list[RunnerDeployment]:
    return [spec.deployment for spec in deployment_specs(settings)]


def watcher_deployment() -> RunnerDeployment:
    """The watcher as a deployment, for a work pool only: `gfx-sync up` runs the watcher in a
    process of its own instead (deployments/up.py), outside any deployment."""
    return watcher.to_deployment(
        name="watcher",
        concurrency_limit=1,
        tags=[TAG],
        description=(
            "Long-running watcher; start once (`prefect deployment run gfx-watcher/watcher`)."
        ),
    )
