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
from flows.labels import SITE_LABEL, site_tags
from flows.realtime import realtime_upsert
from flows.recovery import recovery
from flows.watcher import FILE_ADDED_EVENT, RUN, watcher
from gfx_sync.queue import REALTIME_LANE
from gfx_sync.settings import DEFAULT_SITE, Settings

WORK_POOL = "gfx-sync"  # for `prefect deploy --all` / `gfx-sync deploy`; `up` needs none
# The default site's deployments ("flow/deployment"); another site's: `for_site(REALTIME, site)`
REALTIME = "gfx-realtime-upsert/realtime"
BATCH = "gfx-batch-upsert/batch"
RECOVERY = "gfx-recovery/recovery"
BACKFILL = "gfx-backfill/backfill"
DERIVE = "gfx-derive/derive"
EXPORT = "gfx-export/export"
WATCHER = "gfx-watcher/watcher"


def site_suffix(site: str) -> str:
    """What a site adds to a deployment's or work pool's name: nothing for the default site
    (a single-site install keeps its names), `-<site>` for any other."""
    return "" if site == DEFAULT_SITE else f"-{site}"


def for_site(name: str, site: str) -> str:
    """A deployment ("realtime", or "flow/realtime") or work pool name, as `site` has it."""
    return f"{name}{site_suffix(site)}"


def file_added_trigger(site: str = DEFAULT_SITE) -> DeploymentEventTrigger:
    """One run per added file that leads a burst (see flows.watcher.AddedFileAnnouncer), of
    this site's files only: another site's worker never takes a run meant for this one."""
    return DeploymentEventTrigger(
        name="file added",
        expect={FILE_ADDED_EVENT},
        match={"prefect.resource.id": "gfx.file.*", "gfx.trigger": RUN, SITE_LABEL: site},
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
    """The site's deployments: names, tags and trigger carry `settings.site`, so each site's
    concurrency limits, schedules and runs are its own on a server shared by many."""
    site = settings.site
    tags = site_tags(site)
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
                name=for_site("realtime", site),
                triggers=[file_added_trigger(site)],
                concurrency_limit=one_at_a_time,
                tags=tags,
                description="Upsert added files; triggered by gfx.file.added events.",
            ),
            time_limit=600,
            idle_check={"lanes": [REALTIME_LANE]},
        ),
        DeploymentSpec(
            batch_upsert,
            batch_upsert.to_deployment(
                name=for_site("batch", site),
                interval=timedelta(seconds=settings.flush_interval),
                concurrency_limit=skip_if_busy,
                tags=tags,
                description="Upsert pending modified files and due retries, in batches.",
            ),
            time_limit=900,
            idle_check={"added_grace": settings.realtime_grace},
        ),
        DeploymentSpec(
            recovery,
            recovery.to_deployment(
                name=for_site("recovery", site),
                interval=timedelta(seconds=settings.recovery_interval),
                concurrency_limit=skip_if_busy,
                tags=tags,
                description="Rescan PC folders for missed changes and drain the offline queue.",
            ),
            time_limit=3600,
            idle_check=None,
        ),
        DeploymentSpec(
            backfill,
            backfill.to_deployment(
                name=for_site("backfill", site),
                tags=tags,
                description="Run by hand: (re)send files by PC, glob and time window.",
            ),
            time_limit=24 * 3600,
            idle_check=None,
        ),
        DeploymentSpec(
            derive,
            derive.to_deployment(
                name=for_site("derive", site),
                tags=tags,
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
                name=for_site("export", site),
                tags=tags,
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


def watcher_deployment(site: str = DEFAULT_SITE) -> RunnerDeployment:
    """The watcher as a deployment, for a work pool only: `gfx-sync up` and `gfx-sync worker`
    run the watcher in a process of their own instead (deployments/up.py)."""
    return watcher.to_deployment(
        name=for_site("watcher", site),
        concurrency_limit=1,
        tags=site_tags(site),
        description=(
            "Long-running watcher; start once "
            f"(`prefect deployment run {for_site(WATCHER, site)}`)."
        ),
    )


def work_pool_deployments(settings: Settings) -> list[RunnerDeployment]:
    """What `prefect deploy --all` and `gfx-sync deploy` create: the watcher, then what `gfx-sync
    up` serves."""
    return [watcher_deployment(settings.site), *build_deployments(settings)]
