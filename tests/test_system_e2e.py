"""End to end: the real `gfx-sync up` (its own Prefect server, the deployments, the watcher)
against a real Postgres. Files dropped into a PC folder become rows through the event ->
triggered realtime deployment path; modified files go through the batch deployment; files
written while the system was stopped are recovered at start-up; a failing run alerts."""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from deployments.warm.states import SKIPPED_IDLE
from support.prefect_env import dump_server
from support.records import session_document
from support.samples import needs_samples, sample_files
from support.secrets import Canaries, find_leaks
from support.system import (
    RunningSystem,
    WebhookReceiver,
    gfx_sync_up,
    wait_for,
    watcher_ready,
)
from support.system import session_row as row

OFFLINE_SESSION = 638900000000000001
GROWING_SESSION = 638900000000000002
ALERT_SESSION = 638900000000000003
NEW_PC_SESSION = 638900000000000010


def session_path(base: Path, session_id: int, pc: str = "PC01") -> Path:
    return base / pc / "hands" / f"PGFX_live_data_export GameID={session_id}.json"


def write(path: Path, hands: int, session_id: int) -> None:
    path.write_bytes(orjson.dumps(session_document(session_id, hands)))


def flow_runs(system: RunningSystem, flow_name: str, state: str = "COMPLETED") -> list[dict]:
    """Runs of a flow in one state (the scheduler keeps ~100 future runs: filter, not limit)."""
    response = httpx.post(
        f"{system.api_url}/flow_runs/filter",
        json={
            "flows": {"name": {"any_": [flow_name]}},
            "flow_runs": {"state": {"type": {"any_": [state]}}},
            "limit": 200,
        },
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def recovery_settled(system: RunningSystem, completed_before: int) -> bool:
    """A recovery run completed since `completed_before` were, and none is due or going
    (the interval schedule's future runs aside)."""
    if len(flow_runs(system, "gfx-recovery")) <= completed_before:
        return False
    now = time.time()
    for state in ("SCHEDULED", "PENDING", "RUNNING"):
        for run in flow_runs(system, "gfx-recovery", state):
            start = run.get("expected_start_time")
            if state != "SCHEDULED" or (start and datetime.fromisoformat(start).timestamp() <= now):
                return False
    return True


def console_failed_runs(system: RunningSystem) -> list[tuple[str, str]]:
    """(row text, link) of each failed run the console shows (its #runs table)."""
    page = httpx.get(f"{system.console_url}/fragment", timeout=10).text
    rows = re.findall(r'<tr class="run"[^>]*>(.*?)</tr>', page, re.S)
    return [
        (re.sub(r"<[^>]+>", " ", row), href)
        for row in rows
        for href in re.findall(r'href="([^"]+)"', row)
    ]


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("nas")
    for pc in ("PC01", "PC02"):
        (base / pc / "hands").mkdir(parents=True)
    # Written while gfx-sync is not running: only the start-up recovery can find it.
    write(session_path(base, OFFLINE_SESSION), hands=3, session_id=OFFLINE_SESSION)
    return base


@pytest.fixture(scope="module")
def canaries() -> Canaries:
    """The system runs with canary secrets (test_no_secret_in_anything_the_system_emitted)."""
    return Canaries.make()


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def system(
    base: Path, module_database_url: str, webhook: WebhookReceiver, state: Path, canaries: Canaries
) -> Iterator[RunningSystem]:
    env = {
        "GFX_SYNC_BASE_PATH": str(base),
        "GFX_SYNC_STATE_DIR": str(state),
        "GFX_SYNC_REGISTRY_PATH": str(state / "no-registry.json"),
        # trust auth: the canary password is accepted, ignored, and carried everywhere
        "GFX_SYNC_DATABASE_URL": canaries.database_url(module_database_url),
        "GFX_SYNC_FLUSH_INTERVAL": "2",
        "GFX_SYNC_SETTLE_SECONDS": "0.5",
        "GFX_SYNC_REALTIME_GRACE": "30",
        # These tests follow Prefect's paths (realtime, batch); a slow run on a busy machine
        # must not hand the work to the standby drainer (tested in tests/faults, test_standby).
        "GFX_SYNC_ORCHESTRATOR_GRACE": "600",
        "GFX_SYNC_ALERT_WEBHOOK_URL": f"{webhook.url}/{canaries.webhook_token}",
    }
    with gfx_sync_up(env, cwd=state) as running:
        yield running
    assert running.process.returncode == 0, running.log()[-5000:]
    assert "ERROR gfx_sync" not in running.log(), running.log()[-5000:]
    assert "left over at shutdown" not in running.log(), running.log()[-5000:]  # spare exited


def test_files_written_while_stopped_are_recovered_at_start_up(
    system: RunningSystem, module_database_url: str
) -> None:
    """Two start-up paths find it: the start-up recovery run, and the watcher's own rescan
    once its watches are in place, which announces it (the runner may cover that event with
    a realtime run before the recovery run drains). Either is the start-up's doing."""
    pc, hands, source = wait_for(lambda: row(module_database_url, OFFLINE_SESSION), 90)
    assert (pc, hands) == ("PC01", 3)
    assert source in ("recovery", "realtime")
    assert wait_for(lambda: flow_runs(system, "gfx-recovery"))


@needs_samples
def test_a_dropped_sample_reaches_the_table_through_the_triggered_realtime_run(
    system: RunningSystem, module_database_url: str, base: Path
) -> None:
    # After the start-up recovery run (it drains whatever is queued, under its own name),
    # so this file is the realtime path's alone whichever test runs first.
    assert wait_for(
        lambda: [r for r in flow_runs(system, "gfx-recovery") if r["state_type"] == "COMPLETED"]
    )
    sample = next(p for p in sample_files() if "1016" in p.parts)
    target = base / "PC02" / "hands" / sample.name
    dropped_at = time.time()
    shutil.copyfile(sample, target)
    try:
        synced = wait_for(lambda: row(module_database_url, 638962014211467634), 90)
    except AssertionError as missing:  # say where it stopped: the system's own account
        raise AssertionError(f"{missing}\n--- gfx-sync up said:\n{system.log()[-12000:]}") from None
    assert synced == ("PC02", 18, "realtime")
    named = f"realtime PC02 {sample.name}"  # the flow's run name, set when its code runs

    def runs_for_the_sample() -> list[dict]:
        return [
            r
            for r in flow_runs(system, "gfx-realtime-upsert")
            if r["parameters"].get("path") == str(target) and r["state_type"] == "COMPLETED"
        ]

    # When the automation is late, the runner's cover creates the run the trigger would have
    # and the automation's own run comes later: one or two runs, in no set order. Every one
    # comes from the event trigger (an idempotency key from the event), never by hand.
    runs = wait_for(runs_for_the_sample, 60)
    for run in runs:
        assert run["idempotency_key"] and run["parameters"]["pc_id"] == "PC02", run
    # One realtime run drains every pending added file. The sample's own run ran the flow
    # (under its run name), or another file's realtime run, still going when the sample
    # was queued (a late automation's run of the start-up event), drained it first: then the
    # sample's runs found nothing due and completed without running the flow.
    if not any(r["name"] == named for r in runs):
        assert all(r["state"]["message"] == SKIPPED_IDLE for r in runs), runs
        drained_by_another = [
            r
            for r in flow_runs(system, "gfx-realtime-upsert")
            if r["state"]["message"] != SKIPPED_IDLE
            and r["end_time"]
            and datetime.fromisoformat(r["end_time"]).timestamp() >= dropped_at
        ]
        assert drained_by_another, runs


def test_a_growing_session_ends_as_one_row_through_the_batch_deployment(
    system: RunningSystem, module_database_url: str, base: Path
) -> None:
    path = session_path(base, GROWING_SESSION)
    write(path, hands=1, session_id=GROWING_SESSION)
    assert wait_for(lambda: row(module_database_url, GROWING_SESSION), 90)[1] == 1
    time.sleep(1.1)  # a later mtime, as PokerGFX's next rewrite would have
    write(path, hands=2, session_id=GROWING_SESSION)
    assert wait_for(
        lambda: (r := row(module_database_url, GROWING_SESSION)) and r[1] == 2 and r, 90
    ) == (
        "PC01",
        2,
        "batch",
    )
    with psycopg.connect(module_database_url) as conn:
        count = conn.execute(
            "select count(*) from gfx_sessions where session_id = %s", (GROWING_SESSION,)
        ).fetchone()
    assert count == (1,)
    assert wait_for(lambda: flow_runs(system, "gfx-batch-upsert"), 60)


def hand_table(database_url: str, session_id: int) -> list[tuple]:
    """(hand_idx, hand_hash, derived_at) of a session's stored hands, in order."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select hand_idx, hand_hash, derived_at from gfx_hands where session_id = %s "
            "order by hand_idx",
            (session_id,),
        ).fetchall()


def synced_sizes(state: Path) -> list[int]:
    """The sizes of the files the running system acknowledged (its queue's synced log)."""
    with sqlite3.connect(f"file:{state / 'queue.sqlite3'}?mode=ro", uri=True) as conn:
        return [size for (size,) in conn.execute("select size from synced_log")]


@needs_samples
def test_the_107_hand_sample_arriving_as_50_then_1_then_107_hands_ends_with_its_107_hands(
    system: RunningSystem, module_database_url: str, base: Path, state: Path
) -> None:
    sample = next(p for p in sample_files() if "new" in p.parts)
    document = orjson.loads(sample.read_bytes())
    session_id, hands = document["ID"], document["Hands"]
    assert len(hands) == 107
    path = base / "PC01" / "hands" / sample.name

    def rewrite(count: int) -> bytes:
        data = orjson.dumps(document | {"Hands": hands[:count]}, option=orjson.OPT_SORT_KEYS)
        with path.open("wb") as handle:  # in place, as PokerGFX rewrites its file
            handle.write(data)
        return data

    rewrite(50)
    first = wait_for(
        lambda: len(rows := hand_table(module_database_url, session_id)) == 50 and rows, 90
    )
    time.sleep(1.1)  # a later mtime, as PokerGFX's next rewrite would have
    smaller = rewrite(1)
    wait_for(lambda: len(smaller) in synced_sizes(state), 90)  # acknowledged: committed
    assert hand_table(module_database_url, session_id) == first  # nothing written
    time.sleep(1.1)
    rewrite(107)
    final = wait_for(
        lambda: len(rows := hand_table(module_database_url, session_id)) == 107 and rows, 90
    )
    assert [r[0] for r in final] == list(range(107))
    assert final[:50] == first  # the 50 hands already stored were not rewritten
    with psycopg.connect(module_database_url) as conn:
        players, actions = conn.execute(
            "select (select count(*) from gfx_hand_players where session_id = %(s)s), "
            "(select count(*) from gfx_hand_actions where session_id = %(s)s)",
            {"s": session_id},
        ).fetchone()
        assert conn.execute(
            "select hand_count from gfx_sessions where session_id = %s", (session_id,)
        ).fetchone() == (107,)
    assert players == sum(len(h["Players"]) for h in hands)
    assert actions == sum(len(h["Events"]) for h in hands)


def test_a_failing_run_sends_an_alert_to_the_webhook(
    system: RunningSystem, module_database_url: str, base: Path, webhook: WebhookReceiver
) -> None:
    """The target loses its table: the batch run fails (files stay queued) and alerts."""
    with psycopg.connect(module_database_url, autocommit=True) as conn:
        conn.execute("alter table gfx_sessions rename to gfx_sessions_away")
    try:
        path = session_path(base, GROWING_SESSION)
        time.sleep(1.1)
        write(path, hands=3, session_id=GROWING_SESSION)
        # The webhook also carries the console's silent-failure alerts: take the run's.
        body = wait_for(
            lambda: [b for b in webhook.bodies if "gfx-batch-upsert" in b["subject"]], 120
        )[0]
        assert "Failed" in body["subject"]
        # The operator console lists the failed run, linked into the Prefect UI.
        runs = wait_for(lambda: console_failed_runs(system), 60)
        assert any(
            "batch" in text and href.startswith(system.api_url.removesuffix("/api") + "/runs/")
            for text, href in runs
        ), runs
    finally:
        with psycopg.connect(module_database_url, autocommit=True) as conn:
            conn.execute("alter table gfx_sessions_away rename to gfx_sessions")
    # Nothing was lost: once the table is back, the queued change lands.
    assert wait_for(lambda: (r := row(module_database_url, GROWING_SESSION)) and r[1] == 3, 90)


def test_a_pc_folder_made_while_running_is_watched(
    system: RunningSystem, module_database_url: str, base: Path, state: Path
) -> None:
    """A GFX PC that joins mid-broadcast (no registry: PCs are the folders): its first file is
    found by the rescan that follows the watcher's restart, the next one by the watcher."""
    first_watcher = wait_for(lambda: watcher_ready(state), 90)
    recoveries = len(flow_runs(system, "gfx-recovery"))
    (base / "PC03" / "hands").mkdir(parents=True)
    write(session_path(base, NEW_PC_SESSION, "PC03"), hands=1, session_id=NEW_PC_SESSION)
    assert wait_for(lambda: row(module_database_url, NEW_PC_SESSION), 90)[0] == "PC03"
    wait_for(lambda: "watching PC03" in system.log(), 90)  # the restarted watcher's flow run
    # The restarted watcher says when its watches (PC03's among them) are in place.
    wait_for(lambda: (now := watcher_ready(state)) and now["pid"] != first_watcher["pid"], 90)
    # The recovery run the restart asked for drains whatever is pending, under its own name:
    # it must be over before the next file, so that file is the realtime path's alone.
    wait_for(lambda: recovery_settled(system, recoveries), 90)
    write(session_path(base, NEW_PC_SESSION + 1, "PC03"), hands=2, session_id=NEW_PC_SESSION + 1)
    assert wait_for(lambda: row(module_database_url, NEW_PC_SESSION + 1), 90) == (
        "PC03",
        2,
        "realtime",
    )


def test_health_and_ready_come_from_the_console(system: RunningSystem) -> None:
    """`gfx-sync health` (the container's HEALTHCHECK) asks the console `up` serves."""
    result = subprocess.run(
        [sys.executable, "-m", "deployments.app", "health"],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("healthy: ")
    assert f"(console {system.console_url}/health)" in result.stdout
    ready = httpx.get(f"{system.console_url}/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]} == {
        "target": True,
        "schema": True,
        "orchestrator": True,
    }


def test_no_secret_in_anything_the_system_emitted(
    system: RunningSystem, module_database_url: str, base: Path, state: Path, canaries: Canaries
) -> None:
    """Runs last: after syncs, a quarantine, a failed run and its alert, nothing the running
    system printed, stored in Prefect (runs, parameters, logs, events, artifacts, deployments,
    blocks, automations), in sync_events, in the queue or in quarantine holds a secret."""
    broken = base / "PC02" / "hands" / "broken GameID=5.json"
    broken.write_bytes(b'{"Hands": [')
    wait_for(lambda: list((base / "_error").rglob("*.reason.txt")), 90)
    emitted = {"gfx-sync up output": system.log(), **dump_server(system.api_url)}
    with psycopg.connect(module_database_url) as conn:
        for n, (text,) in enumerate(conn.execute("select row_to_json(e)::text from sync_events e")):
            emitted[f"sync_events[{n}]"] = text
    with contextlib.closing(sqlite3.connect(state / "queue.sqlite3")) as queue:
        emitted |= {f"queue line {n}": line for n, line in enumerate(queue.iterdump())}
    for path in (base / "_error").rglob("*"):
        if path.is_file():
            emitted[f"quarantine {path.name}"] = path.read_bytes().decode("utf-8", "replace")
    assert any(w.startswith("prefect block_documents[") for w in emitted)  # the alert's block
    assert any(w.startswith("prefect deployments[") for w in emitted)
    assert find_leaks(canaries, emitted) == []
