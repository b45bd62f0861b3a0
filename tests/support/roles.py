"""Connecting as another database role, for the row-level security tests."""

from __future__ import annotations

import psycopg


def as_user(url: str, user: str) -> str:
    """The same database, connecting as `user` (the test server trusts local connections)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["user"] = user
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)
