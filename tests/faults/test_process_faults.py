"""The orchestrator and the processes fail while PokerGFX keeps writing.

The Prefect server goes away and comes back, `gfx-sync up`'s processes are SIGKILLed (all of
them mid-batch, or one at a time), the machine "reboots". Files written meanwhile must all
arrive, once, newest snapshot last; the judge compares the table with the producer's truth.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from support.faults import Producer, Rig, Verdict, env_seconds, fetch_rows, queue_inflight
from support.processes import PrefectServer, find_in_tree, kill_everything
from support.system import RunningSystem, wait_for


def synced_now(producer: Producer, database_url: str) -> str:
    """How much of the truth is in the table right now (its newest snapshot), as `n/m`."""
    rows = {(r.pc_id, r.session_id): r.file_hash for r in fetch_rows(database_url)}
    truth = dict(producer.truth)
    current = sum(1 for key, snap in truth.items() if rows.get(key) == snap.file_hash)
    return f"{current}/{len(truth)}"


@pytest.mark.timeout(600)
def test_prefect_server_down_then_back(rig: Rig, report: list[Verdict], tmp_path: Path) -> None:
    """SIGTERM, then SIGKILL, of the Prefect server `up` uses; restarted on the same port/DB."""
    down = env_seconds("GFX_SYNC_FAULTS_PREFECT_DOWN", 20)
    producer = rig.producer(seed=3, scenario=21)
    with (
        PrefectServer(tmp_path / "prefect") as server,
        rig.up(PREFECT_API_URL=server.api_url) as system,
        rig.watch() as watch,
    ):
        producer.run(3)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            server.stop(sig)
            producer.run(down, interval=0.1)
            during = synced_now(producer, rig.database_url)
            server.start()
            started = time.monotonic()
            producer.new_session()  # new data still flows after the fault
            verdict = rig.converge(
                f"prefect server {sig.name} {down:.0f} s",
                producer,
                watch=watch,
                started=started,
                notes=f"synced while down {during}; watcher restarts {watcher_restarts(system)}",
            )
            report.append(verdict)
            assert system.process.poll() is None, system.log()[-3000:]
            assert verdict.clean, (verdict, system.log()[-3000:])


def watcher_restarts(system: RunningSystem) -> int:
    return system.log().count("gfx-sync: the watcher exited")


def prefect_db_intact(state: Path) -> bool:
    """The embedded Prefect server's SQLite database passes an integrity check."""
    (db,) = state.glob("**/prefect.db")
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("pragma integrity_check").fetchone()[0] == "ok"


def leave_mid_rewrite(producer: Producer, database_url: str) -> Path:
    """PokerGFX was rewriting a session when the power went: the file holds half its bytes.
    It must be quarantined, and its row keep the last complete snapshot (no regression).
    A session whose last snapshot is in the table already: one that is not exists nowhere."""
    synced = {(r.pc_id, r.session_id): r.file_hash for r in fetch_rows(database_url)}
    key = min(k for k, snap in producer.truth.items() if synced.get(k) == snap.file_hash)
    path = producer.truth[key].path
    data = path.read_bytes()
    with path.open("r+b") as handle:
        handle.truncate(len(data) // 2)
    producer.broken[path.relative_to(producer.base).as_posix()] = "left mid-rewrite by a crash"
    producer.files_written += 1
    return path


@pytest.mark.timeout(600)
def test_sigkill_everything_mid_batch_then_reboot(rig: Rig, report: list[Verdict]) -> None:
    """Everything is SIGKILLed while a slow batch is in flight; then again ("reboot") while
    PokerGFX keeps writing, one file left half-rewritten. Start-up must catch up at once:
    claims of the dead processes must not wait out their lease."""
    down = env_seconds("GFX_SYNC_FAULTS_REBOOT_DOWN", 5)
    producer = rig.producer(seed=4, scenario=22)
    env = {"GFX_SYNC_LEASE_SECONDS": "120"}  # the default: far longer than the converge guard
    with rig.watch() as watch:
        with rig.up(**env) as system:
            producer.run(3)
            rig.proxy.set_delay(0.3)  # slow batches: one is in flight when the power goes
            writer = producer.run_in_background(4, interval=0.05)
            wait_for(lambda: queue_inflight(rig), timeout=60, interval=0.05)
            inflight = queue_inflight(rig)
            kill_everything(system)
            writer.join()
        rig.proxy.set_delay(0)
        intact = prefect_db_intact(rig.state)
        with rig.up(**env) as system:
            started = time.monotonic()
            producer.new_session()
            verdict = rig.converge(
                "SIGKILL all mid-batch",
                producer,
                watch=watch,
                started=started,
                notes=f"{inflight} in flight at the kill; prefect db ok={intact}",
            )
            report.append(verdict)
            assert verdict.clean, (verdict, system.log()[-3000:])
            assert intact

            producer.run(3)  # healthy again, then the machine "reboots"
            kill_everything(system)
        for _ in range(int(down / 0.1)):  # PokerGFX (another machine) keeps writing
            producer.step()
            time.sleep(0.1)
        leave_mid_rewrite(producer, rig.database_url)
        intact = prefect_db_intact(rig.state)
        with rig.up(**env) as system:
            started = time.monotonic()
            producer.new_session()
            verdict = rig.converge(
                f"reboot, writes while down {down:.0f} s",
                producer,
                watch=watch,
                started=started,
                notes=f"start-up recovery; prefect db ok={intact}",
            )
            report.append(verdict)
            assert verdict.clean, (verdict, system.log()[-3000:])
            assert intact


def test_one_process_killed_while_up_keeps_running(rig: Rig, report: list[Verdict]) -> None:
    """Only a run's child, then only the watcher, is SIGKILLed: `up` notices and recovers."""
    producer = rig.producer(seed=5, scenario=23)
    with rig.up() as system, rig.watch() as watch:
        producer.run(3)
        # A run's child: forked by the runner's forkserver, killed mid-batch.
        rig.proxy.set_delay(0.3)
        writer = producer.run_in_background(6, interval=0.05)
        child = wait_for(lambda: run_children(system) if queue_inflight(rig) else [], 60, 0.05)
        child[0].send_signal(signal.SIGKILL)
        writer.join()
        rig.proxy.set_delay(0)
        started = time.monotonic()
        producer.new_session()
        verdict = rig.converge(
            "SIGKILL a run's child mid-batch", producer, watch=watch, started=started
        )
        report.append(verdict)
        assert verdict.clean, (verdict, system.log()[-3000:])

        # The watcher: `up` must start it again (and rescan what it missed meanwhile).
        (watcher,) = find_in_tree(system.process.pid, "flows.watcher")
        watcher.send_signal(signal.SIGKILL)
        producer.run(3, interval=0.1)
        started = time.monotonic()
        producer.new_session()
        verdict = rig.converge(
            "SIGKILL the watcher",
            producer,
            watch=watch,
            started=started,
            notes=f"watcher restarts {watcher_restarts(system)}",
        )
        report.append(verdict)
        assert system.process.poll() is None, system.log()[-3000:]
        (again,) = find_in_tree(system.process.pid, "flows.watcher")
        assert again.pid != watcher.pid
        assert verdict.clean, (verdict, system.log()[-3000:])


def run_children(system: RunningSystem) -> list[psutil.Process]:
    """Processes running a flow run: children of the runner's forkserver but the watcher."""
    forkservers = [
        p for p in find_in_tree(system.process.pid, "forkserver") if p.ppid() == system.process.pid
    ]
    watchers = {p.pid for p in find_in_tree(system.process.pid, "flows.watcher")}
    return [c for f in forkservers for c in f.children() if c.pid not in watchers]
