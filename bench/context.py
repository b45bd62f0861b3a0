"""What a run shares: the profile (counts and time bounds), the temp dir, the Postgres server and
the delaying proxy, each started on first use and stopped by `Bench.close()`."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.pg import BenchPostgres
from bench.proxy import ProxyProcess
from gfx_sync.settings import Settings


@dataclass(frozen=True)
class Profile:
    """Counts and bounds of one run. Every loop in the bench is bounded by these."""

    quick: bool = False
    rtt_ms: float = 20.0  # added round trip through the proxy (batch, ceiling, offline)
    pcs: int = 4
    # detection: files per variant (raw watchfiles / FolderWatcher), pause between files
    detection_files: int = 200
    detection_gap_s: float = 0.03
    # realtime: measured files (after warm-up files), spacing, wait for the last commit
    realtime_files: int = 30
    realtime_warmup: int = 2
    realtime_spacing_s: float = 1.5
    realtime_wait_s: float = 30.0
    # batch + ceiling: files, repeats of the fast paths, time budget of the per-file baseline
    batch_files: int = 500
    batch_repeats: int = 3
    per_file_budget_s: float = 180.0
    # offline: queued files, failing scheduled runs before the target returns, baseline budget
    offline_files: int = 1000
    offline_down_runs: int = 2
    offline_budget_s: float = 60.0
    offline_wait_s: float = 120.0
    # burst through `gfx-sync up`
    burst_files: int = 1000
    burst_wait_s: float = 120.0
    # idle CPU
    idle_s: float = 60.0
    idle_settle_s: float = 10.0
    # memory: files of about `memory_file_kb`
    memory_files: int = 500
    memory_file_kb: int = 500
    # scale: PC folder counts of the curve, files in each, one folder with many (0: skipped),
    # the idle window and the wait before it (past the second start's leftover work: the
    # first minute's re-reads and runs), the bound on the first start's sync of every file,
    # and how often each PC rewrites a session while realtime is measured
    scale_pcs: tuple[int, ...] = (1, 10, 100)
    scale_files_per_pc: int = 200
    scale_one_folder_files: int = 20_000
    scale_idle_settle_s: float = 60.0
    scale_idle_s: float = 30.0
    scale_sync_wait_s: float = 900.0
    scale_rewrite_period_s: float = 60.0
    system_start_timeout_s: float = 180.0
    # sustained: PC folders, each rewriting its live session every period, for this long
    sustained_pcs: int = 100
    sustained_period_s: float = 10.0
    sustained_minutes: float = 10.0
    # sites: site counts sharing one central Prefect server (added in steps), the measured
    # window at each step, and the pause for the new sites' first runs before it
    sites_counts: tuple[int, ...] = (1, 5, 20)
    sites_window_s: float = 120.0
    sites_settle_s: float = 10.0
    # isolation: site B's realtime files per phase and their spacing, site A's write interval
    isolation_files: int = 20
    isolation_spacing_s: float = 1.0
    isolation_a_interval_s: float = 7.5  # 8 PCs, a rewrite a minute each

    @classmethod
    def full(cls) -> Profile:
        return cls()

    @classmethod
    def smoke(cls) -> Profile:
        """`--quick`: the same scenarios with small counts, for a smoke run."""
        return cls(
            quick=True,
            detection_files=30,
            realtime_files=8,
            realtime_warmup=1,
            batch_files=40,
            batch_repeats=1,
            per_file_budget_s=30.0,
            offline_files=60,
            offline_down_runs=1,
            offline_budget_s=20.0,
            offline_wait_s=60.0,
            burst_files=100,
            burst_wait_s=60.0,
            idle_s=15.0,
            idle_settle_s=5.0,
            memory_files=40,
            scale_pcs=(1, 3),
            scale_files_per_pc=20,
            scale_one_folder_files=0,
            scale_idle_settle_s=5.0,
            scale_idle_s=5.0,
            scale_sync_wait_s=180.0,
            sustained_pcs=10,
            sustained_minutes=0.5,
            sites_counts=(1, 2),
            sites_window_s=20.0,
            sites_settle_s=3.0,
            isolation_files=4,
        )

    def with_(self, **changes: Any) -> Profile:
        return replace(self, **changes)


Say = Callable[[str], None]


def stderr_say(started: float) -> Say:
    def say(message: str) -> None:
        print(f"[bench {time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say


@dataclass
class Bench:
    profile: Profile
    root: Path
    say: Say = field(default=lambda _message: None)
    cache: dict[str, Any] = field(default_factory=dict)  # measurements shared by scenarios
    _pg: BenchPostgres | None = None
    _proxy: ProxyProcess | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def pg(self) -> BenchPostgres:
        if self._pg is None:
            self.say("starting the embedded PostgreSQL")
            self._pg = BenchPostgres(self.root / "pg")
            self._stack.callback(self._pg.close)
        return self._pg

    @property
    def proxy(self) -> ProxyProcess:
        """The delaying proxy in front of the server (one-way delay = rtt / 2)."""
        if self._proxy is None:
            self._proxy = ProxyProcess(self.pg.upstream, delay=self.profile.rtt_ms / 2000)
            self._stack.callback(self._proxy.stop)
        return self._proxy

    def workdir(self, name: str) -> Path:
        folder = self.root / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def settings(self, work: Path, base: Path, database_url: str, **overrides: Any) -> Settings:
        """Shipped defaults, except where things live (no .env, no registry: PCs are folders)."""
        return Settings(
            _env_file=None,  # type: ignore[call-arg]
            base_path=base,
            state_dir=work / "state",
            registry_path=work / "no-registry.json",
            database_url=database_url,
            **overrides,
        )

    def enter(self, manager: contextlib.AbstractContextManager[Any]) -> Any:
        return self._stack.enter_context(manager)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
