"""A warm runner for gfx-sync's deployments: real Prefect runs without the per-run start-up.

Prefect's stock runner polls for scheduled runs (10 s by default) and starts each run in a
fresh interpreter (~1.2 s of importing Prefect). This runner:
- hears about triggered runs from the server's event stream (`prefect.flow-run.Scheduled`),
  and about scheduled ones from one slow query a minute (the scheduler creates those without
  an event), so it neither waits for a poll nor keeps the server busy answering one;
- runs each run in a child forked from a forkserver that has Prefect and the flows already
  imported, and forked *before* the run exists: a spare child that has its API client, its
  suspension observer and gfx-sync's engine ready and waits for the claimed `FlowRun` on a
  pipe (deployments/warm_child.py), where Prefect's own `run_flow` runs it: states, logs,
  retries, artifacts and the UI work as with the stock runner; one run per child;
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
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
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
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.exceptions import Abort
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Completed, Crashed, Pending, Running
from prefect.utilities.engine import propose_state

from deployments.trigger_cover import COVER_AFTER, TriggerCover
from deployments.warm_child import CANCEL, child_main
from flows.hooks import announce_run_problem

log = logging.getLogger("gfx_sync.runner")

PRELOAD = [
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect._internal.observers",
    "prefect.events.clients",
    "psycopg",
    "orjson",
    "flows.realtime",
    "flows.batch",
    "flows.recovery",
    "flows.backfill",
    "tasks.runtime",
    "deployments.warm_child",
]
# A slot freed by a run's final state may be refused for a moment after: within this many
# seconds of our own run's end, a run told to wait retries in 0.5 s, not when the server said.
SLOT_RELEASE_LAG = 5.0
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
    trigger: DeploymentEventTrigger | None = None  # its runs' automation, covered if late


@dataclass(order=True)
class _Due:
    at: float
    flow_run: FlowRun = field(compare=False)


@dataclass
class _Spare:
    """A child forked ahead of need, getting ready (deployments.warm_child) for its run."""

    process: BaseProcess
    jobs: Connection  # the runner's end of the pipe the child waits on
    born: float = field(default_factory=time.monotonic)

    def hand(self, flow_run: FlowRun, target: str) -> bool:
        """Give the child its run; False if it is gone (it died while waiting)."""
        if not self.process.is_alive():
            return False
        try:
            self.jobs.send((flow_run, target))
        except (OSError, ValueError):
            self.jobs.close()
            return False
        return True

    def cancel(self) -> bool:
        """Ask the child to cancel its run the way Prefect's runner does (the engine then
        reports Cancelled and runs on_cancellation hooks); False if it cannot be asked."""
        try:
            self.jobs.send(CANCEL)
        except (OSError, ValueError):
            return False
        return True

    def dismiss(self) -> None:
        """Not needed after all: the child exits without running anything."""
        with contextlib.suppress(OSError, ValueError):
            self.jobs.send(None)
            self.jobs.close()


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
        """`prepare`: "module:function" each spare child calls while it waits for its run.
        `cover_after`: create a triggered run this long after its event if the automation has
        not (deployments/trigger_cover.py); None: never."""
        self.served = {d.id: d for d in served}
        triggers = {d.id: d.trigger for d in served if d.trigger is not None}
        self.cover = (
            TriggerCover(triggers, lambda: self._client, self._enqueue, after=cover_after)
            if triggers and cover_after is not None
            else None
        )
        self.limit = asyncio.Semaphore(limit)
        self.poll_seconds = poll_seconds
        self.horizon_seconds = horizon_seconds
        self.startup_poll_seconds = startup_poll_seconds
        self.startup_seconds = startup_seconds
        self.polls = 0  # scheduled-run queries made (for health and tests)
        self._due: list[_Due] = []
        self._due_at: dict[UUID, float] = {}  # run -> its live entry in _due (others stale)
        self._awaiting_slot: dict[UUID, dict[UUID, FlowRun]] = {}  # deployment -> runs
        self._last_ended: dict[UUID, float] = {}  # deployment -> when a run of ours ended
        self._known: set[UUID] = set()  # runs already queued, started or settled
        self._wake = asyncio.Event()
        self._children: dict[UUID, _Spare] = {}
        self._cancelled: set[UUID] = set()  # runs asked to cancel while their child ran
        self._poll_now = asyncio.Event()  # set when the server may hold runs we have missed
        self._context: ForkServerContext = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.spare_max_age = spare_max_age
        self.prepare = prepare
        self.cancel_grace = cancel_grace
        self._spare: _Spare | None = None
        self._spare_lock = asyncio.Lock()
        self.forked: list[BaseProcess] = []  # children forked and alive (see stop_leftovers)
        self._forked_lock = threading.Lock()

    @property
    def children(self) -> dict[UUID, BaseProcess]:
        """The children running a run now, by flow run id."""
        return {run_id: child.process for run_id, child in self._children.items()}

    @property
    def spare_pid(self) -> int | None:
        """The child waiting for the next run, if one is."""
        spare = self._spare
        return spare.process.pid if spare is not None and spare.process.is_alive() else None

    # -- lifecycle --------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled; then let runs in flight finish."""
        async with get_client() as client:
            self._client = client
            try:
                await self._replenish()  # starts the forkserver too, not on the first real run
                loops = [self._listen(), self._poll(), self._dispatch(), self._refresh_spare()]
                if self.cover is not None:
                    loops.append(self.cover.listen(lambda: self._stopping))
                await asyncio.gather(*loops)
            finally:
                self._stopping = True
                async with self._spare_lock:  # a spare being forked is dismissed too
                    spare, self._spare = self._spare, None
                if spare is not None:
                    spare.dismiss()
                await self._drain_children()

    def stop_leftovers(self, timeout: float = 5.0, grace: float = 2.0) -> list[int]:
        """Call once the event loop is gone. A child still alive `grace` seconds later never
        got its run: a spare forked on a thread while the loop was being cancelled, whose
        owner is gone (the spare dismissed at shutdown exits within the grace). multiprocessing
        joins live children at interpreter exit, so one spare waiting on its pipe would hold
        `up` open forever: such children are terminated. Returns their pids."""
        give_up_at = time.monotonic() + grace
        for child in self.forked:
            child.join(max(0.0, give_up_at - time.monotonic()))
        leftovers = [child for child in self.forked if child.is_alive()]
        for child in leftovers:
            log.warning("child %s left over at shutdown: stopping it", child.pid)
            child.terminate()
        for child in leftovers:
            child.join(timeout)
            if child.is_alive():
                child.kill()
                child.join(timeout)
        return [child.pid for child in leftovers if child.pid is not None]

    async def _drain_children(self, grace: float = 60.0) -> None:
        deadline = time.monotonic() + grace
        while self._children and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for run_id, child in list(self._children.items()):
            log.warning("run %s still running at shutdown: stopping it", run_id)
            child.process.terminate()

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
        if self.cover is not None:
            self.cover.note(flow_run)
        if flow_run.id in self._known or flow_run.deployment_id not in self.served:
            return
        self._known.add(flow_run.id)
        start = flow_run.state.state_details.scheduled_time if flow_run.state else None
        at = start.timestamp() if start else time.time()
        self._schedule(flow_run, at)

    def _schedule(self, flow_run: FlowRun, at: float) -> None:
        """(Re)start `flow_run` at `at`; an earlier entry for it becomes stale."""
        self._due_at[flow_run.id] = at
        heapq.heappush(self._due, _Due(at, flow_run))
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
            if self._due_at.get(due.flow_run.id) != due.at:
                continue  # rescheduled since
            del self._due_at[due.flow_run.id]
            task = asyncio.create_task(self._start(due.flow_run))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start(self, flow_run: FlowRun) -> None:
        """Claim the run as read when it was learned about (no re-read: the claim is a state
        proposal, so the server refuses it if the run moved on meanwhile), then run it."""
        async with self.limit:
            served = self.served[flow_run.deployment_id]  # type: ignore[index]
            pending = await self._claim(flow_run)
            if pending is None:
                return
            flow_run = flow_run.model_copy(
                update={"state": pending, "state_type": pending.type, "state_name": pending.name}
            )
            try:
                if served.skip_when_idle is not None and served.skip_when_idle():
                    await self._complete_without_child(flow_run)
                else:
                    await self._run_child(served, flow_run)
            finally:
                self._slot_freed(served.id)

    def _slot_freed(self, deployment_id: UUID) -> None:
        """A run of ours ended: the runs told to wait for its deployment's slot retry now,
        not at the time the server named (30 s by default; the slot is free already)."""
        self._last_ended[deployment_id] = time.monotonic()
        for flow_run in self._awaiting_slot.pop(deployment_id, {}).values():
            if flow_run.id in self._due_at:
                self._schedule(flow_run, time.time())

    async def _claim(self, flow_run: FlowRun) -> State | None:
        """Pending, as the stock runner proposes it: the server's concurrency rules apply."""
        try:
            state = await propose_state(self._client, Pending(), flow_run_id=flow_run.id)
        except Abort as exc:
            log.debug("run %s not started: %s", flow_run.id, exc)
            return None
        except Exception as exc:
            log.warning("could not claim run %s: %s", flow_run.id, exc)
            self._known.discard(flow_run.id)  # the poll will offer it again
            return None
        if state.is_scheduled():  # AwaitingConcurrencySlot: try again when the server says
            retry_at = state.state_details.scheduled_time
            at = retry_at.timestamp() if retry_at else time.time() + 1.0
            deployment: UUID = flow_run.deployment_id  # type: ignore[assignment]
            ended = self._last_ended.get(deployment)
            if ended is not None and time.monotonic() - ended < SLOT_RELEASE_LAG:
                at = time.time()  # ours just ended: its slot is on its way back
            self._schedule(flow_run, max(at, time.time() + 0.5))
            # ...or as soon as this runner's own run of the deployment ends, if sooner.
            self._awaiting_slot.setdefault(deployment, {})[flow_run.id] = flow_run
            log.debug("run %s waits for a concurrency slot until %s", flow_run.id, retry_at)
            return None
        return state if state.is_pending() else None

    async def _complete_without_child(self, flow_run: FlowRun) -> None:
        for state in (Running(), Completed(message="nothing due in the queue: skipped")):
            await propose_state(self._client, state, flow_run_id=flow_run.id)

    # -- children ---------------------------------------------------------------------

    def _fork_spare(self) -> _Spare:
        """Blocking (the forkserver answers over a socket): call it off the event loop."""
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=child_main,
            args=(reader, self.prepare, tuple(self.served), PREFECT_API_URL.value()),
            daemon=False,
        )
        process.start()
        with self._forked_lock:  # forks run on worker threads, sometimes two at once
            self.forked = [child for child in self.forked if child.is_alive()] + [process]
        reader.close()  # the child holds its own copy
        return _Spare(process, writer)

    async def _replenish(self) -> None:
        """Keep one spare child getting ready for the next run."""
        async with self._spare_lock:
            if self._stopping or (self._spare is not None and self._spare.process.is_alive()):
                return
            self._spare = await asyncio.to_thread(self._fork_spare)

    async def _take_spare(self) -> _Spare:
        async with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is None or not spare.process.is_alive():
            spare = await asyncio.to_thread(self._fork_spare)
        return spare

    async def _refresh_spare(self) -> None:
        """Replace an idle spare now and then: its connections were made when it was born."""
        while not self._stopping:
            await asyncio.sleep(min(60.0, self.spare_max_age))
            async with self._spare_lock:
                old = self._spare
                if old is None or time.monotonic() - old.born < self.spare_max_age:
                    continue
                self._spare = None
            old.dismiss()
            await self._replenish()
            await asyncio.to_thread(old.process.join, 10)

    async def _start_child(self, flow_run: FlowRun, target: str) -> _Spare:
        spare = await self._take_spare()
        if not spare.hand(flow_run, target):  # it died waiting: a fresh one then
            log.warning("spare child %s exited before its run; forking another", spare.process.pid)
            spare = await asyncio.to_thread(self._fork_spare)
            if not spare.hand(flow_run, target):
                raise RuntimeError(f"child {spare.process.pid} exited before its run")
        return spare

    async def _run_child(self, served: ServedDeployment, flow_run: FlowRun) -> None:
        try:
            handle = await self._start_child(flow_run, served.target)
        except Exception as exc:
            await self._crashed(served, flow_run, f"could not start a child: {exc}")
            return
        self._children[flow_run.id] = handle
        child = handle.process
        try:
            await asyncio.to_thread(child.join, served.time_limit)
            if child.is_alive():  # hung: SIGKILL, so the reason stays ours (leases bring
                child.kill()  # its claimed queue items back; its transaction never committed)
                await asyncio.to_thread(child.join, 10)
                await self._crashed(served, flow_run, f"ran over {served.time_limit:.0f} s")
            elif child.exitcode != 0 and flow_run.id in self._cancelled:
                await self._settle_cancelled(flow_run.id)
            elif child.exitcode != 0:
                await self._crashed(served, flow_run, f"child exited with {child.exitcode}")
        finally:
            self._children.pop(flow_run.id, None)
            self._cancelled.discard(flow_run.id)
            handle.jobs.close()
            # The next spare forks once this run is over, not while it competes for the CPU
            # (not at all once the runner is stopping: _replenish checks).
            await self._replenish()

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
        """A run cancelled in the UI/API: its child is told (the engine settles the run as
        Cancelled); one that does not stop within `cancel_grace` is stopped."""
        child = self._children.get(run_id)
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
        await self._settle_cancelled(run_id)

    async def _settle_cancelled(self, run_id: UUID) -> None:
        """A child stopped before its engine could say so: Cancelled, as asked."""
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
