"""`up`'s alerting thread: silent-failure alerts and the per-PC status artifact.

Every few seconds it takes an `Observer` snapshot, lets `SilentFailureAlerts` turn it into
transitions and emits each as a Prefect event (`gfx.alert.raised` / `gfx.alert.cleared`,
payload subject and text); the automation in deployments/automations.py forwards those
events through the same notification block as the failed-run alert. So there is one
notification path, and the alerts also show in the Prefect UI's event feed.

Once a minute it also refreshes the per-PC status table artifact (tasks/status.py) from
this process, outside any run: no scheduled run exists only to publish it. A table that has
not changed since its last version is not published again (the artifact still shows the
current state), so an idle agent does not pile up identical versions.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import warnings
from collections.abc import Callable
from typing import Self

from prefect.events import emit_event

from deployments.automations import SILENT_FAILURE_EVENT_PREFIX
from flows.labels import SITE_LABEL, site_tag
from gfx_sync.alerts import Alert, AlertKind, SilentFailureAlerts
from gfx_sync.observe import Observer
from gfx_sync.settings import Settings

log = logging.getLogger("gfx_sync.alerting")

CHECK_SECONDS = 5.0
STATUS_SECONDS = 60.0


def alert_event_name(kind: AlertKind) -> str:
    return f"{SILENT_FAILURE_EVENT_PREFIX}{kind.value}"


def emit_alert(alert: Alert, site: str) -> None:
    """One alert as a Prefect event (no secrets inside: PC ids, paths, redacted reasons),
    related to the site's tag, which the site's automation matches."""
    emit_event(
        alert_event_name(alert.kind),
        resource={
            "prefect.resource.id": f"{SILENT_FAILURE_EVENT_PREFIX}{site}.{alert.key}",
            "prefect.resource.name": alert.key,
            SITE_LABEL: site,
        },
        related=[
            {"prefect.resource.id": f"prefect.tag.{site_tag(site)}", "prefect.resource.role": "tag"}
        ],
        payload={
            "condition": alert.key,
            "kind": alert.kind.value,
            "subject": alert.subject,
            "text": alert.text,
        },
    )


class AlertingThread:
    """Checks for silent failures every `interval` seconds and publishes the status table
    every `status_every` seconds (when it changed), until stop()."""

    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        *,
        alerts: SilentFailureAlerts | None = None,
        send: Callable[[Alert], None] | None = None,  # default: emit_alert for the site
        status_rows: Callable[[], list[dict[str, object]]] | None = None,
        publish_status: Callable[[list[dict[str, object]]], object] | None = None,
        interval: float = CHECK_SECONDS,
        status_every: float = STATUS_SECONDS,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.observer = observer
        self.alerts = alerts if alerts is not None else SilentFailureAlerts(settings)
        self.send = send if send is not None else functools.partial(emit_alert, site=settings.site)
        self.status_rows = status_rows
        self.publish_status = publish_status
        self.interval = interval
        self.status_every = status_every
        self._on_stop = on_stop
        self._published: list[dict[str, object]] | None = None
        self._last_failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerting", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self._on_stop is not None:
            self._on_stop()

    def _run(self) -> None:
        next_status = time.monotonic()
        while True:
            self.check()
            if self.status_rows is not None and time.monotonic() >= next_status:
                next_status = time.monotonic() + self.status_every
                self.refresh_status()
            if self._stop.wait(self.interval):
                return

    def check(self) -> list[Alert]:
        """One snapshot, evaluated and sent. Never raises: the thread must keep watching."""
        try:
            # The local queue knows every commit and failure: no target or Prefect reads.
            snap = self.observer.snapshot(target=False, orchestrator=False)
            alerts = self.alerts.evaluate(snap)
        except Exception as exc:  # said once per distinct failure, not every few seconds
            failure = f"{type(exc).__name__}: {exc}"
            if failure != self._last_failure:
                log.warning("the silent-failure check failed: %s", failure, exc_info=exc)
            self._last_failure = failure
            return []
        self._last_failure = None
        for alert in alerts:
            log.warning("alert %s: %s", alert.kind.value, alert.subject)
            try:
                self.send(alert)
            except Exception as exc:
                log.warning("could not send the alert %r: %s", alert.subject, exc)
        return alerts

    def refresh_status(self) -> bool:
        """Publish the status table if it changed; True when a version was published."""
        assert self.status_rows is not None and self.publish_status is not None
        try:
            rows = self.status_rows()
            if rows == self._published:
                return False
            self.publish_status(rows)
        except Exception as exc:  # Prefect away, a queue busy: next minute
            log.info("could not publish the per-PC status artifact now: %s", exc)
            return False
        self._published = rows
        return True


def start_alerting(settings: Settings, observer: Observer) -> AlertingThread:
    """The thread `up` runs, on `observer` (the console's: one per process)."""
    from tasks.status import pc_status_rows, write_status_artifact

    # Prefect 3.9 warns that artifacts made outside a run are deprecated; they still work,
    # and a run scheduled only to publish the table is what this thread avoids.
    warnings.filterwarnings(
        "ignore", message="Artifact creation outside of a flow or task run", category=FutureWarning
    )
    return AlertingThread(
        settings,
        observer,
        status_rows=pc_status_rows,
        publish_status=write_status_artifact,
    ).start()
