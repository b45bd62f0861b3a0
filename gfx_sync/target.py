"""Open the configured target: Supabase REST, a Postgres URL, or the embedded Postgres."""

from __future__ import annotations

from gfx_sync.embedded_pg import start_embedded_postgres
from gfx_sync.migrate import apply_migrations
from gfx_sync.redact import redact_url
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
