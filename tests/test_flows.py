"""The Prefect flows, called in-process against a real (temporary) Prefect server and a real
Postgres: what backfill, recovery, batch and realtime runs do to the table, the durable queue
and the Prefect UI (artifacts, events, run states).

Each test gets a fresh database, PC folders and queue; settings come from the environment as in
production, and the per-process engine (`tasks.runtime`) is rebuilt for every test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.states import State

from flows.backfill import backfill
from flows.batch import batch_upsert
from flows.realtime import realtime_upsert
from flows.recovery import recovery
from gfx_sync.engine import SyncEngine
from gfx_sync.queue import ChangeKind, ItemState, Origin
from gfx_synth import grow_session, make_corpus, make_session, write_session
from support.prefect_env import (
    artifacts,
    flow_run_id,
    prefect_server,
    read_events,
    reset_runtime,
)
from support.system import free_port, wait_for
from tasks import runtime
from tasks.status import STATUS_ARTIFACT_KEY

pytestmark = pytest.mark.prefect

PCS = ("PC01", "PC02")
SUMMARY_KEY = "gfx-backfill-summary"
# Fixed file times: a spring file and a summer file, far from "now", so nothing is "settling".
MARCH = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
JUNE = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class Row(NamedTuple):
    hand_count: int
    sync_source: str
    file_hash: str
    updated_at: datetime


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One temporary Prefect server for the module: starting one takes seconds."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as api_url:
        yield api_url


@dataclass
class Site:
    """A NAS share with PC folders, gfx-sync's state folder and the target database."""

    base: Path
    state: Path
    database_url: str
    monkeypatch: pytest.MonkeyPatch

    def configure(self, **env: str) -> None:
        """Change settings the way an operator would: environment, then a fresh process."""
        for name, value in env.items():
            self.monkeypatch.setenv(name, value)
        reset_runtime()

    @property
    def engine(self) -> SyncEngine:
        return runtime.engine()

    def write(self, pc: str, doc: dict, mtime: datetime = MARCH, subfolder: str = "") -> Path:
        """Write a session file as PokerGFX would, with a chosen modification time."""
        path = write_session(self.base / pc / "hands" / subfolder, doc)
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
        return path

    def enqueue(self, path: Path, kind: ChangeKind, origin: Origin = Origin.WATCH) -> None:
        """What the watcher (or `origin`) records for a file event."""
        self.engine.site.enqueue(self.engine.queue, [path], kind, origin)

    def pending(self) -> dict[str, ChangeKind]:
        """Pending queue items: file name -> why it was enqueued."""
        return {Path(i.path).name: i.kind for i in self.engine.queue.items(ItemState.PENDING)}

    def sessions(self) -> dict[tuple[str, int], Row]:
        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute(
                "select gfx_pc_id, session_id, hand_count, sync_source, file_hash, updated_at "
                "from gfx_sessions"
            ).fetchall()
        return {(pc, sid): Row(*rest) for pc, sid, *rest in rows}


@pytest.fixture
def site(
    prefect_api: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    """Two PC folders, a fresh queue and database, configured only through the environment."""
    base, state = tmp_path / "nas", tmp_path / "state"
    for pc in PCS:
        (base / pc / "hands").mkdir(parents=True)
    for name in list(os.environ):
        if name.startswith(("GFX_SYNC_", "SUPABASE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    site = Site(base, state, database_url, monkeypatch)
    site.configure(
        GFX_SYNC_BASE_PATH=str(base),
        GFX_SYNC_STATE_DIR=str(state),
        GFX_SYNC_REGISTRY_PATH=str(state / "no-registry.json"),  # every <base>/<PC>/hands
        GFX_SYNC_DATABASE_URL=database_url,
        GFX_SYNC_SETTLE_SECONDS="0.2",
    )
    yield site
    reset_runtime()


def completed(state: State) -> Any:
    """The result of a flow run that must have completed."""
    assert state.is_completed(), f"{state.name}: {state.message}"
    return state.result()


def table_artifact(run_id: UUID, key: str) -> list[dict[str, Any]]:
    (artifact,) = artifacts(run_id, key)
    assert artifact.type == "table"
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def summary_row(
    pc: str, seen: int, to_send: int, synced: int = 0, unchanged: int = 0, failed: int = 0
) -> dict[str, object]:
    """One row of the backfill summary (the flow's result and its table artifact)."""
    return {
        "pc": pc,
        "seen": seen,
        "to_send": to_send,
        "synced": synced,
        "unchanged": unchanged,
        "failed": failed,
    }


def session(seed: int, hands: int = 2) -> dict:
    return make_session(hands=hands, seed=seed)


def key(pc: str, doc: dict) -> tuple[str, int]:
    return (pc, doc["ID"])


def write_broken(path: Path) -> Path:
    """A session file cut off mid-write, long ago: it is quarantined at once."""
    path.write_bytes(b'{"CreatedDateTimeUTC": "2025-03-14T09:26:53.5897931Z", "Hands": [')
    os.utime(path, (MARCH.timestamp(), MARCH.timestamp()))
    return path


# -- backfill ---------------------------------------------------------------------------------


def test_a_dry_run_reports_what_would_be_sent_and_changes_nothing(site: Site) -> None:
    """No row, no queue item, no file state: only the per-PC summary of what would go."""
    make_corpus(site.base, pcs=2, sessions_per_pc=3, hands=(1, 3))

    summary = completed(backfill(dry_run=True, return_state=True))

    assert summary == [
        summary_row("PC01", seen=3, to_send=3),
        summary_row("PC02", seen=3, to_send=3),
    ]
    assert site.sessions() == {}
    assert site.engine.queue.items() == []
    assert site.engine.queue.file_states() == {}


def test_backfill_sends_what_is_missing_then_nothing_then_everything_when_forced(
    site: Site,
) -> None:
    """Backfill compares each file with what was last synced; `force` re-sends anyway, and the
    database skips identical content, so the table does not change (not even updated_at)."""
    paths = make_corpus(site.base, pcs=2, sessions_per_pc=3, hands=(1, 3))
    site.enqueue(paths[0], ChangeKind.MODIFIED, Origin.MANUAL)  # one file synced earlier, by hand
    site.engine.drain()

    first = completed(backfill(return_state=True))
    assert first == [
        summary_row("PC01", seen=3, to_send=2, synced=2, unchanged=1),
        summary_row("PC02", seen=3, to_send=3, synced=3),
    ]
    table = site.sessions()
    assert len(table) == 6
    assert sorted(r.sync_source for r in table.values()) == ["backfill"] * 5 + ["manual"]

    again = completed(backfill(return_state=True))
    assert again == [
        summary_row("PC01", seen=3, to_send=0, unchanged=3),
        summary_row("PC02", seen=3, to_send=0, unchanged=3),
    ]

    forced = completed(backfill(force=True, return_state=True))
    assert forced == [
        summary_row("PC01", seen=3, to_send=3, synced=3, unchanged=3),
        summary_row("PC02", seen=3, to_send=3, synced=3, unchanged=3),
    ]
    assert site.sessions() == table
    assert site.engine.queue.stats().pending == 0


def test_a_backfill_run_shows_its_summary_and_progress_in_the_ui(site: Site) -> None:
    """Operators start backfills by hand and watch them in the UI, not in the logs."""
    make_corpus(site.base, pcs=2, sessions_per_pc=2, hands=(1, 2))

    dry = backfill(dry_run=True, return_state=True)
    assert table_artifact(flow_run_id(dry), SUMMARY_KEY) == completed(dry)
    assert [a.type for a in artifacts(flow_run_id(dry))] == ["table"], "no progress: nothing sent"

    real = backfill(return_state=True)
    summary = completed(real)
    assert table_artifact(flow_run_id(real), SUMMARY_KEY) == summary
    (progress,) = [a for a in artifacts(flow_run_id(real)) if a.type == "progress"]
    assert progress.data == 100


# Two sessions per PC, one written in March and one in June (PC02's in a subfolder).
FILTER_FILES = {
    "MARCH_01": ("PC01", session(11), MARCH, ""),
    "JUNE_01": ("PC01", session(12), JUNE, ""),
    "MARCH_02": ("PC02", session(13), MARCH, ""),
    "JUNE_02": ("PC02", session(14), JUNE, "2025-summer"),
}
JUNE_01_ID = FILTER_FILES["JUNE_01"][1]["ID"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({"pcs": ["PC02"]}, {"MARCH_02", "JUNE_02"}, id="pcs"),
        pytest.param({"pattern": f"*GameID={JUNE_01_ID}.json"}, {"JUNE_01"}, id="pattern"),
        pytest.param({"pattern": "2025-summer/*.json"}, {"JUNE_02"}, id="pattern-subfolder"),
        pytest.param({"since": JUNE - timedelta(days=1)}, {"JUNE_01", "JUNE_02"}, id="since"),
        pytest.param({"until": JUNE}, {"MARCH_01", "MARCH_02"}, id="until-exclusive"),
        pytest.param(
            {"pcs": ["PC01"], "since": MARCH, "until": JUNE + timedelta(seconds=1)},
            {"MARCH_01", "JUNE_01"},
            id="pcs-and-inclusive-since",
        ),
    ],
)
def test_backfill_filters_select_the_right_files(
    site: Site, filters: dict[str, Any], expected: set[str]
) -> None:
    """`pcs`, `pattern` (on the name or the path below the PC folder) and the [since, until)
    window of modification times choose what is sent; nothing else is touched."""
    for pc, doc, mtime, subfolder in FILTER_FILES.values():
        site.write(pc, doc, mtime, subfolder)

    summary = completed(backfill(**filters, return_state=True))

    chosen = [FILTER_FILES[name] for name in expected]
    assert set(site.sessions()) == {key(pc, doc) for pc, doc, _, _ in chosen}
    assert {row["pc"] for row in summary} == {pc for pc, _, _, _ in chosen}
    assert sum(row["seen"] for row in summary) == len(expected)
    assert all(row["synced"] == row["to_send"] == row["seen"] for row in summary)
    assert site.engine.queue.stats().pending == 0


# -- recovery ---------------------------------------------------------------------------------


def test_recovery_syncs_files_written_while_stopped_and_only_what_changed(site: Site) -> None:
    """No watcher saw these files; the rescan compares each with its last synced size/mtime."""
    steady, growing, late = session(21), session(22, hands=2), session(23)
    steady_path = site.write("PC01", steady)
    site.write("PC02", growing)

    first = completed(recovery(return_state=True))
    assert first == {
        "scanned": 2,
        "enqueued": 2,
        "forgotten": 0,
        "claimed": 2,
        "synced": 2,
        "retry": 0,
        "dead": 0,
        "quarantined": 0,
    }
    before = site.sessions()
    assert {k: r.sync_source for k, r in before.items()} == {
        key("PC01", steady): "recovery",
        key("PC02", growing): "recovery",
    }

    # While gfx-sync was stopped again: one session grew, a new one started.
    site.write("PC02", grow_session(growing, 1, seed=22), MARCH + timedelta(minutes=5))
    site.write("PC02", late)

    second = completed(recovery(return_state=True))
    assert (second["scanned"], second["enqueued"], second["synced"]) == (3, 2, 2)
    after = site.sessions()
    assert after[key("PC01", steady)] == before[key("PC01", steady)]
    assert after[key("PC02", growing)].hand_count == 3
    assert after[key("PC02", late)].sync_source == "recovery"
    queued_for_steady = [i for i in site.engine.queue.items() if i.path == str(steady_path)]
    assert len(queued_for_steady) == 1, "an unchanged, synced file is not enqueued again"

    with psycopg.connect(site.database_url) as conn:
        events = conn.execute(
            "select file_count, details from sync_events where event_type = 'recovery' order by id"
        ).fetchall()
    assert [(count, details["enqueued"]) for count, details in events] == [(2, 2), (2, 2)]


def test_recovery_publishes_the_per_pc_status_table(site: Site) -> None:
    """The status table shows, per PC, what the local queue knows: synced files, backlog and
    files given up on (a broken file is quarantined once it has settled)."""
    site.write("PC01", session(31))
    site.write("PC01", session(32))
    broken = write_broken(
        site.base / "PC02" / "hands" / "PGFX_live_data_export GameID=638000000000000001.json"
    )

    queued_only = recovery(drain=False, return_state=True)
    assert completed(queued_only) == {"scanned": 3, "enqueued": 3, "forgotten": 0}
    status = {r["pc"]: r for r in table_artifact(flow_run_id(queued_only), STATUS_ARTIFACT_KEY)}
    assert status["PC01"] == {
        "pc": "PC01",
        "files_synced": 0,
        "last_sync_utc": "never",
        "queue_depth": 2,
        "errors": 0,
    }
    assert (status["PC02"]["queue_depth"], status["PC02"]["errors"]) == (1, 0)

    drained = recovery(return_state=True)
    assert completed(drained)["quarantined"] == 1
    status = {r["pc"]: r for r in table_artifact(flow_run_id(drained), STATUS_ARTIFACT_KEY)}
    assert (status["PC01"]["files_synced"], status["PC01"]["queue_depth"]) == (2, 0)
    assert status["PC01"]["errors"] == 0 and status["PC01"]["last_sync_utc"] != "never"
    assert (status["PC02"]["files_synced"], status["PC02"]["queue_depth"]) == (0, 0)
    assert status["PC02"]["errors"] == 1
    assert (site.base / "_error" / "PC02" / f"PC02__hands__{broken.name}").is_file()


# -- batch and realtime -----------------------------------------------------------------------


def test_batch_upsert_drains_modified_files_and_sweeps_added_ones_only_when_late(
    site: Site,
) -> None:
    """Modified files wait for the batch; an added file belongs to the realtime path until it
    has waited `realtime_grace` seconds, then the batch sweeps it up."""
    site.configure(GFX_SYNC_REALTIME_GRACE="300")
    modified, added = session(41), session(42)
    site.enqueue(site.write("PC01", modified), ChangeKind.MODIFIED)
    added_path = site.write("PC02", added)
    site.enqueue(added_path, ChangeKind.ADDED)

    summary = completed(batch_upsert(return_state=True))

    assert (summary["claimed"], summary["synced"]) == (1, 1)
    assert {k: r.sync_source for k, r in site.sessions().items()} == {
        key("PC01", modified): "batch"
    }
    assert site.pending() == {added_path.name: ChangeKind.ADDED}

    site.configure(GFX_SYNC_REALTIME_GRACE="0")  # the realtime run never came
    assert completed(batch_upsert(return_state=True))["synced"] == 1
    assert site.sessions()[key("PC02", added)].sync_source == "batch"
    assert site.pending() == {}


def test_batch_upsert_fails_loudly_when_the_target_is_unreachable_and_keeps_the_changes(
    site: Site, prefect_api: str
) -> None:
    """The run ends Failed (so it alerts) with a message saying the changes stay queued; the
    failure hook emits `gfx.flow-run.failed` without secrets; nothing is lost once the
    target is back."""
    password = "not-to-be-leaked"
    site.configure(
        GFX_SYNC_DATABASE_URL=f"postgresql://gfx:{password}@127.0.0.1:{free_port()}/gfx",
        GFX_SYNC_REQUEST_TIMEOUT="2",
        GFX_SYNC_OUTAGE_RETRY_DELAY="0.5",
        GFX_SYNC_OUTAGE_WAIT="1",  # probes for a second, then gives up and fails
    )
    docs = [session(51), session(52)]
    for pc, doc in zip(PCS, docs, strict=True):
        site.enqueue(site.write(pc, doc), ChangeKind.MODIFIED)

    state = batch_upsert(return_state=True)

    assert state.is_failed(), f"{state.name}: {state.message}"
    assert "2 change(s) stay queued" in (state.message or "")
    queue = site.engine.queue
    assert queue.stats().pending == 2
    # An outage is nobody's fault: it never uses up a file's retries.
    assert all(i.last_error and i.attempts == 0 for i in queue.items(ItemState.PENDING))

    run_id = flow_run_id(state)
    (event,) = read_events(prefect_api, "gfx.flow-run.failed", f"prefect.flow-run.{run_id}")
    assert event["payload"]["flow"] == "gfx-batch-upsert"
    assert event["payload"]["state"] == "Failed"
    assert "stay queued" in event["payload"]["message"]
    assert password not in json.dumps(event)

    site.configure(GFX_SYNC_DATABASE_URL=site.database_url)
    wait_for(lambda: site.engine.queue.stats().due == 2, timeout=30)
    assert completed(batch_upsert(return_state=True))["synced"] == 2
    assert set(site.sessions()) == {key(pc, doc) for pc, doc in zip(PCS, docs, strict=True)}


def test_the_realtime_flow_drains_added_files_only(site: Site) -> None:
    """A realtime run takes every pending added file (not just the one that triggered it) and
    leaves modified files to the batch."""
    first, second, modified = session(61), session(62), session(63)
    first_path = site.write("PC01", first)
    site.enqueue(first_path, ChangeKind.ADDED)
    site.enqueue(site.write("PC02", second), ChangeKind.ADDED)
    modified_path = site.write("PC02", modified)
    site.enqueue(modified_path, ChangeKind.MODIFIED)

    state = realtime_upsert(path=str(first_path), pc_id="PC01", return_state=True)

    result = completed(state)
    assert (result["claimed"], result["synced"]) == (2, 2)
    assert {k: r.sync_source for k, r in site.sessions().items()} == {
        key("PC01", first): "realtime",
        key("PC02", second): "realtime",
    }
    assert site.pending() == {modified_path.name: ChangeKind.MODIFIED}
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(flow_run_id(state)).name == f"realtime PC01 {first_path.name}"


# -- regressions: bugs found by these tests, fixed ----------------------------------------


def test_a_backfill_goes_on_past_a_batch_of_files_that_cannot_be_parsed(site: Site) -> None:
    site.configure(GFX_SYNC_BATCH_SIZE="1")
    write_broken(site.base / "PC01" / "hands" / "PGFX_live_data_export GameID=1.json")
    good = [session(81), session(82)]
    for doc in good:
        site.write("PC01", doc)

    state = backfill(pcs=["PC01"], return_state=True)

    assert completed(state) == [summary_row("PC01", seen=3, to_send=3, synced=2, failed=1)]
    assert set(site.sessions()) == {key("PC01", doc) for doc in good}
    (progress,) = [a for a in artifacts(flow_run_id(state)) if a.type == "progress"]
    assert progress.data == 100


def test_a_backfill_sends_a_file_whose_added_event_is_still_pending(site: Site) -> None:
    """Every file the summary counts as `to_send` ends up synced or failed by this run."""
    announced = site.write("PC01", session(83))
    site.enqueue(announced, ChangeKind.ADDED)  # the realtime run has not come yet
    site.write("PC01", session(84))

    summary = completed(backfill(pcs=["PC01"], return_state=True))

    assert summary == [summary_row("PC01", seen=2, to_send=2, synced=2)]
    assert site.pending() == {}


def test_the_status_table_clears_a_pc_errors_once_its_broken_file_syncs(site: Site) -> None:
    broken = write_broken(
        site.base / "PC02" / "hands" / "PGFX_live_data_export GameID=638000000000000002.json"
    )
    assert completed(recovery(return_state=True))["quarantined"] == 1

    # PokerGFX finishes writing the file: it parses now, and syncs.
    doc = make_session(hands=2, created_ticks=638000000000000002)
    write_session(broken.parent, doc)
    os.utime(broken, (JUNE.timestamp(), JUNE.timestamp()))
    state = recovery(return_state=True)
    assert completed(state)["synced"] == 1

    status = {r["pc"]: r for r in table_artifact(flow_run_id(state), STATUS_ARTIFACT_KEY)}
    assert (status["PC02"]["files_synced"], status["PC02"]["errors"]) == (1, 0)
