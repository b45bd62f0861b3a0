"""The child side of the warm runner: a process that gets ready before its run exists.

The runner keeps one *spare* child forked from its forkserver. The spare does, before any run
is assigned, everything a run would otherwise pay for on the critical path (measured: ~300 ms
of the ~400 ms from Pending to Running in a freshly forked child):
- the settings override that turns off the heartbeat thread (a pydantic-settings rebuild);
- the Prefect API client (an SSL context, the server version check);
- the flow-run suspension observer, which Prefect 3.9 starts for every deployment run (a
  thread, an event loop, another client and an events websocket), started once here and
  asked to watch the run when it arrives;
- the names of the deployments and flows that every task-run event carries (Prefect reads
  them on the run's first task otherwise), the CSRF token, the log and event workers;
- whatever the runner names as `prepare` (for gfx-sync: its engine, settings and queue).
Then it waits on a pipe for one `(FlowRun, "module:flow")`, runs it with Prefect's own
`run_flow` (states, logs, retries, artifacts, hooks as usual) and exits: one run per process,
so a crash or a hang stays the runner's to report and never leaks into the next run.

Sockets and SQLite handles are opened here, after the fork, never in the forkserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any
from uuid import UUID

log = logging.getLogger("gfx_sync.runner.child")

OBSERVER_START_TIMEOUT = 10.0
CANCEL = "cancel"  # sent on the job pipe while the run goes: cancel it


class SharedSuspensionObserver:
    """One `FlowRunSuspendingObserver` for the child's life, connected before the run comes.

    Stands in for `prefect._flow_run_suspension.observe_flow_run_suspension` (same signature
    and effect: the run's suspension request is marked when the server suspends the run),
    without starting a thread, a loop, a client and a websocket inside the run. If the
    observer could not start, each run falls back to Prefect's own function.
    """

    def __init__(self) -> None:
        from prefect._flow_run_suspension import observe_flow_run_suspension

        self._fallback = observe_flow_run_suspension
        self._observer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._requests: dict[UUID, Any] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        context = contextvars.copy_context()  # the settings and client context entered so far
        self._thread = threading.Thread(
            target=context.run, args=(self._serve,), name="gfx-suspension-observer", daemon=True
        )
        self._thread.start()
        self._ready.wait(OBSERVER_START_TIMEOUT)

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.debug("suspension observer stopped", exc_info=True)
        finally:
            self._observer = None
            self._ready.set()

    async def _main(self) -> None:
        from prefect._internal.observers import FlowRunSuspendingObserver

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with FlowRunSuspendingObserver(on_suspended=self._on_suspended) as observer:
            self._observer = observer
            self._ready.set()
            await self._stop.wait()

    def _on_suspended(self, flow_run_id: UUID, state: Any) -> None:
        from prefect._flow_run_suspension import mark_flow_run_suspension_requested

        if not mark_flow_run_suspension_requested(flow_run_id, state):
            request = self._requests.get(flow_run_id)
            if request is not None:
                request.mark_requested(state)

    @contextlib.contextmanager
    def observe(
        self, flow_run_id: UUID, suspension_request: Any, polling_interval: float = 10
    ) -> Iterator[None]:
        observer, loop = self._observer, self._loop
        if observer is None or loop is None or loop.is_closed():
            with self._fallback(flow_run_id, suspension_request, polling_interval):
                yield
            return
        self._requests[flow_run_id] = suspension_request
        watching = asyncio.run_coroutine_threadsafe(observer.watch_flow_run_id(flow_run_id), loop)
        try:
            watching.result(OBSERVER_START_TIMEOUT)  # as Prefect's: the run waits until watched
        except Exception:
            log.debug("could not watch run %s for suspension", flow_run_id, exc_info=True)
        try:
            yield
        finally:
            self._requests.pop(flow_run_id, None)
            with contextlib.suppress(RuntimeError):  # the loop may be gone at shutdown
                loop.call_soon_threadsafe(observer.remove_in_flight_flow_run_id, flow_run_id)

    def stop(self, timeout: float = 2.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)


def child_main(
    jobs: Connection,
    prepare: str | None = None,
    deployment_ids: tuple[UUID, ...] = (),
    api_url: str | None = None,
) -> None:
    """A spare: get ready, wait for one run (or None: not needed after all), run it, exit.

    `prepare`: "module:function" called once before the run comes (errors only logged: the
    run then meets them itself, and reports them). `deployment_ids`: the deployments the
    run may belong to, whose deployment and flow the run's events name (read now, not then).
    `api_url`: the runner's Prefect API (the forkserver's environment may predate it).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on `up` lets runs in flight finish
    import prefect.flow_engine
    from prefect.context import SyncClientContext
    from prefect.engine import handle_engine_signals
    from prefect.events.worker import EventsWorker
    from prefect.flow_engine import flow_run_logger, run_flow
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    # No heartbeat thread: the runner watches its children itself, and joining that thread
    # holds every run open for up to a second after its work is done.
    updates: dict[Any, Any] = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if api_url:
        updates[PREFECT_API_URL] = api_url
    no_heartbeats = temporary_settings(updates=updates)
    observer = SharedSuspensionObserver()
    with contextlib.ExitStack() as stack:
        stack.enter_context(no_heartbeats)
        try:  # the API may be briefly unreachable: the run then makes its own client
            client = stack.enter_context(SyncClientContext.get_or_create()).client
            client.read_flow_runs(limit=1)  # a POST: the CSRF token is fetched now
        except Exception as exc:
            log.warning("could not prepare the Prefect client: %s", exc)
        _cache_related_resources(deployment_ids)
        if prepare:
            _prepare(prepare)
        observer.start()
        with contextlib.suppress(Exception):  # started now, not by the run's first log/event
            EventsWorker.instance()
            APILogWorker.instance()
        prefect.flow_engine.observe_flow_run_suspension = observer.observe  # type: ignore[assignment]
        try:
            job = jobs.recv()
        except EOFError:  # the runner went away
            job = None
        if job is None:
            jobs.close()
            observer.stop()
            return
        threading.Thread(
            target=_listen_for_cancel, args=(jobs,), name="gfx-cancel-listener", daemon=True
        ).start()
        flow_run, target = job
        module, _, attribute = target.partition(":")
        flow = getattr(importlib.import_module(module), attribute)
        try:
            # As `python -m prefect.engine` does: a Pause, an Abort or a runner-driven
            # termination (a cancel) is a clean exit; anything else is a crash to report.
            with handle_engine_signals(flow_run.id):
                run_flow(flow, flow_run=flow_run, error_logger=flow_run_logger(flow_run))
        finally:  # a forked child skips atexit: send the logs and events it still holds
            observer.stop()
            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)


def _listen_for_cancel(jobs: Connection) -> None:
    """The runner's cancel, delivered as Prefect's own runner does: the control intent is set,
    then SIGTERM; the engine then proposes Cancelled and runs on_cancellation hooks."""
    try:
        message = jobs.recv()
    except (EOFError, OSError):
        return  # the runner closed the pipe: the run is over
    if message == CANCEL:
        from prefect._internal import control_listener

        control_listener._set_intent("cancel")  # what the control channel would set
        os.kill(os.getpid(), signal.SIGTERM)


def _cache_related_resources(deployment_ids: tuple[UUID, ...]) -> None:
    """Every task-run event of a run names its deployment and flow; Prefect reads both from
    the API (blocking the run's first task) unless its process-wide cache has them."""
    from prefect.client.orchestration import get_client
    from prefect.events.related import RESOURCE_CACHE, _get_and_cache_related_object

    async def fill() -> None:
        async with get_client() as client:
            for deployment_id in deployment_ids:
                entry = await _get_and_cache_related_object(
                    "deployment",
                    "deployment",
                    client.read_deployment,
                    deployment_id,
                    RESOURCE_CACHE,
                )
                await _get_and_cache_related_object(
                    "flow", "flow", client.read_flow, entry["object"].flow_id, RESOURCE_CACHE
                )

    if deployment_ids:
        try:
            asyncio.run(fill())
        except Exception as exc:
            log.debug("could not cache the deployments' names: %s", exc)


def _prepare(target: str) -> None:
    module, _, attribute = target.partition(":")
    try:
        getattr(importlib.import_module(module), attribute)()
    except Exception as exc:
        log.warning("could not prepare %s: %s", target, exc)
