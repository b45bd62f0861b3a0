"""Covers for a late automation: the triggered run is created by the runner if Prefect has not.

A deployment's event trigger is an automation in the Prefect server: event -> trigger fired ->
action -> flow run created. Measured here (bench realtime, Prefect's own events), that takes
~15-35 ms, except about one run in 15 to 30, whose action took 1.5-2 s (and up to 6 s) between
the trigger firing and the run existing: the server's own API call, waiting on its SQLite
database. A file behind such a run waits that long for the realtime path.

So the runner listens to the trigger's events too. If no run of the deployment with the
parameters the trigger would give has appeared `after` seconds after the event, it creates
that run itself (idempotency key: the event's id), as the automation would have. When the
automation's own run comes later, it runs as usual and finds its work already done: a run
that drains the queue is safe to run twice. Nothing is covered while the deployment is paused
or its automation disabled: operators turn triggered runs off there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from jinja2.sandbox import SandboxedEnvironment
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.events import DeploymentEventTrigger
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.events.schemas.events import Event

log = logging.getLogger("gfx_sync.runner")

COVER_AFTER = 0.3  # seconds after the event: the automation's run normally exists by ~50 ms
COVER_KEY = "gfx-sync runner cover"  # idempotency keys of covering runs start so
STALE_EVENT = 10.0  # older events (replayed on connect, or held up) are left to the automation
_TEMPLATES = SandboxedEnvironment()


def render_parameters(trigger: DeploymentEventTrigger, event: Event) -> dict[str, Any]:
    """The run parameters the trigger's automation gives for `event` (its Jinja templates)."""
    return {
        name: _TEMPLATES.from_string(value).render(event=event) if isinstance(value, str) else value
        for name, value in (trigger.parameters or {}).items()
    }


def _key(deployment_id: UUID, parameters: dict[str, Any]) -> tuple[UUID, bytes]:
    return deployment_id, orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS)


class TriggerCover:
    """Creates a triggered deployment's run when its automation has not, `after` seconds on."""

    def __init__(
        self,
        triggers: dict[UUID, DeploymentEventTrigger],
        client: Callable[[], PrefectClient],
        enqueue: Callable[[FlowRun], None],
        *,
        after: float = COVER_AFTER,
    ) -> None:
        self.triggers = triggers
        self._client = client
        self._enqueue = enqueue
        self.after = after
        self.covered: list[UUID] = []  # runs this cover created (for health and tests)
        # Events it came to and left alone: the deployment is paused or no automation is on.
        self.declined: list[UUID] = []
        self.listening = False  # subscribed: events from now on are heard
        self._seen: dict[tuple[UUID, bytes], float] = {}  # (deployment, parameters) -> when
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, flow_run: FlowRun) -> None:
        """A run the runner learned about: if it is a trigger's, its event needs no cover."""
        if flow_run.deployment_id in self.triggers:
            now = time.time()
            self._forget_older_than(now - 10 * STALE_EVENT)  # bounded however long it runs
            self._seen[_key(flow_run.deployment_id, flow_run.parameters)] = now

    async def listen(self, stopping: Callable[[], bool]) -> None:
        """The triggers' events, as they happen. Reconnects forever."""
        names = sorted({name for trigger in self.triggers.values() for name in trigger.expect})
        while not stopping():
            since = time.time() - STALE_EVENT
            try:
                async with get_events_subscriber(filter=_recent(names, since)) as events:
                    self.listening = True
                    async for event in events:
                        self._consider(event)
            except Exception as exc:
                self.listening = False
                log.warning("trigger event stream lost (%s); reconnecting", exc)
                await asyncio.sleep(2)

    def _consider(self, event: Event) -> None:
        if event.occurred.timestamp() < time.time() - STALE_EVENT:
            return
        for deployment_id, trigger in self.triggers.items():
            if event.event in trigger.expect and trigger.match.matches(event.resource):
                task = asyncio.create_task(self._cover(deployment_id, trigger, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _cover(
        self, deployment_id: UUID, trigger: DeploymentEventTrigger, event: Event
    ) -> None:
        parameters = render_parameters(trigger, event)
        key = _key(deployment_id, parameters)
        occurred = event.occurred.timestamp()
        await asyncio.sleep(max(0.0, occurred + self.after - time.time()))
        if self._seen.get(key, 0.0) >= occurred - 1.0:
            return  # the automation's run is here
        try:
            if not await self._triggers_on(deployment_id):
                self.declined.append(event.id)
                return
            flow_run = await self._client().create_flow_run_from_deployment(
                deployment_id,
                parameters=parameters,
                idempotency_key=f"{COVER_KEY}, event {event.id}",
            )
        except Exception as exc:
            log.warning("could not cover event %s with a run: %s", event.id, exc)
            return
        late_ms = (time.time() - occurred) * 1000
        log.info(
            "no run from the automation %.0f ms after event %s: created run %s (%s) itself",
            late_ms,
            event.id,
            flow_run.id,
            flow_run.name,
        )
        self.covered.append(flow_run.id)
        self._enqueue(flow_run)

    async def _triggers_on(self, deployment_id: UUID) -> bool:
        """The deployment is not paused and an enabled automation runs it."""
        client = self._client()
        if (await client.read_deployment(deployment_id)).paused:
            return False
        automations = await client.read_resource_related_automations(
            f"prefect.deployment.{deployment_id}"
        )
        return any(
            automation.enabled
            and any(_runs(action, deployment_id) for action in automation.actions)
            for automation in automations
        )

    def _forget_older_than(self, cutoff: float) -> None:
        for key in [k for k, seen in self._seen.items() if seen < cutoff]:
            del self._seen[key]


def _runs(action: Any, deployment_id: UUID) -> bool:
    return getattr(action, "type", None) == "run-deployment" and getattr(
        action, "deployment_id", None
    ) in (deployment_id, None)


def _recent(names: Iterable[str], since: float) -> EventFilter:
    return EventFilter(
        event=EventNameFilter(name=list(names)),
        occurred=EventOccurredFilter(since=datetime.fromtimestamp(since, UTC)),
    )
