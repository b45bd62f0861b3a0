"""Serving the console: uvicorn in a thread of its own (with its own event loop), inside
`gfx-sync up` or on its own (`gfx-sync console`).

The socket is bound in `start()`, in the caller's thread: a port in use fails there, and port 0
picks a free port that `url` then reports. Beyond loopback without a token it refuses to start
at all (`check_bind`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence

import uvicorn
from fastapi import FastAPI

from gfx_sync.compat import quiet_uvicorn_server
from gfx_sync.console.app import FeedLike, MetricsSource, ObserverLike, create_app
from gfx_sync.console.auth import ConsoleBindError, check_bind
from gfx_sync.observe import ChangeFeed, Observer, close_observer, open_observer
from gfx_sync.settings import Settings
from gfx_sync.signals import set_from_signal_handler

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0


class ConsoleServer:
    """The console app on `host:port` (default: the settings'), until `stop()`.

    `on_stop`: called after the server stopped, last first (e.g. the feed's `stop`, closing
    the queue the observer reads), for a caller that hands the console what it opened."""

    def __init__(
        self,
        settings: Settings,
        observer: ObserverLike,
        feed: FeedLike,
        *,
        metrics: MetricsSource | None = None,
        host: str | None = None,
        port: int | None = None,
        on_stop: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.host = settings.console_host if host is None else host
        self.port = settings.console_port if port is None else port
        check_bind(self.host, settings.console_token)
        self.app: FastAPI = create_app(settings, observer, feed, metrics=metrics)
        self._on_stop = list(on_stop)
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ConsoleServer:
        """Bind, serve, and return once the app has started. Raises OSError (port in use) or
        RuntimeError, having run `on_stop`."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.set_inheritable(False)
        except OSError:
            sock.close()
            self.stop()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,  # leave the process's logging as it is
            log_level="warning",
            access_log=False,
            lifespan="on",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._server = quiet_uvicorn_server(config)
        started = threading.Event()
        self.app.state.started = started
        self._thread = threading.Thread(
            target=self._serve, args=(self._server, sock, started), name="console", daemon=True
        )
        self._thread.start()
        started.wait(START_TIMEOUT)
        if not self._thread.is_alive() or not started.is_set():
            self.stop()
            raise RuntimeError(f"the console at {self.url} did not start (see the log)")
        log.debug("console at %s", self.url)
        return self

    @staticmethod
    def _serve(server: uvicorn.Server, sock: socket.socket, started: threading.Event) -> None:
        try:
            server.run(sockets=[sock])
        except Exception:
            log.exception("the console stopped with an error")
        finally:
            started.set()  # a server that failed at start-up releases `start()` at once

    def stop(self) -> None:
        """Close the live streams, stop the server, then run `on_stop`. Idempotent."""
        self.app.state.hub.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        while self._on_stop:
            callback = self._on_stop.pop()
            try:
                callback()
            except Exception:
                log.exception("stopping the console: %r failed", callback)


def bind_problem(settings: Settings) -> str | None:
    """Why the configured console may not start (beyond loopback without a token), or None
    (also when `console_port` is 0: no console)."""
    if settings.console_port == 0:
        return None
    try:
        check_bind(settings.console_host, settings.console_token)
    except ConsoleBindError as error:
        return str(error)
    return None


def start_console(settings: Settings, observer: Observer, feed: ChangeFeed) -> ConsoleServer | None:
    """The console over `observer` and `feed` (their owner closes them). None when
    `console_port` is 0, or when it cannot listen (said on stderr and in the log: syncing
    goes on without a console)."""
    if settings.console_port == 0:
        return None
    try:
        return ConsoleServer(settings, observer, feed.start()).start()
    except (OSError, RuntimeError) as error:  # what it opened is closed by now
        log.error("the console could not start: %s", error)
        print(f"gfx-sync: the console could not start: {error}", file=sys.stderr, flush=True)
        return None


def serve_console(settings: Settings) -> int:
    """`gfx-sync console`: serve until Ctrl-C or SIGTERM."""
    if (problem := bind_problem(settings)) is not None or settings.console_port == 0:
        print(f"gfx-sync: {problem or 'GFX_SYNC_CONSOLE_PORT is 0: no console'}", file=sys.stderr)
        return 2
    from gfx_sync.target import database_url

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: set_from_signal_handler(stopping))
    observer, feed = open_observer(settings, database_url(settings))
    try:
        console = start_console(settings, observer, feed)
        if console is None:
            return 1
        print(f"gfx-sync console: {console.url}  (Ctrl-C to stop)", flush=True)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                stopping.wait()
        finally:
            console.stop()
    finally:
        close_observer(observer, feed)
    return 0
