"""`gfx-sync up`: the whole system on one host with one command.

Starts a local Prefect server (SQLite, under the state dir) unless PREFECT_API_URL is set, the
embedded Postgres unless a target is configured, applies migrations, creates the alert
automation, serves the deployments, starts the watcher and runs one recovery. Ctrl-C or SIGTERM
stops it cleanly: work in flight finishes or stays in the durable queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from deployments.compat import stop_multiprocessing_servers, warm_runner_unsupported
from deployments.forked import die_with_parent
from deployments.observing import PrefectView
from gfx_sync.compat import one_query_copy_unsupported
from gfx_sync.console.server import bind_problem as console_bind_problem
from gfx_sync.console.server import start_console
from gfx_sync.engine import expire_dead_claims
from gfx_sync.health import (
    HEARTBEAT_SECONDS,
    UP_FILE,
    WATCHER_FILE,
    prefect_reachable,
    probe_writable,
    remove_state,
    write_state,
)
from gfx_sync.observe import close_observer, open_observer
from gfx_sync.settings import (
    DEFAULT_SITE,
    ENV_PREFIX,
    RegistryReader,
    Settings,
    Target,
    load_registry,
)
from gfx_sync.signals import set_from_signal_handler
from gfx_sync.standby import StandbyDrainer
from gfx_sync.target import SchemaPreparer, database_url, describe_target
from tasks import runtime

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

    from deployments.definitions import DeploymentSpec
    from deployments.warm import WarmRunner
    from gfx_sync.queue import DurableQueue

log = logging.getLogger("gfx_sync.up")


# Events every run raises on its way, of no use once the automations have heard them (the runs'
# own state history stays for the whole run retention): kept ROUTINE_EVENT_HOURS. They are most
# of what a run costs the server's database (`python -m bench --only prefect_day`); failures
# and gfx-sync's alerts keep the full retention.
ROUTINE_EVENTS = (
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.Pending",
    "prefect.flow-run.Running",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Skipped",
    "prefect.task-run.Pending",
    "prefect.task-run.Running",
    "prefect.task-run.Completed",
    "gfx.file.added",
)
ROUTINE_EVENT_HOURS = 6
EVENT_OVERRIDES = "PREFECT_SERVER_SERVICES_DB_VACUUM_EVENT_RETENTION_OVERRIDES"


def prefect_server_env(settings: Settings) -> dict[str, str]:
    """A server that keeps a bounded history: old runs and events are vacuumed, routine events
    sooner (unless the environment sets Prefect's own overrides); on PostgreSQL when
    GFX_SYNC_PREFECT_DATABASE_URL is set, else SQLite under the state folder."""
    retention = f"PT{settings.run_retention_hours}H"  # ISO 8601, as Prefect's settings parse it
    routine = min(ROUTINE_EVENT_HOURS, settings.run_retention_hours) * 3600
    overrides = os.environ.get(EVENT_OVERRIDES) or json.dumps(
        dict.fromkeys(ROUTINE_EVENTS, routine)
    )
    database = (
        {"PREFECT_API_DATABASE_CONNECTION_URL": settings.prefect_database_url.get_secret_value()}
        if settings.prefect_database_url is not None
        else {}
    )
    return {
        **database,
        "PREFECT_HOME": str(settings.prefect_home.resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": retention,
        "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": retention,
        EVENT_OVERRIDES: overrides,
    }


@contextlib.contextmanager
def local_prefect_server(settings: Settings, timeout: float = 90.0) -> Iterator[str]:
    """Run `prefect server start` as a child; yields its API URL and stops it on exit."""
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{settings.prefect_port}/api"
    log_file = open(settings.prefect_home / "server.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable, "-m", "prefect", "server", "start",
            "--host", settings.prefect_host, "--port", str(settings.prefect_port),
        ],
        env={**os.environ, **prefect_server_env(settings)},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        wait_until_healthy(api_url, process, timeout)
        yield api_url
    finally:
        stop_process(process)
        log_file.close()


def wait_until_healthy(api_url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"the Prefect server at {api_url} did not become healthy in {timeout}s")


class ChildProcess(Protocol):
    """What `up` needs of a process it started: `subprocess.Popen`, or one forked from the
    forkserver (`deployments.forked.ForkedProcess`)."""

    @property
    def pid(self) -> int: ...
    def poll(self) -> int | None: ...
    def send_signal(self, signum: int) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


def stop_process(process: ChildProcess, grace: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def prepare_target(settings: Settings) -> SchemaPreparer | None:
    """Start the embedded server if needed and bring a Postgres target's schema up to date,
    now or (target unreachable) as soon as it answers: `up` starts either way."""
    url = database_url(settings)
    if settings.target is Target.EMBEDDED and url is not None:
        # Children (watcher, runs) connect to the server this process started and migrated,
        # instead of each starting a pgserver handle of its own.
        os.environ[f"{ENV_PREFIX}DATABASE_URL"] = url
    elif settings.target is Target.SUPABASE:
        log.info("Supabase REST target: apply supabase/migrations with `supabase db push`")
    if url is None:
        return None
    preparer = SchemaPreparer(
        url, connect_timeout=settings.request_timeout, describe=describe_target(settings)
    ).start()
    if not preparer.ready.is_set():
        print(
            f"gfx-sync: the target is unreachable ({preparer.last_error}); changes are queued "
            "and synced once it answers",
            flush=True,
        )
    return preparer


def state_folder_problem(state_dir: Path) -> str | None:
    """Why the state folder cannot hold the durable queue (read-only, full), or None."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe_writable(state_dir)
    except OSError as exc:
        return (
            f"the state folder {state_dir} is not usable: {exc.strerror or exc}. It holds the "
            "durable queue: make it writable and free some space (GFX_SYNC_STATE_DIR)"
        )
    return None


class Heartbeat:
    """Rewrites `up.json` in the state folder every few seconds: `gfx-sync health` (a
    container's HEALTHCHECK) reads it, with the watcher's readiness file."""

    def __init__(self, path: Path, status: Callable[[], dict[str, object]]) -> None:
        self.path = path
        self._status = status
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            write_state(
                self.path, {"pid": os.getpid(), "updated_at": time.time(), **self._status()}
            )
        except OSError as exc:
            log.warning("could not write %s: %s", self.path, exc)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        remove_state(self.path)


class WatcherSupervisor:
    """Keeps the watcher process alive: a watcher that dies (killed, OOM, its flow run
    failing while the Prefect server is away) is started again, loudly, and a recovery run
    is asked for, since changes made while nothing watched are only found by a rescan.
    Without this, `up` would keep running while nothing records changes any more.

    `pcs`: the PCs to watch now (the registry, or the `<base>/<PC>/hands/` folders). When
    they change (a new PC's folder appears, the registry is edited), the watcher is restarted
    to watch them, and a recovery run rescans what it may have missed meanwhile."""

    def __init__(
        self,
        start: Callable[[], ChildProcess],
        on_restart: Callable[[], None],
        *,
        pcs: Callable[[], object] | None = None,
        check_seconds: float = 1.0,
        pcs_check_seconds: float = 1.0,
        max_delay: float = 30.0,
    ) -> None:
        self._start = start
        self._on_restart = on_restart
        self._pcs = pcs
        self.check_seconds = check_seconds
        self.pcs_check_seconds = pcs_check_seconds
        self.max_delay = max_delay
        self._watched = self._current_pcs()
        self.process = start()
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher-supervisor", daemon=True)
        self._thread.start()

    def _current_pcs(self) -> object:
        if self._pcs is None:
            return None
        try:
            return self._pcs()
        except Exception as exc:  # e.g. a registry being edited: keep watching what we do
            log.warning("could not read the PCs to watch: %s", exc)
            return self._watched

    def _restart(self) -> None:
        try:
            process = self._start()
        except Exception as exc:  # e.g. no forkserver now: the exited one is seen, and retried
            log.error("could not start the watcher: %s", exc)
            print(f"gfx-sync: could not start the watcher ({exc}); trying again", flush=True)
            return
        self.process = process
        self.restarts += 1
        try:
            self._on_restart()
        except Exception as exc:  # the scheduled recovery rescans later anyway
            log.warning("could not start a recovery run after the restart: %s", exc)

    def _run(self) -> None:
        delay, started = self.check_seconds, time.monotonic()
        next_pcs_check = time.monotonic() + self.pcs_check_seconds
        while not self._stop.wait(self.check_seconds):
            code = self.process.poll()
            if code is None:
                if time.monotonic() < next_pcs_check:
                    continue
                next_pcs_check = time.monotonic() + self.pcs_check_seconds
                pcs = self._current_pcs()
                if pcs is self._watched or pcs == self._watched:  # the reader's list, if unchanged
                    continue
                log.info("the PCs to watch changed; restarting the watcher to watch them")
                print("gfx-sync: the PC folders changed; restarting the watcher", flush=True)
                self._watched = pcs
                stop_process(self.process)
                if STOPPING.is_set():
                    return
                self._restart()
                started = time.monotonic()
                continue
            if STOPPING.is_set():
                return  # Ctrl-C reached the watcher too: `up` is stopping, not the watcher
            # A watcher that keeps dying at once (no server, no folder) backs off; one that
            # ran for a while is restarted at once.
            lived = time.monotonic() - started
            delay = self.check_seconds if lived > self.max_delay else min(self.max_delay, delay * 2)
            log.error("the watcher exited with %s; starting it again in %.0f s", code, delay)
            print(f"gfx-sync: the watcher exited with {code}; restarting it", flush=True)
            if self._stop.wait(delay) or STOPPING.is_set():
                return
            self._restart()
            started = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        stop_process(self.process)


def wait_for_orchestrator(api_url: str) -> bool:
    """Return once the Prefect server answers (True), or when `up` is stopped (False).
    Meanwhile the watcher records every change and the standby drainer syncs them."""
    if prefect_reachable(api_url):
        return True
    print(
        f"gfx-sync: Prefect at {api_url} is unreachable: watching and syncing without it; "
        "the deployments are registered once it answers",
        flush=True,
    )
    while not STOPPING.wait(ORCHESTRATOR_CHECK_SECONDS):
        if prefect_reachable(api_url):
            print("gfx-sync: Prefect answers: registering the deployments", flush=True)
            return True
    return False


ORCHESTRATOR_CHECK_SECONDS = 2.0


def request_recovery(site: str) -> None:
    """Ask the server for one recovery run of the site now (rescan what nobody watched
    meanwhile)."""
    from prefect.deployments import run_deployment

    from deployments.definitions import RECOVERY, for_site

    run_deployment(for_site(RECOVERY, site), timeout=0)


def choose_runner(requested: str, installed: str | None = None) -> tuple[str, str | None]:
    """The runner to serve with, "warm" or "stock", for GFX_SYNC_RUNNER=`requested`, and the
    warning it logs, if any. `auto` takes the warm runner only on a Prefect version compat was
    tested with (`installed`; None: the installed one), else Prefect's stock runner, which
    rests on no internals; `warm` takes it even then, saying so."""
    if requested == "stock":
        return "stock", None
    unsupported = warm_runner_unsupported(installed)
    if unsupported is None:
        return "warm", None
    kind = "warm" if requested == "warm" else "stock"
    warning = (
        f"{unsupported}: using the warm runner anyway (GFX_SYNC_RUNNER=warm)"
        if kind == "warm"
        else f"{unsupported}: falling back to Prefect's stock runner (a slower realtime path; "
        "GFX_SYNC_RUNNER=warm uses the warm runner anyway)"
    )
    log.warning("%s", warning)
    return kind, warning


async def serve_stock(
    settings: Settings, deployments: list[RunnerDeployment], on_ready: list[str]
) -> None:
    """Prefect's own Runner (the baseline): polls every second, a fresh interpreter per run."""
    from prefect.runner import Runner

    from deployments.definitions import for_site

    runner = Runner(
        name=for_site("gfx-sync", settings.site), query_seconds=1, pause_on_shutdown=False, limit=4
    )
    for deployment in deployments:
        await runner.add_deployment(deployment)
    runner_task = asyncio.create_task(runner.start())
    await asyncio.sleep(0)  # let start() install its SIGTERM handler, then replace it:
    _cancel_on_signals()  # SIGTERM stops like Ctrl-C does
    await announce_ready(settings, on_ready)
    await runner_task


async def serve_warm(
    settings: Settings,
    specs: list[DeploymentSpec],
    on_ready: list[str],
    runners: list[WarmRunner],
) -> None:
    """The warm runner: event-driven, runs forked from a preloaded forkserver. It is added to
    `runners` so `up` can stop its leftover children once the event loop is gone."""
    from deployments.warm import ServedDeployment, WarmRunner, crash_leftover_runs, register
    from gfx_sync.queue import DurableQueue

    ids = await register([spec.deployment for spec in specs])
    await crash_leftover_runs(ids)  # before anything new runs: their slots must come back
    queue = DurableQueue(settings.resolved_queue_path, lease_seconds=settings.lease_seconds)
    served = [
        ServedDeployment(
            id=deployment_id,
            name=spec.deployment.name,
            flow=spec.flow,
            target=spec.target,
            time_limit=spec.time_limit,
            skip_when_idle=(
                None
                if spec.idle_check is None
                else functools.partial(_nothing_due, queue, spec.idle_check)
            ),
            trigger=spec.trigger,
        )
        for deployment_id, spec in zip(ids, specs, strict=True)
    ]
    # Spare children open the engine (settings, queue) before their run arrives.
    runners.append(WarmRunner(served, prepare="tasks.runtime:engine"))
    runner = asyncio.create_task(runners[-1].run())
    await announce_ready(settings, on_ready)
    try:
        await runner
    finally:
        queue.close()


def _nothing_due(queue: DurableQueue, check: dict[str, Any]) -> bool:
    """Items held by a run's child that died are due again, not "nothing to do"."""
    expire_dead_claims(queue)
    return not queue.has_due(**check)


async def announce_ready(settings: Settings, on_ready: list[str]) -> None:
    """Run one recovery now (catch up what changed while stopped), then say we are up."""
    from prefect.deployments import run_deployment

    from deployments.definitions import RECOVERY, for_site

    await run_deployment(for_site(RECOVERY, settings.site), timeout=0)
    for line in on_ready:
        print(line, flush=True)


STOPPING = threading.Event()  # set by SIGTERM/SIGINT: `up` is going down on purpose


def _interrupt_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise KeyboardInterrupt (`_interrupt`)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)


def _interrupt(*_: object) -> None:
    """Prefect's runner cancels in-flight runs on SIGTERM; Ctrl-C's path lets them settle.
    Outside the event loop (starting, stopping): the loop has `_cancel_on_signals`."""
    set_from_signal_handler(STOPPING)
    raise KeyboardInterrupt


def _cancel_on_signals() -> None:
    """From now on SIGINT and SIGTERM cancel the serving task through the event loop (asyncio's
    signal handling: the handler only wakes the loop), never by raising in whatever the main
    thread runs: raised inside a lock's release or a worker thread's hand-off, an exception
    leaves that thread waiting for ever, and the loop's shutdown with it."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None

    def stop() -> None:
        STOPPING.set()  # in the loop, not in a signal handler
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)


async def _until_stopped(serving: Coroutine[Any, Any, None]) -> None:
    """`serving` until SIGINT or SIGTERM stops it (`_cancel_on_signals`)."""
    _cancel_on_signals()
    try:
        await serving
    except asyncio.CancelledError:
        if not STOPPING.is_set():
            raise


def up(settings: Settings, *, worker: bool = False) -> int:
    """Start in any order: a target or a remote Prefect server that is unreachable, or a base
    folder not mounted yet, is waited for while every change is recorded; only what cannot be
    waited out (configuration, a state folder that cannot hold the queue) stops the start.

    `worker`: one site's agent on a Prefect server others share (`gfx-sync worker`): the same
    as `up` with PREFECT_API_URL set, which it requires; it never starts a server of its own.
    """
    problem = state_folder_problem(settings.state_dir) or console_bind_problem(settings)
    if worker and not os.environ.get("PREFECT_API_URL"):
        problem = "`gfx-sync worker` needs PREFECT_API_URL (the central Prefect server's API)"
    if problem is not None:
        print(f"gfx-sync: {problem}", file=sys.stderr, flush=True)
        return 1
    load_registry(settings)  # an invalid registry stops here, naming the file and the field
    if not settings.base_path.is_dir():
        print(
            f"gfx-sync: the base folder {settings.base_path} does not exist (NAS not mounted?); "
            "its PC folders are watched as soon as they appear",
            flush=True,
        )
    for name in (UP_FILE, WATCHER_FILE):  # a previous run's: its pids may be reused now
        remove_state(settings.state_dir / name)
    _interrupt_on_signals()  # the supervisor then knows we stop
    with contextlib.suppress(KeyboardInterrupt):  # stopped while starting: all cleaned up
        _up(settings)
    stop_multiprocessing_servers()
    print("gfx-sync: stopped", flush=True)
    return 0


def _up(settings: Settings) -> None:
    with contextlib.ExitStack() as stack:
        if not os.environ.get("PREFECT_API_URL"):
            os.environ["PREFECT_API_URL"] = stack.enter_context(local_prefect_server(settings))
        api_url = os.environ["PREFECT_API_URL"]
        schema = prepare_target(settings)
        if schema is not None:
            stack.callback(schema.stop)
        from deployments.watching import start_watcher  # imports Prefect: only now

        watcher = WatcherSupervisor(
            functools.partial(start_watcher, settings),
            functools.partial(request_recovery, settings.site),
            pcs=RegistryReader.shared(settings, watch=True),
        )
        stack.callback(remove_state, settings.state_dir / WATCHER_FILE)  # after it stopped
        stack.callback(watcher.stop)
        standby = StandbyDrainer(
            runtime.engine,
            functools.partial(prefect_reachable, api_url),
            grace=settings.orchestrator_grace,
            interval=settings.flush_interval,
            stall_grace=max(
                settings.orchestrator_grace,
                settings.realtime_grace + 2 * settings.flush_interval,
            ),
            watcher_running=lambda: watcher.process.poll() is None,
        ).start()
        stack.callback(standby.stop)
        heartbeat = Heartbeat(
            settings.state_dir / UP_FILE,
            lambda: {
                "target": "unreachable" if schema and not schema.ready.is_set() else "ok",
                "orchestrator": "unreachable" if standby.orchestrator_down else "ok",
            },
        )
        stack.callback(heartbeat.stop)
        ui_url = os.environ.get("PREFECT_UI_URL") or api_url.removesuffix("/api")
        prefect_view = PrefectView(
            api_url,
            ui_url,
            site=settings.site,
            standby_draining=lambda: standby.orchestrator_down,
        )
        stack.callback(prefect_view.close)
        observer, feed = open_observer(
            settings, schema.url if schema is not None else None, orchestrator=prefect_view
        )
        stack.callback(close_observer, observer, feed)
        console = start_console(settings, observer, feed)
        if console is not None:
            stack.callback(console.stop)
        if not wait_for_orchestrator(api_url):
            return
        site = "" if settings.site == DEFAULT_SITE else f" (site {settings.site})"
        ready = [
            f"gfx-sync is up{site}. Prefect UI: {ui_url}",
            *([f"  console: {console.url}"] if console is not None else []),
            f"  watching {Path(settings.base_path).resolve()}/<PC>/hands/*.json",
            f"  writing to {describe_target(settings)}",
            "  Ctrl-C to stop.",
        ]
        # Prefect reads PREFECT_API_URL when it is first imported: import it only now.
        from deployments.automations import ensure_alert_automation
        from deployments.definitions import deployment_specs

        specs = deployment_specs(settings)  # sync API: outside the event loop
        ensure_alert_automation(settings)
        from deployments.alerting import start_alerting

        stack.callback(start_alerting(settings, observer).stop)  # and the per-PC status table
        kind, _ = choose_runner(settings.runner)
        ready.insert(1, f"  runner: {kind}")
        if settings.target is not Target.SUPABASE and (slower := one_query_copy_unsupported()):
            log.warning("%s: batches go through psycopg's public API (more round trips)", slower)
        runners: list[WarmRunner] = []
        serving = (
            serve_warm(settings, specs, ready, runners)
            if kind == "warm"
            else serve_stock(settings, [spec.deployment for spec in specs], ready)
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_until_stopped(serving))
        _interrupt_on_signals()  # the loop's handlers went with it
        for runner in runners:
            runner.stop_leftovers()
        print("gfx-sync: stopping (runs in flight finish or stay queued)...", flush=True)


SERVER_START_SECONDS = 300.0  # a first start on PostgreSQL runs Prefect's migrations


def serve_prefect(settings: Settings) -> int:
    """`gfx-sync server`: a Prefect server in the foreground for sites to share (compose's
    central profile), with the bounded history `up`'s own server keeps; Ctrl-C or SIGTERM
    stops it."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: set_from_signal_handler(stop))
    database = "PostgreSQL" if settings.prefect_database_url is not None else "SQLite"
    try:
        with local_prefect_server(settings, timeout=SERVER_START_SECONDS) as api_url:
            print(
                f"gfx-sync: Prefect server on {settings.prefect_host}:{settings.prefect_port} "
                f"({database}; runs and events kept {settings.run_retention_hours} h). "
                f"Sites: PREFECT_API_URL=http://<this host>:{settings.prefect_port}/api",
                flush=True,
            )
            missed = 0  # health checks in a row without an answer: a busy server is slow
            while not stop.wait(SERVER_CHECK_SECONDS):
                missed = (
                    0 if prefect_reachable(api_url, timeout=SERVER_CHECK_SECONDS) else missed + 1
                )
                if missed >= SERVER_MISSES:
                    print("gfx-sync: the Prefect server stopped answering", file=sys.stderr)
                    return 1
    except RuntimeError as exc:  # it exited or never became healthy
        print(f"gfx-sync: {exc} (see {settings.prefect_home / 'server.log'})", file=sys.stderr)
        return 1
    print("gfx-sync: Prefect server stopped", flush=True)
    return 0


SERVER_CHECK_SECONDS = 10.0
SERVER_MISSES = 3
