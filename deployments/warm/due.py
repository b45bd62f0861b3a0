"""When each run the warm runner knows of starts: a heap of due times, and slot retries."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from prefect.client.schemas.objects import FlowRun

log = logging.getLogger("gfx_sync.runner")

# A slot freed by a run's final state may be refused for a moment after: within this many
# seconds of our own run's end, a run told to wait retries in 0.5 s, not when the server said.
SLOT_RELEASE_LAG = 5.0


@dataclass(order=True)
class _Due:
    at: float
    flow_run: FlowRun = field(compare=False)


class DueRuns:
    """Runs waiting for their start time; a run added again moves (its older entry is stale)."""

    def __init__(self, idle_seconds: float) -> None:
        """`idle_seconds`: how long `next` sleeps between looks when nothing is waiting."""
        self.idle_seconds = idle_seconds
        self._heap: list[_Due] = []
        self._at: dict[UUID, float] = {}  # run -> its live entry in _heap (others stale)
        self._awaiting_slot: dict[UUID, dict[UUID, FlowRun]] = {}  # deployment -> runs
        self._last_ended: dict[UUID, float] = {}  # deployment -> when a run of ours ended
        self._wake = asyncio.Event()

    def add(self, flow_run: FlowRun, at: float) -> None:
        """(Re)start `flow_run` at `at` (epoch seconds)."""
        self._at[flow_run.id] = at
        heapq.heappush(self._heap, _Due(at, flow_run))
        self._wake.set()

    async def next(self) -> FlowRun:
        """The next run whose time has come, once it has."""
        while True:
            delay = self._heap[0].at - time.time() if self._heap else self.idle_seconds
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                continue
            due = heapq.heappop(self._heap)
            if self._at.get(due.flow_run.id) != due.at:
                continue  # rescheduled since
            del self._at[due.flow_run.id]
            return due.flow_run

    def wait_for_slot(self, flow_run: FlowRun, retry_at: datetime | None) -> None:
        """Told to wait for its deployment's concurrency slot (AwaitingConcurrencySlot): try
        again when the server said, or as soon as this runner's own run of the deployment
        ends, if sooner."""
        at = retry_at.timestamp() if retry_at else time.time() + 1.0
        deployment: UUID = flow_run.deployment_id  # type: ignore[assignment]
        ended = self._last_ended.get(deployment)
        if ended is not None and time.monotonic() - ended < SLOT_RELEASE_LAG:
            at = time.time()  # ours just ended: its slot is on its way back
        self.add(flow_run, max(at, time.time() + 0.5))
        self._awaiting_slot.setdefault(deployment, {})[flow_run.id] = flow_run
        log.debug("run %s waits for a concurrency slot until %s", flow_run.id, retry_at)

    def slot_freed(self, deployment_id: UUID) -> None:
        """A run of ours ended: the runs told to wait for its deployment's slot retry now,
        not at the time the server named (30 s by default; the slot is free already)."""
        self._last_ended[deployment_id] = time.monotonic()
        for flow_run in self._awaiting_slot.pop(deployment_id, {}).values():
            if flow_run.id in self._at:
                self.add(flow_run, time.time())
