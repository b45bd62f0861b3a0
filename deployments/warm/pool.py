"""The warm runner's children: one spare forked ahead of need, from a preloaded forkserver.

A spare gets ready for a run that does not exist yet (deployments/warm/child.py) and waits on a
pipe; the next run is handed to it. It is forked off the event loop (the forkserver answers
over a socket), after the previous run is over rather than while it competes for the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from uuid import UUID

from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL

from deployments.compat import PREFECT_PRELOAD
from deployments.warm.child import CANCEL, child_main

log = logging.getLogger("gfx_sync.runner")

PRELOAD = [
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    *PREFECT_PRELOAD,
    "prefect.events.clients",
    "psycopg",
    "orjson",
    "flows.realtime",
    "flows.batch",
    "flows.recovery",
    "flows.backfill",
    "tasks.runtime",
    "deployments.warm.child",
    "deployments.watching",  # `up`'s watcher is forked from it too (flows.watcher)
    "deployments.warm.frozen",  # last: freezes what the imports above made
]


def forkserver_context() -> ForkServerContext:
    """The forkserver (one per process: multiprocessing starts it on the first fork), with
    what the runs and the watcher need imported ahead of them."""
    context: ForkServerContext = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


@dataclass
class Child:
    """A child forked ahead of need: a spare getting ready for its run, then running it."""

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


class ChildPool:
    """Keeps one spare child ready, and hands runs to it (or to a fresh one if it died)."""

    def __init__(
        self, deployment_ids: tuple[UUID, ...], *, prepare: str | None, max_age: float
    ) -> None:
        """`prepare`: "module:function" each spare calls while it waits for its run.
        `max_age`: an idle spare older than this is replaced (its connections are old)."""
        self.deployment_ids = deployment_ids
        self.prepare = prepare
        self.max_age = max_age
        self._context = forkserver_context()
        self._spare: Child | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.forked: list[BaseProcess] = []  # children forked and alive (see stop_leftovers)
        self._forked_lock = threading.Lock()

    @property
    def spare_pid(self) -> int | None:
        """The child waiting for the next run, if one is."""
        spare = self._spare
        return spare.process.pid if spare is not None and spare.process.is_alive() else None

    def fork(self) -> Child:
        """Blocking (the forkserver answers over a socket): call it off the event loop."""
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=child_main,
            args=(reader, self.prepare, self.deployment_ids, PREFECT_API_URL.value()),
            daemon=False,
        )
        process.start()
        with self._forked_lock:  # forks run on worker threads, sometimes two at once
            self.forked = [child for child in self.forked if child.is_alive()] + [process]
        reader.close()  # the child holds its own copy
        return Child(process, writer)

    async def replenish(self) -> None:
        """Keep one spare child getting ready for the next run (none once closed)."""
        async with self._lock:
            if self._closed or (self._spare is not None and self._spare.process.is_alive()):
                return
            self._spare = await asyncio.to_thread(self.fork)

    async def start(self, flow_run: FlowRun, target: str) -> Child:
        """The child now running `flow_run`: the spare, or a fresh one if the spare died."""
        spare = await self._take()
        if not spare.hand(flow_run, target):  # it died waiting: a fresh one then
            log.warning("spare child %s exited before its run; forking another", spare.process.pid)
            spare = await asyncio.to_thread(self.fork)
            if not spare.hand(flow_run, target):
                raise RuntimeError(f"child {spare.process.pid} exited before its run")
        return spare

    async def _take(self) -> Child:
        async with self._lock:
            spare, self._spare = self._spare, None
        if spare is None or not spare.process.is_alive():
            spare = await asyncio.to_thread(self.fork)
        return spare

    async def refresh(self) -> None:
        """Replace an idle spare now and then: its connections were made when it was born."""
        while not self._closed:
            await asyncio.sleep(min(60.0, self.max_age))
            async with self._lock:
                old = self._spare
                if old is None or time.monotonic() - old.born < self.max_age:
                    continue
                self._spare = None
            old.dismiss()
            await self.replenish()
            await asyncio.to_thread(old.process.join, 10)

    async def close(self) -> None:
        """Fork no more; the spare (one being forked too) is dismissed."""
        self._closed = True
        async with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.dismiss()
