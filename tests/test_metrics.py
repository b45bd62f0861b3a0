"""`/metrics`: the text a real queue's state renders to, parsed back with prometheus_client's
own parser; counters and histograms fed once per committed row; the watcher's counters read
from the state file the watcher rewrites when they change."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.watcher import WatcherStateFile
from gfx_sync.health import WATCHER_FILE, write_state
from gfx_sync.metrics import MetricsExporter, render
from gfx_sync.observe import Observer
from gfx_sync.queue import ChangeKind, DurableQueue, SyncedFile
from gfx_sync.settings import Settings
from gfx_sync.watcher import FolderWatcher, WatchTarget
from support.clock import Clock
from support.nas import make_nas, nas_settings
from support.system import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    make_nas(tmp_path)
    (tmp_path / "state").mkdir()
    return nas_settings(tmp_path, pc_silent_after=300.0)


@pytest.fixture
def clock() -> Clock:
    return Clock(1_750_000_000.0)


@pytest.fixture
def queue(settings: Settings, clock: Clock) -> Iterator[DurableQueue]:
    with DurableQueue(settings.resolved_queue_path, clock=clock) as queue:
        yield queue


@pytest.fixture
def exporter(settings: Settings, queue: DurableQueue, clock: Clock) -> MetricsExporter:
    return MetricsExporter(Observer(settings, queue=queue, reader=None, clock=clock))


def scrape(exporter: MetricsExporter) -> Samples:
    body, content_type = render(exporter)
    assert content_type.startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        assert family.name.startswith("gfx_sync_"), family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, *, site: str = "default", **labels: str) -> float:
    """The sample's value; every series carries the agent's site."""
    return samples[(name, tuple(sorted({"site": site, **labels}.items())))]


def enqueue(queue: DurableQueue, pc: str, name: str, size: int) -> int:
    """A change of a file in the PC's folder (the queue's folder is the state dir's sibling)."""
    base = queue.path.parent.parent / "nas"
    return queue.enqueue(pc, str(base / pc / "hands" / name), ChangeKind.ADDED, size, 1.0)


def commit(
    queue: DurableQueue, ids: list[int], source: str, write_seconds: float, size: int
) -> None:
    claimed = {item.id: item for item in queue.claim(100, worker="test")}
    assert set(ids) <= set(claimed)
    files = [SyncedFile(i, claimed[i].path, claimed[i].pc_id, size, 1.0, f"hash-{i}") for i in ids]
    queue.ack_synced(files, source=source, write_seconds=write_seconds)


def test_metrics_match_the_queue(
    exporter: MetricsExporter, queue: DurableQueue, clock: Clock
) -> None:
    a, b = enqueue(queue, "PC01", "a.json", 100), enqueue(queue, "PC01", "b.json", 200)
    clock.advance(0.3)
    commit(queue, [a, b], "realtime", write_seconds=0.02, size=150)  # latency 0.3 s each
    broken = enqueue(queue, "PC02", "broken.json", 10)
    failing = enqueue(queue, "PC02", "failing.json", 10)
    queue.claim(100, worker="test")
    queue.quarantine(broken, "truncated JSON")
    queue.dead_letter(failing, "the target refused it")
    clock.advance(10)
    c = enqueue(queue, "PC02", "c.json", 300)
    commit(queue, [c], "batch", write_seconds=1.5, size=300)
    clock.advance(5)
    waiting = enqueue(queue, "PC02", "waiting.json", 5)
    clock.advance(40)

    samples = scrape(exporter)

    stats = queue.stats()
    for state in ("pending", "inflight", "done", "dead", "quarantined"):
        assert value(samples, "gfx_sync_queue_items", state=state) == getattr(stats, state)
    assert value(samples, "gfx_sync_queue_items", state="pending") == 1
    assert value(samples, "gfx_sync_queue_items", state="done") == 3
    assert value(samples, "gfx_sync_queue_oldest_pending_seconds") == pytest.approx(40)
    assert value(samples, "gfx_sync_dead_lettered") == 1
    assert value(samples, "gfx_sync_quarantined") == 1
    # Per PC: PC01 synced 55.3 s ago, PC02 45 s ago and has the waiting change.
    assert value(samples, "gfx_sync_pc_last_sync_age_seconds", pc="PC01") == pytest.approx(55)
    assert value(samples, "gfx_sync_pc_last_sync_age_seconds", pc="PC02") == pytest.approx(45)
    assert value(samples, "gfx_sync_pc_lag_seconds", pc="PC01") == 0
    assert value(samples, "gfx_sync_pc_lag_seconds", pc="PC02") == pytest.approx(40)
    assert value(samples, "gfx_sync_pc_pending", pc="PC02") == 1
    assert value(samples, "gfx_sync_pc_state", pc="PC01", state="online") == 1
    assert value(samples, "gfx_sync_pc_state", pc="PC01", state="silent") == 0
    # Files and bytes by source, from the commit log.
    assert value(samples, "gfx_sync_files_synced_total", source="realtime") == 2
    assert value(samples, "gfx_sync_files_synced_total", source="batch") == 1
    assert value(samples, "gfx_sync_bytes_synced_total", source="realtime") == 300
    assert value(samples, "gfx_sync_bytes_synced_total", source="batch") == 300
    # Batch write latency per source; realtime file -> commit latency.
    assert value(samples, "gfx_sync_batch_write_seconds_count", source="realtime") == 1
    assert value(samples, "gfx_sync_batch_write_seconds_sum", source="realtime") == 0.02
    assert value(samples, "gfx_sync_batch_write_seconds_bucket", source="realtime", le="0.01") == 0
    assert value(samples, "gfx_sync_batch_write_seconds_bucket", source="realtime", le="0.025") == 1
    assert value(samples, "gfx_sync_batch_write_seconds_bucket", source="batch", le="1.0") == 0
    assert value(samples, "gfx_sync_batch_write_seconds_bucket", source="batch", le="2.5") == 1
    assert value(samples, "gfx_sync_realtime_commit_seconds_count") == 2
    assert value(samples, "gfx_sync_realtime_commit_seconds_sum") == pytest.approx(0.6)
    assert value(samples, "gfx_sync_realtime_commit_seconds_bucket", le="0.25") == 0
    assert value(samples, "gfx_sync_realtime_commit_seconds_bucket", le="0.5") == 2
    assert value(samples, "gfx_sync_realtime_commit_seconds_bucket", le="+Inf") == 2
    # Checks: the queue reads; no target is configured for reading here.
    assert value(samples, "gfx_sync_check_ok", check="queue") == 1
    assert value(samples, "gfx_sync_check_ok", check="target") == 0
    assert value(samples, "gfx_sync_ready") == 0
    assert value(samples, "gfx_sync_last_commit_age_seconds") == pytest.approx(45)
    assert waiting  # still pending


def test_every_series_carries_the_agent_site(tmp_path: Path, clock: Clock) -> None:
    """Several venues' agents scraped by one Prometheus: each series says whose it is."""
    make_nas(tmp_path)
    (tmp_path / "state").mkdir()
    settings = nas_settings(tmp_path, site="venue-a")
    with DurableQueue(settings.resolved_queue_path, clock=clock) as queue:
        item = enqueue(queue, "PC01", "a.json", 100)
        commit(queue, [item], "realtime", write_seconds=0.02, size=100)
        exporter = MetricsExporter(Observer(settings, queue=queue, reader=None, clock=clock))
        samples = scrape(exporter)
    assert samples, "no series at all"
    assert {dict(labels).get("site") for _, labels in samples} == {"venue-a"}
    assert value(samples, "gfx_sync_files_synced_total", site="venue-a", source="realtime") == 1
    assert value(samples, "gfx_sync_pc_pending", site="venue-a", pc="PC01") == 0


def test_counters_take_each_committed_row_once(
    exporter: MetricsExporter, settings: Settings, queue: DurableQueue, clock: Clock
) -> None:
    commit(queue, [enqueue(queue, "PC01", "a.json", 1)], "realtime", 0.01, 7)
    first = scrape(exporter)
    assert value(first, "gfx_sync_files_synced_total", source="realtime") == 1
    assert scrape(exporter) == first  # nothing new: counted once, not again
    clock.advance(1)
    commit(queue, [enqueue(queue, "PC01", "b.json", 1)], "realtime", 0.01, 7)
    later = scrape(exporter)
    assert value(later, "gfx_sync_files_synced_total", source="realtime") == 2
    assert value(later, "gfx_sync_bytes_synced_total", source="realtime") == 14
    assert value(later, "gfx_sync_realtime_commit_seconds_count") == 2
    assert value(later, "gfx_sync_batch_write_seconds_count", source="realtime") == 2
    # A new exporter (a restarted agent) starts from what the logs hold.
    fresh = MetricsExporter(Observer(settings, queue=queue, reader=None, clock=clock))
    assert value(scrape(fresh), "gfx_sync_files_synced_total", source="realtime") == 2


def test_no_secret_and_no_path_in_the_metrics(
    exporter: MetricsExporter, settings: Settings, queue: DurableQueue
) -> None:
    """Labels carry PC ids, sources, states and check names; never paths or error texts."""
    secret = "postgresql://gfx:s3cr3t-canary@db.example:5432/gfx"
    item = enqueue(queue, "PC01", "secret-name.json", 1)
    queue.claim(1, worker="test")
    queue.dead_letter(item, f"could not connect to {secret}")
    body, _ = render(exporter)
    text = body.decode()
    assert "s3cr3t-canary" not in text and "secret-name" not in text
    assert str(settings.base_path) not in text


def test_watcher_counters_come_from_the_state_file(
    exporter: MetricsExporter, settings: Settings
) -> None:
    samples = scrape(exporter)  # no watcher has written its file: zeros
    for name in ("events_lost", "rescans", "polling_fallbacks"):
        assert value(samples, f"gfx_sync_watcher_{name}_total") == 0
    write_state(
        settings.state_dir / WATCHER_FILE,
        {"pid": os.getpid(), "counters": {"events_lost": 2, "rescans": 3, "polling_fallbacks": 1}},
    )
    samples = scrape(exporter)
    assert value(samples, "gfx_sync_watcher_events_lost_total") == 2
    assert value(samples, "gfx_sync_watcher_rescans_total") == 3
    assert value(samples, "gfx_sync_watcher_polling_fallbacks_total") == 1


def test_the_watcher_rewrites_its_state_file_when_a_counter_changes(
    exporter: MetricsExporter, settings: Settings, queue: DurableQueue
) -> None:
    """A watched folder that appears later: the watch restarts and rescans; the state file,
    written when the watch was ready, is rewritten with the counts, and the metrics show them."""
    late = WatchTarget("PC03", (settings.base_path / "PC03" / "hands").resolve(), polling=False)
    state_file = WatcherStateFile(settings.state_dir / WATCHER_FILE, {"pid": os.getpid()})
    watcher = FolderWatcher(
        [late],
        queue,
        on_ready=state_file.ready,
        on_counters=state_file.counters_changed,
        error_dir=settings.error_dir,
        root_check_seconds=0.05,
    )
    state_file.counters = watcher.reported_counters
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: (settings.state_dir / WATCHER_FILE).exists())  # ready: nothing to watch
        assert value(scrape(exporter), "gfx_sync_watcher_rescans_total") == 0
        late.folder.mkdir(parents=True)  # a share mounted after the start
        wait_for(lambda: value(scrape(exporter), "gfx_sync_watcher_rescans_total") >= 1)
        assert value(scrape(exporter), "gfx_sync_watcher_restarts_total") >= 1
    finally:
        watcher.stop()
        thread.join(10)
