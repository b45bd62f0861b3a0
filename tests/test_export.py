"""Exporting sessions and hand tables to files (gfx_sync/export.py, flows/export.py).

On a real Postgres with the hand tables migration applied; the files are read back with pandas
and compared with what the database holds, read independently here.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest

from flows.export import SUMMARY_KEY
from flows.export import export as export_flow
from gfx_sync.derive import Selection
from gfx_sync.export import SESSION_COLUMNS, ExportError, export, export_url
from gfx_sync.settings import load_settings
from support.prefect_env import artifacts, flow_run_id
from support.stored_hands import Stored

TABLES = ("gfx_sessions", "gfx_hands", "gfx_hand_players", "gfx_hand_actions")
KEYS = {
    "gfx_sessions": ["gfx_pc_id", "session_id"],
    "gfx_hands": ["gfx_pc_id", "session_id", "hand_idx"],
    "gfx_hand_players": ["gfx_pc_id", "session_id", "hand_idx", "player_num"],
    "gfx_hand_actions": ["gfx_pc_id", "session_id", "hand_idx", "seq"],
}


def table_columns(database_url: str, table: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'public' and table_name = %s order by ordinal_position",
            (table,),
        ).fetchall()
    return [name for (name,) in rows]


def stored_keys(database_url: str, table: str, sessions: list[Stored]) -> list[tuple]:
    """The keys of `table`'s rows belonging to `sessions`, in key order."""
    key = KEYS[table]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            f"select {', '.join(key)} from public.{table} order by {', '.join(key)}"
        ).fetchall()
    wanted = {s.key for s in sessions}
    return [row for row in rows if (row[0], row[1]) in wanted]


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, dtype=str)


def test_an_export_writes_exactly_the_selection_with_every_column(
    database_url: str, three: list[Stored], tmp_path: Path
) -> None:
    selection = Selection(pc="PC01")
    report = export(database_url, selection, tmp_path / "out")

    assert [t.table for t in report.tables] == list(TABLES)
    chosen = three[:2]
    for written in report.tables:
        assert written.file == tmp_path / "out" / f"{written.table}_PC01.csv"
        frame = read_csv(written.file)
        expected_columns = (
            list(SESSION_COLUMNS)
            if written.table == "gfx_sessions"
            else table_columns(database_url, written.table)
        )
        assert list(frame.columns) == expected_columns
        keys = [
            tuple(
                int(v) if c != "gfx_pc_id" else v
                for c, v in zip(KEYS[written.table], row, strict=True)
            )
            for row in frame[KEYS[written.table]].itertuples(index=False)
        ]
        assert keys == stored_keys(database_url, written.table, chosen)
        assert (written.rows, written.bytes) == (len(frame), written.file.stat().st_size)
    assert "raw_json" not in read_csv(report.tables[0].file).columns
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{table}_PC01.csv" for table in TABLES
    ), "no temporary file is left"


def test_exported_values_read_back_as_stored(
    database_url: str, three: list[Stored], tmp_path: Path
) -> None:
    """Integers stay integers next to nulls, board cards are JSON lists, times are UTC."""
    report = export(database_url, Selection(session_id=three[2].session_id), tmp_path)
    by_table = {t.table: read_csv(t.file) for t in report.tables}
    with psycopg.connect(database_url) as conn:
        conn.execute("set time zone 'UTC'")
        hands = conn.execute(
            "select hand_idx, hand_num, board_cards, final_pot, hand_hash, started_at "
            "from gfx_hands where session_id = %s order by hand_idx",
            (three[2].session_id,),
        ).fetchall()
        nets = conn.execute(
            "select net from gfx_hand_players where session_id = %s order by hand_idx, player_num",
            (three[2].session_id,),
        ).fetchall()
    exported = by_table["gfx_hands"]
    assert len(exported) == len(hands) == 4
    for (_, row), (idx, num, boards, pot, digest, started) in zip(
        exported.iterrows(), hands, strict=True
    ):
        assert row["hand_idx"] == str(idx) and row["hand_num"] == str(num)
        assert json.loads(row["board_cards"]) == boards
        assert row["final_pot"] == ("" if pot is None else str(pot))
        assert row["hand_hash"] == digest
        if started is not None:
            assert pd.Timestamp(row["started_at"]) == pd.Timestamp(started)
            assert row["started_at"].endswith("+00:00")
    assert list(by_table["gfx_hand_players"]["net"]) == [
        "" if net is None else str(net) for (net,) in nets
    ]


def test_the_time_window_selects_by_last_sync(
    database_url: str, three: list[Stored], tmp_path: Path
) -> None:
    selection = Selection(since=three[1].updated_at, until=three[2].updated_at)
    report = export(database_url, selection, tmp_path)

    sessions = read_csv(report.tables[0].file)
    assert [int(v) for v in sessions["session_id"]] == [three[1].session_id]
    assert report.rows()[1]["rows"] == three[1].hands
    assert report.tables[0].file.name == (
        f"gfx_sessions_all-pcs_from-{stamp(three[1])}_to-{stamp(three[2])}.csv"
    )


def stamp(stored: Stored) -> str:
    utc = pd.Timestamp(stored.updated_at).tz_convert("UTC")
    fraction = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return utc.strftime("%Y%m%dT%H%M%S") + fraction + "Z"


def test_an_empty_selection_writes_headers_only(database_url: str, tmp_path: Path) -> None:
    report = export(database_url, Selection(pc="PC09"), tmp_path, chunk_rows=2)
    assert [t.rows for t in report.tables] == [0, 0, 0, 0]
    assert list(read_csv(report.tables[0].file).columns) == list(SESSION_COLUMNS)


def test_big_tables_are_written_in_chunks_with_one_header(
    database_url: str, three: list[Stored], tmp_path: Path
) -> None:
    whole = export(database_url, Selection(), tmp_path / "whole")
    chunked = export(database_url, Selection(), tmp_path / "chunked", chunk_rows=3)
    for one, other in zip(whole.tables, chunked.tables, strict=True):
        assert one.file.read_bytes() == other.file.read_bytes()
        assert one.rows == other.rows


@pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed here"
)
def test_parquet_without_pyarrow_is_a_clear_error_before_anything_is_written(
    database_url: str, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="pip install pyarrow"):
        export(database_url, Selection(), tmp_path / "out", "parquet")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExportError, match="unknown export format"):
        export(database_url, Selection(), tmp_path / "out", "xlsx")


def test_the_supabase_rest_target_is_told_to_use_a_connection_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("GFX_SYNC_", "SUPABASE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPABASE_URL", "https://example.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", "sb_secret_not_shown")
    with pytest.raises(ExportError, match="GFX_SYNC_DATABASE_URL") as caught:
        export_url(load_settings())
    assert "sb_secret_not_shown" not in str(caught.value)


# -- the gfx-export flow ----------------------------------------------------------------------


@pytest.mark.prefect
def test_the_export_flow_writes_under_the_state_folder_and_shows_a_table(
    configured: Path, database_url: str, three: list[Stored]
) -> None:
    state = export_flow(pc="PC02", return_state=True)

    assert state.is_completed(), state.message
    summary: list[dict[str, Any]] = state.result()
    folder = configured / "exports"
    assert [row["file"] for row in summary] == [f"{table}_PC02.csv" for table in TABLES]
    assert [row["rows"] for row in summary[:2]] == [1, three[2].hands]
    for row in summary:
        assert (folder / row["file"]).stat().st_size == row["bytes"]
    (table,) = artifacts(flow_run_id(state))
    assert table.key == SUMMARY_KEY and table.type == "table"
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert data == summary


@pytest.mark.prefect
def test_the_export_flow_writes_where_it_is_told(
    configured: Path, database_url: str, three: list[Stored], tmp_path: Path
) -> None:
    state = export_flow(output_dir=str(tmp_path / "elsewhere"), return_state=True)
    assert state.is_completed(), state.message
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == sorted(
        f"{table}_all-pcs.csv" for table in TABLES
    )
    assert not (configured / "exports").exists()
