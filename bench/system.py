"""`gfx-sync up` under the bench: started through tests/support/system.py (the same launcher the
end-to-end tests use: a child process, its own Prefect server on a free loopback port, ready
when it prints its ready line), plus what the scenarios read from it: CPU of its process tree
and its flow runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.context import Bench
from bench.corpus import pc_folder
from bench.pg import CommitListener
from tests.support.system import gfx_sync_up

RECOVERY_FLOW = "gfx-recovery"
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PAGE = 200
MAX_PAGES = 10  # at most 2,000 runs (or events) read back per query
EVENTS_PAGE = 50  # the most the events API returns at once


@dataclass
class System:
    runner: str
    process: Any  # subprocess.Popen of `gfx-sync up`
    api_url: str
    base: Path
    url: str  # its database, direct
    listener: CommitListener
    output: list[str] = field(default_factory=list)

    def folder(self, pc_id: str) -> Path:
        return pc_folder(self.base, pc_id)


@contextlib.contextmanager
def running_system(
    bench: Bench,
    runner: str,
    *,
    name: str | None = None,
    extra_env: dict[str, str] | None = None,
    pcs: int | None = None,
    populate: Callable[[Path], None] | None = None,
    restart: bool = False,
) -> Iterator[System]:
    """A fresh database (with commit NOTIFY), base folder and state dir, and `gfx-sync up`
    serving its deployments with `runner` ("warm" or "stock"), all on shipped defaults except
    what `extra_env` sets; `name` (default: the runner) keeps two systems' files and
    databases apart. `pcs` PC folders (default: the profile's); `populate(base)` writes files
    before the start; `restart` starts again on the folders, state and database a previous
    start of the same `name` left (nothing made fresh)."""
    name = name or runner
    work = bench.root / f"system-{name}" if restart else bench.workdir(f"system-{name}")
    base = work / "base"
    for number in range(1, (bench.profile.pcs if pcs is None else pcs) + 1):
        pc_folder(base, f"PC{number:02d}")  # PCs are discovered from folders at start-up
    if populate is not None:
        populate(base)
    database = f"bench_system_{name}"
    url = (
        bench.pg.database_url(database)
        if restart
        else bench.pg.create_database(database, notify=True)
    )
    state = work / "state"
    state.mkdir(exist_ok=restart)
    env = {
        "GFX_SYNC_BASE_PATH": str(base),
        "GFX_SYNC_STATE_DIR": str(state),
        "GFX_SYNC_REGISTRY_PATH": str(work / "no-registry.json"),
        "GFX_SYNC_DATABASE_URL": url,
        "GFX_SYNC_RUNNER": runner,
        "PREFECT_HOME": str(state / "prefect"),
        **(extra_env or {}),
    }
    bench.say(f"starting gfx-sync up (runner={runner})")
    with (
        CommitListener(url) as listener,
        gfx_sync_up(env, cwd=work, timeout=bench.profile.system_start_timeout_s) as up,
    ):
        bench.say(f"gfx-sync up is ready (runner={runner})")
        system = System(runner, up.process, up.api_url, base, url, listener, up.output)
        wait_for_startup_recovery(system, bench.profile.system_start_timeout_s)
        try:
            yield system
        finally:
            bench.say(f"stopping gfx-sync up (runner={runner})")
    (work / "gfx-sync-up.log").write_text("".join(up.output))
    if up.process.returncode not in (0, None):
        bench.say(f"gfx-sync up (runner={runner}) exited with {up.process.returncode}")


def wait_for_startup_recovery(system: System, timeout: float) -> None:
    """`up` starts one recovery run as it comes up; a file dropped before that run finished
    could be committed by it instead of the realtime path, so the scenarios wait for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The scheduler also creates recovery runs ahead (every 5 min): only the due ones count.
        due = {"before_": iso(time.time())}
        runs = flow_runs(system.api_url, RECOVERY_FLOW, expected_start_time=due)
        if runs and all(r.get("state_type") in FINAL_STATES for r in runs):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the start-up recovery run did not finish within {timeout:g} s")


# -- CPU of a process tree -----------------------------------------------------------------------


def _is_prefect_server(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        cmdline = process.cmdline()
        return "prefect" in " ".join(cmdline) and "server" in cmdline and "start" in cmdline
    return False


def _label(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        cmdline = process.cmdline()
        markers = (
            "deployments.app",
            "flows.watcher",
            "prefect.engine",
            "forkserver",
            "resource_tracker",
        )
        for marker in markers:
            if any(marker in part for part in cmdline):
                return marker
        return " ".join(cmdline)[:60] or process.name()
    return "?"


def _cpu(process: psutil.Process) -> float:
    """Own CPU plus that of its children it has already reaped (so a run that started and
    ended between two snapshots is still counted: in its parent's children times)."""
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass
class TreeSnapshot:
    gfx: dict[int, tuple[str, float, int]]  # pid -> (label, cpu seconds, parent pid)
    server: dict[int, tuple[str, float, int]]


def snapshot(root_pid: int) -> TreeSnapshot:
    """CPU seconds of `gfx-sync up`'s tree, the Prefect server's subtree kept apart."""
    root = psutil.Process(root_pid)
    members = [root, *root.children(recursive=True)]
    server_pids: set[int] = set()
    for process in members:
        if process.pid not in server_pids and _is_prefect_server(process):
            with contextlib.suppress(psutil.Error):
                server_pids |= {process.pid, *(p.pid for p in process.children(recursive=True))}
    shot = TreeSnapshot({}, {})
    for process in members:
        with contextlib.suppress(psutil.Error):
            bucket = shot.server if process.pid in server_pids else shot.gfx
            bucket[process.pid] = (_label(process), _cpu(process), process.ppid())
    return shot


def cpu_between(before: TreeSnapshot, after: TreeSnapshot) -> dict[str, Any]:
    """CPU seconds used between two snapshots: per group, and per process label for gfx-sync.
    A process gone by `after` is counted in its parent (its reaped-children times), so its
    time before `before` is taken off the parent's label, not its own."""

    def delta(group: str) -> tuple[float, dict[str, float]]:
        old, new = getattr(before, group), getattr(after, group)
        total = sum(cpu for _, cpu, _ in new.values()) - sum(cpu for _, cpu, _ in old.values())
        by_label: dict[str, float] = {}
        for pid, (label, cpu, _) in new.items():
            previous = old[pid][1] if pid in old else 0.0
            by_label[label] = by_label.get(label, 0.0) + cpu - previous
        for pid, (label, cpu, parent) in old.items():
            if pid not in new:
                owner = new[parent][0] if parent in new else label
                by_label[owner] = by_label.get(owner, 0.0) - cpu
        return total, by_label

    gfx, gfx_by_label = delta("gfx")
    server, _ = delta("server")
    return {"gfx_s": gfx, "server_s": server, "gfx_by_process_s": gfx_by_label}


def memory_mb(pid: int) -> dict[str, float]:
    """RSS and PSS (MB) of one process, from /proc/<pid>/smaps_rollup (PSS: pages shared
    with other processes count in proportion, so a tree's sum counts each page once)."""
    figures = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            figures[f"{key.lower()}_mb"] = int(rest.split()[0]) / 1024
    return figures


def cpu_percent(used: dict[str, Any], wall: float) -> dict[str, Any]:
    """`cpu_between`'s seconds as % of one core over `wall` seconds."""
    return {
        "gfx_pct": 100 * used["gfx_s"] / wall,
        "server_pct": 100 * used["server_s"] / wall,
        "gfx_by_process_pct": {
            label: round(100 * seconds / wall, 3)
            for label, seconds in sorted(used["gfx_by_process_s"].items(), key=lambda kv: -kv[1])
        },
    }


# -- flow runs -------------------------------------------------------------------------------------


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def flow_runs(api_url: str, flow_name: str, **run_filter: Any) -> list[dict[str, Any]]:
    """Runs of one flow matching a FlowRunFilter (JSON), at most MAX_PAGES pages."""
    found: list[dict[str, Any]] = []
    with httpx.Client(timeout=15) as client:
        for page in range(MAX_PAGES):
            response = client.post(
                f"{api_url}/flow_runs/filter",
                json={
                    "flows": {"name": {"any_": [flow_name]}},
                    "flow_runs": run_filter,
                    "sort": "EXPECTED_START_TIME_ASC",
                    "limit": PAGE,
                    "offset": page * PAGE,
                },
            )
            response.raise_for_status()
            runs = response.json()
            found.extend(runs)
            if len(runs) < PAGE:
                break
    return found


def runs_started_since(api_url: str, since: float) -> int:
    """Flow runs of every flow that started (went Running) after `since`."""
    response = httpx.post(
        f"{api_url}/flow_runs/count",
        json={
            "flow_runs": {
                # the filter reads a run not yet started at its expected start time
                "start_time": {"after_": iso(since)},
                "state": {"type": {"not_any_": ["SCHEDULED", "PENDING"]}},
            }
        },
        timeout=15,
    )
    response.raise_for_status()
    return int(response.json())


def events(api_url: str, names: list[str], since: float) -> list[dict[str, Any]]:
    """Events of these names that occurred after `since` (epoch s), at most MAX_PAGES pages."""
    found: list[dict[str, Any]] = []
    with httpx.Client(timeout=15) as client:
        response = client.post(
            f"{api_url}/events/filter",
            json={
                "filter": {
                    "occurred": {"since": iso(since), "until": iso(time.time() + 60)},
                    "event": {"name": names},
                    "order": "ASC",
                },
                "limit": EVENTS_PAGE,
            },
        )
        for _ in range(PAGE * MAX_PAGES // EVENTS_PAGE):
            response.raise_for_status()
            page = response.json()
            found.extend(page["events"])
            if not page.get("next_page"):
                break
            response = client.get(page["next_page"])
    return found


def state_times(api_url: str, flow_run_id: str) -> dict[str, float]:
    """When a run first entered each state type (epoch seconds), from its state history."""
    response = httpx.get(
        f"{api_url}/flow_run_states/", params={"flow_run_id": flow_run_id}, timeout=15
    )
    response.raise_for_status()
    times: dict[str, float] = {}
    for state in response.json():
        when = epoch(state.get("timestamp"))
        if when is not None and (state["type"] not in times or when < times[state["type"]]):
            times[state["type"]] = when
    return times


def epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


def state_counts(runs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.get("state_type") or "?"] = counts.get(run.get("state_type") or "?", 0) + 1
    return counts
