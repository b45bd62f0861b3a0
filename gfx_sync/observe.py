"""What an operator sees: one snapshot of the whole system, for the console, the metrics,
the silent-failure alerts and `gfx-sync status`.

A snapshot joins three sources, each read in one go: the durable queue (what is waiting,
what failed, what synced and how fast: it is local and always there), the target's views
(sessions, hands, errors per PC: what the database holds), and the health files of `up`
and its watcher. A source that cannot be read leaves its part empty and says why in a
check; the snapshot itself never fails.

Core package: no Prefect here. Prefect's own figures (its reachability, failed runs) come
in through `Observer(orchestrator=...)` from the layer that knows Prefect.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from gfx_sync.health import STALE_AFTER_SECONDS, UP_FILE, prefect_reachable, read_health, read_state
from gfx_sync.quarantine import quarantine_entry
from gfx_sync.queue import DurableQueue, ItemState, PcSummary
from gfx_sync.redact import one_line
from gfx_sync.settings import Settings, SettingsError
from gfx_sync.site import Site
from gfx_sync.target_views import PostgresReader, TargetReader, open_reader

log = logging.getLogger(__name__)

ONLINE_WITHIN = 300.0  # synced in the last 5 minutes (as the target's pc_status view says)
IDLE_WITHIN = 3600.0  # synced in the last hour
WINDOWS = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


class PcState(StrEnum):
    ONLINE = "online"  # synced in the last 5 minutes
    IDLE = "idle"  # synced in the last hour
    OFFLINE = "offline"  # not in the last hour, or never
    SILENT = "silent"  # in use this hour, quiet for `pc_silent_after` while others write


@dataclass(frozen=True, slots=True)
class Check:
    """One health check: its name (target, schema, prefect, watcher, queue), whether it
    passes, and one line on why."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class QueueFigures:
    counts: dict[str, int]  # by ItemState value: pending, inflight, done, dead, quarantined
    due: int
    oldest_pending_age: float | None  # seconds
    expired_leases: int


@dataclass(frozen=True, slots=True)
class PcCard:
    pc_id: str
    state: PcState
    sessions: int | None  # from the target (None: the target could not be read)
    hands: int | None
    newest_file: str | None  # relative to the PC folder, the latest synced by mtime
    last_sync_at: float | None  # epoch seconds of the last commit of one of its files
    lag: float  # seconds the oldest pending change of this PC has waited (0: none)
    pending: int
    errors_last_hour: int  # dead-lettered or quarantined in the last hour


@dataclass(frozen=True, slots=True)
class Problem:
    """A change that will not sync by itself: dead-lettered or quarantined, and not synced
    since (a fixed file that synced later is no longer a problem)."""

    item_id: int
    pc_id: str
    path: str
    state: ItemState  # DEAD or QUARANTINED
    reason: str
    attempts: int
    at: float | None  # when it ended there
    quarantine_copy: str | None  # where the copy lies, for a quarantined file


@dataclass(frozen=True, slots=True)
class RecentSession:
    pc_id: str
    session_id: int
    file_name: str
    table_type: str | None
    hands: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class FailedRun:
    """A failed or crashed Prefect run (filled in by the orchestration layer)."""

    name: str
    flow: str
    state: str
    message: str
    at: float
    url: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float
    synced: dict[str, int]  # files committed in the last minute / hour / day (WINDOWS keys)
    bytes_synced: dict[str, int]
    last_commit_at: float | None
    queue: QueueFigures | None
    checks: list[Check]
    pcs: list[PcCard]
    problems: list[Problem]
    sessions: list[RecentSession]
    failed_runs: list[FailedRun] = field(default_factory=list)
    prefect_ui: str | None = None  # links into the Prefect UI start here

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks if c.name in READY_CHECKS)


READY_CHECKS = ("target", "schema", "orchestrator")
LIVE_CHECKS = ("process", "watcher")


def pc_state(
    last_sync_at: float | None,
    *,
    now: float,
    silent_after: float,
    others_active: bool,
) -> PcState:
    """Online, idle, offline, or silent: in use this hour, quiet for `silent_after` seconds
    while another PC synced within that time (a PC nobody uses today is offline, not silent)."""
    if last_sync_at is None:
        return PcState.OFFLINE
    age = now - last_sync_at
    if age > IDLE_WITHIN:
        return PcState.OFFLINE
    if age > silent_after and others_active:
        return PcState.SILENT
    return PcState.ONLINE if age <= ONLINE_WITHIN else PcState.IDLE


@dataclass(frozen=True, slots=True)
class OrchestratorView:
    """What the orchestration layer says about Prefect: reachable (or covered by the
    standby drainer), why, the runs that failed recently, and the UI's address."""

    ok: bool
    detail: str
    failed_runs: list[FailedRun] = field(default_factory=list)
    ui_url: str | None = None


def orchestrator_from_heartbeat(
    settings: Settings, *, now: float | None = None
) -> OrchestratorView:
    """Without the orchestration layer at hand (`gfx-sync console` on its own): `up`'s
    heartbeat says whether Prefect answers or the standby drainer syncs; with no `up`
    running, Prefect is probed at PREFECT_API_URL if one is set."""
    now = time.time() if now is None else now
    beat = read_state(settings.state_dir / UP_FILE)
    fresh = beat is not None and isinstance(beat.get("updated_at"), int | float)
    if fresh and now - float(beat["updated_at"]) <= STALE_AFTER_SECONDS:  # type: ignore[index, arg-type]
        if beat.get("orchestrator") == "unreachable":  # type: ignore[union-attr]
            return OrchestratorView(True, "Prefect unreachable: the standby drainer syncs")
        return OrchestratorView(True, "Prefect reachable (reported by gfx-sync up)")
    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        return OrchestratorView(False, "no gfx-sync up is running and PREFECT_API_URL is not set")
    if prefect_reachable(api_url):
        return OrchestratorView(True, "Prefect reachable", ui_url=api_url.removesuffix("/api"))
    return OrchestratorView(False, "Prefect unreachable and no gfx-sync up is draining")


class Observer:
    """Builds snapshots. Each source is read once per snapshot; a failing one becomes a
    failing check and an empty part, never an exception."""

    def __init__(
        self,
        settings: Settings,
        *,
        queue: DurableQueue | None,
        reader: TargetReader | None,
        orchestrator: Callable[[], OrchestratorView] | None = None,
        clock: Callable[[], float] = time.time,
        sessions_shown: int = 20,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.reader = reader
        self.site = Site(settings)
        self._orchestrator = orchestrator or (lambda: orchestrator_from_heartbeat(settings))
        self._clock = clock
        self.sessions_shown = sessions_shown

    def requeue(self, item_ids: Sequence[int]) -> int:
        """Dead-lettered or quarantined items -> pending, due now (an operator's action)."""
        if self.queue is None:
            return 0
        return self.queue.requeue(
            (ItemState.DEAD, ItemState.QUARANTINED), item_ids=[int(i) for i in item_ids]
        )

    def snapshot(self, *, target: bool = True, orchestrator: bool = True) -> Snapshot:
        """`target` / `orchestrator` False: leave those parts out (and their checks); what
        the local queue knows is enough for the silent-failure alerts, every few seconds."""
        now = self._clock()
        checks = self._liveness(now)
        local = self._read_queue(checks)
        target_pcs, sessions = self._read_target(checks) if target else (None, [])
        prefect = self._read_orchestrator(checks) if orchestrator else OrchestratorView(True, "")
        synced, size, last_commit, figures, summaries, problems = local
        return Snapshot(
            taken_at=now,
            synced=synced,
            bytes_synced=size,
            last_commit_at=last_commit,
            queue=figures,
            checks=checks,
            pcs=self._cards(now, summaries, target_pcs, problems),
            problems=problems,
            sessions=sessions,
            failed_runs=prefect.failed_runs,
            prefect_ui=prefect.ui_url,
        )

    def _liveness(self, now: float) -> list[Check]:
        health = read_health(self.settings.state_dir, now=now)
        watching = health.healthy
        return [
            Check("process", True, f"pid {os.getpid()}"),
            Check("watcher", watching, health.reason),
        ]

    def _read_queue(self, checks: list[Check]) -> tuple[Any, ...]:
        empty = {name: 0 for name in WINDOWS}
        if self.queue is None:
            checks.append(Check("queue", False, "no durable queue in this state folder"))
            return dict(empty), dict(empty), None, None, {}, []
        try:
            stats = self.queue.stats()
            synced, size = self.queue.synced_within(WINDOWS)
            last_commit = self.queue.last_commit_at()
            summaries = self.queue.pc_summaries()
            failures = self.queue.unresolved_failures()
        except Exception as exc:
            checks.append(Check("queue", False, f"the durable queue cannot be read: {exc}"))
            return dict(empty), dict(empty), None, None, {}, []
        figures = QueueFigures(
            counts={state.value: getattr(stats, state.value) for state in ItemState},
            due=stats.due,
            oldest_pending_age=stats.oldest_pending_age,
            expired_leases=stats.expired_leases,
        )
        checks.append(Check("queue", True, f"{stats.pending} pending, {stats.dead} dead"))
        problems = [self._problem(detail) for detail in failures]
        return synced, size, last_commit, figures, summaries, problems

    def _problem(self, detail: Any) -> Problem:
        item = detail.item
        copy = None
        if detail.state is ItemState.QUARANTINED:
            relative = self._relative(item.path, item.pc_id) or item.path
            copy = str(
                quarantine_entry(self.settings.error_dir, item.pc_id, Path(item.path), relative)
            )
        return Problem(
            item_id=item.id,
            pc_id=item.pc_id,
            path=item.path,
            state=detail.state,
            reason=item.last_error or "",
            attempts=item.attempts,
            at=detail.finished_at,
            quarantine_copy=copy,
        )

    def _read_target(
        self, checks: list[Check]
    ) -> tuple[dict[str, dict[str, Any]] | None, list[RecentSession]]:
        if self.reader is None:
            checks.append(Check("target", False, "no target configured for reading"))
            checks.append(Check("schema", False, "unknown: the target cannot be read"))
            return None, []
        try:
            rows = self.reader.pc_status()
            recent = self.reader.recent_sessions(self.sessions_shown)
        except Exception as exc:
            checks.append(Check("target", False, f"unreachable: {self._explain(exc)}"))
            checks.append(Check("schema", False, "unknown: the target cannot be read"))
            return None, []
        checks.append(Check("target", True, "reachable"))
        try:
            pending = self.reader.pending_migrations()
        except Exception as exc:
            checks.append(Check("schema", False, f"cannot be read: {self._explain(exc)}"))
        else:
            if pending:
                checks.append(Check("schema", False, f"behind: {', '.join(pending)} pending"))
            else:
                checks.append(Check("schema", True, "current" if pending == [] else "views answer"))
        sessions = [
            RecentSession(
                pc_id=row["gfx_pc_id"],
                session_id=int(row["session_id"]),
                file_name=row["file_name"],
                table_type=row.get("table_type"),
                hands=int(row["hand_count"]),
                updated_at=_epoch(row["updated_at"]) or 0.0,
            )
            for row in recent
        ]
        return {row["gfx_pc_id"]: row for row in rows}, sessions

    def _explain(self, exc: BaseException) -> str:
        """One line about `exc`, with no secret of the settings in it."""
        settings = self.settings
        return one_line(
            exc,
            getattr(self.reader, "url", None),
            *(
                secret.get_secret_value()
                for secret in (settings.database_url, settings.supabase_service_key)
                if secret is not None
            ),
        )

    def _read_orchestrator(self, checks: list[Check]) -> OrchestratorView:
        try:
            view = self._orchestrator()
        except Exception as exc:
            view = OrchestratorView(False, f"cannot be asked: {self._explain(exc)}")
        checks.append(Check("orchestrator", view.ok, view.detail))
        return view

    def _cards(
        self,
        now: float,
        summaries: dict[str, PcSummary],
        target: dict[str, dict[str, Any]] | None,
        problems: list[Problem],
    ) -> list[PcCard]:
        try:
            configured = [pc.id for pc in self.site.pcs]
        except Exception:  # an unreadable registry: show what the data knows
            configured = []
        names = sorted({*configured, *summaries, *(target or {}), *(p.pc_id for p in problems)})
        last_sync = {
            pc: _latest(
                summaries[pc].last_sync_at if pc in summaries else None,
                _epoch((target or {}).get(pc, {}).get("last_sync")),
            )
            for pc in names
        }
        hour_ago = now - 3600
        cards = []
        for pc in names:
            summary = summaries.get(pc)
            row = (target or {}).get(pc)
            others = any(
                t is not None and now - t <= self.settings.pc_silent_after
                for other, t in last_sync.items()
                if other != pc
            )
            local_errors = sum(1 for p in problems if p.pc_id == pc and (p.at or 0) >= hour_ago)
            cards.append(
                PcCard(
                    pc_id=pc,
                    state=pc_state(
                        last_sync[pc],
                        now=now,
                        silent_after=self.settings.pc_silent_after,
                        others_active=others,
                    ),
                    sessions=None if target is None else int((row or {}).get("session_count", 0)),
                    hands=None if target is None else int((row or {}).get("hand_count", 0)),
                    newest_file=self._relative(summary.newest_path, pc) if summary else None,
                    last_sync_at=last_sync[pc],
                    lag=(
                        max(0.0, now - summary.oldest_pending_at)
                        if summary and summary.oldest_pending_at is not None
                        else 0.0
                    ),
                    pending=summary.pending if summary else 0,
                    errors_last_hour=max(
                        local_errors, int((row or {}).get("errors_last_hour", 0) or 0)
                    ),
                )
            )
        return cards

    def _relative(self, path: str | None, pc_id: str) -> str | None:
        """Base-relative when under the base folder (a `gfx-sync sync` of a file elsewhere
        is shown as its full path)."""
        if path is None:
            return None
        try:
            return self.site.locate(path, pc_id).relative_path
        except SettingsError:  # a PC id the queue holds that the rules do not accept
            return path


def _latest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _epoch(value: object) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


class ChangeFeed:
    """Counts changes an operator would want to see at once: a commit or an error in the
    target (LISTEN, or polling the newest sync event where the target cannot LISTEN), and
    any write to the durable queue (SQLite's data_version, read every `poll` seconds).
    `version` goes up by one or more per change; `wait_newer` blocks until it has."""

    def __init__(
        self,
        queue_path: Path | None,
        reader: TargetReader | None,
        *,
        poll: float = 0.2,
        target_poll: float = 2.0,
    ) -> None:
        self.queue_path = queue_path
        self.reader = reader
        self.poll = poll
        self.target_poll = target_poll
        self.version = 0
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        # Set once each source is followed: changes from then on move `version`.
        self.following = {"queue": threading.Event(), "target": threading.Event()}
        self._threads: list[threading.Thread] = []

    def start(self) -> ChangeFeed:
        """Follow the sources (once: a started feed is returned as it is)."""
        if self._threads:
            return self
        jobs: list[Callable[[], None]] = [self._follow_queue]
        if self.reader is not None:
            jobs.append(self._follow_target)
        for job in jobs:
            thread = threading.Thread(target=job, name=f"feed-{job.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(5)

    def bump(self) -> None:
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait_newer(self, version: int, timeout: float) -> int:
        """The version once it is above `version`, or the current one after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.version <= version and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self.version

    def _follow_queue(self) -> None:
        """`PRAGMA data_version` changes when another connection commits to the file. It is
        read when the queue's files are written (inotify on its folder), or every `poll`
        seconds where inotify is not available."""
        last = None
        conn: sqlite3.Connection | None = None
        with QueueWrites(self.queue_path, self.poll) as writes:
            while writes.wait(self._stopping):
                try:
                    if conn is None:
                        if self.queue_path is None or not self.queue_path.exists():
                            continue
                        conn = sqlite3.connect(f"file:{self.queue_path}?mode=ro", uri=True)
                    (version,) = conn.execute("PRAGMA data_version").fetchone()
                except sqlite3.Error:
                    if conn is not None:
                        conn.close()
                    conn, last = None, None
                    continue
                if last is not None and version != last:
                    self.bump()
                last = version
                self.following["queue"].set()
        if conn is not None:
            conn.close()

    def _follow_target(self) -> None:
        reader = self.reader
        while not self._stopping.is_set():
            try:
                if isinstance(reader, PostgresReader):
                    reader.listen(self._caught_up, self._stopping)
                else:
                    self._poll_target()
            except Exception as exc:
                why = one_line(exc, getattr(reader, "url", None))
                log.debug("change feed: the target cannot be followed now: %s", why)
                self._stopping.wait(self.target_poll)

    def _caught_up(self) -> None:
        self.bump()
        self.following["target"].set()

    def _poll_target(self) -> None:
        assert self.reader is not None
        last = self.reader.latest_event_id()
        self.following["target"].set()
        while not self._stopping.wait(self.target_poll):
            latest = self.reader.latest_event_id()
            if latest != last:
                last = latest
                self.bump()


class QueueWrites:
    """Waits until the durable queue's files may have been written: inotify on the queue's
    folder (no wake-ups while nothing happens), or a fixed `poll` period without it (not
    Linux, the folder not there yet, no inotify instance left)."""

    CHECK_STOP_MS = 1000  # a blocked read looks at the stop flag this often
    BUSY_SECONDS = 2.0  # after a write, poll this long (a commit's fsync may be slow)

    def __init__(self, queue_path: Path | None, poll: float) -> None:
        self.poll = poll
        self._names = set() if queue_path is None else {queue_path.name, f"{queue_path.name}-wal"}
        self._inotify: Any = None
        self._first = True
        self._busy_until = 0.0
        if queue_path is None:
            return
        try:
            from inotify_simple import INotify, flags

            inotify = INotify()
            try:
                inotify.add_watch(
                    str(queue_path.parent), flags.MODIFY | flags.CREATE | flags.MOVED_TO
                )
            except OSError:
                inotify.close()
                raise
            self._inotify = inotify
        except (ImportError, OSError) as exc:
            log.debug("the change feed polls the queue every %.1f s: %s", poll, exc)

    def __enter__(self) -> QueueWrites:
        return self

    def __exit__(self, *_: object) -> None:
        if self._inotify is not None:
            self._inotify.close()

    def wait(self, stopping: threading.Event) -> bool:
        """True when it is worth reading the queue's version; False once `stopping` is set."""
        if self._first:  # read once at start, whatever happened before
            self._first = False
            return not stopping.is_set()
        if self._inotify is None or time.monotonic() < self._busy_until:
            return not stopping.wait(self.poll)
        while not stopping.is_set():
            events = self._inotify.read(timeout=self.CHECK_STOP_MS)
            if any(event.name in self._names for event in events):
                # A write is seen before its commit is (SQLite publishes a commit in its
                # shared-memory index, which raises no event, after the WAL's fsync): look
                # every `poll` seconds for a while after each write, then block again.
                self._busy_until = time.monotonic() + self.BUSY_SECONDS
                return not stopping.is_set()
        return False


def open_observer(
    settings: Settings,
    database_url: str | None,
    *,
    orchestrator: Callable[[], OrchestratorView] | None = None,
) -> tuple[Observer, ChangeFeed]:
    """An observer and a change feed on the configured queue and target (`database_url`:
    the resolved Postgres URL, None for Supabase REST). The feed is not started (only a
    console needs it); `close_observer` stops it and closes the queue and readers."""
    queue_path = settings.resolved_queue_path
    queue = DurableQueue(queue_path) if queue_path.parent.is_dir() else None
    reader = open_reader(settings, database_url)
    observer = Observer(settings, queue=queue, reader=reader, orchestrator=orchestrator)
    feed_reader = open_reader(settings, database_url)  # LISTEN holds a connection of its own
    return observer, ChangeFeed(queue_path, feed_reader)


def close_observer(observer: Observer, feed: ChangeFeed) -> None:
    feed.stop()
    if feed.reader is not None:
        feed.reader.close()
    if observer.reader is not None:
        observer.reader.close()
    if observer.queue is not None:
        observer.queue.close()
