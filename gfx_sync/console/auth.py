"""Who may act on the console, and proof that an action comes from the console's own page.

Reading is open (to whoever reaches the port); actions (requeue) need the operator token.
`POST /login` checks the token in constant time and answers with a cookie holding an HMAC of
it under a key that lives only in this process, so the token itself never travels back and a
restart signs everyone out. An action needs that cookie (HttpOnly, SameSite=Strict), a `csrf`
form field (an HMAC of the cookie, printed into the page's forms) and, when the browser sends
one, an Origin equal to the console's own: a cross-site page can submit a form but can neither
read the csrf value nor send the cookie along.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

from pydantic import SecretStr

COOKIE_NAME = "gfx_console"
COOKIE_MAX_AGE = 12 * 3600  # one shift
TOKEN_ENV = "GFX_SYNC_CONSOLE_TOKEN"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class ConsoleBindError(ValueError):
    """The console would be reachable from the network with nobody's token guarding it."""


def is_loopback(host: str) -> bool:
    """Only names and addresses that cannot be reached from another machine; a hostname that
    would need resolving (it could resolve anywhere) is not loopback, nor is "" or 0.0.0.0."""
    host = host.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: SecretStr | None) -> None:
    """Refuse to listen beyond loopback without a token (raises ConsoleBindError)."""
    if is_loopback(host) or (token is not None and token.get_secret_value()):
        return
    raise ConsoleBindError(
        f"the console would listen on {host!r}, beyond this machine, without a token: set "
        f"{TOKEN_ENV} (a long random secret) or bind it to 127.0.0.1 (GFX_SYNC_CONSOLE_HOST)"
    )


class ConsoleAuth:
    """Token, session cookie and CSRF values for one console process."""

    def __init__(self, token: SecretStr | None, *, key: bytes | None = None) -> None:
        value = token.get_secret_value() if token is not None else ""
        self._token = value.encode() if value else None
        self._key = key if key is not None else secrets.token_bytes(32)

    @property
    def enabled(self) -> bool:
        """False: no token configured, the console is read-only for everyone."""
        return self._token is not None

    def _mac(self, purpose: str, value: bytes) -> str:
        return hmac.new(self._key, purpose.encode() + b"\0" + value, hashlib.sha256).hexdigest()

    def token_matches(self, candidate: str) -> bool:
        if self._token is None:
            return False
        return hmac.compare_digest(
            hashlib.sha256(candidate.encode()).digest(), hashlib.sha256(self._token).digest()
        )

    def session_cookie(self) -> str:
        """The cookie value after a good login: an HMAC of the token, never the token."""
        assert self._token is not None
        return self._mac("session", self._token)

    def authorised(self, cookie: str | None) -> bool:
        if self._token is None or not cookie:
            return False
        return hmac.compare_digest(cookie.encode(), self.session_cookie().encode())

    def csrf_for(self, cookie: str) -> str:
        return self._mac("csrf", cookie.encode())

    def csrf_matches(self, cookie: str | None, candidate: str | None) -> bool:
        if not cookie or not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self.csrf_for(cookie).encode())


def same_origin(origin: str | None, own_origin: str, fetch_site: str | None = None) -> bool:
    """The request comes from the console's own pages: the browser's Origin (when it sends
    one) equals ours, and Sec-Fetch-Site (when sent) does not say another site."""
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    return origin.rstrip("/").lower() == own_origin.rstrip("/").lower()


def safe_http_base(url: str | None) -> str | None:
    """`url` as a base for links if it is a plain http(s) URL, without any user:password;
    None for anything else (javascript:, data:, relative, control characters)."""
    if not url or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    try:
        port = parts.port
    except ValueError:
        return None
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path}".rstrip("/")
