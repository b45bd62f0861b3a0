"""`gfx-sync doctor` against real broken setups: a refused port, a name that cannot resolve, a
database without the schema, a role without privileges, read-only mounts, a small disk, a
lowered inotify limit, a missing PC folder, an unreachable Prefect server, a bad registry.
Each asserts the level and that the message names the thing (and the fix where there is one).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import psycopg
import pytest

from gfx_sync import doctor, inotify_tree
from gfx_sync.doctor import Finding, InotifyLimits, Level
from gfx_sync.migrate import migration_files
from gfx_sync.queue import ChangeKind, DurableQueue
from gfx_sync.settings import Settings
from support.disk import can_lower_inotify_limits, read_only_disk, small_disk
from support.postgrest import run_postgrest
from support.roles import as_user

SECRET = "pw-never-printed"
GFX_SYNC = Path(sys.executable).parent / "gfx-sync"
QUICK = 5.0  # seconds a doctor run may take when the target is down


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = tmp_path / "nas"
    (folder / "PC01" / "hands").mkdir(parents=True)
    return folder


def make_settings(tmp_path: Path, base: Path, **overrides: object) -> Settings:
    """Without a `database_url` the target is a refused port (not the embedded default: a
    test that is not about the target should not start a server)."""
    values: dict[str, object] = {
        "base_path": base,
        "state_dir": tmp_path / "state",
        "registry_path": tmp_path / "no-registry.json",
        "database_url": f"postgresql://gfx@127.0.0.1:{free_port()}/gfx",
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


def run(settings: Settings, **kwargs: object) -> list[Finding]:
    kwargs.setdefault("environ", {})
    return doctor.run_checks(settings, **kwargs)  # type: ignore[arg-type]


def the(findings: list[Finding], check: str) -> Finding:
    [found] = [f for f in findings if f.check == check]
    return found


def levels(findings: list[Finding]) -> dict[str, Level]:
    return {f.check: f.level for f in findings}


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def fake_prefect(version: str) -> Iterator[str]:
    """An HTTP server answering Prefect's /api/health and /api/admin/version; yields the API
    URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            bodies = {"/api/health": b"true", "/api/admin/version": orjson.dumps(version)}
            body = bodies.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body or b'{"detail": "Not Found"}')

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GFX_SYNC_", "PREFECT_"))}
    return subprocess.run(
        [str(GFX_SYNC), "doctor", *args],
        cwd=cwd,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_env(tmp_path: Path, base: Path, url: str) -> dict[str, str]:
    return {
        "GFX_SYNC_BASE_PATH": str(base),
        "GFX_SYNC_STATE_DIR": str(tmp_path / "state"),
        "GFX_SYNC_REGISTRY_PATH": str(tmp_path / "no-registry.json"),
        "GFX_SYNC_DATABASE_URL": url,
    }


# -- healthy ------------------------------------------------------------------------------------


def test_a_healthy_setup_is_all_ok_or_info(
    tmp_path: Path, base: Path, database_url: str, writer_user: str
) -> None:
    """Migrated database, reached as a least-privileged writer login, a PC folder: ready."""
    (base / "PC01" / "hands" / "day2").mkdir()
    settings = make_settings(tmp_path, base, database_url=as_user(database_url, writer_user))
    findings = run(settings)

    assert not doctor.has_blocker(findings)
    assert {f.level for f in findings} <= {Level.OK, Level.INFO}, doctor.render(findings)
    assert the(findings, "target").level is Level.OK
    assert f"Postgres {writer_user}@" in the(findings, "target").message
    newest = migration_files()[-1].stem
    assert the(findings, "schema") == Finding(
        Level.OK, "schema", f"current: {len(migration_files())} migration(s), newest {newest}"
    )
    assert the(findings, "privileges").level is Level.OK
    assert f"role {writer_user} may" in the(findings, "privileges").message
    assert the(findings, "clock").level is Level.OK
    assert the(findings, "PC PC01").message.startswith(f"{base / 'PC01' / 'hands'} readable")
    assert the(findings, "quarantine") == Finding(
        Level.OK, "quarantine", f"{base / '_error'} writable"
    )
    assert the(findings, "inotify watches").message.startswith(
        "5 folder(s) to watch natively: 2 in 1 PC folder(s), 3 for up's PC check"
    )
    assert the(findings, "prefect").level is Level.INFO
    # The probes left nothing behind: no state folder, no quarantine folder, no probe file.
    assert not (tmp_path / "state").exists() and not (base / "_error").exists()
    assert sorted(p.name for p in base.iterdir()) == ["PC01"]


def test_the_cli_exits_0_on_a_healthy_setup_and_1_when_the_target_is_down(
    tmp_path: Path, base: Path, database_url: str
) -> None:
    healthy = run_cli(cli_env(tmp_path, base, database_url), tmp_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert re.search(r"^OK +target +Postgres .* answers", healthy.stdout, re.M)
    assert healthy.stdout.rstrip().splitlines()[-1].startswith("doctor: ready")
    assert not re.search(r"^(FAIL|WARN) ", healthy.stdout, re.M)

    port = free_port()
    down = f"postgresql://gfx:{SECRET}@127.0.0.1:{port}/gfx"
    started = time.monotonic()
    broken = run_cli(cli_env(tmp_path, base, down), tmp_path)
    took = time.monotonic() - started
    assert broken.returncode == 1, broken.stdout + broken.stderr
    line = rf"^FAIL +target +Postgres gfx@127.0.0.1:{port}/gfx unreachable: .*Connection refused"
    assert re.search(line + r".*  -> start the database", broken.stdout, re.M)
    assert "doctor: NOT READY: 1 blocker(s)" in broken.stdout
    assert SECRET not in broken.stdout + broken.stderr
    assert took < QUICK + 5  # the interpreter's start included

    as_json = orjson.loads(run_cli(cli_env(tmp_path, base, down), tmp_path, "--json").stdout)
    assert as_json["ready"] is False
    assert {"level": "blocker", "check": "target"}.items() <= next(
        f for f in as_json["findings"] if f["check"] == "target"
    ).items()


def test_the_cli_checks_that_the_embedded_target_starts(tmp_path: Path, base: Path) -> None:
    env = cli_env(tmp_path, base, "")
    del env["GFX_SYNC_DATABASE_URL"]
    (tmp_path / "run").mkdir(mode=0o700)
    result = run_cli(env | {"XDG_RUNTIME_DIR": str(tmp_path / "run")}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^INFO +target +embedded Postgres in .*/state/postgres", result.stdout, re.M)
    assert re.search(r"^OK +target +embedded Postgres starts and answers", result.stdout, re.M)


# -- the target ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["refused port", "unresolvable host"])
def test_a_target_that_is_down_is_a_quick_blocker(tmp_path: Path, base: Path, where: str) -> None:
    host, port = ("127.0.0.1", free_port()) if where == "refused port" else ("nohost.invalid", 5432)
    url = f"postgresql://gfx:{SECRET}@{host}:{port}/gfx"
    settings = make_settings(tmp_path, base, database_url=url)
    started = time.monotonic()
    findings = run(settings)
    assert time.monotonic() - started < QUICK

    target = the(findings, "target")
    assert target.level is Level.BLOCKER
    assert target.message.startswith(f"Postgres gfx@{host}:{port}/gfx unreachable: ")
    if where == "refused port":
        assert "Connection refused" in target.message
        assert target.fix and target.fix.startswith("start the database")
    else:
        assert "nohost.invalid" in target.message
        assert target.fix and "check the host name in GFX_SYNC_DATABASE_URL" in target.fix
    for later in ("schema", "privileges", "clock"):
        assert the(findings, later) == Finding(
            Level.INFO, later, "not checked: the target did not answer"
        )
    assert SECRET not in doctor.render(findings) + doctor.to_json(findings)


def test_a_database_without_the_migrations_is_a_blocker_naming_migrate(
    tmp_path: Path, base: Path, empty_database_url: str
) -> None:
    findings = run(make_settings(tmp_path, base, database_url=empty_database_url))
    schema = the(findings, "schema")
    versions = [p.stem for p in migration_files()]
    assert schema.level is Level.BLOCKER
    assert schema.message == (
        f"behind: {len(versions)} of {len(versions)} migration(s) not applied "
        f"({', '.join(versions)})"
    )
    assert schema.fix and schema.fix.startswith("run `gfx-sync migrate`")
    assert the(findings, "target").level is Level.OK


def test_a_role_without_privileges_is_a_blocker_naming_them(
    tmp_path: Path, base: Path, database_url: str, postgres_server_url: str
) -> None:
    name = f"gfx_doctor_nobody_{os.getpid()}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"drop role if exists {name}")
        conn.execute(f"create role {name} login")
    try:
        findings = run(make_settings(tmp_path, base, database_url=as_user(database_url, name)))
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f"drop role if exists {name}")
    schema = the(findings, "schema")
    assert schema.level is Level.BLOCKER  # it may not even read the migration ledger
    assert schema.message.startswith("this role may not read public.gfx_sync_migrations")
    privileges = the(findings, "privileges")
    assert privileges.level is Level.BLOCKER
    assert privileges.message == (
        f"role {name} lacks SELECT on gfx_sessions, INSERT on gfx_sessions, UPDATE on "
        "gfx_sessions, INSERT on sync_events, SELECT on gfx_sync_migrations"
    )
    assert privileges.fix and f"grant gfx_sync_writer to {name}" in privileges.fix


def test_privileges_without_a_row_level_security_policy_are_a_blocker(
    tmp_path: Path, base: Path, database_url: str, postgres_server_url: str
) -> None:
    """Granted the table privileges directly instead of membership in gfx_sync_writer: every
    write would still be refused, as the policies name gfx_sync_writer."""
    name = f"gfx_doctor_granted_{os.getpid()}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f"drop role if exists {name}")
        conn.execute(f"create role {name} login")
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"grant select, insert, update on gfx_sessions to {name}")
            conn.execute(f"grant insert on sync_events to {name}")
            conn.execute(f"grant select on gfx_sync_migrations to {name}")
        findings = run(make_settings(tmp_path, base, database_url=as_user(database_url, name)))
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"drop owned by {name}")
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f"drop role if exists {name}")
    schema = the(findings, "schema")
    assert schema.level is Level.BLOCKER  # the ledger's rows are hidden from it as well
    assert schema.message.startswith(
        "this role may not read public.gfx_sync_migrations (privilege or row-level security)"
    )
    privileges = the(findings, "privileges")
    assert privileges.level is Level.BLOCKER
    assert privileges.message.startswith(
        f"row-level security: no policy lets role {name} SELECT on gfx_sessions, INSERT on "
        "gfx_sessions, UPDATE on gfx_sessions, INSERT on sync_events, SELECT on "
        "gfx_sync_migrations"
    )
    assert privileges.fix and f"grant gfx_sync_writer to {name}" in privileges.fix


def test_a_skewed_clock_is_a_warning_with_the_seconds(
    tmp_path: Path, base: Path, database_url: str
) -> None:
    """This machine's clock 10 s behind the database's (the clock the doctor reads, shifted)."""
    findings = run(
        make_settings(tmp_path, base, database_url=database_url), clock=lambda: time.time() - 10
    )
    clock = the(findings, "clock")
    assert clock.level is Level.WARNING
    match = re.match(r"the database clock is (\d+\.\d+) s ahead of this machine's", clock.message)
    assert match and 9.5 < float(match.group(1)) < 10.5, clock.message
    assert clock.fix and "NTP" in clock.fix
    assert not doctor.has_blocker(findings)


def test_the_supabase_rest_target_is_read_through_postgrest(
    tmp_path: Path, base: Path, database_url: str
) -> None:
    with run_postgrest(database_url) as server:
        settings = make_settings(
            tmp_path,
            base,
            supabase_url=server.url,
            supabase_service_key=server.key,
            database_url=None,
        )
        findings = run(settings)
        wrong = run(
            make_settings(
                tmp_path,
                base,
                supabase_url=server.url,
                supabase_service_key="x" * 20,
                database_url=None,
            )
        )
        requests = list(server.requests)
    assert the(findings, "target").level is Level.OK
    assert the(findings, "target").message.startswith(f"Supabase REST at {server.url} answers")
    assert the(findings, "schema").level in (Level.OK, Level.INFO)
    assert "gfx_sessions is there" in the(findings, "schema").message or (
        the(findings, "schema").message.startswith("current:")
    )
    assert the(findings, "clock").level is Level.OK
    assert not doctor.has_blocker(findings)
    probe = requests[0]
    assert (probe.method, probe.path) == ("GET", "/rest/v1/gfx_sessions")
    assert probe.query == {"select": "session_id", "limit": "0"}
    assert probe.headers["apikey"] == server.key
    assert server.key not in doctor.render(findings)

    target = the(wrong, "target")
    assert target.level is Level.BLOCKER
    assert "rejected the key (HTTP 401" in target.message
    assert target.fix and "SUPABASE_SERVICE_KEY" in target.fix


# -- folders ------------------------------------------------------------------------------------


def test_a_read_only_state_folder_is_a_blocker_naming_it(tmp_path: Path, base: Path) -> None:
    state = tmp_path / "state"
    with read_only_disk(state):
        findings = run(make_settings(tmp_path, base))
    found = the(findings, "state folder")
    assert found.level is Level.BLOCKER
    assert found.message == (f"cannot write in {state} (GFX_SYNC_STATE_DIR): Read-only file system")
    assert found.fix and "GFX_SYNC_STATE_DIR" in found.fix


def test_a_read_only_quarantine_folder_is_a_blocker_naming_it(tmp_path: Path, base: Path) -> None:
    error_dir = base / "_error"
    with read_only_disk(error_dir):
        findings = run(make_settings(tmp_path, base))
    found = the(findings, "quarantine")
    assert found.level is Level.BLOCKER
    assert found.message.startswith(f"cannot write in {error_dir}: Read-only file system")
    assert found.fix and str(error_dir) in found.fix


def test_a_quarantine_folder_that_cannot_be_created_is_a_blocker(
    tmp_path: Path, base: Path
) -> None:
    """The base folder itself read-only (the share mounted ro) and no `_error` yet."""
    with read_only_disk(base):
        findings = run(make_settings(tmp_path, base))
    found = the(findings, "quarantine")
    assert found.level is Level.BLOCKER
    assert found.message.startswith(
        f"cannot write in {base / '_error'}: cannot create it (Read-only file system)"
    )


@pytest.mark.parametrize(
    ("size", "level", "threshold"),
    [(32 * 1024**2, Level.BLOCKER, "64 MiB"), (512 * 1024**2, Level.WARNING, "1.0 GiB")],
)
def test_little_free_space_in_the_state_folder_says_the_numbers(
    tmp_path: Path, base: Path, size: int, level: Level, threshold: str
) -> None:
    state = tmp_path / "state"
    with small_disk(state, size):
        findings = run(make_settings(tmp_path, base))
    found = the(findings, "disk space")
    assert found.level is level
    assert re.fullmatch(
        rf"\d+ MiB free of {size // 1024**2} MiB on {state}: below {re.escape(threshold)}.*",
        found.message,
    ), found.message
    assert found.fix and "GFX_SYNC_STATE_DIR" in found.fix


def test_a_missing_pc_folder_is_a_warning_naming_it(tmp_path: Path, base: Path) -> None:
    registry = tmp_path / "pc_registry.json"
    registry.write_bytes(
        orjson.dumps(
            {
                "pcs": [
                    {"id": "PC01", "watch_path": "PC01/hands"},
                    {"id": "PC02", "watch_path": "PC02/hands"},
                    {"id": "PC03", "watch_path": "PC03/hands", "enabled": False},
                ]
            }
        )
    )
    findings = run(make_settings(tmp_path, base, registry_path=registry))
    assert [f.check for f in findings if f.level is Level.WARNING] == ["PC PC02"]
    missing = the(findings, "PC PC02")
    assert missing.level is Level.WARNING
    assert missing.message == (
        f"folder {base / 'PC02' / 'hands'} does not exist yet: it is watched once it exists"
    )
    assert the(findings, "PC PC01").level is Level.OK
    assert the(findings, "PC PC03") == Finding(
        Level.INFO, "PC PC03", "disabled in the registry: not watched"
    )
    assert the(findings, "registry").message == (f"{registry}: 3 PC(s), 2 enabled (PC01, PC02)")
    assert not (base / "PC02").exists()  # the doctor does not create it


def test_a_missing_base_folder_is_a_blocker(tmp_path: Path) -> None:
    base = tmp_path / "not-mounted"
    findings = run(make_settings(tmp_path, base))
    found = the(findings, "base folder")
    assert found.level is Level.BLOCKER
    assert found.message.startswith(f"{base} (GFX_SYNC_BASE_PATH) does not exist")
    assert the(findings, "quarantine").level is Level.INFO


def test_an_invalid_registry_is_a_blocker_naming_file_and_field(tmp_path: Path, base: Path) -> None:
    registry = tmp_path / "pc_registry.json"
    registry.write_bytes(orjson.dumps({"pcs": [{"id": "PC01", "watch_path": "../elsewhere"}]}))
    findings = run(make_settings(tmp_path, base, registry_path=registry))
    found = the(findings, "registry")
    assert found.level is Level.BLOCKER
    assert found.message.startswith(f"invalid PC registry {registry}: pcs.0.watch_path")
    assert "(PC 'PC01')" in found.message
    assert found.fix == f"correct {registry} (README: the registry)"
    assert the(findings, "PC folders").level is Level.INFO
    assert the(findings, "state folder").level is Level.OK  # the other checks still ran


def test_invalid_settings_are_a_blocker_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GFX_SYNC_BATCH_SIZE", "-5")
    findings = doctor.diagnose(environ={})
    assert findings[0].level is Level.BLOCKER and findings[0].check == "settings"
    assert findings[0].message.startswith("invalid setting GFX_SYNC_BATCH_SIZE")
    assert doctor.has_blocker(findings)


# -- the durable queue --------------------------------------------------------------------------


def test_dead_and_quarantined_items_are_a_warning_naming_requeue(
    tmp_path: Path, base: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, base, database_url=database_url)
    with DurableQueue(settings.resolved_queue_path) as queue:
        for n in range(3):
            queue.enqueue("PC01", str(base / "PC01" / "hands" / f"{n}.json"), ChangeKind.ADDED)
        dead, broken, _ = queue.claim(3, worker="test")
        queue.dead_letter(dead.id, "rejected")
        queue.quarantine(broken.id, "truncated JSON")
    findings = run(settings)
    found = the(findings, "queue")
    assert found.level is Level.WARNING
    assert "1 dead, 1 quarantined" in found.message
    assert str(settings.resolved_queue_path) in found.message
    assert found.fix and "`gfx-sync requeue`" in found.fix
    assert not doctor.has_blocker(findings)


# -- inotify ------------------------------------------------------------------------------------


needs_inotify = pytest.mark.skipif(not inotify_tree.AVAILABLE, reason="needs Linux inotify")


@needs_inotify
def test_an_inotify_limit_below_the_folders_is_a_blocker_with_the_sysctl_fix(
    tmp_path: Path, base: Path
) -> None:
    hands = base / "PC01" / "hands"
    for name in ("a", "b", "c/d", ".sync/x", "_old"):  # hidden and `_` folders are not watched
        (hands / name).mkdir(parents=True)
    (base / "PC02" / "hands").mkdir(parents=True)

    def limits() -> InotifyLimits:
        return InotifyLimits(4, "fs.inotify.max_user_watches", 0, "fs.inotify.max_user_instances")

    findings = run(make_settings(tmp_path, base), inotify_limits=limits)
    watches = the(findings, "inotify watches")
    assert watches.level is Level.BLOCKER
    assert watches.message.startswith(
        "10 folder(s) to watch natively: 6 in 2 PC folder(s), 4 for up's PC check, "
        "fs.inotify.max_user_watches=4: too low"
    )
    assert watches.fix and watches.fix.startswith("sysctl -w fs.inotify.max_user_watches=")
    instances = the(findings, "inotify instances")
    assert instances.level is Level.BLOCKER
    assert instances.fix and instances.fix.startswith("sysctl -w fs.inotify.max_user_instances=")


@pytest.mark.skipif(
    not can_lower_inotify_limits(),
    reason="needs inotify and `unshare --user` with a writable /proc/sys/user (own user namespace)",
)
def test_the_cli_reads_the_real_limit_of_a_user_namespace(
    tmp_path: Path, base: Path, database_url: str
) -> None:
    """The kernel's own limit, lowered for real in a user namespace of the doctor's own (a
    container's case): the lowest limit applies, and the doctor names that one."""
    for n in range(3):
        (base / "PC01" / "hands" / f"sub{n}").mkdir()
    env = cli_env(tmp_path, base, database_url)
    result = subprocess.run(
        [
            shutil.which("unshare") or "unshare",
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            f'echo 2 > /proc/sys/user/max_inotify_watches && exec "{GFX_SYNC}" doctor',
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if " inotify watches " in x)
    assert re.match(r"FAIL +inotify watches +7 folder\(s\) to watch natively", line), line
    assert "user.max_inotify_watches=2: too low" in line
    assert "-> sysctl -w user.max_inotify_watches=" in line


# -- Prefect and the doctor itself --------------------------------------------------------------


def test_an_unreachable_prefect_server_is_a_blocker(tmp_path: Path, base: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    findings = run(make_settings(tmp_path, base), environ={"PREFECT_API_URL": url})
    found = the(findings, "prefect")
    assert found.level is Level.BLOCKER
    assert found.message.startswith(
        f"the Prefect server at {url} (PREFECT_API_URL) does not answer: ConnectError"
    )
    assert found.fix and "unset it so `gfx-sync up` starts its own" in found.fix


@pytest.mark.parametrize(("server", "level"), [("same", Level.OK), ("3.1.15", Level.WARNING)])
def test_the_prefect_server_version_is_compared_with_the_client(
    tmp_path: Path, base: Path, server: str, level: Level
) -> None:
    import importlib.metadata

    client = importlib.metadata.version("prefect")
    version = client if server == "same" else server
    with fake_prefect(version) as url:
        findings = run(make_settings(tmp_path, base), environ={"PREFECT_API_URL": url})
    found = the(findings, "prefect")
    assert found.level is level
    assert f"Prefect server at {url} healthy" in found.message
    assert f"server {version}, client {client}" in found.message


def test_a_check_that_raises_is_a_blocker_and_the_others_still_run(
    tmp_path: Path, base: Path
) -> None:
    def broken() -> InotifyLimits:
        raise RuntimeError("simulated")

    findings = run(make_settings(tmp_path, base), inotify_limits=broken)
    assert the(findings, "inotify") == Finding(
        Level.BLOCKER,
        "inotify",
        "the check itself failed: RuntimeError: simulated",
        "run `gfx-sync -v doctor` and report it",
    )
    assert levels(findings)["state folder"] is Level.OK
    assert "prefect" in levels(findings)


def test_render_aligns_one_line_per_finding_with_its_fix() -> None:
    findings = [
        Finding(Level.OK, "target", "answers"),
        Finding(Level.WARNING, "queue", "1 dead", "`gfx-sync requeue`"),
        Finding(Level.BLOCKER, "inotify watches", "too low", "sysctl -w x=1"),
    ]
    assert doctor.render(findings, 0.25).splitlines() == [
        "OK    target           answers",
        "WARN  queue            1 dead  -> `gfx-sync requeue`",
        "FAIL  inotify watches  too low  -> sysctl -w x=1",
        "doctor: NOT READY: 1 blocker(s), 1 warning(s) (0.25 s)",
    ]
