"""The disk holding the durable queue fills up while PokerGFX keeps writing.

A real full file system: the queue (GFX_SYNC_QUEUE_PATH) lives on a small tmpfs mounted for
the test, and a filler file takes the rest of it. gfx-sync must say so loudly (a log line
naming the queue file, failing runs and an alert), keep what the queue held intact, and once
the filler is gone, the rescan must find every change the watcher could not record.
Mounting needs root (CAP_SYS_ADMIN); elsewhere the scenario skips, saying so, and the queue's
own unit tests cover SQLITE_FULL through SQLite's page limit.
"""

from __future__ import annotations

import sqlite3
import time

import httpx

from flows.hooks import RUN_PROBLEM_EVENT_PREFIX
from support.disk import fill, small_disk
from support.faults import Rig, Verdict, converge, env_seconds, fetch_rows
from support.prefect_env import read_events
from support.system import RunningSystem, WebhookReceiver, wait_for

DISK_BYTES = 16 * 1024 * 1024  # room for the queue's WAL (auto-checkpoint at ~4 MB)


def failed_runs(system: RunningSystem) -> list[dict]:
    response = httpx.post(
        f"{system.api_url}/flow_runs/filter",
        json={"flow_runs": {"state": {"type": {"any_": ["FAILED", "CRASHED"]}}}, "limit": 50},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def run_logs(system: RunningSystem, run_ids: list[str]) -> str:
    response = httpx.post(
        f"{system.api_url}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": run_ids}}, "limit": 200},
        timeout=10,
    )
    response.raise_for_status()
    return "\n".join(entry["message"] for entry in response.json())


def delivered_alerts(system: RunningSystem, webhook: WebhookReceiver) -> list:
    """The webhook's bodies, waiting up to 30 s; without any, the failure says how far the
    alerts got (failed runs, their events on the server, the automations there)."""
    try:
        return wait_for(lambda: list(webhook.bodies), timeout=30)
    except AssertionError:
        events = read_events(system.api_url, f"{RUN_PROBLEM_EVENT_PREFIX}failed", timeout=0)
        automations = httpx.post(f"{system.api_url}/automations/filter", json={}, timeout=10)
        raise AssertionError(
            f"no alert reached the webhook in 30 s: {len(failed_runs(system))} failed runs, "
            f"{len(events)} run-failed events on the server, automations "
            f"{[(a['name'], a['enabled']) for a in automations.json()]}"
        ) from None


def test_queue_disk_full_then_space_returns(rig: Rig, report: list[Verdict]) -> None:
    window = env_seconds("GFX_SYNC_FAULTS_DISK_FULL", 14)
    producer = rig.producer(seed=18, scenario=18)
    webhook = WebhookReceiver()
    with small_disk(rig.state / "queue-disk", DISK_BYTES, keep=rig.state / "queue-kept") as disk:
        queue_file = disk / "queue.sqlite3"
        filler = disk / "filler"
        overrides = {
            "GFX_SYNC_QUEUE_PATH": str(queue_file),
            "GFX_SYNC_RECOVERY_INTERVAL": "10",
            "GFX_SYNC_ALERT_WEBHOOK_URL": webhook.url,
            "GFX_SYNC_ALERT_COOLDOWN": "0",
        }
        try:
            with rig.up(**overrides) as system, rig.watch() as watch:
                producer.run(3)
                wait_for(lambda: fetch_rows(rig.database_url), timeout=120)  # live first
                fill(filler)
                producer.run(window, interval=0.1)
                full_log = system.log()
                failed = failed_runs(system)
                filler.unlink()
                started = time.monotonic()
                producer.new_session()
                verdict = converge(
                    "queue disk full",
                    producer,
                    rig.database_url,
                    timeout=90,
                    watch=watch,
                    queue_path=queue_file,
                    started=started,
                    notes=f"{len(failed)} failed runs",
                )
                alerts = delivered_alerts(system, webhook)
                logs = full_log + run_logs(system, [r["id"] for r in failed])
        finally:
            webhook.close()
        report.append(verdict)
        assert verdict.clean, verdict
        with sqlite3.connect(f"file:{queue_file}?mode=ro", uri=True) as conn:
            assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    assert failed, "no run failed while the queue's disk was full"
    assert "DISK FULL" in logs and str(queue_file) in logs, logs[-3000:]
    assert any("DISK FULL" in str(body) for body in alerts), alerts
