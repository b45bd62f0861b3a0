"""Rebuild the hand tables from the sessions already stored (`raw_json`).

The derivation itself lives in the database (`public.gfx_derive_hands`, migration
20261205000000_hand_tables.sql), where the trigger on `gfx_sessions` calls it for every new
snapshot. A rebuild calls the same function for stored sessions: data synced before the hand
tables existed, or after the derivation changed (its version was bumped).

A store works within one site (the agent's GFX_SYNC_SITE): it selects and derives only that
site's sessions. Each session is derived in its own short transaction, in key order.
`gfx_hand_derivations` records which snapshot (file_hash) and which derivation version a
session's hand rows reflect, so a rebuild skips the sessions already current: a second run
writes nothing, and a run that crashed half-way is finished by running it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import psycopg
from psycopg import sql

from gfx_sync.migrate import apply_migrations
from gfx_sync.redact import one_line
from gfx_sync.settings import DEFAULT_SITE, Settings, Target, checked_pc_id
from gfx_sync.target import database_url

HAND_TABLES_MIGRATION = "20261205000000_hand_tables"
REST_PAGE = 1000  # rows per PostgREST request (Supabase answers at most 1000 by default)


class DeriveError(RuntimeError):
    """The rebuild cannot run against this target (unreachable, not migrated); the message
    says why and what to do, and never holds a secret."""


@dataclass(frozen=True)
class Selection:
    """Which stored sessions: one PC or all, one session id or all, and the window
    [since, until) of their `updated_at` (when the target last took a snapshot of them); a
    time without a zone is UTC."""

    pc: str | None = None
    session_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.pc is not None:
            checked_pc_id(self.pc)  # it also names export files: one plain name only
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.utcoffset() is None:
                object.__setattr__(self, name, moment.replace(tzinfo=UTC))  # no zone: UTC
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")

    def describe(self) -> str:
        """For logs and artifacts: `PC PC01, session 7, updated from 2025-03-14T12:00:00+00:00`."""
        parts = [f"PC {self.pc}" if self.pc else "every PC"]
        if self.session_id is not None:
            parts.append(f"session {self.session_id}")
        if self.since:
            parts.append(f"updated from {self.since.isoformat()}")
        if self.until:
            parts.append(f"updated before {self.until.isoformat()}")
        return ", ".join(parts)

    def slug(self) -> str:
        """The selection as part of a file name: `PC01_session-7_from-20250314T120000Z`."""
        parts = [self.pc or "all-pcs"]
        if self.session_id is not None:
            parts.append(f"session-{self.session_id}")
        if self.since:
            parts.append(f"from-{_stamp(self.since)}")
        if self.until:
            parts.append(f"to-{_stamp(self.until)}")
        return "_".join(parts)


def _stamp(moment: datetime) -> str:
    """20250314T120000Z: UTC, with no character a file system could mind."""
    utc = moment.astimezone(UTC)
    fraction = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return utc.strftime("%Y%m%dT%H%M%S") + fraction + "Z"


@dataclass(frozen=True)
class StoredSession:
    """A selected session and whether its hand rows already reflect its snapshot under the
    current derivation version."""

    gfx_pc_id: str
    session_id: int
    current: bool


@dataclass(frozen=True)
class Progress:
    """Passed to the progress callback before the first session and after each one
    (never when there is nothing to derive)."""

    done: int
    total: int
    hands_written: int


@dataclass
class PcSummary:
    pc: str
    selected: int = 0
    current: int = 0  # skipped: already derived from this snapshot at this version
    derived: int = 0
    hands_written: int = 0


@dataclass
class RebuildReport:
    version: int
    per_pc: dict[str, PcSummary] = field(default_factory=dict)

    @property
    def selected(self) -> int:
        return sum(s.selected for s in self.per_pc.values())

    @property
    def derived(self) -> int:
        return sum(s.derived for s in self.per_pc.values())

    @property
    def hands_written(self) -> int:
        return sum(s.hands_written for s in self.per_pc.values())

    def rows(self) -> list[dict[str, object]]:
        """One row per PC, for a table artifact."""
        return [
            {
                "pc": s.pc,
                "selected": s.selected,
                "current": s.current,
                "derived": s.derived,
                "hands_written": s.hands_written,
            }
            for s in sorted(self.per_pc.values(), key=lambda s: s.pc)
        ]


class HandStore(Protocol):
    """Where the stored sessions and the derivation are: a Postgres connection or
    Supabase's REST API (the function called over RPC)."""

    def derivation_version(self) -> int: ...

    def sessions(self, selection: Selection) -> list[StoredSession]:
        """The selected sessions in key order, each marked current or not."""
        ...

    def derive(self, gfx_pc_id: str, session_id: int) -> int:
        """Derive one session's hands in one transaction; how many hands it wrote."""
        ...

    def close(self) -> None: ...


def rebuild(
    store: HandStore,
    selection: Selection,
    *,
    force: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> RebuildReport:
    """Derive the selected sessions that are not current (all of them with `force`: the
    function still leaves unchanged hands alone), one transaction each, in key order.

    Each session commits before `on_progress` hears of it, so an interrupted rebuild keeps
    what it did, and running it again derives only the rest."""
    report = RebuildReport(version=store.derivation_version())
    sessions = store.sessions(selection)
    to_derive = [s for s in sessions if force or not s.current]
    for stored in sessions:
        summary = report.per_pc.setdefault(stored.gfx_pc_id, PcSummary(stored.gfx_pc_id))
        summary.selected += 1
        summary.current += stored.current and not force
    written_total = 0
    if on_progress is not None and to_derive:
        on_progress(Progress(0, len(to_derive), 0))
    for done, stored in enumerate(to_derive, start=1):
        written = store.derive(stored.gfx_pc_id, stored.session_id)
        summary = report.per_pc[stored.gfx_pc_id]
        summary.derived += 1
        summary.hands_written += written
        written_total += written
        if on_progress is not None:
            on_progress(Progress(done, len(to_derive), written_total))
    return report


# -- Postgres -------------------------------------------------------------------------------


class PostgresHandStore:
    """Over one autocommit connection; each derivation is one explicit transaction. Reads
    and derives the sessions of `site` only."""

    def __init__(
        self, url: str, *, connect_timeout: float = 10.0, site: str = DEFAULT_SITE
    ) -> None:
        self.url = url
        self.site = site
        try:
            self._conn = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=max(1, round(connect_timeout)),
                prepare_threshold=None,  # Supabase's transaction pooler
                application_name="gfx-sync derive",
            )
        except psycopg.Error as exc:
            raise DeriveError(f"cannot connect to the target: {one_line(exc, url)}") from None

    def derivation_version(self) -> int:
        row = self._execute("select public.gfx_hands_derivation_version()").fetchone()
        assert row is not None
        return int(row[0])

    def sessions(self, selection: Selection) -> list[StoredSession]:
        where, params = session_filter(selection, alias="s")
        where = sql.SQL("s.site_id = %(site)s and ") + where
        params["site"] = self.site
        query = sql.SQL(
            "select s.gfx_pc_id, s.session_id, "
            "coalesce(d.file_hash = s.file_hash "
            "         and d.version = public.gfx_hands_derivation_version(), false) "
            "from public.gfx_sessions s "
            "left join public.gfx_hand_derivations d "
            "  on d.site_id = s.site_id and d.gfx_pc_id = s.gfx_pc_id "
            " and d.session_id = s.session_id "
            "where {where} order by s.gfx_pc_id, s.session_id"
        ).format(where=where)
        return [StoredSession(*row) for row in self._execute(query, params).fetchall()]

    def derive(self, gfx_pc_id: str, session_id: int) -> int:
        """One session in a transaction of its own. The function locks the session row, as a
        sink's upsert does: a snapshot being written meanwhile is waited for, then derived on
        top of (a session deleted meanwhile derives nothing)."""
        key = (self.site, gfx_pc_id, session_id)
        try:
            with self._conn.transaction():
                row = self._conn.execute(
                    "select public.gfx_derive_hands(%s, %s, %s)", key
                ).fetchone()
        except psycopg.Error as exc:
            raise self._describe(exc) from None
        return int(row[0]) if row and row[0] is not None else 0

    def close(self) -> None:
        self._conn.close()

    def _execute(self, query: Any, params: Any = None) -> psycopg.Cursor[Any]:
        try:
            return self._conn.execute(query, params)
        except psycopg.Error as exc:
            raise self._describe(exc) from None

    def _describe(self, exc: psycopg.Error) -> DeriveError:
        if isinstance(exc, psycopg.errors.UndefinedFunction | psycopg.errors.UndefinedTable):
            return hand_tables_missing()
        return DeriveError(f"the target failed: {one_line(exc, self.url)}")


def session_filter(selection: Selection, alias: str) -> tuple[sql.Composable, dict[str, Any]]:
    """The WHERE clause choosing the selected rows of gfx_sessions (as `alias`)."""
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {}
    column = {name: sql.Identifier(alias, name) for name in ("gfx_pc_id", "session_id")}
    updated_at = sql.Identifier(alias, "updated_at")
    if selection.pc is not None:
        conditions.append(sql.SQL("{} = %(pc)s").format(column["gfx_pc_id"]))
        params["pc"] = selection.pc
    if selection.session_id is not None:
        conditions.append(sql.SQL("{} = %(session_id)s").format(column["session_id"]))
        params["session_id"] = selection.session_id
    if selection.since is not None:
        conditions.append(sql.SQL("{} >= %(since)s").format(updated_at))
        params["since"] = selection.since
    if selection.until is not None:
        conditions.append(sql.SQL("{} < %(until)s").format(updated_at))
        params["until"] = selection.until
    return sql.SQL(" and ").join(conditions), params


def hand_tables_missing() -> DeriveError:
    return DeriveError(
        f"the target has no hand tables yet (migration {HAND_TABLES_MIGRATION}): "
        "run `gfx-sync migrate` (or `supabase db push`) first"
    )


# -- Supabase REST --------------------------------------------------------------------------


class RestHandStore:
    """Through PostgREST with the service key: the sessions and derivations are read in pages
    and `gfx_derive_hands` is called over RPC, each call its own transaction. Reads and
    derives the sessions of `site` only."""

    def __init__(
        self, url: str, key: str, *, timeout: float = 15.0, site: str = DEFAULT_SITE
    ) -> None:
        from supabase import ClientOptions, create_client

        self._key = key
        self.site = site
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), follow_redirects=True
        )
        self._client = create_client(
            url, key, options=ClientOptions(httpx_client=self._http, postgrest_client_retry=False)
        )

    def derivation_version(self) -> int:
        return int(self._call("gfx_hands_derivation_version", {}))

    def sessions(self, selection: Selection) -> list[StoredSession]:
        version = self.derivation_version()
        derived = {
            (row["gfx_pc_id"], row["session_id"]): (row["file_hash"], row["version"])
            for row in self._pages(
                "gfx_hand_derivations", "gfx_pc_id,session_id,file_hash,version", selection, False
            )
        }
        return [
            StoredSession(
                row["gfx_pc_id"],
                row["session_id"],
                derived.get((row["gfx_pc_id"], row["session_id"])) == (row["file_hash"], version),
            )
            for row in self._pages("gfx_sessions", "gfx_pc_id,session_id,file_hash", selection)
        ]

    def derive(self, gfx_pc_id: str, session_id: int) -> int:
        written = self._call(
            "gfx_derive_hands",
            {"p_site_id": self.site, "p_gfx_pc_id": gfx_pc_id, "p_session_id": session_id},
        )
        return int(written or 0)

    def close(self) -> None:
        self._http.close()

    def _pages(
        self, table: str, columns: str, selection: Selection, window: bool = True
    ) -> Iterator[dict[str, Any]]:
        """Every selected row, in key order, REST_PAGE rows per request."""
        offset = 0
        while True:
            query = self._client.table(table).select(columns).eq("site_id", self.site)
            if selection.pc is not None:
                query = query.eq("gfx_pc_id", selection.pc)
            if selection.session_id is not None:
                query = query.eq("session_id", selection.session_id)
            if window and selection.since is not None:
                query = query.gte("updated_at", selection.since.isoformat())
            if window and selection.until is not None:
                query = query.lt("updated_at", selection.until.isoformat())
            query = query.order("gfx_pc_id").order("session_id")
            rows = self._run(query.range(offset, offset + REST_PAGE - 1))
            yield from rows
            if len(rows) < REST_PAGE:
                return
            offset += REST_PAGE

    def _call(self, function: str, params: dict[str, Any]) -> Any:
        return self._run(self._client.rpc(function, params))

    def _run(self, query: Any) -> Any:
        from postgrest.exceptions import APIError

        try:
            return query.execute().data
        except APIError as exc:
            if exc.code in ("PGRST202", "PGRST205", "42883", "42P01"):
                raise hand_tables_missing() from None
            raise DeriveError(
                f"the target failed: {one_line(Exception(exc.message or exc), None, self._key)}"
            ) from None
        except Exception as exc:  # httpx: unreachable, timed out
            raise DeriveError(
                f"cannot reach the target: {one_line(exc, None, self._key)}"
            ) from None


def open_hand_store(settings: Settings) -> HandStore:
    """The store for the configured target; the embedded database is started and migrated
    as for syncing."""
    if settings.target is Target.SUPABASE:
        assert settings.supabase_url and settings.supabase_service_key
        return RestHandStore(
            settings.supabase_url,
            settings.supabase_service_key.get_secret_value(),
            timeout=settings.request_timeout,
            site=settings.site,
        )
    url = database_url(settings)
    assert url is not None
    if settings.target is Target.EMBEDDED:
        apply_migrations(url)
    return PostgresHandStore(url, connect_timeout=settings.request_timeout, site=settings.site)
