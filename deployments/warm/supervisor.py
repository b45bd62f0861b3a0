"""Watches the children running runs: each one's time limit, a cancel from the UI, its exit;
at shutdown, the runs still going and the children nobody will hand a run."""

from __future__ import annotations

import asyncio
import logging
import time
from multiprocessing.process import BaseProcess
from uuid import UUID

from prefect.client.schemas.objects import FlowRun

from deployments.warm.pool import Child, ChildPool
from deployments.warm.served import ServedDeployment
from deployments.warm.states import StateProposer

log = logging.getLogger("gfx_sync.runner")


class Supervisor:
    """Runs each claimed run in a child from `pool` and reports how the child ended."""

    def __init__(self, pool: ChildPool, states: StateProposer, *, cancel_grace: float) -> None:
        """`cancel_grace`: a child asked to cancel that still runs this long after is killed."""
        self.pool = pool
        self.states = states
        self.cancel_grace = cancel_grace
        self.children: dict[UUID, Child] = {}  # the children running a run now, by run id
        self._cancelled: set[UUID] = set()  # runs asked to cancel while their child ran
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, served: ServedDeployment, flow_run: FlowRun) -> None:
        """Until the run's child is gone: a child that dies or outlives its time limit is
        reported Crashed (a cancelled one Cancelled)."""
        try:
            handle = await self.pool.start(flow_run, served.target)
        except Exception as exc:
            await self.states.crashed(served, flow_run, f"could not start a child: {exc}")
            return
        self.children[flow_run.id] = handle
        child = handle.process
        try:
            await asyncio.to_thread(child.join, served.time_limit)
            if child.is_alive():  # hung: SIGKILL, so the reason stays ours (leases bring
                child.kill()  # its claimed queue items back; its transaction never committed)
                await asyncio.to_thread(child.join, 10)
                await self.states.crashed(served, flow_run, f"ran over {served.time_limit:.0f} s")
            elif child.exitcode != 0 and flow_run.id in self._cancelled:
                await self.states.cancelled(flow_run.id)
            elif child.exitcode != 0:
                await self.states.crashed(served, flow_run, f"child exited with {child.exitcode}")
        finally:
            self.children.pop(flow_run.id, None)
            self._cancelled.discard(flow_run.id)
            handle.jobs.close()
            # The next spare forks once this run is over, not while it competes for the CPU
            # (not at all once the runner is stopping: the pool is closed then).
            await self.pool.replenish()

    def cancel(self, run_id: UUID) -> None:
        """A run cancelled in the UI/API: its child is told (the engine settles the run as
        Cancelled); one that does not stop within `cancel_grace` is stopped."""
        child = self.children.get(run_id)
        if child is None or not child.process.is_alive() or run_id in self._cancelled:
            return
        log.info("cancelling run %s", run_id)
        self._cancelled.add(run_id)
        if not child.cancel():
            child.process.terminate()
        task = asyncio.create_task(self._stop_if_still_running(run_id, child.process))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_if_still_running(self, run_id: UUID, child: BaseProcess) -> None:
        await asyncio.to_thread(child.join, self.cancel_grace)
        if child.is_alive():
            log.warning("run %s did not stop when cancelled: killing its child", run_id)
            child.kill()
        await self.states.cancelled(run_id)

    async def drain(self, grace: float = 60.0) -> None:
        """At shutdown: runs in flight get `grace` seconds to finish, then are stopped."""
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for run_id, child in list(self.children.items()):
            log.warning("run %s still running at shutdown: stopping it", run_id)
            child.process.terminate()

    def stop_leftovers(self, timeout: float = 5.0, grace: float = 2.0) -> list[int]:
        """Call once the event loop is gone. A child still alive `grace` seconds later never
        got its run: a spare forked on a thread while the loop was being cancelled, whose
        owner is gone (the spare dismissed at shutdown exits within the grace). multiprocessing
        joins live children at interpreter exit, so one spare waiting on its pipe would hold
        `up` open forever: such children are terminated. Returns their pids."""
        give_up_at = time.monotonic() + grace
        for child in self.pool.forked:
            child.join(max(0.0, give_up_at - time.monotonic()))
        leftovers = [child for child in self.pool.forked if child.is_alive()]
        for child in leftovers:
            log.warning("child %s left over at shutdown: stopping it", child.pid)
            child.terminate()
        for child in leftovers:
            child.join(timeout)
            if child.is_alive():
                child.kill()
                child.join(timeout)
        return [child.pid for child in leftovers if child.pid is not None]
