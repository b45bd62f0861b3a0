"""Paths cannot escape the base folder: a symlink in a PC folder that leads out of the base is
never read and never copied (quarantined with its reason instead), whether the watcher, a
rescan or `gfx-sync sync` brought it; a PC id cannot name a folder outside `_error/`.

(The registry's own checks, `..`, absolute paths and linked PC folders, are in
tests/test_settings.py.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from gfx_sync.engine import Outcome, SyncEngine
from gfx_sync.queue import ChangeKind, DurableQueue, ItemState, Origin
from gfx_sync.settings import PcConfig, Settings, SettingsError, load_registry
from gfx_sync.sinks.postgres import PostgresSink
from gfx_sync.site import Site
from gfx_sync.watcher import FolderWatcher
from support.records import SESSION_ID, session_document
from support.system import wait_for

SECRET_CONTENT = b"outside-the-base-do-not-read"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "nas" / "PC01" / "hands").mkdir(parents=True)
    return tmp_path / "nas"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A valid session file outside the base (so only the path check can stop it)."""
    folder = tmp_path / "private"
    folder.mkdir()
    path = folder / "secret.json"
    path.write_bytes(orjson.dumps(session_document(hands=3, Note=SECRET_CONTENT.decode())))
    stamp = time.time() - 60
    os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def settings(tmp_path: Path, base: Path) -> Settings:
    return Settings(
        base_path=base,
        state_dir=tmp_path / "state",
        registry_path=tmp_path / "none.json",
        settle_seconds=0,
    )


@pytest.fixture
def queue(settings: Settings) -> Iterator[DurableQueue]:
    with DurableQueue(settings.resolved_queue_path) as queue:
        yield queue


def assert_refused(settings: Settings, queue: DurableQueue, url: str, link: Path) -> None:
    """Quarantined with a reason naming the file, nothing read into the table or _error/."""
    [item] = queue.items(ItemState.QUARANTINED)
    assert item.path == str(link) and "outside the base" in (item.last_error or "")
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from gfx_sessions").fetchone() == (0,)
        events = conn.execute("select event_type, file_path, error from sync_events").fetchall()
    relative = link.relative_to(settings.base_path).as_posix()
    assert [(e[0], e[1]) for e in events] == [("quarantined", relative)]
    assert "outside the base" in events[0][2]
    copies = [p for p in settings.error_dir.rglob("*") if p.is_file()]
    assert [p.name for p in copies] == [f"{relative.replace('/', '__')}.reason.txt"]
    for copy in copies:
        assert SECRET_CONTENT not in copy.read_bytes()


@pytest.mark.parametrize("how", ["file link", "folder link"])
def test_a_rescanned_symlink_out_of_the_base_is_quarantined_unread(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, outside: Path, how: str
) -> None:
    if how == "file link":
        link = base / "PC01" / "hands" / "PGFX_live_data_export GameID=1.json"
        link.symlink_to(outside)
    else:  # a directory link is not walked by the rescan, but a watcher may report into it
        (base / "PC01" / "hands" / "sub").symlink_to(outside.parent)
        link = base / "PC01" / "hands" / "sub" / outside.name
    engine = SyncEngine(settings, queue, PostgresSink(database_url, timeout=5))
    found = [f.path for f in engine.site.scan(queue)]
    assert found == ([link] if how == "file link" else [])
    engine.site.enqueue(engine.queue, [link], ChangeKind.ADDED, Origin.RESCAN)
    report = engine.drain()
    assert [o.status for o in report.outcomes] == [Outcome.QUARANTINED]
    assert_refused(settings, queue, database_url, link)


def test_a_watched_symlink_out_of_the_base_is_quarantined_unread(
    settings: Settings, queue: DurableQueue, database_url: str, base: Path, outside: Path
) -> None:
    pcs = [PcConfig(id="PC01", watch_path="PC01/hands", watch_mode="polling")]
    ready = threading.Event()
    watcher = FolderWatcher(
        Site(settings, pcs=pcs).watch_targets(),
        queue,
        on_ready=ready.set,
        error_dir=settings.error_dir,
        poll_delay_ms=100,
    )
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    link = (base / "PC01" / "hands").resolve() / "PGFX_live_data_export GameID=1.json"
    try:
        assert ready.wait(20), "the watcher never said its watches were in place"
        link.symlink_to(outside)
        wait_for(lambda: queue.items(ItemState.PENDING), 20)
    finally:
        watcher.stop()
        thread.join(10)
    engine = SyncEngine(settings, queue, PostgresSink(database_url, timeout=5))
    assert [o.status for o in engine.drain().outcomes] == [Outcome.QUARANTINED]
    assert_refused(settings, queue, database_url, link)


def test_gfx_sync_sync_refuses_a_symlink_out_of_the_base(
    tmp_path: Path, base: Path, outside: Path, database_url: str
) -> None:
    link = base / "PC01" / "hands" / "PGFX_live_data_export GameID=1.json"
    link.symlink_to(outside)
    good = base / "PC01" / "hands" / f"PGFX_live_data_export GameID={SESSION_ID}.json"
    good.write_bytes(orjson.dumps(session_document(hands=1)))
    result = subprocess.run(
        [sys.executable, "-m", "gfx_sync.cli", "sync", str(link), str(good)],
        cwd=tmp_path,
        env={
            **os.environ,
            "GFX_SYNC_BASE_PATH": str(base),
            "GFX_SYNC_STATE_DIR": str(tmp_path / "state"),
            "GFX_SYNC_DATABASE_URL": database_url,
            "GFX_SYNC_SETTLE_SECONDS": "0",
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("quarantined")]
    assert str(link) in line and "outside the base" in line
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select session_id from gfx_sessions").fetchall() == [(SESSION_ID,)]
    assert not any(
        SECRET_CONTENT in p.read_bytes() for p in (base / "_error").rglob("*") if p.is_file()
    )


def test_a_file_named_outside_the_base_with_pc_is_read_where_it_is(
    settings: Settings, queue: DurableQueue, database_url: str, outside: Path
) -> None:
    """The one exception, on purpose: the operator names the file and its PC (`sync --pc`)."""
    engine = SyncEngine(settings, queue, PostgresSink(database_url, timeout=5))
    engine.site.enqueue(engine.queue, [outside], ChangeKind.MODIFIED, Origin.MANUAL, pc_id="PC09")
    assert [o.status for o in engine.drain().outcomes] == [Outcome.SYNCED]


@pytest.mark.parametrize("pc_id", ["..", "../../etc", "PC 01", "a/b", "", "x" * 65])
def test_a_pc_id_from_the_command_line_must_be_a_plain_name(
    settings: Settings, queue: DurableQueue, database_url: str, outside: Path, pc_id: str
) -> None:
    """It names the quarantine folder `_error/<pc>/`: `..` would write outside the base."""
    engine = SyncEngine(settings, queue, PostgresSink(database_url, timeout=5))
    with pytest.raises(SettingsError, match="PC id"):
        engine.site.enqueue(
            engine.queue, [outside], ChangeKind.MODIFIED, Origin.MANUAL, pc_id=pc_id
        )
    assert queue.items() == []


def test_a_discovered_pc_folder_that_is_not_an_id_is_an_error_naming_it(
    settings: Settings, base: Path
) -> None:
    """Found while fuzzing: a base folder `PC 01/hands/` crashed with a ValidationError."""
    (base / "PC 01" / "hands").mkdir(parents=True)
    with pytest.raises(SettingsError, match="'PC 01' is not a PC id"):
        load_registry(settings)


def test_the_base_behind_a_symlink_is_not_an_escape(
    tmp_path: Path, base: Path, database_url: str
) -> None:
    """The watcher reports resolved paths; a base configured through a link still holds them."""
    (tmp_path / "mnt").symlink_to(base)
    settings = Settings(
        base_path=tmp_path / "mnt",
        state_dir=tmp_path / "state",
        registry_path=tmp_path / "none.json",
    )
    path = base / "PC01" / "hands" / f"PGFX_live_data_export GameID={SESSION_ID}.json"
    path.write_bytes(orjson.dumps(session_document(hands=2)))
    with DurableQueue(settings.resolved_queue_path) as queue:
        engine = SyncEngine(settings, queue, PostgresSink(database_url, timeout=5))
        engine.site.enqueue(engine.queue, [path.resolve()], ChangeKind.ADDED)
        assert [o.status for o in engine.drain().outcomes] == [Outcome.SYNCED]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select gfx_pc_id, file_path from gfx_sessions").fetchall() == [
            ("PC01", f"PC01/hands/{path.name}")
        ]
