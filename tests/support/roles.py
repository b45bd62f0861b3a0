"""Connecting as another database role, for the row-level security tests."""

from __future__ import annotations

import psycopg
from psycopg import sql


def as_user(url: str, user: str) -> str:
    """The same database, connecting as `user` (the test server trusts local connections)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["user"] = user
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)


def attempt(url: str, role: str, statement: str) -> Exception | None:
    """Run `statement` as `role`; the error it raised, or None. Always rolled back."""
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
        try:
            conn.execute(statement)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            return exc
        finally:
            conn.rollback()
    return None
