"""Prometheus metrics for `/metrics`: gauges read from one `Observer.snapshot()` per scrape,
counters and histograms fed from the queue's commit logs, the watcher's counters from its
state file.

A registry of its own (never prometheus_client's global one): nothing else in the process
(Prefect, uvicorn) adds series to it, and two exporters (tests) never collide. Everything is
built at scrape time, so an idle agent does no metrics work at all.

Counters and histograms are fed incrementally from `synced_log` / `writes` (rows with
increasing ids): the first scrape takes what the logs still hold (RETENTION), later
scrapes only the rows committed since. A restart starts the counters again from the logs,
which Prometheus' rate() treats as a counter reset.

Every series carries `site` (the agent's GFX_SYNC_SITE), so one Prometheus can scrape the
agents of several venues. Labels carry the site, PC ids, sync sources, item states and check
names only: never a path, an error text or anything from the connection settings.

Core package: no Prefect here.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from gfx_sync.health import WATCHER_FILE, read_state
from gfx_sync.observe import PcState, Snapshot
from gfx_sync.queue import DurableQueue, ItemState, SyncedLogRow, WriteLogRow
from gfx_sync.settings import DEFAULT_SITE
from gfx_sync.watcher import REPORTED_COUNTERS, WATCHER_COUNTERS_KEY

log = logging.getLogger(__name__)

PREFIX = "gfx_sync_"
# Seconds. A batch write is one COPY/upsert round: milliseconds on a LAN, seconds when slow.
BATCH_WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds from a file's change entering the queue to its commit, on the realtime path
# (a warm run commits in tens of milliseconds; a stock runner or a late trigger in seconds).
REALTIME_COMMIT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
REALTIME_SOURCE = "realtime"
LOG_PAGE = 10_000  # rows read per query while catching up on a log


class SnapshotSource(Protocol):
    def snapshot(self) -> Snapshot: ...


class Buckets:
    """One histogram's state: observations per bucket and their sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations <= le) as the text format wants them, ending with +Inf."""
        running, rows = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            rows.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return rows


class MetricsExporter:
    """The metrics of one observer (and its queue and state folder).

    `queue`, `state_dir` and `site` default to the observer's own (`observer.queue`,
    `observer.settings.state_dir`, `observer.settings.site`)."""

    def __init__(
        self,
        observer: SnapshotSource,
        *,
        queue: DurableQueue | None = None,
        state_dir: Path | None = None,
        site: str | None = None,
    ) -> None:
        self.observer = observer
        self.queue = queue if queue is not None else getattr(observer, "queue", None)
        settings = getattr(observer, "settings", None)
        if state_dir is None:
            state_dir = settings.state_dir if settings is not None else None
        self.state_dir = state_dir
        if site is None:
            site = settings.site if settings is not None else DEFAULT_SITE
        self.site = site
        self._lock = threading.Lock()
        self._last_synced_id = 0
        self._last_write_id = 0
        self._files: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self._batch_write: dict[str, Buckets] = {}
        self._realtime_commit = Buckets(REALTIME_COMMIT_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # -- logs -> counters and histograms ----------------------------------------------------

    def catch_up(self) -> None:
        """Take the log rows committed since the last call. A queue that cannot be read now
        is read again next time, from the same row on."""
        if self.queue is None:
            return
        with self._lock:
            try:
                while rows := self.queue.synced_since(self._last_synced_id, limit=LOG_PAGE):
                    for row in rows:
                        self._count_file(row)
                    self._last_synced_id = rows[-1].id
                    if len(rows) < LOG_PAGE:
                        break
                while writes := self.queue.writes_since(self._last_write_id, limit=LOG_PAGE):
                    for write in writes:
                        self._count_write(write)
                    self._last_write_id = writes[-1].id
                    if len(writes) < LOG_PAGE:
                        break
            except Exception as exc:  # a scrape must still answer: the gauges say what fails
                log.warning("metrics: the queue's commit logs cannot be read now: %s", exc)

    def _count_file(self, row: SyncedLogRow) -> None:
        source = row.source or "unknown"
        self._files[source] = self._files.get(source, 0) + 1
        self._bytes[source] = self._bytes.get(source, 0) + row.size
        if source == REALTIME_SOURCE:
            self._realtime_commit.observe(row.latency)

    def _count_write(self, write: WriteLogRow) -> None:
        source = write.source or "unknown"
        self._batch_write.setdefault(source, Buckets(BATCH_WRITE_BUCKETS)).observe(write.seconds)

    # -- one scrape -------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        self.catch_up()
        yield from snapshot_metrics(self.observer.snapshot())
        yield from self._log_metrics()
        yield from watcher_metrics(self.state_dir)

    def _log_metrics(self) -> Iterator[Metric]:
        with self._lock:
            files = CounterMetricFamily(
                f"{PREFIX}files_synced",
                "Files committed to the target, by sync source.",
                labels=["source"],
            )
            size = CounterMetricFamily(
                f"{PREFIX}bytes_synced",
                "Bytes of the files committed to the target, by sync source.",
                labels=["source"],
            )
            for source in sorted(self._files):
                files.add_metric([source], self._files[source])
                size.add_metric([source], self._bytes[source])
            batch = HistogramMetricFamily(
                f"{PREFIX}batch_write_seconds",
                "Seconds one batch took to write to the target, by sync source.",
                labels=["source"],
            )
            for source in sorted(self._batch_write):
                buckets = self._batch_write[source]
                batch.add_metric([source], buckets.cumulative(), buckets.total)
            realtime = HistogramMetricFamily(
                f"{PREFIX}realtime_commit_seconds",
                "Seconds from a file's change entering the queue to its commit, realtime path.",
                buckets=self._realtime_commit.cumulative(),
                sum_value=self._realtime_commit.total,
            )
        yield from (files, size, batch, realtime)


class _Collector(Collector):
    def __init__(self, exporter: MetricsExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterator[Metric]:
        return with_label(self._exporter.collect(), "site", self._exporter.site)


def with_label(metrics: Iterator[Metric], name: str, value: str) -> Iterator[Metric]:
    """The metrics with one more label on every sample (first, as a target label would be)."""
    for metric in metrics:
        metric.samples = [s._replace(labels={name: value, **s.labels}) for s in metric.samples]
        yield metric


def snapshot_metrics(snap: Snapshot) -> Iterator[Metric]:
    """Gauges from one snapshot."""
    lag = GaugeMetricFamily(
        f"{PREFIX}pc_lag_seconds",
        "Seconds the oldest pending change of the PC has waited (0: none waits).",
        labels=["pc"],
    )
    age = GaugeMetricFamily(
        f"{PREFIX}pc_last_sync_age_seconds",
        "Seconds since a file of the PC was last committed (absent: never).",
        labels=["pc"],
    )
    state = GaugeMetricFamily(
        f"{PREFIX}pc_state",
        "1 for the PC's current state (online, idle, offline, silent), 0 for the others.",
        labels=["pc", "state"],
    )
    pending = GaugeMetricFamily(
        f"{PREFIX}pc_pending", "Changes of the PC waiting in the queue.", labels=["pc"]
    )
    errors = GaugeMetricFamily(
        f"{PREFIX}pc_errors_last_hour",
        "Dead-lettered or quarantined files of the PC in the last hour.",
        labels=["pc"],
    )
    for card in snap.pcs:
        lag.add_metric([card.pc_id], card.lag)
        if card.last_sync_at is not None:
            age.add_metric([card.pc_id], max(0.0, snap.taken_at - card.last_sync_at))
        for value in PcState:
            state.add_metric([card.pc_id, value.value], 1.0 if card.state is value else 0.0)
        pending.add_metric([card.pc_id], card.pending)
        errors.add_metric([card.pc_id], card.errors_last_hour)
    yield from (lag, age, state, pending, errors)

    if snap.queue is not None:
        items = GaugeMetricFamily(
            f"{PREFIX}queue_items", "Items in the durable queue, by state.", labels=["state"]
        )
        for item_state in ItemState:
            items.add_metric([item_state.value], snap.queue.counts.get(item_state.value, 0))
        yield items
        yield GaugeMetricFamily(
            f"{PREFIX}queue_oldest_pending_seconds",
            "Seconds the oldest pending change has waited (0: nothing pending).",
            value=snap.queue.oldest_pending_age or 0.0,
        )
        dead = sum(1 for p in snap.problems if p.state is ItemState.DEAD)
        yield GaugeMetricFamily(
            f"{PREFIX}dead_lettered",
            "Dead-lettered changes whose file has not synced since.",
            value=dead,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}quarantined",
            "Quarantined files that have not synced since.",
            value=len(snap.problems) - dead,
        )
    if snap.last_commit_at is not None:
        yield GaugeMetricFamily(
            f"{PREFIX}last_commit_age_seconds",
            "Seconds since the last commit to the target.",
            value=max(0.0, snap.taken_at - snap.last_commit_at),
        )
    checks = GaugeMetricFamily(
        f"{PREFIX}check_ok", "1 when the health check passes, else 0.", labels=["check"]
    )
    for check in snap.checks:
        checks.add_metric([check.name], 1.0 if check.ok else 0.0)
    yield checks
    yield GaugeMetricFamily(
        f"{PREFIX}ready", "1 when target, schema and orchestrator are ready.", value=snap.ready
    )


WATCHER_COUNTER_HELP = {
    "events_lost": "Lost-event signals of the watcher (inotify queue overflows), each rescanned.",
    "rescans": "Rescans the watcher ran because events were lost or a watch restarted.",
    "polling_fallbacks": "Native watches the kernel refused (watch limit), polled instead.",
    "restarts": "Watches the watcher restarted (after an error or a folder change).",
}


def watcher_counters(state_dir: Path | None) -> dict[str, int]:
    """The running watcher's counters from its state file (all 0 while none is written)."""
    document = read_state(state_dir / WATCHER_FILE) if state_dir is not None else None
    found = (document or {}).get(WATCHER_COUNTERS_KEY)
    counters = found if isinstance(found, dict) else {}
    return {
        name: value if isinstance(value := counters.get(name), int) else 0
        for name in REPORTED_COUNTERS
    }


def watcher_metrics(state_dir: Path | None) -> Iterator[Metric]:
    for name, value in watcher_counters(state_dir).items():
        counter = CounterMetricFamily(
            f"{PREFIX}watcher_{name}", WATCHER_COUNTER_HELP.get(name, name.replace("_", " "))
        )
        counter.add_metric([], value)
        yield counter


def render(exporter: MetricsExporter) -> tuple[bytes, str]:
    """The body and content type of a `/metrics` answer (Prometheus text format 0.0.4)."""
    return generate_latest(exporter.registry), CONTENT_TYPE_PLAIN_0_0_4


__all__ = [
    "BATCH_WRITE_BUCKETS",
    "PREFIX",
    "REALTIME_COMMIT_BUCKETS",
    "Buckets",
    "MetricsExporter",
    "SnapshotSource",
    "render",
    "snapshot_metrics",
    "watcher_counters",
    "watcher_metrics",
]
