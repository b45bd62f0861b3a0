"""The warm runner's facade: one object `up` builds and runs, composed of single-job parts.

- `RunPoller` (poller.py): finds the runs to start (events, a slow query, the trigger cover);
- `DueRuns` (due.py): when each starts, and when a run told to wait for a slot retries;
- `StateProposer` (states.py): claims each run (Pending) and settles what a child could not;
- `ChildPool` (pool.py): the spare child, forked before the run exists (child.py);
- `Supervisor` (supervisor.py): the child running a run, its time limit, its cancel, its exit.
"""

from __future__ import annotations

import asyncio
import logging
from multiprocessing.process import BaseProcess
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun

from deployments.warm.due import DueRuns
from deployments.warm.poller import RunPoller
from deployments.warm.pool import ChildPool
from deployments.warm.served import ServedDeployment
from deployments.warm.states import StateProposer
from deployments.warm.supervisor import Supervisor
from deployments.warm.trigger_cover import COVER_AFTER, TriggerCover

log = logging.getLogger("gfx_sync.runner")


class WarmRunner:
    def __init__(
        self,
        served: list[ServedDeployment],
        *,
        limit: int = 4,
        poll_seconds: float = 60.0,
        horizon_seconds: float = 120.0,
        spare_max_age: float = 900.0,
        prepare: str | None = None,
        cancel_grace: float = 10.0,
        startup_poll_seconds: float = 2.0,
        startup_seconds: float = 60.0,
        cover_after: float | None = COVER_AFTER,
    ) -> None:
        """`limit`: runs at once. `prepare`: "module:function" each spare child calls while it
        waits for its run. `cover_after`: create a triggered run this long after its event if
        the automation has not (trigger_cover.py); None: never."""
        self.served = {d.id: d for d in served}
        self._client: PrefectClient | None = None
        self.states = StateProposer(self.client)
        self.pool = ChildPool(tuple(self.served), prepare=prepare, max_age=spare_max_age)
        self.supervisor = Supervisor(self.pool, self.states, cancel_grace=cancel_grace)
        self.due = DueRuns(idle_seconds=poll_seconds)
        self.poller = RunPoller(
            self.served,
            self.client,
            found=self.due.add,
            cancelling=self.supervisor.cancel,
            poll_seconds=poll_seconds,
            horizon_seconds=horizon_seconds,
            startup_poll_seconds=startup_poll_seconds,
            startup_seconds=startup_seconds,
            cover_after=cover_after,
        )
        self.limit = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def client(self) -> PrefectClient:
        """The API client of `run` (there is none before it starts)."""
        assert self._client is not None, "the runner is not running"
        return self._client

    @property
    def cover(self) -> TriggerCover | None:
        return self.poller.cover

    @property
    def polls(self) -> int:
        """Scheduled-run queries made (for health and tests)."""
        return self.poller.polls

    @property
    def children(self) -> dict[UUID, BaseProcess]:
        """The children running a run now, by flow run id."""
        return {run_id: child.process for run_id, child in self.supervisor.children.items()}

    @property
    def spare_pid(self) -> int | None:
        """The child waiting for the next run, if one is."""
        return self.pool.spare_pid

    @property
    def forked(self) -> list[BaseProcess]:
        """Children forked and alive (see stop_leftovers)."""
        return self.pool.forked

    async def run(self) -> None:
        """Serve until cancelled; then let runs in flight finish."""
        async with get_client() as client:
            self._client = client
            try:
                await self.pool.replenish()  # starts the forkserver too, not on the first run
                await asyncio.gather(
                    self.poller.run(self._stopped), self._dispatch(), self.pool.refresh()
                )
            finally:
                self._stopping = True
                await self.pool.close()
                await self.supervisor.drain()

    def stop_leftovers(self, timeout: float = 5.0, grace: float = 2.0) -> list[int]:
        """Once the event loop is gone: stop children nobody will hand a run (supervisor)."""
        return self.supervisor.stop_leftovers(timeout, grace)

    def _stopped(self) -> bool:
        return self._stopping

    async def _dispatch(self) -> None:
        while not self._stopping:
            flow_run = await self.due.next()
            task = asyncio.create_task(self._start(flow_run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self, flow_run: FlowRun) -> None:
        """Claim the run as read when it was learned about (no re-read: the claim is a state
        proposal, so the server refuses it if the run moved on meanwhile), then run it. A run
        with nothing to do is settled as skipped instead, in one proposal: no claim, no
        concurrency slot, no child."""
        async with self.limit:
            served = self.served[flow_run.deployment_id]  # type: ignore[index]
            try:
                if served.skip_when_idle is not None and served.skip_when_idle():
                    await self.states.skip(flow_run)
                    return
                state = await self.states.claim(flow_run)
            except Exception as exc:
                log.warning("could not start run %s: %s", flow_run.id, exc)
                self.poller.forget(flow_run.id)
                return
            if state is not None and state.is_scheduled():  # AwaitingConcurrencySlot
                self.due.wait_for_slot(flow_run, state.state_details.scheduled_time)
                return
            if state is None or not state.is_pending():
                return
            flow_run = flow_run.model_copy(
                update={"state": state, "state_type": state.type, "state_name": state.name}
            )
            try:
                await self.supervisor.run(served, flow_run)
            finally:
                self.due.slot_freed(served.id)
