"""`gfx-sync deploy` for two sites on one real Prefect server: each site's deployments, work
pool and alert automations, apart from the other's; idempotent; and a site's file events
start runs of that site's realtime deployment only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.definitions import for_site
from flows.labels import SITE_LABEL, site_tag
from flows.watcher import FILE_ADDED_EVENT
from support.prefect_env import post_file_added, prefect_server
from support.system import wait_for

ROOT = Path(__file__).resolve().parents[1]
SITES = ("venue-a", "venue-b")
KINDS = ("watcher", "realtime", "batch", "recovery", "backfill", "derive", "export")

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as api_url:
        yield api_url


def deploy(api_url: str, site: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The real command, as an operator runs it at a site."""
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home / "prefect"),
        "GFX_SYNC_SITE": site,
        "GFX_SYNC_STATE_DIR": str(home / "state"),
        "GFX_SYNC_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/alerts",
    }
    return subprocess.run(
        [sys.executable, "-m", "deployments.app", "deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def listed(api_url: str, collection: str, body: dict[str, Any] | None = None) -> list[dict]:
    response = httpx.post(f"{api_url}/{collection}/filter", json=body or {}, timeout=30)
    response.raise_for_status()
    return response.json()


def site_deployments(api_url: str, site: str) -> dict[str, dict]:
    found = listed(api_url, "deployments", {"deployments": {"tags": {"all_": [site_tag(site)]}}})
    return {d["name"]: d for d in found}


@pytest.fixture(scope="module")
def deployed(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    for site in SITES:
        result = deploy(prefect_api, site, tmp_path_factory.mktemp(site))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"work pool {for_site('gfx-sync', site)}" in result.stdout, result.stdout
    return prefect_api


def test_each_site_gets_its_own_deployments_pool_and_alerts(deployed: str) -> None:
    for site in SITES:
        deployments = site_deployments(deployed, site)
        assert set(deployments) == {f"{kind}-{site}" for kind in KINDS}
        assert {d["work_pool_name"] for d in deployments.values()} == {f"gfx-sync-{site}"}
        realtime = deployments[f"realtime-{site}"]
        assert realtime["concurrency_limit"] == 1 or realtime["global_concurrency_limit"]
    pools = {pool["name"] for pool in listed(deployed, "work_pools")}
    assert {"gfx-sync-venue-a", "gfx-sync-venue-b"} <= pools
    automations = sorted(a["name"] for a in listed(deployed, "automations"))
    for site in SITES:
        assert len([name for name in automations if f"(site {site})" in name]) == 2, automations
    # The realtime trigger of each site matches its own site's events only.
    triggers = [
        a["trigger"]
        for a in listed(deployed, "automations")
        if FILE_ADDED_EVENT in a["trigger"].get("expect", [])
    ]
    assert sorted(t["match"][SITE_LABEL] for t in triggers) == sorted(SITES)


def test_deploying_again_changes_nothing(deployed: str, tmp_path: Path) -> None:
    before = {site: site_deployments(deployed, site) for site in SITES}
    automations = automation_views(deployed)
    result = deploy(deployed, SITES[0], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(created)" not in result.stdout  # the pool was there already
    after = {site: site_deployments(deployed, site) for site in SITES}
    for site in SITES:
        assert {n: d["id"] for n, d in after[site].items()} == {
            n: d["id"] for n, d in before[site].items()
        }
    assert automation_views(deployed) == automations


def automation_views(api_url: str) -> list[tuple[str, str | None]]:
    """Every automation by name, and by id for gfx-sync's alerts (updated in place); Prefect
    replaces a deployment's trigger automations with new ones on every apply."""
    return sorted(
        (a["name"], a["id"] if a["name"].startswith("gfx-sync") else None)
        for a in listed(api_url, "automations")
    )


def realtime_runs(api_url: str, site: str) -> list[dict]:
    deployment = site_deployments(api_url, site)[f"realtime-{site}"]
    return listed(
        api_url, "flow_runs", {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}
    )


def test_a_sites_file_event_starts_a_run_of_that_sites_realtime_deployment_only(
    deployed: str,
) -> None:
    """B's event first, then A's: a run that B's event started for A would exist before A's
    own run does, so once A's run is there, every run of A's deployment must be A's file."""
    paths = {site: f"/nas/{site}/PC01/hands/session-{site}.json" for site in SITES}
    for site in reversed(SITES):
        with httpx.Client(base_url=deployed, timeout=10) as client:
            post_file_added(client, site, "PC01", paths[site])
        wait_for(
            lambda site=site: [
                r for r in realtime_runs(deployed, site) if r["parameters"]["path"] == paths[site]
            ],
            timeout=60,
        )
    for site in SITES:
        runs = realtime_runs(deployed, site)
        assert [r["parameters"]["path"] for r in runs] == [paths[site]]
        assert site_tag(site) in runs[0]["tags"]
