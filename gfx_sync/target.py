"""Open the configured target: Supabase REST, a Postgres URL, or the embedded Postgres."""

from __future__ import annotations

import logging
import threading

from gfx_sync.embedded_pg import start_embedded_postgres
from gfx_sync.migrate import apply_migrations, is_unreachable
from gfx_sync.redact import redact_url, scrub
from gfx_sync.settings import Settings, Target
from gfx_sync.sinks import Sink, open_sink


def database_url(settings: Settings) -> str | None:
    """The Postgres URL to write to, starting the embedded server when no target is set."""
    if settings.target is Target.POSTGRES:
        assert settings.database_url is not None
        return settings.database_url.get_secret_value()
    if settings.target is Target.EMBEDDED:
        return start_embedded_postgres(settings.embedded_pg_dir)
    return None


def open_target(settings: Settings) -> Sink:
    """The sink for the configured target. The embedded database is migrated on first use."""
    url = database_url(settings)
    if settings.target is Target.EMBEDDED:
        assert url is not None
        apply_migrations(url)
    return open_sink(settings, url)


def describe_target(settings: Settings) -> str:
    """Where data goes, without secrets."""
    if settings.target is Target.SUPABASE:
        return f"Supabase REST at {settings.supabase_url}"
    if settings.target is Target.POSTGRES:
        assert settings.database_url is not None
        return f"Postgres {redact_url(settings.database_url.get_secret_value())}"
    return f"embedded Postgres in {settings.embedded_pg_dir}"


log = logging.getLogger(__name__)


class SchemaPreparer:
    """Brings a Postgres target's schema up to date now or, if the target cannot be reached
    (a venue restarting after a power cut, its internet link still down), as soon as it
    answers, retrying in a thread with backoff. Meanwhile every change waits in the durable
    queue: a sink that finds no table counts it as an outage, which uses up no retries."""

    def __init__(
        self, url: str, *, connect_timeout: float, max_delay: float = 30.0, describe: str = ""
    ) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.max_delay = max_delay
        self.describe = describe or "the target"
        self.ready = threading.Event()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SchemaPreparer:
        """Try once here (configuration errors raise to the caller); on an outage, go on
        trying in the background and return at once."""
        if self._try():
            return self
        self._thread = threading.Thread(target=self._retry, name="schema-preparer", daemon=True)
        self._thread.start()
        return self

    def _try(self) -> bool:
        try:
            applied = apply_migrations(self.url, connect_timeout=self.connect_timeout)
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            first = self.last_error is None
            self.last_error = (scrub(str(exc), self.url).strip() or repr(exc)).splitlines()[0]
            if first:
                log.warning(
                    "%s is unreachable (%s): watching and queueing anyway; the schema is "
                    "checked as soon as it answers",
                    self.describe,
                    self.last_error,
                )
            return False
        if self.last_error is not None:
            log.warning("%s answers again: the schema is up to date", self.describe)
        if applied:
            log.info("applied %d migration(s): %s", len(applied), ", ".join(applied))
        self.last_error = None
        self.ready.set()
        return True

    def _retry(self) -> None:
        delay = 1.0
        while not self._stop.wait(delay):
            try:
                if self._try():
                    return
            except Exception:  # configuration trouble after all: say so, keep trying
                log.exception("could not bring the schema of %s up to date", self.describe)
            delay = min(self.max_delay, delay * 2)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.connect_timeout + 5)
