"""Which runner `gfx-sync up` serves with: the warm runner rests on Prefect internals, so it is
taken only on a Prefect version compat was tested with; otherwise (or when told) Prefect's
stock runner serves the same deployments, and the realtime path still syncs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments import compat
from deployments.up import choose_runner
from support.sessions import write_session
from support.system import gfx_sync_up, session_row, wait_for, watching

UNTESTED = "3.0.0"
DROPPED_SESSION = 638900000000000020


def test_the_installed_prefect_is_one_the_warm_runner_was_tested_with() -> None:
    installed = compat.prefect_version()
    assert installed in compat.TESTED_PREFECT_VERSIONS
    assert compat.warm_runner_unsupported() is None
    assert compat.missing_prefect_internals(compat.PREFECT_INTERNALS) == []


def test_an_untested_prefect_version_is_a_reason_to_fall_back() -> None:
    reason = compat.warm_runner_unsupported(UNTESTED)
    assert reason is not None and f"Prefect {UNTESTED}" in reason


def test_a_missing_internal_is_a_reason_to_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = "prefect._internal.observers:FlowRunSuspendingObserver.renamed_in_a_later_version"
    monkeypatch.setattr(compat, "PREFECT_INTERNALS", (*compat.PREFECT_INTERNALS, gone))
    reason = compat.warm_runner_unsupported()
    assert reason is not None and gone in reason
    assert compat.missing_prefect_internals(["prefect._no_such_module:x"]) == [
        "prefect._no_such_module:x"
    ]


def test_auto_falls_back_to_the_stock_runner_on_an_untested_version_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gfx_sync.up"):
        kind, reason = choose_runner("auto", UNTESTED)
    assert kind == "stock"
    assert reason is not None and f"Prefect {UNTESTED}" in reason
    assert "falling back to Prefect's stock runner" in reason
    [record] = [r for r in caplog.records if r.name == "gfx_sync.up"]
    assert record.levelno == logging.WARNING and record.getMessage() == reason


def test_auto_takes_the_warm_runner_on_the_tested_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gfx_sync.up"):
        assert choose_runner("auto") == ("warm", None)
    assert [r for r in caplog.records if r.name == "gfx_sync.up"] == []


def test_an_explicit_choice_is_followed() -> None:
    assert choose_runner("stock") == ("stock", None)
    assert choose_runner("stock", UNTESTED) == ("stock", None)
    kind, warning = choose_runner("warm", UNTESTED)
    assert kind == "warm" and warning is not None and f"Prefect {UNTESTED}" in warning


def recovery_runs(
    client: SyncPrefectClient, types: list[StateType], before: datetime | None = None
) -> list[FlowRun]:
    return client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["gfx-recovery"])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=types)),
            expected_start_time=FlowRunFilterExpectedStartTime(before_=before),
        ),
    )


def recovery_settled(api_url: str) -> bool:
    """A recovery run completed, and none is running or due within ten minutes (they are an
    hour apart here): no rescan will reach a file written now before the realtime run does."""
    soon = datetime.now(UTC) + timedelta(minutes=10)
    unsettled = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        return bool(recovery_runs(client, [StateType.COMPLETED])) and not recovery_runs(
            client, unsettled, soon
        )


@pytest.mark.prefect
@pytest.mark.timeout(600)
def test_up_with_the_stock_runner_syncs_a_dropped_file_through_the_realtime_run(
    tmp_path: Path, database_url: str
) -> None:
    base, state = tmp_path / "nas", tmp_path / "state"
    hands = base / "PC01" / "hands"
    hands.mkdir(parents=True)
    env = {
        "GFX_SYNC_RUNNER": "stock",
        "GFX_SYNC_BASE_PATH": str(base),
        "GFX_SYNC_STATE_DIR": str(state),
        "GFX_SYNC_REGISTRY_PATH": str(state / "no-registry.json"),
        "GFX_SYNC_DATABASE_URL": database_url,
        "GFX_SYNC_SETTLE_SECONDS": "0.5",
        # The realtime run must be the one that syncs it: the batch run leaves added files
        # to it this long, and the standby drainer takes over only after this long.
        "GFX_SYNC_REALTIME_GRACE": "60",
        "GFX_SYNC_ORCHESTRATOR_GRACE": "600",
        "GFX_SYNC_RECOVERY_INTERVAL": "3600",
    }
    with gfx_sync_up(env, cwd=tmp_path) as system:
        wait_for(lambda: "runner: stock" in system.log(), 30)  # printed after the ready line
        wait_for(lambda: watching(state), 120)  # the watcher's watches are in place
        wait_for(lambda: recovery_settled(system.api_url), 180, interval=1.0)
        write_session(hands, DROPPED_SESSION, hands=2)
        try:
            synced = wait_for(lambda: session_row(database_url, DROPPED_SESSION), 120)
        except AssertionError as missing:
            log = system.log()[-8000:]
            raise AssertionError(f"{missing}\n--- gfx-sync up said:\n{log}") from None
        assert synced == ("PC01", 2, "realtime")
    assert system.process.returncode == 0, system.log()[-5000:]
