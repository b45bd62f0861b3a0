"""What the warm runner serves: registered deployments and how their runs are run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger


@dataclass
class ServedDeployment:
    id: UUID
    name: str
    flow: Flow
    target: str  # "module:attribute" of the flow, imported by the child
    time_limit: float
    skip_when_idle: Callable[[], bool] | None = None  # True: nothing to do, no child needed
    trigger: DeploymentEventTrigger | None = None  # its runs' automation, covered if late


async def register(deployments: list[RunnerDeployment]) -> list[UUID]:
    """Create or update the deployments (schedules, triggers, concurrency) on the server."""
    return [await deployment.aapply() for deployment in deployments]
