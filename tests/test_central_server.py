"""`gfx-sync server`: the central Prefect server many sites share, on PostgreSQL, with the
run and event retention gfx-sync's own server keeps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from support.central import CentralServer

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.prefect


def test_the_central_server_keeps_its_state_in_postgresql(
    central_prefect: CentralServer, tmp_path: Path
) -> None:
    assert httpx.get(f"{central_prefect.api_url}/health", timeout=10).status_code == 200
    result = subprocess.run(
        [sys.executable, "-m", "deployments.app", "deploy"],
        cwd=ROOT,
        env={
            **os.environ,
            "PREFECT_API_URL": central_prefect.api_url,
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "GFX_SYNC_STATE_DIR": str(tmp_path / "state"),
            "GFX_SYNC_SITE": "central-check",
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The server's vacuum is on (`gfx-sync server` sets it): deploy has nothing to warn about.
    assert "does not vacuum" not in result.stderr, result.stderr
    with psycopg.connect(central_prefect.database_url) as conn:
        stored = {name for (name,) in conn.execute("select name from deployment")}
        (trigram,) = conn.execute(
            "select count(*) from pg_extension where extname = 'pg_trgm'"
        ).fetchone()
    assert {"realtime-central-check", "watcher-central-check"} <= stored
    assert trigram == 1


def test_deploy_warns_when_the_server_keeps_history_forever(tmp_path: Path) -> None:
    """A server not started by gfx-sync: Prefect vacuums old events by default, never old runs."""
    from support.prefect_env import prefect_server

    with prefect_server(tmp_path / "home") as api_url:
        result = subprocess.run(
            [sys.executable, "-m", "deployments.app", "deploy"],
            cwd=ROOT,
            env={
                **os.environ,
                "PREFECT_API_URL": api_url,
                "PREFECT_HOME": str(tmp_path / "prefect"),
                "GFX_SYNC_STATE_DIR": str(tmp_path / "state"),
            },
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "does not vacuum flow_runs" in result.stderr, result.stderr
    assert "work pool gfx-sync " in result.stdout  # the default site keeps its names
