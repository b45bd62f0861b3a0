"""Private APIs of the libraries `up` runs on, in one place, each behind a version check.

CPython's multiprocessing helpers: where the installed Python is not one this was written
against, the function does nothing and says so in the log (a nicety, never needed for
correctness).

Prefect's internals, which the warm runner's children use to have a run suspended and
cancelled as Prefect's engine expects without paying its per-run start-up: the tested Prefect
versions are named here, and `warm_runner_unsupported` checks the installed one and that every
internal is still there. `up` asks it before building the warm runner and serves with Prefect's
stock runner (public API only) when it objects.
Prefect is imported here only inside functions: `up` sets PREFECT_API_URL first.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from uuid import UUID

log = logging.getLogger(__name__)
child_log = logging.getLogger("gfx_sync.runner.child")  # what the warm runner's children log

STOP_WAIT_SECONDS = 2.0


def stop_multiprocessing_servers() -> None:
    """Stop the forkserver and the resource tracker this process started.

    Both would exit by themselves a moment after this process (their pipe to it closes), but
    a service manager stops a unit by killing whatever is left once the main process exits
    (systemd's KillMode=mixed): each would be logged as a stray killed with SIGKILL. CPython
    3.11-3.13 stop them with the private `_stop()` its own tests use; it waits for the
    process, so it runs on a thread that is waited for only briefly."""
    if not (3, 11) <= sys.version_info[:2] <= (3, 13):
        log.info("multiprocessing helpers are left to exit with this process (Python %s)",
                 sys.version.split()[0])  # fmt: skip
        return
    from multiprocessing import forkserver, resource_tracker

    for server in (forkserver._forkserver, resource_tracker._resource_tracker):
        stop = getattr(server, "_stop", None)
        if stop is None:
            continue
        thread = threading.Thread(target=_quietly, args=(stop,), daemon=True)
        thread.start()
        thread.join(STOP_WAIT_SECONDS)


def _quietly(stop: object) -> None:
    with contextlib.suppress(Exception):
        stop()  # type: ignore[operator]


# -- Prefect ----------------------------------------------------------------------------

# Prefect versions the internals below were tested with (pyproject pins prefect>=3.9,<3.10).
TESTED_PREFECT_VERSIONS = frozenset({"3.9.1"})
# Every private name used below, as "module:attribute.attribute": checked at start.
PREFECT_INTERNALS = (
    "prefect._flow_run_suspension:observe_flow_run_suspension",
    "prefect._flow_run_suspension:mark_flow_run_suspension_requested",
    "prefect._internal.observers:FlowRunSuspendingObserver.watch_flow_run_id",
    "prefect._internal.observers:FlowRunSuspendingObserver.remove_in_flight_flow_run_id",
    "prefect._internal.control_listener:_set_intent",
    "prefect.flow_engine:observe_flow_run_suspension",
    "prefect.events.related:RESOURCE_CACHE",
    "prefect.events.related:_get_and_cache_related_object",
)
# Private modules the forkserver imports ahead of the children (it skips what is missing).
PREFECT_PRELOAD = ("prefect._internal.observers",)
OBSERVER_START_TIMEOUT = 10.0


def prefect_version() -> str | None:
    """The installed Prefect's version (from its metadata: Prefect itself is not imported)."""
    try:
        return version("prefect")
    except PackageNotFoundError:
        return None


def warm_runner_unsupported(installed: str | None = None) -> str | None:
    """Why the warm runner should not run on the installed Prefect (`installed`: its version,
    read from the package if None), or None when it was tested with this version and every
    internal it uses is there."""
    installed = prefect_version() if installed is None else installed
    if installed not in TESTED_PREFECT_VERSIONS:
        tested = ", ".join(sorted(TESTED_PREFECT_VERSIONS))
        return f"Prefect {installed} is not a version the warm runner was tested with ({tested})"
    missing = missing_prefect_internals(PREFECT_INTERNALS)
    if missing:
        return f"Prefect {installed} lacks internals the warm runner uses: {', '.join(missing)}"
    return None


def missing_prefect_internals(internals: Iterable[str]) -> list[str]:
    """Those of `internals` ("module:attribute.attribute") that do not resolve."""
    missing = []
    for internal in internals:
        module, _, path = internal.partition(":")
        try:
            found: object = importlib.import_module(module)
            for attribute in path.split("."):
                found = getattr(found, attribute)
        except (ImportError, AttributeError):
            missing.append(internal)
    return missing


def set_cancel_intent() -> None:
    """What Prefect's control channel sets before its runner's SIGTERM: the engine then takes
    the signal for a cancel (Cancelled, on_cancellation hooks), not a crash."""
    from prefect._internal import control_listener

    control_listener._set_intent("cancel")


def cache_related_resources(deployment_ids: Iterable[UUID]) -> None:
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

    asyncio.run(fill())


class SharedSuspensionObserver:
    """One `FlowRunSuspendingObserver` for a child's life, connected before the run comes.

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

    def install(self) -> None:
        """The flow engine asks this observer, not a new one, to watch each run."""
        import prefect.flow_engine

        prefect.flow_engine.observe_flow_run_suspension = self.observe  # type: ignore[assignment]

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            child_log.debug("suspension observer stopped", exc_info=True)
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
            child_log.debug("could not watch run %s for suspension", flow_run_id, exc_info=True)
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
