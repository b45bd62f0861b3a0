"""Keep connection secrets out of messages: what we print, log, store in the queue or send to
Prefect is built from error texts, and libpq echoes a connection string it cannot parse."""

from __future__ import annotations

import re

import psycopg

REDACTED = "***"
# user:password@ in a URI, and password=... in a keyword/value string (quoted or not)
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s\"']*:)[^@\s\"']*(?=@)", re.I)
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact_url(url: str) -> str:
    """user@host:port/dbname of a connection string, never its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparseable connection string)"
    host = info.get("host") or "localhost"
    return f"{info.get('user') or ''}@{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def scrub(text: str, url: str | None = None) -> str:
    """`text` without the connection string `url` (replaced by its redacted form), its
    password, or anything shaped like a password in a URI or keyword string."""
    if url:
        text = text.replace(url, redact_url(url))
        try:
            password = psycopg.conninfo.conninfo_to_dict(url).get("password")
        except psycopg.ProgrammingError:
            password = None
        if password:
            text = text.replace(str(password), REDACTED)
    text = _URI_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)


def one_line(exc: BaseException, url: str | None = None, *secrets: str) -> str:
    """An error as one short line for a page or a status line: scrubbed of the connection
    string `url` and of every literal in `secrets` (keys, tokens)."""
    text = scrub(str(exc), url)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
