"""A warm runner for gfx-sync's deployments: real Prefect runs without the per-run start-up.

Prefect's stock runner polls for scheduled runs (10 s by default) and starts each run in a
fresh interpreter (~1.2 s of importing Prefect). This runner:
- hears about triggered runs from the server's event stream (`prefect.flow-run.Scheduled`),
  and about scheduled ones from one slow query a minute (the scheduler creates those without
  an event), so it neither waits for a poll nor keeps the server busy answering one;
- starts each run in a child forked from a forkserver that has Prefect and the flows already
  imported (~10 ms), where Prefect's own `run_flow` runs it: states, logs, retries, artifacts
  and the UI work as with the stock runner;
- reports a child that dies or outlives its time limit as Crashed (and alerts), without going
  down itself; a run cancelled in the UI has its child stopped;
- skips the child for a batch run when the queue holds nothing due: the run still goes
  Pending -> Running -> Completed in the UI, saying so, for a few cheap API calls instead of a
  process (this is what keeps a 5-second schedule nearly free while idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import importlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments.runner import RunnerDeployment
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.exceptions import Abort
from prefect.states import Cancelled, Completed, Crashed, Pending, Running
from prefect.utilities.engine import propose_state

from flows.hooks import announce_run_problem

log = logging.getLogger("gfx_sync.runner")

PRELOAD = [
    "prefect",
    "prefect.flow_engine",
    "prefect.task_engine",
    "psycopg",
    "orjson",
    "flows.realtime",
    "flows.batch",
    "flows.recovery",
    "flows.backfill",
    "tasks.runtime",
]
SCHEDULED = "prefect.flow-run.Scheduled"
CANCELLING = "prefect.flow-run.Cancelling"


@dataclass
class ServedDeployment:
    id: UUID
    name: str
    flow: Flow
    target: str  # "module:attribute" of the flow, imported by the child
    time_limit: float
    skip_when_idle: Callable[[], bool] | None = None  # True: nothing to do, no child needed


@dataclass(order=True)
class _Due:
    at: float
    run_id: UUID = field(compare=False)


def _child_main(flow_run_id: str, target: str) -> None:
    """In the forked child: Prefect's own engine runs the flow run, as `prefect.engine` does."""
    from prefect.flow_engine import flow_run_logger, load_flow_run, run_flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on `up` lets runs in flight finish
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    module, _, attribute = target.partition(":")
    flow = getattr(importlib.import_module(module), attribute)
    flow_run = load_flow_run(UUID(flow_run_id))
    # No heartbeat thread: this runner watches its children itself, and joining that thread
    # holds every run open for up to a second after its work is done.
    no_heartbeats = temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
    try:
        with no_heartbeats:
            run_flow(flow, flow_run=flow_run, error_logger=flow_run_logger(flow_run))
    finally:  # a forked child skips atexit: send the logs and events it still holds
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)


class WarmRunner:
    def __init__(
        self,
        served: list[ServedDeployment],
        *,
        limit: int = 4,
        poll_seconds: float = 60.0,
        horizon_seconds: float = 120.0,
        startup_poll_seconds: float = 2.0,
        startup_seconds: float = 60.0,
    ) -> None:
        self.served = {d.id: d for d in served}
        self.limit = asyncio.Semaphore(limit)
        self.poll_seconds = poll_seconds
        self.horizon_seconds = horizon_seconds
        self.startup_poll_seconds = startup_poll_seconds
        self.startup_seconds = startup_seconds
        self.polls = 0  # scheduled-run queries made (for health and tests)
        self._due: list[_Due] = []
        self._known: set[UUID] = set()  # runs already queued, started or settled
        self._wake = asyncio.Event()
        self._poll_now = asyncio.Event()  # set when the server may hold runs we have missed
        self._children: dict[UUID, BaseProcess] = {}
        self._context: ForkServerContext = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled; then let runs in flight finish."""
        warm_up = self._context.Process(target=os.getpid)  # start the forkserver now, not
        await asyncio.to_thread(self._start_and_join, warm_up)  # on the first real run
        async with get_client() as client:
            self._client = client
            loops = [self._listen(), self._poll(), self._dispatch()]
            try:
                await asyncio.gather(*loops)
            finally:
                self._stopping = True
                await self._drain_children()

    @staticmethod
    def _start_and_join(process: BaseProcess) -> None:
        process.start()
        process.join()

    async def _drain_children(self, grace: float = 60.0) -> None:
        deadline = time.monotonic() + grace
        while self._children and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for run_id, child in list(self._children.items()):
            log.warning("run %s still running at shutdown: stopping it", run_id)
            child.terminate()

    # -- learning about runs ----------------------------------------------------------

    def _event_filter(self) -> EventFilter:
        return EventFilter(
            event=EventNameFilter(name=[SCHEDULED, CANCELLING]),
            related=EventRelatedFilter(id=[f"prefect.deployment.{i}" for i in self.served]),
        )

    async def _listen(self) -> None:
        """Scheduled and Cancelling events, ~20 ms after they happen. Reconnects forever."""
        while not self._stopping:
            try:
                async with get_events_subscriber(filter=self._event_filter()) as events:
                    self._poll_now.set()  # (re)connected: runs made meanwhile raised no event
                    async for event in events:
                        run_id = UUID(event.resource.id.rsplit(".", 1)[-1])
                        if event.event == CANCELLING:
                            self._cancel(run_id)
                        else:
                            await self._consider(run_id)
            except Exception as exc:
                log.warning("event stream lost (%s); reconnecting", exc)
                await asyncio.sleep(2)

    async def _poll(self) -> None:
        """Scheduled runs due within the horizon: the slow, complete fallback.

        Just after `register` the server's scheduler has not created the new schedules' runs
        yet (it does within seconds, without an event): for `startup_seconds`, poll every
        `startup_poll_seconds`. Otherwise the first batch runs wait for the second poll, a
        minute in which modified files and retries are not synced at all. (Stopping early once
        a poll finds runs is not enough: the start-up recovery run is found at once.)
        """
        started = time.monotonic()
        while not self._stopping:
            try:
                before = datetime.now(UTC) + timedelta(seconds=self.horizon_seconds)
                runs = await self._client.get_scheduled_flow_runs_for_deployments(
                    list(self.served), scheduled_before=before
                )
                for flow_run in runs:
                    self._enqueue(flow_run)
            except Exception as exc:
                log.warning("could not read scheduled runs: %s", exc)
            self.polls += 1
            starting = time.monotonic() - started < self.startup_seconds
            self._poll_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._poll_now.wait(),
                    timeout=self.startup_poll_seconds if starting else self.poll_seconds,
                )

    async def _consider(self, run_id: UUID) -> None:
        if run_id in self._known:
            return  # the stream replays recent events on connect
        try:
            flow_run = await self._client.read_flow_run(run_id)
        except Exception as exc:
            log.warning("could not read flow run %s: %s", run_id, exc)
            return
        if flow_run.state is not None and flow_run.state.is_scheduled():
            self._enqueue(flow_run)

    def _enqueue(self, flow_run: FlowRun) -> None:
        if flow_run.id in self._known or flow_run.deployment_id not in self.served:
            return
        self._known.add(flow_run.id)
        start = flow_run.state.state_details.scheduled_time if flow_run.state else None
        at = start.timestamp() if start else time.time()
        heapq.heappush(self._due, _Due(at, flow_run.id))
        self._wake.set()

    # -- starting runs ----------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._stopping:
            delay = self._due[0].at - time.time() if self._due else self.poll_seconds
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            due = heapq.heappop(self._due)
            task = asyncio.create_task(self._start(due.run_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self, run_id: UUID) -> None:
        async with self.limit:
            try:
                flow_run = await self._client.read_flow_run(run_id)
            except Exception as exc:
                # The server is away: forget the run, so the poll offers it again once the
                # event stream is back (dropping it here left it Scheduled, never started).
                log.warning("could not read flow run %s: %s", run_id, exc)
                self._known.discard(run_id)
                return
            served = self.served[flow_run.deployment_id]  # type: ignore[index]
            if not await self._claim(flow_run):
                return
            if served.skip_when_idle is not None and served.skip_when_idle():
                await self._complete_without_child(flow_run)
                return
            await self._run_child(served, flow_run)

    async def _claim(self, flow_run: FlowRun) -> bool:
        """Pending, as the stock runner proposes it: the server's concurrency rules apply."""
        try:
            state = await propose_state(self._client, Pending(), flow_run_id=flow_run.id)
        except Abort as exc:
            log.debug("run %s not started: %s", flow_run.id, exc)
            return False
        except Exception as exc:
            log.warning("could not claim run %s: %s", flow_run.id, exc)
            self._known.discard(flow_run.id)  # the poll will offer it again
            return False
        if state.is_scheduled():  # AwaitingConcurrencySlot: try again when the server says
            retry_at = state.state_details.scheduled_time
            at = retry_at.timestamp() if retry_at else time.time() + 1.0
            heapq.heappush(self._due, _Due(max(at, time.time() + 0.5), flow_run.id))
            self._wake.set()
            return False
        return state.is_pending()

    async def _complete_without_child(self, flow_run: FlowRun) -> None:
        for state in (Running(), Completed(message="nothing due in the queue: skipped")):
            await propose_state(self._client, state, flow_run_id=flow_run.id)

    async def _run_child(self, served: ServedDeployment, flow_run: FlowRun) -> None:
        child = self._context.Process(
            target=_child_main, args=(str(flow_run.id), served.target), daemon=False
        )
        child.start()
        self._children[flow_run.id] = child
        try:
            await asyncio.to_thread(child.join, served.time_limit)
            if child.is_alive():
                child.terminate()
                await asyncio.to_thread(child.join, 10)
                if child.is_alive():
                    child.kill()
                await self._crashed(served, flow_run, f"ran over {served.time_limit:.0f} s")
            elif child.exitcode != 0:
                await self._crashed(served, flow_run, f"child exited with {child.exitcode}")
        finally:
            self._children.pop(flow_run.id, None)

    async def _crashed(self, served: ServedDeployment, flow_run: FlowRun, why: str) -> None:
        """A child that died or hung: Crashed, unless the engine already settled the run."""
        current = await self._client.read_flow_run(flow_run.id)
        if current.state is not None and current.state.is_final():
            return
        state = Crashed(message=f"gfx-sync runner: {why}")
        with contextlib.suppress(Abort):
            state = await propose_state(self._client, state, flow_run_id=flow_run.id)
        log.error("run %s (%s) crashed: %s", flow_run.name, served.name, why)
        await asyncio.to_thread(announce_run_problem, served.flow, current, state)

    def _cancel(self, run_id: UUID) -> None:
        child = self._children.get(run_id)
        if child is None or not child.is_alive():
            return
        log.info("cancelling run %s", run_id)
        child.terminate()
        task = asyncio.create_task(self._mark_cancelled(run_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark_cancelled(self, run_id: UUID) -> None:
        await asyncio.sleep(0.5)
        current = await self._client.read_flow_run(run_id)
        if current.state is not None and current.state.type is StateType.CANCELLING:
            await self._client.set_flow_run_state(run_id, Cancelled(), force=True)


LEFTOVER_STATES = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]


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


async def register(deployments: list[RunnerDeployment]) -> list[UUID]:
    """Create or update the deployments (schedules, triggers, concurrency) on the server."""
    return [await deployment.aapply() for deployment in deployments]
