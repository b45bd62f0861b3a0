"""Standby draining: keep syncing while the orchestrator cannot run flows.

Normally Prefect runs every drain (realtime, batch, recovery). If its server is down (a
restart, an upgrade, a crash), the watcher still records every change in the durable queue,
but nothing would drain it until the server is back. The standby drainer notices that the
orchestrator has been unreachable for `grace` seconds, or that due items have waited that long
with nobody draining them, and drains the queue itself every `interval` seconds until the
orchestrator drains again; it rescans the PC folders when it takes over from an unreachable
server and whenever the watcher is not running, so changes nobody recorded are found too.

Running next to Prefect's own runs is safe: claims are leased and one path has one claimer at
a time, and the database keeps the newest snapshot whoever writes. Core package: no Prefect
here; the caller says how to tell whether the orchestrator is up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gfx_sync.engine import DrainReport, Outcome, SyncEngine
from gfx_sync.queue import Origin

log = logging.getLogger(__name__)

SYNC_SOURCE = "standby"


class StandbyDrainer:
    def __init__(
        self,
        engine: Callable[[], SyncEngine],
        orchestrator_up: Callable[[], bool],
        *,
        grace: float,
        interval: float,
        stall_grace: float | None = None,
        watcher_running: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine_factory = engine
        self._engine: SyncEngine | None = None
        self.orchestrator_up = orchestrator_up
        self.grace = grace
        # Due items may wait this long before "nobody drains" (the realtime path has added
        # files first, the batch runs every flush interval): by default, `grace`.
        self.stall_grace = grace if stall_grace is None else stall_grace
        self.interval = interval
        self.watcher_running = watcher_running
        self._clock = clock
        self.active = False  # draining in Prefect's place right now
        self.orchestrator_down = False  # as of the last look
        self.takeovers = 0
        self.synced = 0
        self._down_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StandbyDrainer:
        self._thread = threading.Thread(target=self._run, name="standby-drainer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:  # never dies: the next step tries again
                log.exception("standby drain failed")

    def step(self) -> DrainReport | None:
        """One look: drain if the orchestrator has been away for `grace` seconds, or if due
        items have waited that long with nobody draining them (a stuck runner, a server that
        answers its health check but cannot change run states)."""
        engine = self._engine or self._engine_factory()
        self._engine = engine
        reachable = self.orchestrator_up()
        self.orchestrator_down = not reachable
        waited = engine.queue.oldest_due_age()
        stalled = waited is not None and waited >= self.stall_grace
        if reachable and not stalled:
            if self.active:
                log.warning("the orchestrator drains again: standby draining ends")
            self.active, self._down_since = False, None
            return None
        now = self._clock()
        if not reachable:
            if self._down_since is None:
                self._down_since = now
            if now - self._down_since < self.grace and not stalled:
                return None
        if not self.active:
            self.active = True
            self.takeovers += 1
            why = "unreachable" if not reachable else f"not draining ({waited:.0f} s)"
            log.warning("the orchestrator is %s: draining the queue directly", why)
            if not reachable:
                engine.site.rescan(engine.queue, Origin.RESCAN)
        if not self.watcher_running():
            engine.site.rescan(engine.queue, Origin.RESCAN)
        report = engine.drain(sync_source=SYNC_SOURCE)
        self.synced += report.count(Outcome.SYNCED)
        return report
