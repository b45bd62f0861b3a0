"""The site model: which PC owns a path, where a file sits relative to the base, what a
rescan finds and how it records it. No database: the queue and the folders are real."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from gfx_sync.queue import (
    REALTIME_LANE,
    RETENTION,
    ChangeKind,
    DurableQueue,
    ItemState,
    NewChange,
    Origin,
    SyncedFile,
)
from gfx_sync.settings import (
    RACY_SECONDS,
    PcConfig,
    RegistryReader,
    Settings,
    SettingsError,
    load_settings,
)
from gfx_sync.site import FolderOwners, SessionFiles, Site, rescan
from support.clock import Clock


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = tmp_path / "nas"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(base: Path, tmp_path: Path) -> Settings:
    return load_settings(
        base_path=base, state_dir=tmp_path / "state", registry_path=tmp_path / "none.json"
    )


@pytest.fixture
def queue(tmp_path: Path) -> DurableQueue:
    with DurableQueue(tmp_path / "queue.sqlite3") as opened:
        yield opened


def touch(path: Path, text: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_deepest_pc_folder_owns_a_path() -> None:
    owners = FolderOwners([("OUTER", Path("/nas/PC01")), ("INNER", Path("/nas/PC01/hands/x"))])
    assert owners("/nas/PC01/hands/x/a.json") == ("INNER", Path("/nas/PC01/hands/x"))
    assert owners("/nas/PC01/hands/a.json") == ("OUTER", Path("/nas/PC01"))
    assert owners("/nas/PC011/a.json") is None  # a sibling whose name starts the same
    flat = FolderOwners([("FLAT", Path("."))])  # a registry folder "." holds the whole base
    assert flat("PC09/hands/a.json") == ("FLAT", Path("."))


def test_locate_names_the_pc_and_the_base_relative_path(settings: Settings, base: Path) -> None:
    site = Site(settings, pcs=[PcConfig(id="CAM", watch_path="studio/cam/hands")])
    inside = site.locate(base / "studio" / "cam" / "hands" / "s.json")
    assert (inside.pc_id, inside.relative_path, inside.within_base) == (
        "CAM",
        "studio/cam/hands/s.json",
        True,
    )
    unregistered = site.locate(base / "PC04" / "hands" / "s.json")  # its first folder
    assert unregistered.pc_id == "PC04"
    outside = site.locate(base.parent / "elsewhere.json", pc_id="PC07")
    assert (outside.pc_id, outside.within_base) == ("PC07", False)
    assert outside.relative_path == (base.parent / "elsewhere.json").as_posix()
    with pytest.raises(SettingsError, match="not under the base folder"):
        site.locate(base.parent / "elsewhere.json")


def test_a_path_through_the_resolved_base_is_inside_it(tmp_path: Path, base: Path) -> None:
    """Watches report resolved paths; the base may be configured through a symlink."""
    link = tmp_path / "link-to-nas"
    link.symlink_to(base)
    settings = load_settings(base_path=link, state_dir=tmp_path / "state")
    site = Site(settings, pcs=[PcConfig(id="PC01", watch_path="PC01/hands")])
    located = site.locate(base.resolve() / "PC01" / "hands" / "s.json")
    assert (located.pc_id, located.relative_path) == ("PC01", "PC01/hands/s.json")


def test_one_filter_for_watch_and_scan(base: Path) -> None:
    files = SessionFiles(base / "_error")
    folder = base / "PC01" / "hands"
    assert files(folder / "s.json", folder)
    assert files(folder / "day 2" / "S.JSON", folder)
    for name in ("s.json.tmp", ".s.json", "~s.json", "s.txt", "_old/s.json", ".sync/s.json"):
        assert not files(folder / name, folder), name
    assert not files(base / "_error" / "PC01" / "s.json")
    assert files.skips_dir(os.fspath(folder), "_old") and files.skips_dir(os.fspath(base), "_error")
    assert not files.skips_dir(os.fspath(folder), "day 2")


def test_the_pcs_are_read_again_and_a_broken_registry_keeps_the_last_good_list(
    tmp_path: Path, base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = tmp_path / "pcs.json"
    registry.write_text(json.dumps({"pcs": [{"id": "PC01", "watch_path": "PC01/hands"}]}))
    site = Site(load_settings(base_path=base, state_dir=tmp_path / "s", registry_path=registry))
    assert [pc.id for pc in site.pcs] == ["PC01"]
    pcs = [{"id": "PC01", "watch_path": "PC01/hands"}, {"id": "PC02", "watch_path": "PC02/hands"}]
    registry.write_text(json.dumps({"pcs": pcs}))
    assert [pc.id for pc in site.pcs] == ["PC01", "PC02"]  # a PC that joined later
    registry.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="gfx_sync.site"):
        assert [pc.id for pc in site.pcs] == ["PC01", "PC02"]
    assert "keeping the last good list of PCs" in caplog.text
    assert str(registry) in caplog.text


def test_the_pcs_are_read_again_only_when_a_pc_folder_or_the_registry_changes(
    tmp_path: Path, base: Path
) -> None:
    """The watcher's supervisor asks every second: with 100 PCs a full read (each folder
    resolved) is what an idle agent would spend its time on."""
    (base / "PC01" / "hands").mkdir(parents=True)
    registry = tmp_path / "pcs.json"
    settings = load_settings(base_path=base, state_dir=tmp_path / "s", registry_path=registry)
    clock = Clock(time.time() + 2 * RACY_SECONDS)  # what exists now is older than racy
    reader = RegistryReader(settings, max_age=60.0, clock=clock)

    def ids() -> list[str]:
        return [pc.id for pc in reader()]

    assert (ids(), reader.reads) == (["PC01"], 1)
    (base / "PC01" / "hands" / "session.json").write_text("{}")  # a file, not a PC
    assert (ids(), reader.reads) == (["PC01"], 1)
    (base / "PC02" / "hands").mkdir(parents=True)
    assert (ids(), reader.reads) == (["PC01", "PC02"], 2)
    (base / "PC03").mkdir()
    assert (ids(), reader.reads) == (["PC01", "PC02"], 3)
    (base / "PC03" / "hands").mkdir()  # its hands folder comes later
    assert (ids(), reader.reads) == (["PC01", "PC02", "PC03"], 4)
    clock.advance(61)  # a change deeper than the fingerprint looks is caught this late
    assert (ids(), reader.reads) == (["PC01", "PC02", "PC03"], 5)
    (base / "PC03" / "hands").rmdir()  # its folder's time moves; nothing in base changed
    assert (ids(), reader.reads) == (["PC01", "PC02"], 6)

    registry.write_text(json.dumps({"pcs": [{"id": "PC01", "watch_path": "PC01/hands"}]}))
    clock.now = registry.stat().st_mtime + 2 * RACY_SECONDS
    assert (ids(), reader.reads) == (["PC01"], 7)
    # Rewritten in place with as many bytes: its stat may not change within one timestamp
    # tick, so a registry written that recently is read on every call until it is older.
    registry.write_text(json.dumps({"pcs": [{"id": "PC02", "watch_path": "PC02/hands"}]}))
    clock.now = registry.stat().st_mtime + RACY_SECONDS / 2
    assert (ids(), reader.reads) == (["PC02"], 8)
    assert (ids(), reader.reads) == (["PC02"], 9)
    clock.advance(2 * RACY_SECONDS)
    assert (ids(), reader.reads) == (["PC02"], 10)
    assert (ids(), reader.reads) == (["PC02"], 10)


def test_on_a_local_base_the_pc_folders_are_looked_at_only_after_an_event(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up`'s supervisor asks every second: with 100 PC folders, listing and stat-ing them is
    an idle agent's largest cost. Their watches tell when to look; files written inside
    `hands` raise nothing; a new PC or a `hands` folder made later make the reader look. A PC
    folder that is a link (its target is not watched) or forced polling (a network share)
    make it look on every call, as without watches."""
    monkeypatch.delenv("WATCHFILES_FORCE_POLLING", raising=False)
    (base / "PC01" / "hands").mkdir(parents=True)
    (base / "PC03").mkdir()
    settings = load_settings(base_path=base, state_dir=tmp_path / "s")
    clock = Clock(time.time() + 2 * RACY_SECONDS)  # what is made here is older than racy
    reader = RegistryReader(settings, max_age=60.0, clock=clock, watch=True)

    def ids() -> list[str]:
        return [pc.id for pc in reader()]

    assert (ids(), reader.looks, reader.reads) == (["PC01"], 1, 1)
    for _ in range(3):
        assert (ids(), reader.looks) == (["PC01"], 1)
    (base / "PC01" / "hands" / "session.json").write_text("{}")
    assert (ids(), reader.looks) == (["PC01"], 1)
    (base / "PC02" / "hands").mkdir(parents=True)
    assert (ids(), reader.looks, reader.reads) == (["PC01", "PC02"], 2, 2)
    assert (ids(), reader.looks) == (["PC01", "PC02"], 2)
    (base / "PC03" / "hands").mkdir()  # inside a folder that was already there
    assert (ids(), reader.looks) == (["PC01", "PC02", "PC03"], 3)
    assert (ids(), reader.looks) == (["PC01", "PC02", "PC03"], 3)
    clock.advance(61)  # a change deeper than the watches see is caught this late
    assert (ids(), reader.looks, reader.reads) == (["PC01", "PC02", "PC03"], 4, 4)

    elsewhere = base / "_folders" / "PC04"  # a link confined to the base
    elsewhere.mkdir(parents=True)
    (base / "PC04").symlink_to(elsewhere)
    assert ids() == ["PC01", "PC02", "PC03"]
    looks = reader.looks
    assert ids() == ["PC01", "PC02", "PC03"]
    assert reader.looks == looks + 1, "a link's target is not watched: every call looks"
    (elsewhere / "hands").mkdir()  # changes neither the link nor the base folder...
    clock.advance(61)  # ...so, as without watches, it is found at the next full read
    assert ids() == ["PC01", "PC02", "PC03", "PC04"]

    (base / "PC04").unlink()
    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")  # as on a network share
    assert ids() == ["PC01", "PC02", "PC03"]
    looks = reader.looks
    assert ids() == ["PC01", "PC02", "PC03"]
    assert reader.looks == looks + 1


def test_one_process_reads_one_registry_once_for_all_who_ask(tmp_path: Path, base: Path) -> None:
    """`up` asks for the PCs from the watcher's supervisor, the console and the status table:
    sites on the same registry and base folder share one reader, so the folders are listed
    once per change, not once per asker; another base folder has its own."""
    (base / "PC01" / "hands").mkdir(parents=True)
    settings = load_settings(base_path=base, state_dir=tmp_path / "s")
    again = load_settings(base_path=base, state_dir=tmp_path / "other-state")
    first, second = Site(settings), Site(again)
    assert [pc.id for pc in first.pcs] == [pc.id for pc in second.pcs] == ["PC01"]
    reader = RegistryReader.shared(settings)
    assert reader is first._registry is second._registry
    assert not reader.watch, "a process that asks once (a run) needs no inotify watches"
    assert RegistryReader.shared(again, watch=True) is reader and reader.watch  # `up`
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "PC09" / "hands").mkdir(parents=True)
    other = Site(load_settings(base_path=elsewhere, state_dir=tmp_path / "s"))
    assert other._registry is not reader
    assert [pc.id for pc in other.pcs] == ["PC09"]
    (base / "PC02" / "hands").mkdir(parents=True)
    assert [pc.id for pc in second.pcs] == [pc.id for pc in first.pcs] == ["PC01", "PC02"]


def test_a_rescan_records_new_files_as_added_and_changed_ones_as_modified_with_its_origin(
    settings: Settings, base: Path, queue: DurableQueue
) -> None:
    site = Site(settings)
    synced = touch(base / "PC01" / "hands" / "synced.json")
    changed = touch(base / "PC01" / "hands" / "changed.json")
    new = touch(base / "PC02" / "hands" / "new.json")
    for path in (synced, changed):  # as an acknowledged sync leaves them
        stat = path.stat()
        [item] = queue.enqueue_many(
            [NewChange("PC01", str(path), ChangeKind.ADDED, stat.st_size, stat.st_mtime)]
        )
        queue.claim(10, worker="w")
        queue.ack_synced([SyncedFile(item, str(path), "PC01", stat.st_size, stat.st_mtime, "h")])
    touch(changed, '{"more": 1}')

    report = site.rescan(queue, Origin.RESCAN)

    assert (report.scanned, report.queued) == (3, 2)
    pending = {Path(i.path).name: (i.pc_id, i.kind, i.origin) for i in queue.items()
               if i.path in (str(changed), str(new))}  # fmt: skip
    assert pending == {
        "changed.json": ("PC01", ChangeKind.MODIFIED, Origin.RESCAN),
        "new.json": ("PC02", ChangeKind.ADDED, Origin.RESCAN),
    }
    # Found by a rescan, not seen appearing by the watcher: not the realtime run's to take.
    assert not queue.has_due(lanes=[REALTIME_LANE])
    site.rescan(queue, Origin.RESCAN)  # not synced yet: found again, coalesced into its item
    assert len(queue.items(ItemState.PENDING)) == 2


def test_a_file_under_nested_pc_folders_is_found_once_for_the_deepest(
    base: Path, queue: DurableQueue
) -> None:
    outer, inner = base / "PC01", base / "PC01" / "table2"
    path = touch(inner / "s.json")
    recorded: list[list[NewChange]] = []

    report = rescan(
        queue,
        {"OUTER": outer, "INNER": inner},
        SessionFiles(base / "_error"),
        Origin.WATCH,
        record=recorded.append,
    )

    assert report.queued == 1
    assert [(c.pc_id, c.path, c.kind, c.origin) for batch in recorded for c in batch] == [
        ("INNER", str(path), ChangeKind.ADDED, Origin.WATCH)
    ]
    assert queue.items() == []  # `record` was given: it alone recorded them


def test_a_rescan_forgets_files_gone_from_disk_once_their_record_is_older_than_retention(
    settings: Settings, base: Path, tmp_path: Path
) -> None:
    """The queue stays bounded as sessions come and go: the record of a deleted file is
    dropped by a full rescan after RETENTION; a file still there, one with a change pending,
    a young record, and every file of a PC folder that is not mounted are kept."""
    clock = Clock()
    pcs = [PcConfig(id=pc, watch_path=f"{pc}/hands") for pc in ("PC01", "PC02")]
    site = Site(settings, pcs=pcs)
    folder = base / "PC01" / "hands"
    kept, deleted, young, pending = (
        touch(folder / f"{name}.json") for name in ("kept", "deleted", "young", "pending")
    )
    unmounted = touch(base / "PC02" / "hands" / "away.json")

    def synced(queue: DurableQueue, *paths: Path) -> None:
        for path in paths:
            stat = path.stat()
            pc = "PC02" if path == unmounted else "PC01"
            [item] = queue.enqueue_many(
                [NewChange(pc, str(path), ChangeKind.ADDED, stat.st_size, stat.st_mtime)]
            )
            queue.claim(10, worker="w")
            queue.ack_synced([SyncedFile(item, str(path), pc, stat.st_size, stat.st_mtime, "h")])

    with DurableQueue(tmp_path / "q.sqlite3", clock=clock) as queue:
        synced(queue, kept, deleted, pending, unmounted)
        clock.advance(RETENTION + 60)
        synced(queue, young)
        queue.enqueue_many([NewChange("PC01", str(pending), ChangeKind.MODIFIED, 3, 1.0)])
        for path in (deleted, young, pending):
            path.unlink()
        (base / "PC02").rename(tmp_path / "PC02-unmounted")  # its folder is gone, not its files

        report = site.rescan(queue, Origin.RESCAN)

        assert report.forgotten == 1
        assert report.summary()["forgotten"] == 1
        assert set(queue.file_states()) == {str(kept), str(young), str(pending), str(unmounted)}
