"""Two venues on one central Prefect server (issue 13).

Each site runs `gfx-sync worker` with its own base folder, state folder and site id against
one `gfx-sync server` on PostgreSQL and one target database; both sites have the same PC names
and write sessions with the same ids. Every file must land once, under its own site; each
site's runs are its own deployments' (found by the site's tag); site A's worker SIGKILLed
mid-run leaves site B converging on its own, and A catches up when started again.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest
from faults.conftest import site_rig

from deployments.definitions import for_site
from flows.labels import site_tag
from support.central import CentralServer
from support.faults import Rig, Verdict, fetch_rows, queue_inflight
from support.processes import kill_everything
from support.system import wait_for

SITE_A, SITE_B = "venue-a", "venue-b"


def site_run_sources(api_url: str, site: str) -> set[str]:
    """What made the runs found by filtering on the site's tag: a deployment's name, or the
    flow's name for a run of no deployment (the watcher, which the worker runs itself)."""
    with httpx.Client(base_url=api_url, timeout=30) as client:
        runs = client.post(
            "/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": [site_tag(site)]}}, "limit": 200},
        ).json()
        deployments = {r["deployment_id"] for r in runs if r["deployment_id"]}
        flows = {r["flow_id"] for r in runs if not r["deployment_id"]}
        return {client.get(f"/deployments/{d}").json()["name"] for d in deployments} | {
            client.get(f"/flows/{f}").json()["name"] for f in flows
        }


@pytest.mark.timeout(900)
def test_two_sites_share_one_central_prefect_server(
    rig: Rig,
    central_prefect: CentralServer,
    tmp_path: Path,
    report: list[Verdict],
) -> None:
    api_url = central_prefect.api_url
    with contextlib.ExitStack() as stack:
        site_a = stack.enter_context(site_rig(rig, tmp_path / "a", SITE_A))
        site_b = stack.enter_context(site_rig(rig, tmp_path / "b", SITE_B))
        # Same seed and scenario: the same PC names and session ids at both sites.
        producer_a = site_a.producer(seed=13, scenario=41)
        producer_b = site_b.producer(seed=13, scenario=41)
        watch_a = stack.enter_context(site_a.watch())
        watch_b = stack.enter_context(site_b.watch())
        worker_b = stack.enter_context(site_b.up(command="worker", PREFECT_API_URL=api_url))
        with site_a.up(command="worker", PREFECT_API_URL=api_url) as worker_a:
            producer_a.run(3)
            producer_b.run(3)
            site_a.proxy.set_delay(0.3)  # slow commits at A only: a run is in flight at the kill
            writer_a = producer_a.run_in_background(4, interval=0.05)
            writer_b = producer_b.run_in_background(4, interval=0.05)
            wait_for(lambda: queue_inflight(site_a), timeout=60, interval=0.05)
            inflight = queue_inflight(site_a)
            kill_everything(worker_a)
            writer_a.join()
            writer_b.join()
            site_a.proxy.set_delay(0)

        started = time.monotonic()
        producer_b.new_session()
        verdict_b = site_b.converge(
            f"site {SITE_B} while {SITE_A}'s worker is dead",
            producer_b,
            watch=watch_b,
            started=started,
        )
        report.append(verdict_b)
        assert worker_b.process.poll() is None, worker_b.log()[-3000:]
        assert verdict_b.clean, (verdict_b, worker_b.log()[-3000:])

        with site_a.up(command="worker", PREFECT_API_URL=api_url) as worker_a:
            started = time.monotonic()
            producer_a.new_session()
            verdict_a = site_a.converge(
                f"site {SITE_A} after SIGKILL mid-run",
                producer_a,
                watch=watch_a,
                started=started,
                notes=f"{inflight} in flight at the kill",
            )
            report.append(verdict_a)
            assert verdict_a.clean, (verdict_a, worker_a.log()[-3000:])

        # One target, two sites: the same (PC, session) keys, each under its own site.
        keys_a = {(r.pc_id, r.session_id) for r in fetch_rows(rig.database_url, SITE_A)}
        keys_b = {(r.pc_id, r.session_id) for r in fetch_rows(rig.database_url, SITE_B)}
        assert keys_a & keys_b, "the same PC and session ids, written at both sites"
        assert len(fetch_rows(rig.database_url)) == len(keys_a) + len(keys_b)

        # Each site's runs are found by its tag: its watcher's, and runs of its own deployments
        # only, its realtime deployment among them (its files' events reached its trigger).
        for site in (SITE_A, SITE_B):
            sources = site_run_sources(api_url, site)
            assert {"gfx-watcher", for_site("realtime", site)} <= sources, sources
            deployments = sources - {"gfx-watcher"}
            assert all(name.endswith(f"-{site}") for name in deployments), sources
