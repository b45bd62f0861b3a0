"""The child side of the warm runner: a process that gets ready before its run exists.

The runner keeps one *spare* child forked from its forkserver. The spare does, before any run
is assigned, everything a run would otherwise pay for on the critical path (measured: ~300 ms
of the ~400 ms from Pending to Running in a freshly forked child):
- the settings override that turns off the heartbeat thread (a pydantic-settings rebuild);
- the Prefect API client (an SSL context, the server version check);
- the flow-run suspension observer, which Prefect 3.9 starts for every deployment run (a
  thread, an event loop, another client and an events websocket), started once here and
  asked to watch the run when it arrives (deployments/compat.py: it rests on internals);
- the names of the deployments and flows that every task-run event carries (Prefect reads
  them on the run's first task otherwise), the CSRF token, the log and event workers;
- whatever the runner names as `prepare` (for gfx-sync: its engine, settings and queue).
Then it waits on a pipe for one `(FlowRun, "module:flow")`, runs it with Prefect's own
`run_flow` (states, logs, retries, artifacts, hooks as usual) and exits: one run per process,
so a crash or a hang stays the runner's to report and never leaks into the next run.

Sockets and SQLite handles are opened here, after the fork, never in the forkserver.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any
from uuid import UUID

from deployments import compat
from deployments.forked import flush_prefect_workers

log = logging.getLogger("gfx_sync.runner.child")

CANCEL = "cancel"  # sent on the job pipe while the run goes: cancel it


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
    observer = compat.SharedSuspensionObserver()
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
        observer.install()
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
        finally:
            observer.stop()
            flush_prefect_workers()


def _listen_for_cancel(jobs: Connection) -> None:
    """The runner's cancel, delivered as Prefect's own runner does: the control intent is set,
    then SIGTERM; the engine then proposes Cancelled and runs on_cancellation hooks."""
    try:
        message = jobs.recv()
    except (EOFError, OSError):
        return  # the runner closed the pipe: the run is over
    if message == CANCEL:
        compat.set_cancel_intent()
        os.kill(os.getpid(), signal.SIGTERM)


def _cache_related_resources(deployment_ids: tuple[UUID, ...]) -> None:
    """Read the deployments' and flows' names now, while no run waits for them."""
    if deployment_ids:
        try:
            compat.cache_related_resources(deployment_ids)
        except Exception as exc:
            log.debug("could not cache the deployments' names: %s", exc)


def _prepare(target: str) -> None:
    module, _, attribute = target.partition(":")
    try:
        getattr(importlib.import_module(module), attribute)()
    except Exception as exc:
        log.warning("could not prepare %s: %s", target, exc)
