"""The operator console as a FastAPI app: one server-rendered page, its live part as a
fragment, Server-Sent Events that say when the fragment changed, health, readiness, metrics
and the requeue action.

The page is whatever one `Snapshot` says, rendered by Jinja with autoescaping: file names,
PC ids, table types and error texts come from outside and are only ever text. Every string is
also passed through `_finalize` on its way out, which masks the values of the settings'
secrets and connection-string passwords and shows bidirectional and other invisible control
characters as visible marks, so a file name cannot reorder the text around it. Links are
built only from the Prefect UI address (configuration), and only when it is plain http(s).

Core package: no Prefect here. Snapshots come from an observer, change notices from a feed
(see `gfx_sync.observe`); anything with the same methods will do, as in the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path, PurePath
from typing import Any, Protocol
from urllib.parse import parse_qs

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gfx_sync.console.auth import (
    COOKIE_MAX_AGE,
    COOKIE_NAME,
    ConsoleAuth,
    is_loopback,
    safe_http_base,
)
from gfx_sync.console.auth import same_origin as _same_origin
from gfx_sync.observe import LIVE_CHECKS, READY_CHECKS, Check, Snapshot
from gfx_sync.redact import REDACTED, scrub
from gfx_sync.settings import DEFAULT_SITE, Settings

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
KEEPALIVE_SECONDS = 15.0
SNAPSHOT_MAX_AGE = 1.0  # page, fragment and probes within this share one snapshot
MAX_FORM_BYTES = 64 * 1024
MAX_REQUEUE_IDS = 1000
VERSION_HEADER = "X-Console-Version"
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
        b"object-src 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with the
    # console's own form posts, and the Origin check refuses them (sign-in, requeue)
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
# Characters that change how text around them is shown (bidi overrides and isolates, marks,
# zero-width spaces) or are not text at all: shown as ⟨U+XXXX⟩ instead.
_INVISIBLE = frozenset(
    [
        *range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0),
        0x061C, 0x200B, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF,
    ]
)  # fmt: skip


class ObserverLike(Protocol):
    def snapshot(self, *, target: bool = True, orchestrator: bool = True) -> Snapshot: ...

    def requeue(self, item_ids: Sequence[int]) -> int: ...


class FeedLike(Protocol):
    @property
    def version(self) -> int: ...

    def wait_newer(self, version: int, timeout: float) -> int: ...


MetricsSource = Callable[[], tuple[bytes, str]]


# -- text -----------------------------------------------------------------------------------


def duration_text(seconds: float) -> str:
    """Short and human: 0.4 s, 12 s, 4 min, 2 h 5 min, 3 d."""
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min"
    if s < 86400:
        hours, minutes = divmod(int(s // 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{int(s // 86400)} d"


def absolute_text(epoch: float) -> str:
    """The server's local time, with its offset: the title of every age."""
    return dt.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def iso_text(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def bytes_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def show_invisible(text: str) -> str:
    if not any(ord(ch) in _INVISIBLE for ch in text):
        return text
    return "".join(f"⟨U+{ord(ch):04X}⟩" if ord(ch) in _INVISIBLE else ch for ch in text)


def settings_secrets(settings: Settings) -> list[str]:
    """The values of every secret setting (connection string, keys, token, webhook)."""
    found = []
    for _, value in settings:
        if isinstance(value, SecretStr) and value.get_secret_value():
            found.append(value.get_secret_value())
    return sorted(found, key=len, reverse=True)


class Redactor:
    """Masks the settings' secrets (and anything password-shaped) in outgoing text."""

    def __init__(self, settings: Settings) -> None:
        self._secrets = settings_secrets(settings)
        database_url = settings.database_url
        self._url = database_url.get_secret_value() if database_url is not None else None

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return scrub(text, self._url)


def templates(redact: Callable[[str], str]) -> jinja2.Environment:
    def finalize(value: object) -> object:
        if isinstance(value, Markup) or not isinstance(value, str):
            return value
        return show_invisible(redact(str(value)))

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        duration=duration_text,
        absolute=absolute_text,
        iso=iso_text,
        size=bytes_text,
        file_name=lambda path: PurePath(path).name or path,  # the full path is its title
    )
    return env


# -- live state -----------------------------------------------------------------------------


class SnapshotCache:
    """One snapshot per feed version (and at most SNAPSHOT_MAX_AGE old): several browsers
    fetching the fragment after one change cost one snapshot."""

    def __init__(self, observer: ObserverLike) -> None:
        self._observer = observer
        self._lock = threading.Lock()
        self._cached: tuple[int, float, Snapshot] | None = None

    def get(self, version: int) -> Snapshot:
        with self._lock:
            cached = self._cached
            if (
                cached is not None
                and cached[0] == version
                and time.monotonic() - cached[1] < SNAPSHOT_MAX_AGE
            ):
                return cached[2]
            snapshot = self._observer.snapshot()
            self._cached = (version, time.monotonic(), snapshot)
            return snapshot

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None


class VersionHub:
    """Brings the feed's version into the event loop: one thread waits on the feed and wakes
    every SSE stream when the version changes (however many browsers are open)."""

    def __init__(self, feed: FeedLike) -> None:
        self._feed = feed
        self.version = feed.version
        self._closing = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    def ensure_started(self) -> None:
        """From within the event loop the streams run on."""
        with self._start_lock:
            if self._thread is not None:
                return
            self._loop = asyncio.get_running_loop()
            self._changed = asyncio.Event()
            self.version = self._feed.version
            self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        version = self.version
        while not self._closing.is_set():
            asked = time.monotonic()
            try:
                newer = self._feed.wait_newer(version, 1.0)
            except Exception:
                log.exception("the console's change feed failed; live updates stop")
                return
            if newer != version:
                version = newer
                self._publish(newer)
            elif time.monotonic() - asked < 0.5:  # a stopped feed answers at once: no spinning
                self._closing.wait(1.0)

    def _publish(self, version: int) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._set, version)

    def _set(self, version: int) -> None:
        self.version = version
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()

    async def wait_newer(self, since: int, timeout: float) -> int:
        """The current version once it differs from `since`, or after `timeout`."""
        if self.version != since or self.closed or self._changed is None:
            return self.version
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        return self.version

    def close(self) -> None:
        """Ends every open stream (a server that stops does not wait on them)."""
        self._closing.set()
        self._publish(self.version)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)


# -- the app --------------------------------------------------------------------------------


class SecurityHeaders:
    """Adds the content security policy and friends to every response, streams included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def same_origin(request: Request) -> bool:
    return _same_origin(
        request.headers.get("origin"), own_origin(request), request.headers.get("sec-fetch-site")
    )


async def read_form(request: Request) -> dict[str, list[str]] | None:
    """An urlencoded form body (what the page's forms send), or None if it is not one."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        return parse_qs(body.decode(), keep_blank_values=True, max_num_fields=MAX_REQUEUE_IDS + 8)
    except (UnicodeDecodeError, ValueError):
        return None


def first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def checks_json(checks: Iterable[Check], redact: Callable[[str], str]) -> list[dict[str, Any]]:
    return [{"name": c.name, "ok": bool(c.ok), "detail": redact(c.detail)} for c in checks]


def create_app(
    settings: Settings,
    observer: ObserverLike,
    feed: FeedLike,
    *,
    metrics: MetricsSource | None = None,
) -> FastAPI:
    """The console for one observer and its change feed. `metrics`: the /metrics body and
    content type; None serves `gfx_sync.metrics` over this observer."""
    auth = ConsoleAuth(settings.console_token)
    redact = Redactor(settings)
    env = templates(redact)
    # The venue in the header and the title, so several sites' consoles are told apart; a
    # single-site install (the default site) shows none.
    env.globals["site_name"] = settings.site if settings.site != DEFAULT_SITE else None
    cache = SnapshotCache(observer)
    hub = VersionHub(feed)
    default_metrics = None if metrics is not None else snapshot_metrics(observer)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.ensure_started()
        started = getattr(app.state, "started", None)
        if started is not None:
            started.set()
        yield
        hub.close()

    app = FastAPI(
        title="gfx-sync console",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.auth = auth
    app.add_middleware(SecurityHeaders)
    if is_loopback(settings.console_host):
        # Bound to loopback, only loopback names reach it: a page whose DNS name turns into
        # 127.0.0.1 (DNS rebinding) is refused, so it cannot read the console cross-site.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def viewer(request: Request) -> tuple[bool, str | None]:
        cookie = request.cookies.get(COOKIE_NAME)
        if auth.authorised(cookie):
            assert cookie is not None
            return True, auth.csrf_for(cookie)
        return False, None

    def context(request: Request, version: int, **extra: Any) -> dict[str, Any]:
        snap = cache.get(version)
        authorised, csrf = viewer(request)
        ui = safe_http_base(snap.prefect_ui)
        return {
            "snap": snap,
            "now": snap.taken_at,
            "version": version,
            "authorised": authorised,
            "auth_enabled": auth.enabled,
            "csrf": csrf,
            "prefect_ui": ui,
            "run_link": lambda url: run_link(ui, snap.prefect_ui, url),
            "queue_counts": snap.queue.counts if snap.queue is not None else None,
            "live_checks": LIVE_CHECKS,
            **extra,
        }

    def page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**values), status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, requeued: int | None = None) -> HTMLResponse:
        version = feed.version
        return page("index.html", **context(request, version, requeued=requeued))

    @app.get("/fragment", response_class=HTMLResponse)
    def fragment(request: Request) -> HTMLResponse:
        version = feed.version
        response = page("live.html", **context(request, version, requeued=None))
        response.headers[VERSION_HEADER] = str(version)
        return response

    @app.get("/live")
    async def live(request: Request, since: int | None = None) -> StreamingResponse:
        hub.ensure_started()
        last_event = request.headers.get("last-event-id", "")
        start = int(last_event) if last_event.isdigit() else since
        return StreamingResponse(
            events(start if start is not None else hub.version),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    async def events(since: int) -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        while not hub.closed:
            version = await hub.wait_newer(since, KEEPALIVE_SECONDS)
            if hub.closed:
                return
            if version != since:
                since = version
                yield f"id: {version}\ndata: {version}\n\n"
            else:
                yield ": keep-alive\n\n"

    def probe(names: Sequence[str], ok: Callable[[Snapshot], bool], snap: Snapshot) -> JSONResponse:
        checks = [c for c in snap.checks if c.name in names]
        passed = ok(snap)
        return JSONResponse(
            {"ok": passed, "checks": checks_json(checks, redact)},
            status_code=200 if passed else 503,
        )

    @app.get("/health")
    def health() -> JSONResponse:
        """Liveness: this process answers and the watcher is alive. Local reads only: a
        probe of liveness must not wait on the target or Prefect."""
        return probe(
            LIVE_CHECKS,
            lambda snap: all(c.ok for c in snap.checks if c.name in LIVE_CHECKS),
            observer.snapshot(target=False, orchestrator=False),
        )

    @app.get("/ready")
    def ready() -> JSONResponse:
        """Target reachable, schema current, Prefect reachable (or the standby draining)."""
        return probe(READY_CHECKS, lambda snap: snap.ready, cache.get(feed.version))

    @app.get("/metrics")
    def metrics_page() -> Response:
        if metrics is not None:
            body, content_type = metrics()
            return Response(body, media_type=content_type)
        if default_metrics is None:
            return PlainTextResponse("no metrics in this build", status_code=404)
        body, content_type = default_metrics()
        return Response(body, media_type=content_type)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return page("login.html", auth_enabled=auth.enabled, failed=False)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await read_form(request)
        if not same_origin(request) or form is None or not auth.enabled:
            return forbidden("sign-in refused")
        if not auth.token_matches(first(form, "token") or ""):
            return page("login.html", status=403, auth_enabled=True, failed=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            auth.session_cookie(),
            max_age=COOKIE_MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        if not same_origin(request):
            return forbidden("sign-out refused: not from the console's page")
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
        return response

    @app.post("/actions/requeue")
    async def requeue(request: Request) -> Response:
        cookie = request.cookies.get(COOKIE_NAME)
        if not same_origin(request):
            return forbidden("refused: the request does not come from the console's page")
        if not auth.authorised(cookie):
            return forbidden("read-only: sign in with the console token to requeue")
        form = await read_form(request)
        if form is None or not auth.csrf_matches(cookie, first(form, "csrf")):
            return forbidden("refused: the form's csrf value is missing or wrong")
        raw = form.get("item", [])
        if not raw or len(raw) > MAX_REQUEUE_IDS or not all(v.isdigit() for v in raw):
            return PlainTextResponse("give one or more item ids", status_code=400)
        count = await run_in_threadpool(observer.requeue, [int(v) for v in raw])
        cache.invalidate()
        return RedirectResponse(f"/?requeued={int(count)}#problems", status_code=303)

    return app


def forbidden(message: str) -> PlainTextResponse:
    return PlainTextResponse(message, status_code=403)


def run_link(ui: str | None, configured: str | None, url: str | None) -> str | None:
    """A failed run's link, only if it points into the configured Prefect UI (so its scheme
    and host are configuration), rebased onto the cleaned-up UI address."""
    if ui is None or configured is None or not url:
        return None
    prefix = configured.rstrip("/") + "/"
    if not url.startswith(prefix):
        return None
    rest = url[len(prefix) :]
    if any(ch.isspace() or ord(ch) < 0x20 for ch in rest):
        return None
    return f"{ui}/{rest}"


def snapshot_metrics(observer: ObserverLike) -> MetricsSource | None:
    """`gfx_sync.metrics` over this observer (a snapshot per scrape, the queue's commit logs
    for counters and histograms), when that module is there."""
    try:
        from gfx_sync.metrics import MetricsExporter, render
    except ImportError:
        return None
    exporter = MetricsExporter(observer)
    return lambda: render(exporter)
