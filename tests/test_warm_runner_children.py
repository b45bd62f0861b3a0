"""The warm runner (deployments/warm/) against a real Prefect server: real deployment
runs in real forked children. What it must survive: a child that dies (os._exit, SIGKILL), a
child that hangs (cancelled from the API, or over its time limit), runs that wait for a
deployment concurrency slot; and what it must keep: runs handed to a child that was ready
before them, a spare that died while waiting, external suspension of a run.

The children come from the runner's forkserver, which takes its settings from the
environment when it starts: the module's server URL is put there before the first runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest
from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    FlowRun,
    State,
    StateType,
)
from prefect.events import DeploymentEventTrigger, emit_event
from prefect.flow_runs import suspend_flow_run
from prefect.settings import (
    PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS,
    temporary_settings,
)
from prefect.states import Cancelling, Completed, Pending, Running, Scheduled

from deployments.warm import ServedDeployment, WarmRunner, register
from deployments.warm.trigger_cover import COVER_KEY
from support import runner_flows
from support.prefect_env import prefect_server, read_events
from support.system import wait_for

pytestmark = pytest.mark.prefect

SLOT_WAIT_S = 30  # the server tells a run that found its deployment's slot taken to retry then
RUN_TIMEOUT = 90.0  # generous: two shared cores; the tests assert outcomes, never durations


@dataclass
class Served:
    runner: WarmRunner
    ids: dict[str, UUID]  # deployment key -> id
    api_url: str


@contextlib.contextmanager
def serving(runner: WarmRunner) -> Iterator[None]:
    """The runner on its own event loop in a thread (with this thread's Prefect settings),
    cancelled at the end as Ctrl-C on `up` would: runs in flight are let finish or stopped."""
    started: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = []

    def main() -> None:
        loop = asyncio.new_event_loop()
        task = loop.create_task(runner.run())
        started.append((loop, task))
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        loop.run_until_complete(loop.shutdown_default_executor())  # as asyncio.run does
        loop.close()

    thread = threading.Thread(target=contextvars.copy_context().run, args=(main,), daemon=True)
    thread.start()
    wait_for(lambda: started, 10)
    try:
        yield
    finally:
        loop, task = started[0]
        loop.call_soon_threadsafe(task.cancel)
        thread.join(90)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("prefect-home")
    # Prefect's default, named explicitly: the tests below tell its retry time from ours.
    slot_wait = {PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS: SLOT_WAIT_S}
    with (
        temporary_settings(updates=slot_wait),
        prefect_server(home) as api_url,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("PREFECT_API_URL", api_url)
        env.setenv("PREFECT_HOME", str(home))
        one_at_a_time = ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        )
        specs: dict[str, tuple[Flow, float, dict[str, Any]]] = {
            "pid": (runner_flows.report_pid, 600, {"concurrency_limit": one_at_a_time}),
            "held": (runner_flows.report_pid, 600, {"concurrency_limit": one_at_a_time}),
            "exit": (runner_flows.exit_abruptly, 600, {}),
            "hang": (runner_flows.hang, 600, {}),
            "overrun": (runner_flows.hang, 2, {}),
            "ticks": (runner_flows.ticks, 600, {}),
        }
        deployments = [
            flow.to_deployment(name=key, **options) for key, (flow, _, options) in specs.items()
        ]
        ids = dict(zip(specs, asyncio.run(register(deployments)), strict=True))
        runner = WarmRunner(
            [
                ServedDeployment(
                    id=ids[key],
                    name=key,
                    flow=flow,
                    target=f"support.runner_flows:{flow.fn.__name__}",
                    time_limit=limit,
                )
                for key, (flow, limit, _) in specs.items()
            ],
            poll_seconds=2,
        )
        with serving(runner):
            yield Served(runner, ids, api_url)


@pytest.fixture
def client(served: Served) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as client:
        yield client


def start(client: SyncPrefectClient, served: Served, key: str, **parameters: Any) -> FlowRun:
    return client.create_flow_run_from_deployment(served.ids[key], parameters=parameters)


def final(client: SyncPrefectClient, run: FlowRun) -> FlowRun:
    return wait_for(
        lambda: (r := client.read_flow_run(run.id)).state and r.state.is_final() and r,
        RUN_TIMEOUT,
    )


def state_names(client: SyncPrefectClient, run: FlowRun) -> list[str]:
    return [s.name for s in client.read_flow_run_states(run.id)]


def assert_still_serving(client: SyncPrefectClient, served: Served) -> None:
    run = final(client, start(client, served, "pid"))
    assert run.state is not None and run.state.is_completed(), run.state


@pytest.mark.parametrize(("how", "exitcode"), [("exit", 3), ("kill", -9)])
def test_a_child_that_dies_is_reported_crashed_and_the_runner_goes_on(
    client: SyncPrefectClient, served: Served, how: str, exitcode: int
) -> None:
    run = final(client, start(client, served, "exit", how=how))
    assert run.state is not None and run.state.type is StateType.CRASHED
    assert f"child exited with {exitcode}" in (run.state.message or "")
    # The alert automation hears about it (the engine could not: the child was gone).
    assert read_events(served.api_url, "gfx.flow-run.crashed", f"prefect.flow-run.{run.id}")
    assert_still_serving(client, served)


def test_a_hanging_run_cancelled_from_the_api_ends_cancelled_and_its_child_is_stopped(
    client: SyncPrefectClient, served: Served
) -> None:
    run = start(client, served, "hang")
    wait_for(lambda: (s := client.read_flow_run(run.id).state) and s.is_running(), RUN_TIMEOUT)
    child = served.runner.children[run.id]
    client.set_flow_run_state(run.id, Cancelling(message="stop it"))
    ended = final(client, run)
    assert ended.state is not None and ended.state.type is StateType.CANCELLED, ended.state
    wait_for(lambda: run.id not in served.runner.children, RUN_TIMEOUT)  # reaped
    assert not psutil.pid_exists(child.pid) or psutil.Process(child.pid).status() == "zombie"
    assert_still_serving(client, served)


def test_a_run_over_its_time_limit_is_stopped_and_reported_crashed(
    client: SyncPrefectClient, served: Served
) -> None:
    run = final(client, start(client, served, "overrun"))
    assert run.state is not None and run.state.type is StateType.CRASHED
    assert "ran over 2 s" in (run.state.message or "")
    assert_still_serving(client, served)


def awaiting_slot_states(client: SyncPrefectClient, run: FlowRun) -> list[State]:
    return [s for s in client.read_flow_run_states(run.id) if s.name == "AwaitingConcurrencySlot"]


def test_a_run_waiting_for_the_slot_of_our_own_run_starts_when_that_run_ends(
    client: SyncPrefectClient, served: Served, tmp_path: Path
) -> None:
    """Two overlapping runs of a deployment limited to one: the second is told to wait
    (AwaitingConcurrencySlot, retry in 30 s); it starts once the first ends, without
    waiting for the time the server named, and the two never run at once."""
    release = tmp_path / "release"
    first = start(client, served, "pid", until=str(release))
    wait_for(lambda: (s := client.read_flow_run(first.id).state) and s.is_running(), RUN_TIMEOUT)
    second = start(client, served, "pid", hold=0.0)
    wait_for(lambda: awaiting_slot_states(client, second), RUN_TIMEOUT)
    release.touch()  # the first run ends only once the second was told to wait
    first, second = final(client, first), final(client, second)
    assert first.state is not None and first.state.is_completed()
    assert second.state is not None and second.state.is_completed()
    waits = awaiting_slot_states(client, second)
    assert waits, state_names(client, second)
    named = waits[-1].state_details.scheduled_time
    assert first.end_time is not None and second.start_time is not None and named is not None
    assert first.end_time <= second.start_time < named


def test_a_run_waiting_for_a_slot_held_elsewhere_retries_when_the_server_said(
    client: SyncPrefectClient, served: Served
) -> None:
    """The slot is held by a run this runner does not run (another worker's; a deployment
    none of whose runs ran here): the waiting run is re-queued for the time the server
    names, and then starts."""
    later = datetime.now(UTC) + timedelta(hours=1)  # not due: the runner leaves it alone
    holder = client.create_flow_run_from_deployment(
        served.ids["held"], state=Scheduled(scheduled_time=later)
    )
    assert client.set_flow_run_state(holder.id, Pending()).state.is_pending()
    # Running although "scheduled" later: the other worker started it early.
    assert client.set_flow_run_state(holder.id, Running(), force=True).state.is_running()
    waiting = start(client, served, "held", hold=0.0)
    wait_for(lambda: awaiting_slot_states(client, waiting), RUN_TIMEOUT)
    client.set_flow_run_state(holder.id, Completed())  # the other worker's run ends
    waiting = final(client, waiting)
    assert waiting.state is not None and waiting.state.is_completed(), waiting.state
    named = awaiting_slot_states(client, waiting)[-1].state_details.scheduled_time
    assert named is not None and waiting.start_time is not None
    assert waiting.start_time >= named  # it waited for the time the server named last


def test_a_run_goes_to_a_child_forked_before_the_run_existed(
    client: SyncPrefectClient, served: Served, tmp_path: Path
) -> None:
    wait_for(lambda: served.runner.spare_pid, RUN_TIMEOUT)  # the spare is there, waiting
    out = tmp_path / "pid"
    run = final(client, start(client, served, "pid", out=str(out)))
    assert run.state is not None and run.state.is_completed(), run.state
    pid, born = out.read_text().split()
    assert int(pid) != os.getpid() and run.created is not None
    # Nothing was forked on the run's critical path: its process is older than the run.
    assert float(born) < run.created.timestamp()


def test_a_spare_that_died_while_waiting_is_replaced(
    client: SyncPrefectClient, served: Served, tmp_path: Path
) -> None:
    spare = wait_for(lambda: served.runner.spare_pid, RUN_TIMEOUT)
    psutil.Process(spare).kill()
    wait_for(lambda: served.runner.spare_pid is None, RUN_TIMEOUT)  # the runner knows it died
    out = tmp_path / "pid"
    run = final(client, start(client, served, "pid", out=str(out)))
    assert run.state is not None and run.state.is_completed(), run.state
    assert int(out.read_text().split()[0]) != spare


def test_a_run_suspended_from_outside_is_suspended_in_its_child(
    client: SyncPrefectClient, served: Served, tmp_path: Path
) -> None:
    """Prefect's suspension observer is started once per spare child (not per run): the
    engine still notices an external suspension and stops the run there."""
    out = tmp_path / "ticks"
    run = start(client, served, "ticks", out=str(out))
    wait_for(lambda: out.exists(), RUN_TIMEOUT)  # running its tasks
    suspend_flow_run(flow_run_id=run.id, timeout=600)
    # Left alone, the flow would tick for 300 s: its child ends because it was suspended.
    wait_for(lambda: run.id not in served.runner.children, RUN_TIMEOUT)
    current = client.read_flow_run(run.id)
    assert current.state is not None and current.state.name == "Suspended", current.state
    assert int(out.read_text()) < 3000


def forking_slowly(runner: WarmRunner) -> threading.Event:
    """Its forks start, then take a second: long enough to be cancelled in the middle. The
    event is set once a fork has started."""
    forking = threading.Event()
    fork = runner.pool.fork

    def slow_fork() -> Any:
        forking.set()
        time.sleep(1.0)
        return fork()

    runner.pool.fork = slow_fork  # type: ignore[method-assign]
    return forking


def test_a_spare_forked_while_the_runner_stops_does_not_hold_its_process_open(
    client: SyncPrefectClient, served: Served
) -> None:
    """`up` stopped just after it started: the runner's first spare is still forking on a
    worker thread when the loop is cancelled, so nothing will hand it a run or dismiss it, and
    multiprocessing would join it at exit forever. Once the loop is gone, it is stopped."""
    runner = WarmRunner([served.runner.served[served.ids["pid"]]], poll_seconds=2)
    forking = forking_slowly(runner)
    with serving(runner):
        assert forking.wait(30)  # then cancelled, mid-fork
    [orphan] = runner.forked
    assert runner.stop_leftovers(grace=0) == [orphan.pid]  # stopped, not waited for
    assert not orphan.is_alive()
    assert_still_serving(client, served)


HAPPENED = "runner-test.happened"


def happened_trigger(threshold: int) -> DeploymentEventTrigger:
    """Runs `report_pid` into the file the event names; fires on the `threshold`-th event."""
    return DeploymentEventTrigger(
        name="happened",
        expect={HAPPENED},
        match={"prefect.resource.id": "runner-test.thing.*"},
        parameters={"out": "{{ event.resource['runner-test.out'] }}"},
        threshold=threshold,
        within=timedelta(minutes=5),
    )


def triggered_runner(name: str, trigger: DeploymentEventTrigger) -> WarmRunner:
    deployment = runner_flows.report_pid.to_deployment(name=name, triggers=[trigger])
    [deployment_id] = asyncio.run(register([deployment]))
    served = ServedDeployment(
        id=deployment_id,
        name=name,
        flow=runner_flows.report_pid,
        target="support.runner_flows:report_pid",
        time_limit=600,
        trigger=trigger,
    )
    return WarmRunner([served], poll_seconds=2, cover_after=0.3)


def happen(thing: str, out: Path) -> None:
    emit_event(
        HAPPENED,
        resource={"prefect.resource.id": f"runner-test.thing.{thing}", "runner-test.out": str(out)},
    )


def runs_of(client: SyncPrefectClient, runner: WarmRunner) -> list[FlowRun]:
    [deployment_id] = runner.served
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )


def test_a_triggered_run_the_automation_has_not_created_is_created_by_the_runner(
    client: SyncPrefectClient, served: Served, tmp_path: Path
) -> None:
    """The automation fires on the second event only: for the first, it is as late as can be.
    The runner creates the run the trigger would have, with its parameters, and runs it."""
    runner = triggered_runner("covered", happened_trigger(threshold=2))
    out = tmp_path / "first"
    with serving(runner):
        wait_for(lambda: runner.cover is not None and runner.cover.listening, 30)
        happen("first", out)
        wait_for(out.exists, RUN_TIMEOUT)
        [run] = wait_for(lambda: [r for r in runs_of(client, runner) if r.state.is_final()], 30)
    assert run.parameters == {"out": str(out)}
    assert run.idempotency_key and run.idempotency_key.startswith(COVER_KEY)
    assert run.state is not None and run.state.is_completed(), run.state
    assert runner.cover is not None and runner.cover.covered == [run.id]


def test_no_run_is_covered_while_the_automation_is_disabled(
    client: SyncPrefectClient, served: Served, tmp_path: Path
) -> None:
    """Operators turn triggered runs off by disabling the automation (or pausing the
    deployment): the runner does not start them behind their back."""
    runner = triggered_runner("disabled", happened_trigger(threshold=1))
    [deployment_id] = runner.served
    [automation] = client.read_resource_related_automations(f"prefect.deployment.{deployment_id}")
    client.pause_automation(automation.id)
    with serving(runner):
        wait_for(lambda: runner.cover is not None and runner.cover.listening, 30)
        assert runner.cover is not None
        # The positive signal: the cover heard the event, came to its moment and found that no
        # automation runs the deployment (the last step before it would create a run).
        happen("ignored", tmp_path / "ignored")
        wait_for(lambda: runner.cover is not None and runner.cover.declined, 30)
    assert len(runner.cover.declined) == 1
    assert runs_of(client, runner) == [] and runner.cover is not None
    assert runner.cover.covered == []
