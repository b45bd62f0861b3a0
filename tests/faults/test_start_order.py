"""Start in any order: `gfx-sync up` starts while a part is missing, records every change, and
converges on its own once the part appears.

The target (Postgres refusing, its host name unresolvable; Supabase REST not listening), a
remote Prefect server, the NAS mount: each is missing when `up` starts, PokerGFX keeps writing,
then the part appears and the judge compares the table with the producer's truth. What cannot
be waited out (a state folder that cannot hold the queue, an invalid registry) stops the start
with a message naming the folder or the file and the field.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from faults.conftest import open_rig

from gfx_sync.health import WATCHER_FILE, read_state
from support.disk import fill, read_only_disk, small_disk
from support.faults import PCS, Producer, Rig, Verdict, env_seconds, fetch_rows
from support.postgrest import run_postgrest
from support.processes import PrefectServer, kill_everything
from support.system import free_port, gfx_sync_up, wait_for

HOSTS = Path("/etc/hosts")


@pytest.fixture
def empty_rig(postgres_server_url: str, migrated_template: str, tmp_path: Path) -> Iterator[Rig]:
    """A rig whose database is empty: gfx-sync itself must migrate it once it answers."""
    with open_rig(postgres_server_url, tmp_path, template="template0") as rig:
        yield rig


@pytest.mark.timeout(600)
def test_target_refusing_at_start_killed_and_restarted_then_back(
    empty_rig: Rig, report: list[Verdict]
) -> None:
    """The issue's venue check: the target is cut, PokerGFX writes (new sessions, one grows),
    `up` starts, is SIGKILLed and started again, all while the target refuses; then it
    answers. The schema is applied then, and every session arrives, newest snapshot."""
    rig = empty_rig
    down = env_seconds("GFX_SYNC_FAULTS_START_DOWN", 6)
    producer = rig.producer(seed=31, scenario=31)
    rig.proxy.refuse(True)
    producer.run(1, interval=0.1)  # written before gfx-sync ever ran
    with rig.up() as system:
        assert "the target is unreachable" in system.log()
        producer.run(down, interval=0.1)
        kill_everything(system)
    for _ in range(10):  # nothing runs: PokerGFX keeps writing
        producer.step()
    with rig.up() as system, rig.watch() as watch:
        producer.run(down, interval=0.1)
        assert not table_exists(rig.database_url)  # nothing reached it: the test is real
        rig.proxy.refuse(False)
        started = time.monotonic()
        producer.new_session()  # new data still flows after the fault
        verdict = rig.converge(
            f"start, target refusing {2 * down:.0f} s + kill", producer, watch=watch,
            started=started,
        )  # fmt: skip
        report.append(verdict)
        assert verdict.clean, (verdict, system.log()[-3000:])
        assert system.process.poll() is None


def table_exists(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("select to_regclass('public.gfx_sessions') is not null").fetchone()[0]


@contextlib.contextmanager
def host_alias(name: str) -> Iterator[Callable[[], None]]:
    """A host name that does not resolve until `resolve()` adds it to /etc/hosts (removed
    again at the end). The resolver reads /etc/hosts at each look-up."""
    if not os.access(HOSTS, os.W_OK):
        pytest.skip("/etc/hosts is not writable: cannot make a host name resolve later")
    original = HOSTS.read_bytes()

    def resolve() -> None:
        HOSTS.write_bytes(original.rstrip(b"\n") + f"\n127.0.0.1 {name}\n".encode())

    try:
        yield resolve
    finally:
        HOSTS.write_bytes(original)


@pytest.mark.timeout(600)
def test_target_host_name_unresolvable_at_start_then_resolving(
    rig: Rig, report: list[Verdict]
) -> None:
    name = f"gfx-target-{os.getpid()}.test"
    with contextlib.suppress(OSError):
        socket.getaddrinfo(name, 5432)
        pytest.fail(f"{name} resolves already")
    down = env_seconds("GFX_SYNC_FAULTS_START_DOWN", 6)
    producer = rig.producer(seed=32, scenario=32)
    url = rig.system_url.replace("host=127.0.0.1", f"host={name}")
    assert name in url, url
    with (
        host_alias(name) as resolve,
        rig.up(GFX_SYNC_DATABASE_URL=url) as system,
        rig.watch() as watch,
    ):
        assert "the target is unreachable" in system.log()
        producer.run(down, interval=0.1)
        resolve()
        started = time.monotonic()
        producer.new_session()
        verdict = rig.converge(
            f"start, target name unresolvable {down:.0f} s", producer, watch=watch,
            started=started,
        )  # fmt: skip
    report.append(verdict)
    assert verdict.clean, (verdict, system.log()[-3000:])


@pytest.mark.timeout(600)
def test_rest_target_not_listening_at_start_then_up(rig: Rig, report: list[Verdict]) -> None:
    down = env_seconds("GFX_SYNC_FAULTS_START_DOWN", 6)
    producer = rig.producer(seed=33, scenario=33)
    port = free_port()
    key = "sb_secret_test_start_order"
    env = rig.env(SUPABASE_URL=f"http://127.0.0.1:{port}", SUPABASE_SERVICE_KEY=key)
    del env["GFX_SYNC_DATABASE_URL"]
    producer.run(1, interval=0.1)
    with gfx_sync_up(env, cwd=rig.state) as system, rig.watch() as watch:
        producer.run(down, interval=0.1)
        with run_postgrest(rig.database_url, key=key, port=port):
            started = time.monotonic()
            producer.new_session()
            verdict = rig.converge(
                f"start, REST target down {down:.0f} s", producer, watch=watch, started=started
            )
    report.append(verdict)
    assert verdict.clean, (verdict, system.log()[-3000:])


@pytest.mark.timeout(600)
def test_remote_prefect_unreachable_at_start_then_up(
    rig: Rig, report: list[Verdict], tmp_path: Path
) -> None:
    """PREFECT_API_URL names a server that is not running yet: the watcher and the standby
    drainer work without it; once it answers, the deployments are registered and new files
    go through realtime runs."""
    down = env_seconds("GFX_SYNC_FAULTS_START_DOWN", 6)
    producer = rig.producer(seed=34, scenario=34)
    server = PrefectServer(tmp_path / "prefect")
    with rig.up(
        until="watching", PREFECT_API_URL=server.api_url, GFX_SYNC_ORCHESTRATOR_GRACE="2"
    ) as system:
        try:
            with rig.watch() as watch:
                producer.run(down, interval=0.1)
                # The standby drainer syncs while there is no Prefect server at all.
                wait_for(lambda: synced(producer, rig).startswith(("0/",)) is False, timeout=60)
                during = synced(producer, rig)
                assert watcher_mode(rig.state) == "without Prefect"
                server.start()
                wait_for(lambda: "gfx-sync is up" in system.log(), timeout=120)
                # The watcher hands over to a flow run of its own, which announces files.
                wait_for(lambda: watcher_mode(rig.state) == "flow", timeout=60)
                started = time.monotonic()
                producer.new_session()
                verdict = rig.converge(
                    f"start, Prefect down {down:.0f} s", producer, watch=watch, started=started,
                    notes=f"synced while down {during}",
                )  # fmt: skip
            report.append(verdict)
            assert verdict.clean, (verdict, system.log()[-3000:])
            assert "Prefect at" in system.log() and "is unreachable" in system.log()
        finally:
            server.stop()


def synced(producer: Producer, rig: Rig) -> str:
    rows = {(r.pc_id, r.session_id): r.file_hash for r in fetch_rows(rig.database_url)}
    current = sum(1 for k, s in producer.truth.items() if rows.get(k) == s.file_hash)
    return f"{current}/{len(producer.truth)}"


@pytest.mark.timeout(600)
def test_nas_not_mounted_at_start_then_mounted(
    rig: Rig, report: list[Verdict], tmp_path: Path
) -> None:
    """The base folder does not exist when `up` starts (the NAS mount is late); it appears
    with the PC folders and files PokerGFX wrote on the NAS meanwhile."""
    later = env_seconds("GFX_SYNC_FAULTS_START_DOWN", 6)
    nas = tmp_path / "nas-share"  # the share as the NAS holds it
    for pc in PCS:
        (nas / pc / "hands").mkdir(parents=True)
    mount_point = tmp_path / "mnt" / "gfx"  # missing at start, mount point included
    producer = Producer(nas, PCS, seed=35, scenario=35)
    with rig.up(until="watching", GFX_SYNC_BASE_PATH=str(mount_point)) as system:
        assert "does not exist" in system.log()
        producer.run(later, interval=0.1)  # written on the NAS while not mounted here
        mount_point.parent.mkdir(parents=True)
        mount_point.symlink_to(nas)  # "mounted": the base now shows the share
        producer.base = mount_point
        with rig.watch() as watch:
            started = time.monotonic()
            producer.new_session()
            producer.run(2, interval=0.1)
            verdict = rig.converge(
                f"start, NAS mounted after {later:.0f} s", producer, watch=watch, started=started
            )
    report.append(verdict)
    assert verdict.clean, (verdict, system.log()[-3000:])


@pytest.mark.timeout(600)
def test_files_written_throughout_watcher_restarts_arrive_without_a_scheduled_rescan(
    rig: Rig, report: list[Verdict]
) -> None:
    """No window: PokerGFX writes all along while a PC joins (the watcher restarts to watch
    it) and while the watcher is SIGKILLed (restarted by `up`). The scheduled recovery is an
    hour away, so every file must come through the watchers themselves: each new watcher
    rescans once its watches are in place."""
    producer = Producer(rig.base, ("PC01", "PC02"), seed=36, scenario=36)
    with (
        rig.up(GFX_SYNC_RECOVERY_INTERVAL="3600") as system,
        rig.watch() as watch,
    ):
        first = ready_watcher(rig.state)
        writer = producer.run_in_background(20, interval=0.05)
        (rig.base / "PC04" / "hands").mkdir(parents=True)  # a PC joins mid-broadcast
        producer.pcs = ("PC01", "PC02", "PC04")  # and writes throughout the watcher's restart
        wait_for(lambda: ready_watcher(rig.state) not in (None, first), timeout=60)
        assert "restarting the watcher" in system.log()
        second = ready_watcher(rig.state)
        assert second is not None
        os.kill(second, signal.SIGKILL)  # then the new watcher dies mid-broadcast
        writer.join()
        started = time.monotonic()
        joined = sum(1 for pc, _ in producer.truth if pc == "PC04")
        verdict = rig.converge(
            "writes through watcher restarts", producer, watch=watch, started=started,
            notes=f"{joined} sessions on the joining PC",
        )  # fmt: skip
    report.append(verdict)
    assert verdict.clean, (verdict, system.log()[-3000:])
    assert joined > 0
    assert "the watcher exited" in system.log()


def ready_watcher(state: Path) -> int | None:
    """The pid of the watcher whose watches are in place, if any (its readiness file)."""
    document = read_state(state / WATCHER_FILE)
    return document.get("pid") if document else None


def watcher_mode(state: Path) -> str | None:
    """How the ready watcher runs: as a flow run, or without Prefect."""
    document = read_state(state / WATCHER_FILE)
    return document.get("mode") if document else None


def run_up(env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployments.app", "up"],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def full_disk(where: Path) -> Iterator[Path]:
    with small_disk(where, 256 * 1024):
        fill(where / "filler")
        yield where


@pytest.mark.parametrize(
    ("disk", "why"),
    [(read_only_disk, "Read-only file system"), (full_disk, "No space left on device")],
    ids=["read-only", "full"],
)
def test_an_unusable_state_folder_stops_the_start_naming_it(
    rig: Rig, tmp_path: Path, disk: Callable, why: str
) -> None:
    state = tmp_path / "state-folder"
    with disk(state):
        done = run_up(rig.env(GFX_SYNC_STATE_DIR=str(state)), cwd=tmp_path)
    assert done.returncode == 1, done
    assert f"the state folder {state} is not usable: {why}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_invalid_registry_stops_the_start_naming_the_file_and_field(
    rig: Rig, tmp_path: Path
) -> None:
    registry = tmp_path / "pc_registry.json"
    registry.write_text('{"pcs": [{"id": "PC01", "watch_path": "PC01/hands", "enabled": "maybe"}]}')
    done = run_up(rig.env(GFX_SYNC_REGISTRY_PATH=str(registry)), cwd=tmp_path)
    assert done.returncode == 2, done
    assert f"invalid PC registry {registry}" in done.stderr
    assert "pcs.0.enabled" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_unknown_setting_value_stops_the_start_naming_the_setting(
    rig: Rig, tmp_path: Path
) -> None:
    done = run_up(rig.env(GFX_SYNC_RUNNER="lukewarm"), cwd=tmp_path)
    assert done.returncode == 2, done
    assert "GFX_SYNC_RUNNER" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
