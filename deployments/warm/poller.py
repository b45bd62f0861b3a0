"""How the warm runner learns about runs to start, and about runs cancelled meanwhile.

Triggered runs are heard of from the server's event stream (`prefect.flow-run.Scheduled`,
~20 ms after they are made), scheduled ones from one slow query (the scheduler creates those
without an event); a triggered run whose automation is late is created by the trigger cover
(deployments/warm/trigger_cover.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

from deployments.warm.served import ServedDeployment
from deployments.warm.trigger_cover import TriggerCover

log = logging.getLogger("gfx_sync.runner")

SCHEDULED = "prefect.flow-run.Scheduled"
CANCELLING = "prefect.flow-run.Cancelling"


class RunPoller:
    """Offers each scheduled run of the served deployments once, with its start time, to
    `found`; tells `cancelling` of a run being cancelled."""

    def __init__(
        self,
        served: dict[UUID, ServedDeployment],
        client: Callable[[], PrefectClient],
        *,
        found: Callable[[FlowRun, float], None],
        cancelling: Callable[[UUID], None],
        poll_seconds: float,
        horizon_seconds: float,
        startup_poll_seconds: float,
        startup_seconds: float,
        cover_after: float | None,
    ) -> None:
        """`cover_after`: create a triggered run this long after its event if the automation
        has not; None: never."""
        self.served = served
        self._client = client
        self._found = found
        self._cancelling = cancelling
        self.poll_seconds = poll_seconds
        self.horizon_seconds = horizon_seconds
        self.startup_poll_seconds = startup_poll_seconds
        self.startup_seconds = startup_seconds
        self.polls = 0  # scheduled-run queries made (for health and tests)
        self._known: set[UUID] = set()  # runs already offered (queued, started or settled)
        self._poll_now = asyncio.Event()  # set when the server may hold runs we have missed
        triggers = {d.id: d.trigger for d in served.values() if d.trigger is not None}
        self.cover = (
            TriggerCover(triggers, client, self.offer, after=cover_after)
            if triggers and cover_after is not None
            else None
        )

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Listen and poll (and cover) until cancelled."""
        loops = [self._listen(stopping), self._poll(stopping)]
        if self.cover is not None:
            loops.append(self.cover.listen(stopping))
        await asyncio.gather(*loops)

    def offer(self, flow_run: FlowRun) -> None:
        """A scheduled run: to `found` at its scheduled time, unless offered before."""
        if self.cover is not None:
            self.cover.note(flow_run)
        if flow_run.id in self._known or flow_run.deployment_id not in self.served:
            return
        self._known.add(flow_run.id)
        start = flow_run.state.state_details.scheduled_time if flow_run.state else None
        self._found(flow_run, start.timestamp() if start else time.time())

    def forget(self, run_id: UUID) -> None:
        """A run that could not be claimed: the next poll offers it again."""
        self._known.discard(run_id)

    def _event_filter(self) -> EventFilter:
        return EventFilter(
            event=EventNameFilter(name=[SCHEDULED, CANCELLING]),
            related=EventRelatedFilter(id=[f"prefect.deployment.{i}" for i in self.served]),
        )

    async def _listen(self, stopping: Callable[[], bool]) -> None:
        """Scheduled and Cancelling events, ~20 ms after they happen. Reconnects forever."""
        while not stopping():
            try:
                async with get_events_subscriber(filter=self._event_filter()) as events:
                    self._poll_now.set()  # (re)connected: runs made meanwhile raised no event
                    async for event in events:
                        run_id = UUID(event.resource.id.rsplit(".", 1)[-1])
                        if event.event == CANCELLING:
                            self._cancelling(run_id)
                        else:
                            await self._consider(run_id)
            except Exception as exc:
                log.warning("event stream lost (%s); reconnecting", exc)
                await asyncio.sleep(2)

    async def _poll(self, stopping: Callable[[], bool]) -> None:
        """Scheduled runs due within the horizon: the slow, complete fallback.

        Just after `register` the server's scheduler has not created the new schedules' runs
        yet (it does within seconds, without an event): for `startup_seconds`, poll every
        `startup_poll_seconds`. Otherwise the first batch runs wait for the second poll, a
        minute in which modified files and retries are not synced at all. (Stopping early once
        a poll finds runs is not enough: the start-up recovery run is found at once.)
        """
        started = time.monotonic()
        while not stopping():
            try:
                before = datetime.now(UTC) + timedelta(seconds=self.horizon_seconds)
                runs = await self._client().get_scheduled_flow_runs_for_deployments(
                    list(self.served), scheduled_before=before
                )
                for flow_run in runs:
                    self.offer(flow_run)
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
            flow_run = await self._client().read_flow_run(run_id)
        except Exception as exc:
            log.warning("could not read flow run %s: %s", run_id, exc)
            return
        if flow_run.state is not None and flow_run.state.is_scheduled():
            self.offer(flow_run)
