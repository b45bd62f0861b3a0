"""Export the sessions, hands, players and actions of a selection to files, with pandas.

One file per table (`gfx_hands_PC01_from-20250314T000000Z.csv`): the sessions' header columns
(everything but `raw_json`), then every column of the hand tables for those sessions. All four
are read in one read-only REPEATABLE READ transaction, so they agree with each other even while
sessions keep syncing. CSV is the default; Parquet needs pyarrow, which gfx-sync does not
install (`pip install pyarrow`). Each file is written under a temporary name and renamed when
complete, so a file with the final name is always whole. An export reads one site's rows
(the agent's GFX_SYNC_SITE).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
import psycopg
from psycopg import sql

from gfx_sync import schema
from gfx_sync.derive import Selection, session_filter
from gfx_sync.redact import one_line
from gfx_sync.settings import DEFAULT_SITE, Settings, Target
from gfx_sync.target import database_url

if TYPE_CHECKING:  # imported where a frame is made: not by every process importing the flows
    import pandas as pd

ExportFormat = Literal["csv", "parquet"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "parquet")
CHUNK_ROWS = 50_000  # rows fetched and written at a time (CSV), to bound memory
# The sessions' columns without the document itself, and when the target wrote the row.
SESSION_COLUMNS = (
    *(column for column in schema.SESSION_COLUMNS if column != "raw_json"),
    "created_at",
    "updated_at",
)
# The hand tables in export order, with the key they are sorted by.
HAND_TABLES = {
    "gfx_hands": ("hand_idx",),
    "gfx_hand_players": ("hand_idx", "player_num"),
    "gfx_hand_actions": ("hand_idx", "seq"),
}
# Postgres types whose column may hold nulls: pandas' nullable dtypes keep 4 from printing 4.0.
NULLABLE_DTYPES = {"int2": "Int64", "int4": "Int64", "int8": "Int64", "bool": "boolean"}
_DTYPE_BY_OID = {
    info.oid: dtype
    for name, dtype in NULLABLE_DTYPES.items()
    if (info := psycopg.postgres.types.get(name)) is not None
}


class ExportError(RuntimeError):
    """The export cannot run (format unavailable, target unsupported or failing); the message
    says why, without secrets."""


@dataclass(frozen=True)
class ExportedTable:
    table: str
    file: Path
    rows: int
    bytes: int


@dataclass
class ExportReport:
    selection: Selection
    format: ExportFormat
    folder: Path
    tables: list[ExportedTable] = field(default_factory=list)

    def rows(self) -> list[dict[str, object]]:
        """One row per table written, for a table artifact."""
        return [
            {"table": t.table, "file": t.file.name, "rows": t.rows, "bytes": t.bytes}
            for t in self.tables
        ]


def check_format(file_format: str) -> ExportFormat:
    """Refuse an unknown format, or Parquet without pyarrow, before reading anything."""
    if file_format not in FORMATS:
        raise ExportError(f"unknown export format {file_format!r}: use one of {', '.join(FORMATS)}")
    if file_format == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ExportError(
            "Parquet needs pyarrow, which is not installed: `pip install pyarrow` in "
            "gfx-sync's environment, or export as csv"
        )
    return file_format  # type: ignore[return-value]


def export_url(settings: Settings) -> str:
    """The Postgres connection an export reads through (the embedded server is started)."""
    if settings.target is Target.SUPABASE:
        raise ExportError(
            "exports read the database over a Postgres connection, and this target is "
            "Supabase's REST API: run the export with GFX_SYNC_DATABASE_URL set to the "
            "project's connection string (and SUPABASE_URL / SUPABASE_SERVICE_KEY unset)"
        )
    url = database_url(settings)
    assert url is not None
    return url


def default_folder(settings: Settings) -> Path:
    return settings.state_dir / "exports"


def export(
    url: str,
    selection: Selection,
    folder: Path,
    file_format: str = "csv",
    *,
    chunk_rows: int = CHUNK_ROWS,
    site: str = DEFAULT_SITE,
) -> ExportReport:
    """Write the four tables of `selection` at `site` into `folder` (created if needed)."""
    chosen = check_format(file_format)
    folder.mkdir(parents=True, exist_ok=True)
    report = ExportReport(selection, chosen, folder)
    try:
        with psycopg.connect(
            url, prepare_threshold=None, application_name="gfx-sync export"
        ) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                conn.execute("set local time zone 'UTC'")
                for table, query, params in queries(selection, site):
                    path = folder / f"{table}_{selection.slug()}.{chosen}"
                    chunks = read_chunks(conn, query, params, chunk_rows)
                    rows = write_table(chunks, path, chosen)
                    report.tables.append(ExportedTable(table, path, rows, path.stat().st_size))
    except psycopg.errors.UndefinedTable:
        raise ExportError(
            "the target has no hand tables yet: run `gfx-sync migrate` first"
        ) from None
    except psycopg.Error as exc:
        raise ExportError(f"the target failed: {one_line(exc, url)}") from None
    return report


def queries(
    selection: Selection, site: str = DEFAULT_SITE
) -> Iterator[tuple[str, sql.Composable, dict[str, Any]]]:
    """(table, query, parameters) for the sessions, then each hand table, in key order, all
    within `site`."""
    where, params = session_filter(selection, alias="s")
    where = sql.SQL("s.site_id = %(site)s and ") + where
    params["site"] = site
    columns = sql.SQL(", ").join(sql.Identifier("s", name) for name in SESSION_COLUMNS)
    yield (
        "gfx_sessions",
        sql.SQL(
            "select {columns} from public.gfx_sessions s where {where} "
            "order by s.gfx_pc_id, s.session_id"
        ).format(columns=columns, where=where),
        params,
    )
    for table, key in HAND_TABLES.items():
        order = sql.SQL(", ").join(
            sql.Identifier("t", name) for name in ("gfx_pc_id", "session_id", *key)
        )
        query = sql.SQL(
            "select t.* from public.{table} t join public.gfx_sessions s "
            "on s.site_id = t.site_id and s.gfx_pc_id = t.gfx_pc_id "
            "and s.session_id = t.session_id "
            "where {where} order by {order}"
        ).format(table=sql.Identifier(table), where=where, order=order)
        yield table, query, params


def read_chunks(
    conn: psycopg.Connection, query: sql.Composable, params: dict[str, Any], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The result as DataFrames of up to `chunk_rows` rows (a server-side cursor); at least one,
    empty but with its columns, when there are no rows."""
    with conn.cursor(name="gfx_export") as cursor:
        cursor.execute(query, params)
        assert cursor.description is not None
        columns = [column.name for column in cursor.description]
        dtypes = {
            column.name: _DTYPE_BY_OID[column.type_code]
            for column in cursor.description
            if column.type_code in _DTYPE_BY_OID
        }
        import pandas as pd

        first = True
        while True:
            rows = cursor.fetchmany(chunk_rows)
            if not rows and not first:
                return
            yield pd.DataFrame.from_records(rows, columns=columns).astype(dtypes)
            first = False
            if len(rows) < chunk_rows:
                return


def write_table(chunks: Iterator[pd.DataFrame], path: Path, file_format: ExportFormat) -> int:
    """Write the chunks to `path` (via a temporary file); the number of rows written."""
    partial = path.with_name(path.name + ".partial")
    rows = 0
    try:
        if file_format == "csv":
            for number, chunk in enumerate(chunks):
                as_text(chunk).to_csv(
                    partial, mode="w" if number == 0 else "a", header=number == 0, index=False
                )
                rows += len(chunk)
        else:
            import pandas as pd

            frame = pd.concat(list(chunks), ignore_index=True)
            frame.to_parquet(partial, index=False)
            rows = len(frame)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return rows


def as_text(chunk: pd.DataFrame) -> pd.DataFrame:
    """Arrays (board_cards) as JSON lists in CSV: `["Ah Kd 2c"]`, readable by any tool."""
    for column in chunk.columns:
        if chunk[column].dtype == object and chunk[column].map(_is_list).any():
            chunk[column] = chunk[column].map(
                lambda value: orjson.dumps(value).decode() if _is_list(value) else value
            )
    return chunk


def _is_list(value: object) -> bool:
    return isinstance(value, list)
