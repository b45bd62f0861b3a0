"""The local Prefect server `up` starts keeps a bounded history: the events every run raises
on its way are vacuumed after ROUTINE_EVENT_HOURS, while the runs themselves and the events of
a failure stay for the whole run retention. Against a real server started as `up` starts it;
time is moved by moving the stored events back (the vacuum compares with the server's clock).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Failed, Running, Scheduled

from bench.scenarios.day import count_rows, flow_run_count, settle_runs, warp_back
from deployments.up import (
    EVENT_OVERRIDES,
    ROUTINE_EVENT_HOURS,
    ROUTINE_EVENTS,
    local_prefect_server,
    prefect_server_env,
)
from deployments.warm.served import register
from deployments.warm.states import StateProposer
from flows.batch import batch_upsert
from gfx_sync.settings import Settings, load_settings
from support.system import free_port, wait_for

pytestmark = pytest.mark.prefect

SERVER_LOOPS = {  # the vacuum and the event persister on short loops (hourly / 5 s as shipped)
    "PREFECT_SERVER_SERVICES_DB_VACUUM_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
}


def settings_in(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(base_path=tmp_path / "base", state_dir=tmp_path / "state", **overrides)


def test_routine_events_are_kept_for_hours_and_never_longer_than_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(EVENT_OVERRIDES, raising=False)
    overrides = json.loads(prefect_server_env(settings_in(tmp_path))[EVENT_OVERRIDES])
    assert overrides == dict.fromkeys(ROUTINE_EVENTS, ROUTINE_EVENT_HOURS * 3600)
    short = prefect_server_env(settings_in(tmp_path, run_retention_hours=2))[EVENT_OVERRIDES]
    assert set(json.loads(short).values()) == {2 * 3600}
    mine = json.dumps({"prefect.flow-run.Running": 60})  # an operator's own rule wins
    monkeypatch.setenv(EVENT_OVERRIDES, mine)
    assert prefect_server_env(settings_in(tmp_path))[EVENT_OVERRIDES] == mine


async def fail_one(deployment_id: Any) -> None:
    async with get_client() as client:
        run = await client.create_flow_run_from_deployment(
            deployment_id, state=Scheduled(scheduled_time=datetime.now(UTC))
        )
        proposer = StateProposer(lambda: client)
        await proposer.claim(run)
        await client.set_flow_run_state(run.id, Running())
        await client.set_flow_run_state(run.id, Failed(message="the target refused"))


def test_the_vacuum_drops_routine_events_and_keeps_runs_and_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(EVENT_OVERRIDES, raising=False)
    settings = settings_in(tmp_path, prefect_port=free_port())
    db = settings.prefect_home / "prefect.db"
    routine = f"SELECT count(*) FROM events WHERE event IN ({','.join('?' * len(ROUTINE_EVENTS))})"
    failed = "SELECT count(*) FROM events WHERE event = 'prefect.flow-run.Failed'"
    with (
        mock.patch.dict(os.environ, SERVER_LOOPS),
        local_prefect_server(settings) as api_url,
        temporary_settings(updates={PREFECT_API_URL: api_url}),
    ):
        [deployment_id] = asyncio.run(register([batch_upsert.to_deployment(name="retention")]))
        asyncio.run(settle_runs(deployment_id, 5))
        asyncio.run(fail_one(deployment_id))
        # 2 routine events per settled run (Scheduled, Completed "Skipped"), 3 on the failed
        # run's way (Scheduled, Pending, Running), stored by the persister.
        wait_for(lambda: count_rows(db, routine, *ROUTINE_EVENTS) == 13, timeout=60)
        wait_for(lambda: count_rows(db, failed) == 1, timeout=60)

        warp_back(db, timedelta(hours=ROUTINE_EVENT_HOURS, minutes=10), runs=False)
        wait_for(lambda: count_rows(db, routine, *ROUTINE_EVENTS) == 0, timeout=60)

        assert count_rows(db, failed) == 1  # a failure's event stays
        assert flow_run_count(api_url) == 6  # and every run, with its state history
