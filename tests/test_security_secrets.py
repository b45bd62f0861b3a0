"""Secrets never leave: with canary values as the real configuration (a Supabase service key, a
password inside GFX_SYNC_DATABASE_URL), the flows run against a real Prefect server and a real
Postgres, on the Postgres and on the REST path, through success, quarantine, rejection and a
failing target; then everything the system emitted is searched for the canaries.

Searched: captured stdout/stderr and Python logs; on the Prefect server flow runs (parameters,
state messages), task runs, logs, artifacts, events, deployments, variables, blocks,
automations; the sync_events table; the durable queue (every table, every column); the
quarantine folder's files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from flows.backfill import backfill
from flows.batch import batch_upsert
from flows.recovery import recovery
from gfx_sync.queue import ChangeKind, ItemState
from gfx_synth import make_session, write_session
from support.postgrest import run_postgrest
from support.prefect_env import dump_server, prefect_server, read_events, reset_runtime
from support.secrets import Canaries, find_leaks
from support.system import free_port, wait_for
from tasks import runtime

pytestmark = pytest.mark.prefect

LONG_AGO = datetime(2025, 3, 14, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as api_url:
        yield api_url


def test_the_scanner_finds_every_form_of_a_canary() -> None:
    """The scan below is only as good as this: each form of each canary is found."""
    canaries = Canaries.make()
    for form, name in canaries.needles().items():
        assert f"where: {name}" in find_leaks(canaries, {"where": f"x{form}y"})
    assert find_leaks(canaries, {"where": "nothing here"}) == []


def write_files(base: Path, first_seed: int) -> dict[str, Path]:
    """Good sessions on two PCs, one broken file (quarantined), one the database rejects."""
    files = {
        "good1": write_session(base / "PC01" / "hands", make_session(hands=2, seed=first_seed)),
        "good2": write_session(base / "PC02" / "hands", make_session(hands=1, seed=first_seed + 1)),
    }
    broken = base / "PC01" / "hands" / "broken GameID=17.json"
    broken.write_bytes(b'{"Hands": [')
    files["broken"] = broken
    rejected = make_session(hands=1, seed=first_seed + 2)
    rejected["EventTitle"] = "\u0000"  # jsonb refuses NUL: a permanent rejection
    files["rejected"] = write_session(base / "PC02" / "hands", rejected)
    for path in files.values():
        os.utime(path, (LONG_AGO, LONG_AGO))
    return files


def emitted_locally(
    database_url: str, state: Path, base: Path, caplog: pytest.LogCaptureFixture, output: str
) -> dict[str, str]:
    """What gfx-sync wrote outside Prefect: logs, output, events table, queue, quarantine."""
    texts = {"stdout/stderr": output}
    texts |= {f"log record {n}": r.getMessage() for n, r in enumerate(caplog.records)}
    texts |= {f"log line {n}": line for n, line in enumerate(caplog.text.splitlines())}
    with psycopg.connect(database_url) as conn:
        for n, (row,) in enumerate(conn.execute("select row_to_json(e)::text from sync_events e")):
            texts[f"sync_events[{n}]"] = row
    with contextlib.closing(sqlite3.connect(state / "queue.sqlite3")) as queue:
        for n, line in enumerate(queue.iterdump()):
            texts[f"queue dump line {n}"] = line
    for path in (base / "_error").rglob("*"):
        if path.is_file():
            texts[f"quarantine {path.name}"] = path.read_bytes().decode("utf-8", "replace")
    return texts


@pytest.mark.parametrize("target", ["postgres", "supabase_rest"])
def test_no_secret_reaches_logs_events_artifacts_runs_or_tables(
    target: str,
    prefect_api: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    canaries = Canaries.make()
    caplog.set_level(logging.DEBUG)
    base, state = tmp_path / "nas", tmp_path / "state"
    for pc in ("PC01", "PC02"):
        (base / pc / "hands").mkdir(parents=True)
    for name in list(os.environ):
        if name.startswith(("GFX_SYNC_", "SUPABASE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def configure(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        reset_runtime()

    with contextlib.ExitStack() as stack:
        stack.callback(reset_runtime)
        if target == "supabase_rest":
            server = stack.enter_context(run_postgrest(database_url, key=canaries.service_key))
            working = {"SUPABASE_URL": server.url, "SUPABASE_SERVICE_KEY": canaries.service_key}
            down = {"SUPABASE_URL": f"http://127.0.0.1:{free_port()}"}
        else:
            working = {"GFX_SYNC_DATABASE_URL": canaries.database_url(database_url)}
            down = {
                "GFX_SYNC_DATABASE_URL": canaries.database_url(
                    f"postgresql://postgres@127.0.0.1:{free_port()}/gfx"
                )
            }
        configure(
            GFX_SYNC_BASE_PATH=str(base),
            GFX_SYNC_STATE_DIR=str(state),
            GFX_SYNC_REGISTRY_PATH=str(state / "no-registry.json"),
            GFX_SYNC_SETTLE_SECONDS="0.2",
            GFX_SYNC_MAX_RETRIES="0",  # the rejected file is dead-lettered at once
            GFX_SYNC_REQUEST_TIMEOUT="3",
            GFX_SYNC_OUTAGE_RETRY_DELAY="0.1",
            GFX_SYNC_OUTAGE_WAIT="0",  # each failure below fails its run (no waiting it out)
            **working,
        )
        files = write_files(base, first_seed=40)

        # Success, quarantine and rejection, with parameters and artifacts.
        summary = backfill(pcs=["PC01", "PC02"], return_state=True)
        assert summary.is_completed(), summary.message
        assert recovery(return_state=True).is_completed()
        with psycopg.connect(database_url) as conn:  # written with the canary configuration
            assert conn.execute("select count(*) from gfx_sessions").fetchone() == (2,)
        queue = runtime.engine().queue
        assert {i.path for i in queue.items(ItemState.QUARANTINED)} == {str(files["broken"])}
        assert {i.path for i in queue.items(ItemState.DEAD)} == {str(files["rejected"])}

        # The target fails: unreachable, then (REST) a 503 and a gateway echoing the key.
        path = files["good1"]
        path.write_bytes(path.read_bytes().replace(b'"EventTitle":""', b'"EventTitle":"x"'))
        runtime.site().enqueue(runtime.queue(), [path], ChangeKind.MODIFIED)
        configure(**down)
        failed = [batch_upsert(return_state=True)]
        if target == "supabase_rest":
            configure(**working)
            server.fail_next(503, "PGRST000", "database unreachable")
            wait_for(lambda: runtime.engine().queue.stats().due == 1, timeout=30)
            failed.append(batch_upsert(return_state=True))
            server.fail_next(401, None, f"Invalid API key: {canaries.service_key}")
            wait_for(lambda: runtime.engine().queue.stats().due == 1, timeout=30)
            failed.append(batch_upsert(return_state=True))
        for run in failed:
            assert run.is_failed(), f"{run.name}: {run.message}"
            assert "stay queued" in (run.message or "")
            run_id = run.state_details.flow_run_id
            read_events(prefect_api, "gfx.flow-run.failed", f"prefect.flow-run.{run_id}")

        [pending] = runtime.engine().queue.items(ItemState.PENDING)
        assert pending.last_error  # the failure is recorded, so it was scanned below
    # (the ExitStack closed the REST server and the engine: every log line is out)
    on_server = dump_server(prefect_api)
    captured = capfd.readouterr()
    local = emitted_locally(database_url, state, base, caplog, captured.out + captured.err)

    # The scan looked at real content: runs, logs, artifacts, events, errors, reasons.
    for collection in ("flow_runs", "logs", "artifacts", "events", "task_runs"):
        assert any(where.startswith(f"prefect {collection}[") for where in on_server), collection
    assert any("stay queued" in text for text in on_server.values())
    assert any(
        where.startswith("sync_events[") and '"error"' in text for where, text in local.items()
    )
    assert any(where.endswith(".reason.txt") for where in local)
    assert any("last_error" in text or "dead" in text for text in local.values())

    assert find_leaks(canaries, {**on_server, **local}) == []
