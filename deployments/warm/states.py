"""Every state the warm runner proposes for a run, proposed as Prefect's own runner does
(`propose_state`: the server's orchestration rules, concurrency slots included, apply)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, State, StateDetails, StateType
from prefect.exceptions import Abort
from prefect.states import Cancelled, Completed, Crashed, Pending
from prefect.utilities.engine import propose_state

from deployments.warm.served import ServedDeployment
from flows.hooks import announce_run_problem

log = logging.getLogger("gfx_sync.runner")

LEFTOVER_STATES = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
# A run that had nothing to do ends Completed under this name (filter on it in the UI or API).
SKIPPED = "Skipped"
SKIPPED_IDLE = "nothing due in the queue: skipped"


class StateProposer:
    """Claims runs, and settles those whose child could not settle them itself."""

    def __init__(self, client: Callable[[], PrefectClient]) -> None:
        self._client = client

    async def claim(self, flow_run: FlowRun) -> State | None:
        """Pending, as the stock runner proposes it, but scheduled for now. The server's
        answer: Pending (ours to run) or Scheduled (wait for a concurrency slot); None if it
        refused (Abort). Other errors (the server unreachable) are raised.

        A run that waited for a slot is retried as soon as this runner's own run frees it,
        before the time the server named. Without a time of its own, Pending inherits that
        time from the Scheduled state, and the engine's Running is then told to wait for it.
        """
        pending = Pending(state_details=StateDetails(scheduled_time=datetime.now(UTC)))
        try:
            return await propose_state(self._client(), pending, flow_run_id=flow_run.id)
        except Abort as exc:
            log.debug("run %s not started: %s", flow_run.id, exc)
            return None

    async def skip(self, flow_run: FlowRun) -> bool:
        """Scheduled -> Completed under the state name `SKIPPED` (the Prefect UI and API filter
        on it), one round trip: the run never held its deployment's concurrency slot, so the
        server has none to give back. False if the server refused (the run moved on)."""
        state = Completed(name=SKIPPED, message=SKIPPED_IDLE)
        try:
            await propose_state(self._client(), state, flow_run_id=flow_run.id)
        except Abort as exc:
            log.debug("run %s not skipped: %s", flow_run.id, exc)
            return False
        return True

    async def crashed(self, served: ServedDeployment, flow_run: FlowRun, why: str) -> None:
        """A child that died or hung: Crashed, unless the engine already settled the run."""
        client = self._client()
        current = await client.read_flow_run(flow_run.id)
        if current.state is not None and current.state.is_final():
            return
        state = Crashed(message=f"gfx-sync runner: {why}")
        with contextlib.suppress(Abort):
            state = await propose_state(client, state, flow_run_id=flow_run.id)
        log.error("run %s (%s) crashed: %s", flow_run.name, served.name, why)
        await asyncio.to_thread(announce_run_problem, served.flow, current, state)

    async def cancelled(self, run_id: UUID) -> None:
        """A child stopped before its engine could say so: Cancelled, as asked."""
        client = self._client()
        current = await client.read_flow_run(run_id)
        if current.state is not None and current.state.type is StateType.CANCELLING:
            await client.set_flow_run_state(run_id, Cancelled(), force=True)


async def crash_leftover_runs(deployment_ids: list[UUID]) -> int:
    """Runs of our deployments still Pending/Running when `up` starts belonged to processes
    that are gone (SIGKILL, power cut): nothing will ever finish them. Mark them Crashed,
    which also gives back their deployment concurrency slot; otherwise a run left "Running"
    blocks that deployment (recovery, batch: skip-if-busy) until its slot lease runs out.
    Only one `up` serves these deployments, so nothing alive owns such a run."""
    crashed = 0
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=deployment_ids),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=LEFTOVER_STATES)),
            )
        )
        for flow_run in runs:
            state = Crashed(message="gfx-sync up restarted: the process running it is gone")
            with contextlib.suppress(Abort):
                await propose_state(client, state, flow_run_id=flow_run.id)
            log.warning(
                "run %s (%s) left over by a dead process: Crashed", flow_run.name, flow_run.id
            )
            crashed += 1
    return crashed
