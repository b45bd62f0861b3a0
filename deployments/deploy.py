"""`gfx-sync deploy`: register one site's deployments on a Prefect server others share.

What `up` and `worker` register as they start, without running anything: the site's
deployments (names and tags carrying the site, the realtime trigger matching only its events,
schedules, per-deployment concurrency) on the site's work pool, the watcher's deployment for
that pool, and the site's alert automations. For `prefect worker start --pool <the site's
pool>` (slower than `gfx-sync worker`, which serves the same deployments itself), or to see a
site's deployments on the server before its agent first starts. Idempotent.
"""

from __future__ import annotations

import os
import sys

import httpx

from gfx_sync.health import prefect_reachable
from gfx_sync.settings import Settings

POOL_TYPE = "process"
VACUUMED = ("flow_runs", "events")


def deploy(settings: Settings) -> int:
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        print("gfx-sync: `gfx-sync deploy` needs PREFECT_API_URL", file=sys.stderr)
        return 1
    if not prefect_reachable(api_url, timeout=settings.request_timeout):
        print(f"gfx-sync: the Prefect server at {api_url} does not answer", file=sys.stderr)
        return 1
    # Prefect reads PREFECT_API_URL when first imported: only now.
    from deployments.automations import ensure_alert_automation
    from deployments.definitions import WORK_POOL, for_site, work_pool_deployments

    pool = for_site(WORK_POOL, settings.site)
    created = ensure_work_pool(pool)
    deployments = work_pool_deployments(settings)
    for deployment in deployments:
        deployment.apply(work_pool_name=pool)
    automation = ensure_alert_automation(settings)
    print(
        f"gfx-sync: site {settings.site}: {len(deployments)} deployments on work pool {pool}"
        f"{' (created)' if created else ''}: "
        + ", ".join(f"{d.flow_name}/{d.name}" for d in deployments)
        + ("; alert automations updated" if automation is not None else "; alerts off"),
        flush=True,
    )
    for warning in retention_warnings(api_url):
        print(f"gfx-sync: warning: {warning}", file=sys.stderr, flush=True)
    return 0


def ensure_work_pool(name: str) -> bool:
    """Create the site's work pool if the server has none of that name; True if created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=POOL_TYPE))
        except ObjectAlreadyExists:  # another site's deploy made it meanwhile
            return False
        return True


def retention_warnings(api_url: str) -> list[str]:
    """The history is the server's to vacuum: say so when it keeps every run and event
    forever (each site's 5-s schedule alone is 17,280 runs a day)."""
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/admin/settings", timeout=10)
        response.raise_for_status()
        vacuum = response.json()["server"]["services"]["db_vacuum"]
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        return [f"could not read the server's vacuum settings ({type(exc).__name__})"]
    enabled = vacuum.get("enabled")
    enabled = set(enabled) if isinstance(enabled, list) else {str(enabled)}
    missing = [kind for kind in VACUUMED if kind not in enabled]
    if not missing:
        return []
    return [
        f"the Prefect server does not vacuum {' and '.join(missing)}: its database grows "
        "without bound; run it with PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=events,flow_runs "
        "(`gfx-sync server` does, with GFX_SYNC_RUN_RETENTION_HOURS)"
    ]
