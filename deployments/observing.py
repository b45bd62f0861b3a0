"""Prefect's part of the operator's snapshot: is the orchestrator there (or is the standby
drainer covering for it), which of this site's runs failed or crashed lately, and where its UI
is.

Read over Prefect's REST API with plain HTTP (no Prefect import before `up` has set
PREFECT_API_URL), at most once per `cache_seconds` whatever
the number of snapshots taken (each open console page takes one per change).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from flows.labels import site_tag
from gfx_sync.health import prefect_reachable
from gfx_sync.observe import FailedRun, OrchestratorView
from gfx_sync.settings import DEFAULT_SITE

FAILED_RUNS_WINDOW = timedelta(hours=24)
FAILED_RUNS_SHOWN = 20


class PrefectView:
    """A callable for `Observer(orchestrator=...)`."""

    def __init__(
        self,
        api_url: str,
        ui_url: str,
        *,
        site: str = DEFAULT_SITE,
        standby_draining: Callable[[], bool] = lambda: False,
        cache_seconds: float = 5.0,
        timeout: float = 3.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.ui_url = ui_url.rstrip("/")
        self.site = site
        self._standby_draining = standby_draining
        self.cache_seconds = cache_seconds
        self._timeout = timeout
        self._flow_names: dict[str, str] = {}
        self._cached: tuple[float, OrchestratorView] | None = None
        self._lock = threading.Lock()
        # One client for every look: making one builds a TLS context (tens of ms of CPU).
        self._client = httpx.Client(base_url=self.api_url, timeout=timeout)

    def __call__(self) -> OrchestratorView:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            view = self._look()
            self._cached = (time.monotonic(), view)
            return view

    def close(self) -> None:
        self._client.close()

    def _look(self) -> OrchestratorView:
        if not prefect_reachable(self.api_url, timeout=self._timeout):
            if self._standby_draining():
                return OrchestratorView(
                    True, "Prefect unreachable: the standby drainer syncs", ui_url=self.ui_url
                )
            return OrchestratorView(False, f"Prefect at {self.api_url} unreachable", ui_url=None)
        try:
            failed = self._failed_runs()
        except httpx.HTTPError as exc:
            return OrchestratorView(
                True, f"Prefect reachable (runs unreadable: {exc})", ui_url=self.ui_url
            )
        return OrchestratorView(True, "Prefect reachable", failed_runs=failed, ui_url=self.ui_url)

    def _failed_runs(self) -> list[FailedRun]:
        since = datetime.now(UTC) - FAILED_RUNS_WINDOW
        client = self._client
        response = client.post(
            "/flow_runs/filter",
            json={
                "flow_runs": {
                    "state": {"type": {"any_": ["FAILED", "CRASHED"]}},
                    "tags": {"all_": [site_tag(self.site)]},
                    "expected_start_time": {"after_": since.isoformat()},
                },
                "sort": "EXPECTED_START_TIME_DESC",
                "limit": FAILED_RUNS_SHOWN,
            },
        )
        response.raise_for_status()
        runs = response.json()
        unknown = sorted({r["flow_id"] for r in runs} - set(self._flow_names))
        if unknown:
            flows = client.post("/flows/filter", json={"flows": {"id": {"any_": unknown}}})
            flows.raise_for_status()
            self._flow_names.update({f["id"]: f["name"] for f in flows.json()})
        return [
            FailedRun(
                name=run["name"],
                flow=self._flow_names.get(run["flow_id"], ""),
                state=(run.get("state") or {}).get("name") or run.get("state_type") or "",
                message=((run.get("state") or {}).get("message") or "")[:500],
                at=_epoch(run.get("end_time") or run.get("start_time")),
                url=f"{self.ui_url}/runs/flow-run/{run['id']}",
            )
            for run in runs
        ]


def _epoch(text: str | None) -> float:
    return datetime.fromisoformat(text).timestamp() if text else 0.0
