"""Bad input in the PC folders while good sessions keep arriving, all under one `gfx-sync up`.

What each kind must come to (the judge checks the quarantine folder against `broken`):

* truncated mid-rewrite and never completed: the row keeps the last complete snapshot, the
  file is quarantined once it has been stable for GFX_SYNC_SETTLE_SECONDS;
* deleted between the event and the read: "vanished" (acknowledged, nothing to sync); a row
  is fine too if it was read before the delete (`may_appear`);
* renamed to another `.json` name between the event and the read: a new path holding the same
  session, still exactly one row;
* empty and left empty: quarantined (tried again when it changes);
* a 50 MB valid session (under GFX_SYNC_MAX_FILE_BYTES, 128 MB): synced;
* 50 MB of junk: quarantined (invalid JSON), its bytes copied aside;
* not UTF-8, and valid JSON that is no PokerGFX session: quarantined;
* a directory named `x.json` and a symlink loop `a.json -> b.json -> a.json`: not files,
  ignored with a log line: neither quarantined nor a row;
* permission denied: quarantined with the reason. The tests run as root, who reads anything,
  so gfx-sync runs under `setpriv` without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: still uid 0,
  but file modes apply. Without setpriv (and as root) this kind is left out, and said so.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace

import orjson
import psycopg

import gfx_synth as synth
from support.faults import Producer, Rig, Verdict
from support.system import wait_for

HUGE_HANDS = 10_000  # ~50 MB of synth hands
JUNK_BYTES = 50 * 1024 * 1024


def file_rules_apply() -> tuple[tuple[str, ...], str]:
    """A way to run gfx-sync where file modes stop it, and what to note in the report."""
    if os.geteuid() != 0:
        return (), ""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return (), "permission denied not tested (root without setpriv)"
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search"), ""


def row_count(database_url: str, key: tuple[str, int]) -> int:
    with psycopg.connect(database_url) as conn:
        (count,) = conn.execute(
            "select count(*) from gfx_sessions where gfx_pc_id = %s and session_id = %s", key
        ).fetchone()
    return count


def broken_name(producer: Producer, label: str) -> str:
    return f"PGFX_live_data_export GameID={producer.rng.randrange(10**17, 10**18)} {label}.json"


def test_bad_input_is_quarantined_or_ignored_while_good_files_sync(
    rig: Rig, report: list[Verdict]
) -> None:
    wrapper, note = file_rules_apply()
    producer = rig.producer(seed=16, scenario=16)
    with rig.up(wrapper=wrapper, GFX_SYNC_REQUEST_TIMEOUT="15") as system, rig.watch() as watch:
        for _ in range(6):
            producer.new_session()

        # Truncated mid-rewrite, never completed: the complete snapshot must be in first.
        live = producer.new_session("PC01", hands=3)
        key = (live.pc_id, live.session_id)
        wait_for(lambda: row_count(rig.database_url, key) == 1, timeout=60)
        grown = synth.session_bytes(synth.grow_session(producer._docs.pop(key), 2, seed=16))
        with live.path.open("wb") as handle:  # in place, as PokerGFX rewrites
            handle.write(grown[: len(grown) // 2])
        producer.broken[live.path.relative_to(rig.base).as_posix()] = "truncated rewrite"
        producer.files_written += 1

        # Deleted right after it was written: vanished (or synced, if read in time).
        gone = producer.new_session("PC02")
        gone.path.unlink()
        gone_key = (gone.pc_id, gone.session_id)
        producer.truth.pop(gone_key)
        producer._docs.pop(gone_key)
        producer.may_appear.add(gone_key)

        # Renamed to another .json name: the same session under a new path, one row.
        moved = producer.new_session("PC03")
        moved_key = (moved.pc_id, moved.session_id)
        new_path = moved.path.with_name(f"renamed {moved.path.name}")
        os.rename(moved.path, new_path)
        producer.truth[moved_key] = replace(moved, path=new_path)
        producer._docs.pop(moved_key)  # not grown again (it would be written to the old name)

        producer.write_broken("PC01", broken_name(producer, "empty"), b"", "empty")
        producer.write_broken(
            "PC02",
            broken_name(producer, "latin1"),
            b'{"Hands": [], "ID": 5, "EventTitle": "Caf\xe9"}',
            "not UTF-8",
        )
        producer.write_broken(
            "PC03",
            broken_name(producer, "other"),
            orjson.dumps({"hello": "world"}),
            "not a session",
        )
        producer.write_broken("PC01", "junk.json", b"junk " * (JUNK_BYTES // 5), "50 MB junk")

        # Not files: ignored.
        (producer.folder("PC02") / "x.json").mkdir()
        loop = producer.folder("PC03")
        (loop / "a.json").symlink_to(loop / "b.json")
        (loop / "b.json").symlink_to(loop / "a.json")

        if wrapper or os.geteuid() != 0:
            locked = producer.folder("PC02") / broken_name(producer, "locked")
            data = synth.session_bytes(synth.make_session(hands=2, seed=5, created_ticks=1))
            fd = os.open(locked, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o000)  # never readable
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            producer.broken[locked.relative_to(rig.base).as_posix()] = "permission denied"
            producer.files_written += 1

        huge = producer.new_session("PC02", hands=HUGE_HANDS)
        for _ in range(6):
            producer.new_session()
        started = time.monotonic()
        verdict = rig.converge(
            "bad input (11 kinds)",
            producer,
            watch=watch,
            started=started,
            timeout=180,
            notes=note,
        )
        assert system.process.poll() is None, "gfx-sync up died"
    report.append(verdict)
    assert verdict.clean, verdict
    assert huge.path.stat().st_size > 45 * 1024 * 1024
    assert row_count(rig.database_url, moved_key) == 1
    reasons = {p.read_text(encoding="utf-8") for p in (rig.base / "_error").glob("*/*.reason.txt")}
    assert any("permission denied" in r for r in reasons) or not (wrapper or os.geteuid())
    assert any("truncated" in r for r in reasons), reasons
