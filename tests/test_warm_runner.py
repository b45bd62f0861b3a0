"""The warm runner's recovery from a dead `up`, against a real (temporary) Prefect server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.exceptions import Abort
from prefect.states import Pending, Running, State
from prefect.utilities.engine import propose_state

from deployments.warm_runner import crash_leftover_runs, register
from flows.batch import batch_upsert
from support.prefect_env import prefect_server

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
