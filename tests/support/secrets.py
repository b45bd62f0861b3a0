"""Canary secrets, and a scanner that finds them in anything the system emitted.

Set the canaries as the real configuration (a Supabase service key, a password inside
GFX_SYNC_DATABASE_URL: the test Postgres trusts local connections, so the password is accepted
and ignored and flows through every code path), run the system, then hand `find_leaks` every
text it produced. Each canary is looked for as itself and in the forms a careless log line
would carry it: URL-encoded, base64 (standard and URL-safe, with or without padding), and for
the JWT-shaped key its signature and a claim only its decoded payload holds.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

import psycopg


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Canaries:
    """One set of unique secret values for one test."""

    db_password: str
    service_key: str  # JWT-shaped, like Supabase's service_role key
    payload_claim: str  # inside the key's payload only: found if someone logs decoded claims
    webhook_token: str  # the secret part of an alert webhook URL
    extra: tuple[str, ...] = field(default=())

    @classmethod
    def make(cls) -> Canaries:
        tag = secrets.token_hex(6)
        claim = f"claim-canary-{tag}"
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64url(
            json.dumps(
                {"iss": "supabase", "ref": "gfxsynctest", "role": "service_role", "gfx": claim}
            ).encode()
        )
        signature = _b64url(secrets.token_bytes(32))
        return cls(
            # characters a URL must encode, so its encoded form differs from the raw one
            db_password=f"pw-canary-{tag}/:@?&= +%",
            service_key=f"{header}.{payload}.{signature}",
            payload_claim=claim,
            webhook_token=f"hook-canary-{tag}",
        )

    def database_url(self, url: str) -> str:
        """`url` (any libpq form) as a URI carrying the canary password."""
        info = psycopg.conninfo.conninfo_to_dict(url)
        user = quote(str(info.pop("user", "postgres")), safe="")
        host = str(info.pop("host", ""))
        port = info.pop("port", None)
        dbname = quote(str(info.pop("dbname", "postgres")), safe="")
        info.pop("password", None)
        netloc = "" if host.startswith("/") else host + (f":{port}" if port else "")
        query = {k: str(v) for k, v in info.items()}
        if host.startswith("/"):
            query["host"] = host
            if port:
                query["port"] = str(port)
        params = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
        password = quote(self.db_password, safe="")
        return f"postgresql://{user}:{password}@{netloc}/{dbname}" + (
            f"?{params}" if params else ""
        )

    def needles(self) -> dict[str, str]:
        """Every form to look for -> a name for it (never the value itself, in reports)."""
        found: dict[str, str] = {}
        signature = self.service_key.rsplit(".", 1)[-1]
        values = {
            "database password": self.db_password,
            "service key": self.service_key,
            "service key signature": signature,
            "service key payload claim": self.payload_claim,
            "webhook token": self.webhook_token,
            **{f"extra secret {n}": v for n, v in enumerate(self.extra)},
        }
        for name, value in values.items():
            raw = value.encode()
            forms = {
                "": value,
                " (URL-encoded)": quote(value, safe=""),
                " (URL-encoded, +)": quote_plus(value),
                " (base64)": base64.b64encode(raw).decode().rstrip("="),
                " (base64url)": _b64url(raw),
            }
            for suffix, form in forms.items():
                found.setdefault(form, name + suffix)
        return found


def find_leaks(
    canaries: Canaries, emitted: Mapping[str, str] | Iterable[tuple[str, str]]
) -> list[str]:
    """`where: which secret` for every canary form found in the emitted texts."""
    items = emitted.items() if isinstance(emitted, Mapping) else emitted
    needles = canaries.needles()
    leaks = []
    for where, text in items:
        for form, name in needles.items():
            if form in text:
                leaks.append(f"{where}: {name}")
    return leaks
