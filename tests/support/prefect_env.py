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
from pathlib import Path
from typing import Any

import httpx
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_HOME,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL,
    temporary_settings,
)
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
