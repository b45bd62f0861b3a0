"""A temporary, isolated Prefect server for tests that call flows in-process.

Why a wrapper around `prefect_test_harness`: the harness alone writes into the shared
~/.prefect (other engineers' runs, `gfx-sync up`), lets the server's telemetry job race the
fresh SQLite schema, and persists events only every 5 s. Here the Prefect home is a temporary
folder, telemetry is off and events are flushed quickly, so tests can read them back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import orjson
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.objects import Artifact
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_HOME,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL,
    temporary_settings,
)
from prefect.states import State
from prefect.testing.utilities import prefect_test_harness


@contextlib.contextmanager
def prefect_server(home: Path, startup_timeout: int = 90) -> Iterator[str]:
    """Start a temporary Prefect server (SQLite, its own home); yield its API URL."""
    updates: dict[Any, Any] = {
        PREFECT_HOME: home,
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL: 0.5,
    }
    with (
        temporary_settings(updates=updates),
        prefect_test_harness(server_startup_timeout=startup_timeout),
    ):
        yield str(PREFECT_API_URL.value())


def read_events(
    api_url: str, name: str, resource_id: str | None = None, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Events named `name` (about `resource_id`) the server has persisted, waiting until at
    least one is there: events travel client -> websocket -> persister asynchronously."""
    event_filter: dict[str, Any] = {"event": {"name": [name]}}
    if resource_id is not None:
        event_filter["resource"] = {"id": [resource_id]}
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(
            f"{api_url}/events/filter", json={"filter": event_filter, "limit": 50}, timeout=10
        )
        response.raise_for_status()
        events = response.json()["events"]
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.25)


def reset_runtime() -> None:
    """Forget the process's cached settings, queue, site and engine (closing them), so the
    next task builds them again from the environment."""
    from tasks import runtime

    runtime.reset()


DUMPED_COLLECTIONS = (
    "flow_runs",  # parameters, state messages, names, tags, job variables
    "task_runs",
    "logs",
    "artifacts",
    "events",
    "deployments",
    "variables",
    "block_documents",
    "automations",
    "work_pools",
)


def dump_server(api_url: str) -> dict[str, str]:
    """Everything a Prefect server holds that gfx-sync could have written to it, as JSON text
    per object (`collection[i]`): for scanning, e.g. for leaked secrets."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs are sent in the background: send what is queued
    dumped: dict[str, str] = {}
    with httpx.Client(base_url=api_url, timeout=30) as client:
        for collection in DUMPED_COLLECTIONS:
            if collection == "events":
                items = _all_events(client)
            else:
                items = _all_pages(client, f"/{collection}/filter", collection)
            for n, item in enumerate(items):
                dumped[f"prefect {collection}[{n}]"] = orjson.dumps(item).decode()
    return dumped


def _all_pages(client: httpx.Client, path: str, collection: str) -> list[Any]:
    items: list[Any] = []
    page = 200
    while True:
        body: dict[str, Any] = {"offset": len(items), "limit": page}
        if collection == "block_documents":
            body["include_secrets"] = False  # what the UI and the API show
        response = client.post(path, json=body)
        response.raise_for_status()
        batch = response.json()
        items.extend(batch)
        if len(batch) < page:
            return items


def _all_events(client: httpx.Client) -> list[Any]:
    response = client.post("/events/filter", json={"limit": 50})
    response.raise_for_status()
    page = response.json()
    events = list(page["events"])
    while page.get("next_page"):
        response = client.get(page["next_page"])
        response.raise_for_status()
        page = response.json()
        events.extend(page["events"])
    return events


def flow_run_id(state: State) -> UUID:
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


def artifacts(run_id: UUID, key: str | None = None) -> list[Artifact]:
    """The artifacts a flow run published, as the UI reads them from the server."""
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                key=ArtifactFilterKey(any_=[key]) if key else None,
            )
        )


def post_file_added(client: httpx.Client, site: str, pc_id: str, path: str) -> None:
    """A `gfx.file.added` event that starts a run, as the site's watcher emits it, sent
    straight to the server (`client`'s base URL is its API)."""
    from flows.watcher import FILE_ADDED_EVENT, file_resource

    event = {
        "id": str(uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": FILE_ADDED_EVENT,
        "resource": file_resource(site, pc_id, Path(path), Path(path).name, starts_run=True),
        "payload": {},
    }
    client.post("/events", json=[event]).raise_for_status()
