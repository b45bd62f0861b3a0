"""The fault-injection harness: a producer that writes like PokerGFX, and a judge.

The producer keeps the ground truth (the newest snapshot written for every session, and the
files it broke on purpose). After the faults stop, the judge compares the target table, the
quarantine folder and the durable queue with that truth. A `RegressionWatch` samples the table
while the faults run, because "no older snapshot over a newer one" must hold at every moment,
not just at the end. Everything is seeded: a failing scenario replays with the same writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

import gfx_synth as synth
from bench.pg import via_proxy
from bench.proxy import ProxyProcess

from .system import RunningSystem, gfx_sync_up

PCS = ("PC01", "PC02", "PC03")
SessionKey = tuple[str, int]  # (gfx_pc_id, session_id)
TICKS_PER_MINUTE = 60 * 10_000_000
FIRST_TICKS = 638_800_000_000_000_000  # session IDs: scenario N starts at + N * 10**15


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One complete write of a session file: what the table must end up holding (or newer)."""

    pc_id: str
    session_id: int
    path: Path
    hand_count: int
    file_hash: str


@dataclass
class Producer:
    """Writes sessions into `<base>/<pc>/hands/` the way PokerGFX does, and remembers them.

    New sessions appear; live sessions grow by whole-file rewrites in place (same inode), some
    of them slowly in chunks so a reader can catch them half-written. `scenario` shifts the
    session IDs so scenarios sharing one database never collide.
    """

    base: Path
    pcs: tuple[str, ...]
    seed: int
    scenario: int = 0
    chunked_share: float = 0.2
    truth: dict[SessionKey, Snapshot] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # relative path -> why it is broken
    files_written: int = 0
    # Sessions that may or may not end up in the table (a file deleted right after it was
    # written: synced if it was read in time, "vanished" if not). Either is correct.
    may_appear: set[SessionKey] = field(default_factory=set)
    # Other scenarios write to the same table: the judge looks only at this scenario's IDs.
    shared_table: bool = False
    _docs: dict[SessionKey, dict] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"gfx-faults/{self.seed}/{self.scenario}")
        self._next_ticks = FIRST_TICKS + self.scenario * 10**15 + self.seed * 10**9
        for pc in self.pcs:
            self.folder(pc).mkdir(parents=True, exist_ok=True)

    def folder(self, pc: str) -> Path:
        return self.base / pc / "hands"

    def owns(self, session_id: int) -> bool:
        """Whether a session ID lies in this scenario's range (see `_next_ticks`)."""
        low = FIRST_TICKS + self.scenario * 10**15
        return low <= session_id < low + 10**15

    # -- writing sessions -----------------------------------------------------------------

    def new_session(self, pc: str | None = None, hands: int | None = None) -> Snapshot:
        pc = pc or self.rng.choice(self.pcs)
        self._next_ticks += self.rng.randrange(1, 7) * TICKS_PER_MINUTE + self.rng.randrange(9)
        doc = synth.make_session(
            hands=self.rng.randint(0, 6) if hands is None else hands,
            seed=self.rng.randrange(2**31),
            created_ticks=self._next_ticks,
            players=self.rng.choice((6, 8, 9)),
        )
        return self._write(pc, doc, chunked=False)

    def grow(self, key: SessionKey | None = None, hands: int | None = None) -> Snapshot:
        """The next snapshot of a live session (a new one when there is none yet)."""
        if key is None:
            if not self._docs:
                return self.new_session()
            key = self.rng.choice(sorted(self._docs))
        doc = synth.grow_session(
            self._docs[key], self.rng.randint(1, 3) if hands is None else hands, seed=self.seed
        )
        return self._write(key[0], doc, chunked=self.rng.random() < self.chunked_share)

    def step(self) -> Snapshot:
        """One seeded action: mostly growth of live sessions, sometimes a new session."""
        if len(self._docs) < len(self.pcs) or self.rng.random() < 0.3:
            return self.new_session()
        return self.grow()

    def run(self, seconds: float, interval: float = 0.05) -> int:
        """Act every `interval` for `seconds`; returns the number of writes."""
        deadline = time.monotonic() + seconds
        writes = 0
        while time.monotonic() < deadline:
            self.step()
            writes += 1
            time.sleep(interval)
        return writes

    def run_in_background(self, seconds: float, interval: float = 0.05) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(seconds, interval), daemon=True)
        thread.start()
        return thread

    def _write(self, pc: str, doc: dict, *, chunked: bool) -> Snapshot:
        data = synth.session_bytes(doc)
        path = self.folder(pc) / synth.session_file_name(doc["ID"])
        key = (pc, doc["ID"])
        with self._lock:
            previous = self.truth.get(key)
            if previous is not None:
                _later_mtime_than(path)
            if chunked and len(data) > 4096:
                synth.write_in_chunks(path, data, chunk_size=len(data) // 3 + 1, pause=0.05)
            else:
                with path.open("wb") as handle:  # in place, like PokerGFX
                    handle.write(data)
            snapshot = Snapshot(
                pc, doc["ID"], path, len(doc["Hands"]), hashlib.sha256(data).hexdigest()
            )
            self.truth[key] = snapshot
            self._docs[key] = doc
            self.files_written += 1
        return snapshot

    # -- broken input, on purpose ----------------------------------------------------------

    def write_broken(self, pc: str, name: str, data: bytes, why: str) -> Path:
        """A file that must end up quarantined (and nowhere in the table)."""
        path = self.folder(pc) / name
        path.write_bytes(data)
        self.broken[path.relative_to(self.base).as_posix()] = why
        self.files_written += 1
        return path


def _later_mtime_than(path: Path) -> None:
    """Filesystems with coarse timestamps could give a rewrite the same mtime: never let it."""
    try:
        before = path.stat().st_mtime_ns
    except OSError:
        return
    while time.time_ns() <= before:
        time.sleep(0.001)


# -- the judge -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    pc_id: str
    session_id: int
    hand_count: int
    file_hash: str


def fetch_rows(database_url: str, site: str | None = None) -> list[Row]:
    """The table's rows; only one site's when `site` is given (sites share PC and session ids)."""
    query = "select gfx_pc_id, session_id, hand_count, file_hash from gfx_sessions"
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        if site is None:
            return [Row(*r) for r in conn.execute(query)]
        return [Row(*r) for r in conn.execute(query + " where site_id = %s", (site,))]


@dataclass
class Verdict:
    """One line of the report. Every count but `rows_found`/`files_written` must be 0."""

    scenario: str
    files_written: int
    rows_expected: int
    rows_found: int
    lost: int  # sessions the producer wrote that have no row
    duplicated: int  # sessions with more than one row, or rows for sessions never written
    regressed: int  # rows that ever went backwards, or ended older than the newest snapshot
    quarantine_mismatch: int  # broken-on-purpose files not quarantined, or good ones quarantined
    stuck: int  # queue items left pending/inflight/dead after convergence
    converge_seconds: float | None
    notes: str = ""

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.duplicated or self.regressed or self.quarantine_mismatch or self.stuck
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class RegressionWatch:
    """Samples the table in the background and counts rows whose snapshot went backwards."""

    def __init__(self, database_url: str, interval: float = 0.2, site: str | None = None) -> None:
        self.database_url = database_url
        self.site = site
        self.interval = interval
        self.best: dict[SessionKey, int] = {}
        self.regressions: set[SessionKey] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="regression-watch", daemon=True)

    def __enter__(self) -> RegressionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def sample(self) -> None:
        try:
            rows = fetch_rows(self.database_url, self.site)
        except psycopg.Error:
            return  # the target may be the thing that is down; the next sample will see it
        self.samples += 1
        for row in rows:
            key = (row.pc_id, row.session_id)
            if row.hand_count < self.best.get(key, -1):
                self.regressions.add(key)
            self.best[key] = max(self.best.get(key, -1), row.hand_count)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def quarantined_files(base: Path) -> set[str]:
    """Relative paths (as the producer names them) of everything in `<base>/_error/`."""
    found = set()
    for reason in (base / "_error").glob("*/*.reason.txt"):
        first = reason.read_text(encoding="utf-8").splitlines()[0]
        found.add(Path(first.removeprefix("file: ")).relative_to(base).as_posix())
    return found


def queue_leftovers(queue_path: Path) -> int:
    """Items that did not end done (or quarantined): pending, inflight or dead-lettered."""
    if not queue_path.exists():
        return 0
    with sqlite3.connect(f"file:{queue_path}?mode=ro", uri=True, timeout=30) as conn:
        (count,) = conn.execute(
            "select count(*) from items where state in ('pending', 'inflight', 'dead')"
        ).fetchone()
    return count


def queue_inflight(rig: Rig) -> int:
    """Items some process has claimed and not settled yet."""
    if not rig.queue_path.exists():
        return 0
    with sqlite3.connect(f"file:{rig.queue_path}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute("select count(*) from items where state = 'inflight'").fetchone()[0]


def judge(
    scenario: str,
    producer: Producer,
    rows: list[Row],
    *,
    regressions: set[SessionKey] = frozenset(),  # type: ignore[assignment]
    queue_path: Path | None = None,
    converge_seconds: float | None = None,
    notes: str = "",
) -> Verdict:
    """Compare the table, quarantine and queue with the producer's truth."""
    truth = producer.truth
    if producer.shared_table:
        rows = [r for r in rows if producer.owns(r.session_id)]
    rows = [r for r in rows if (r.pc_id, r.session_id) not in producer.may_appear]
    present = {(r.pc_id, r.session_id) for r in rows} & set(truth)
    lost = len(truth) - len(present)
    duplicated = len(rows) - len(present)  # a second row, a wrong PC, or a row never written
    regressed = set(regressions)
    for row in rows:
        expected = truth.get((row.pc_id, row.session_id))
        if expected is not None and (
            row.hand_count < expected.hand_count
            or (row.hand_count == expected.hand_count and row.file_hash != expected.file_hash)
        ):
            regressed.add((row.pc_id, row.session_id))
    mismatch = len(quarantined_files(producer.base) ^ set(producer.broken))
    return Verdict(
        scenario=scenario,
        files_written=producer.files_written,
        rows_expected=len(truth),
        rows_found=len(rows),
        lost=lost,
        duplicated=duplicated,
        regressed=len(regressed & set(truth)),
        quarantine_mismatch=mismatch,
        stuck=queue_leftovers(queue_path) if queue_path else 0,
        converge_seconds=converge_seconds,
        notes=notes,
    )


def converge(
    scenario: str,
    producer: Producer,
    database_url: str,
    *,
    timeout: float,
    watch: RegressionWatch | None = None,
    queue_path: Path | None = None,
    started: float | None = None,
    notes: str = "",
    site: str | None = None,
) -> Verdict:
    """Wait until the table matches the truth (or `timeout`), then judge.

    `started` (monotonic) is when the faults stopped; the time to converge counts from there.
    `site`: judge only that site's rows (the producer's truth is one site's).
    """
    started = time.monotonic() if started is None else started
    deadline = time.monotonic() + timeout
    converged_at: float | None = None
    while True:
        try:
            rows = fetch_rows(database_url, site)
        except psycopg.Error:
            rows = []
        verdict = judge(scenario, producer, rows)
        if verdict.lost == 0 and verdict.regressed == 0 and verdict.quarantine_mismatch == 0:
            converged_at = time.monotonic()
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if watch is not None:
        watch.sample()
    if queue_path is not None and converged_at is not None:
        _wait_for_acks(queue_path)
    return judge(
        scenario,
        producer,
        rows,
        regressions=watch.regressions if watch else set(),
        queue_path=queue_path,
        converge_seconds=None if converged_at is None else round(converged_at - started, 2),
        notes=notes,
    )


def _wait_for_acks(queue_path: Path, timeout: float = 30.0) -> None:
    """Acks follow commits (and superseded items retire a moment later): let the queue settle."""
    deadline = time.monotonic() + timeout
    while queue_leftovers(queue_path) and time.monotonic() < deadline:
        time.sleep(0.2)


# -- the report --------------------------------------------------------------------------------

COLUMNS = (
    ("scenario", "scenario"),
    ("files_written", "files"),
    ("rows_expected", "expected"),
    ("rows_found", "found"),
    ("lost", "lost"),
    ("duplicated", "dup"),
    ("regressed", "regr"),
    ("quarantine_mismatch", "quar!"),
    ("stuck", "stuck"),
    ("converge_seconds", "converge s"),
    ("notes", "notes"),
)


def format_report(verdicts: list[Verdict]) -> str:
    """A plain table, one scenario per line, for the terminal summary and the closing notes."""
    table = [[title for _, title in COLUMNS]]
    for verdict in verdicts:
        values = verdict.as_dict()
        table.append(["-" if values[key] is None else str(values[key]) for key, _ in COLUMNS])
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join(
        " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def env_seconds(name: str, ci_default: float) -> float:
    """Fault durations: short in CI, longer in the soak (`GFX_SYNC_FAULTS_SOAK=1`)."""
    if name in os.environ:
        return float(os.environ[name])
    return ci_default * (6 if os.environ.get("GFX_SYNC_FAULTS_SOAK") else 1)


# -- the rig: one scenario's system under test ---------------------------------------------


@dataclass
class Rig:
    base: Path
    state: Path
    database_url: str  # direct: what the judge reads
    proxy: ProxyProcess  # what gfx-sync goes through: refuse / hang / delay
    extra_env: dict[str, str] = field(default_factory=dict)
    site: str | None = None  # GFX_SYNC_SITE, and the only rows the judge reads; None: default

    @property
    def system_url(self) -> str:
        return via_proxy(self.database_url, self.proxy.port)

    @property
    def queue_path(self) -> Path:
        return self.state / "queue.sqlite3"

    def env(self, **overrides: str) -> dict[str, str]:
        """Short timeouts and delays, so faults are noticed and recovered within seconds."""
        return {
            "GFX_SYNC_BASE_PATH": str(self.base),
            "GFX_SYNC_STATE_DIR": str(self.state),
            "GFX_SYNC_REGISTRY_PATH": str(self.state / "no-registry.json"),
            "GFX_SYNC_DATABASE_URL": self.system_url,
            "GFX_SYNC_FLUSH_INTERVAL": "2",
            "GFX_SYNC_SETTLE_SECONDS": "1",
            "GFX_SYNC_REQUEST_TIMEOUT": "3",
            "GFX_SYNC_OUTAGE_RETRY_DELAY": "1",
            "GFX_SYNC_BACKOFF_MAX": "5",
            "GFX_SYNC_RECOVERY_INTERVAL": "20",
            **({"GFX_SYNC_SITE": self.site} if self.site else {}),
            **self.extra_env,
            **overrides,
        }

    def producer(self, seed: int = 1, scenario: int = 0) -> Producer:
        return Producer(self.base, PCS, seed=seed, scenario=scenario)

    @contextlib.contextmanager
    def up(
        self,
        wrapper: tuple[str, ...] = (),
        until: str = "up",
        command: str = "up",
        **overrides: str,
    ) -> Iterator[RunningSystem]:
        """`gfx-sync up`, or `command="worker"` against the PREFECT_API_URL in `overrides`."""
        with gfx_sync_up(
            self.env(**overrides), cwd=self.state, wrapper=wrapper, until=until, command=command
        ) as system:
            yield system

    def watch(self) -> RegressionWatch:
        return RegressionWatch(self.database_url, site=self.site)

    def converge(
        self,
        scenario: str,
        producer: Producer,
        *,
        watch: RegressionWatch | None = None,
        started: float | None = None,
        timeout: float = 90.0,
        notes: str = "",
    ) -> Verdict:
        return converge(
            scenario,
            producer,
            self.database_url,
            timeout=timeout,
            watch=watch,
            queue_path=self.queue_path,
            started=started,
            notes=notes,
            site=self.site,
        )
