"""The warm runner against real Prefect servers: a temporary in-process one for recovery from
a dead `up`, and `prefect server start` (as `gfx-sync up` runs it) where the scheduler matters:
the in-process test harness runs no scheduler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    FlowRun,
    StateType,
)
from prefect.exceptions import Abort
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Pending, Running, State
from prefect.utilities.engine import propose_state

from deployments.up import local_prefect_server
from deployments.warm import ServedDeployment, WarmRunner, crash_leftover_runs, register
from deployments.warm.states import SKIPPED, SKIPPED_IDLE
from flows.batch import batch_upsert
from gfx_sync.settings import Settings
from support.prefect_env import prefect_server
from support.system import free_port

pytestmark = pytest.mark.prefect


async def take_slot(client: object, flow_run_id: object) -> State | None:
    """What the runner does first: propose Pending (the deployment's concurrency rule)."""
    try:
        return await propose_state(client, Pending(), flow_run_id=flow_run_id)  # type: ignore[arg-type]
    except Abort:
        return None


def test_runs_a_dead_up_left_running_are_crashed_and_free_their_slot(tmp_path: Path) -> None:
    skip_if_busy = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    deployment = batch_upsert.to_deployment(name="leftover", concurrency_limit=skip_if_busy)

    async def scenario() -> None:
        (deployment_id,) = await register([deployment])
        async with get_client() as client:
            left = await client.create_flow_run_from_deployment(deployment_id)
            assert (await take_slot(client, left.id)).is_pending()
            await propose_state(client, Running(), flow_run_id=left.id)  # then: SIGKILL

            blocked = await client.create_flow_run_from_deployment(deployment_id)
            state = await take_slot(client, blocked.id)
            assert state is None or not state.is_pending()  # the dead run holds the slot

            assert await crash_leftover_runs([deployment_id]) == 1
            assert (await client.read_flow_run(left.id)).state.is_crashed()
            assert await crash_leftover_runs([deployment_id]) == 0  # settled once
            fresh = await client.create_flow_run_from_deployment(deployment_id)
            assert (await take_slot(client, fresh.id)).is_pending()  # the slot is back

    with prefect_server(tmp_path / "prefect-home"):
        asyncio.run(scenario())


@flow(name="gfx-test-scheduled")
def scheduled() -> None:
    """Never runs here: the runner completes its runs without a child (nothing due)."""


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(state_dir=tmp_path_factory.mktemp("state"), prefect_port=free_port())
    with (
        local_prefect_server(settings) as api_url,
        temporary_settings(updates={PREFECT_API_URL: api_url}),
    ):
        yield api_url


async def completed_runs(deployment_id: object) -> list[FlowRun]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return [r for r in runs if r.state is not None and r.state.is_completed()]


def test_first_scheduled_runs_start_without_waiting_for_the_slow_poll(prefect_api: str) -> None:
    """Right after registration the scheduler has not created any run yet; the runner must
    look again soon, not only at its next slow poll (an hour here, a minute in production,
    when modified files and retries go unsynced). The timeout is only a hang guard."""

    async def scenario() -> list[FlowRun]:
        deployment = await scheduled.ato_deployment(
            name="every-second", interval=timedelta(seconds=1), paused=True
        )
        (deployment_id,) = await register([deployment])
        served = ServedDeployment(
            id=deployment_id,
            name="every-second",
            flow=scheduled,
            target=f"{__name__}:scheduled",
            time_limit=30,
            skip_when_idle=lambda: True,  # Completed without a child: no fork needed here
        )
        async with get_client() as client:  # as `up` starts one recovery run by hand
            await client.create_flow_run_from_deployment(deployment_id)
        runner = WarmRunner([served], poll_seconds=3600)
        task = asyncio.create_task(runner.run())
        try:
            async with asyncio.timeout(90):
                while runner.polls == 0:  # its first look finds only the run made by hand
                    await asyncio.sleep(0.1)
                async with get_client() as client:
                    await client.resume_deployment(deployment_id)  # the scheduler's turn
                while not any(r.auto_scheduled for r in await completed_runs(deployment_id)):
                    await asyncio.sleep(0.5)
            return await completed_runs(deployment_id)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    done = asyncio.run(scenario())
    # Runs that had nothing to do are told apart: state name Skipped, and the API filters
    # on it (as the Prefect UI's state filter does).
    assert all(
        r.state and r.state.name == SKIPPED and r.state.message == SKIPPED_IDLE for r in done
    )

    async def filtered() -> list[FlowRun]:
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[SKIPPED]))
                )
            )

    assert {r.id for r in done} <= {r.id for r in asyncio.run(filtered())}

    async def histories() -> list[list[StateType]]:
        async with get_client() as client:
            return [[state.type for state in await client.read_flow_run_states(r.id)] for r in done]

    # One state change each: never claimed (Pending) or started (Running), so no slot held.
    assert all(h == [StateType.SCHEDULED, StateType.COMPLETED] for h in asyncio.run(histories()))
