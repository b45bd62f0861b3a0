"""Where records go: a Postgres connection or Supabase's REST API, behind one `Sink` protocol."""

from __future__ import annotations

from gfx_sync.settings import Settings, Target
from gfx_sync.sinks.base import FailureKind, Sink, SinkError, SyncEvent, WriteResult

__all__ = ["FailureKind", "Sink", "SinkError", "SyncEvent", "WriteResult", "open_sink"]


def open_sink(settings: Settings, database_url: str | None = None) -> Sink:
    """The configured target's sink. `database_url` is the resolved URL (embedded or direct).

    The sink writes every row (sessions and sync events) at `settings.site`: this is the one
    place the agent's site reaches the data."""
    if settings.target is Target.SUPABASE:
        from gfx_sync.sinks.supabase_rest import SupabaseRestSink

        assert settings.supabase_url and settings.supabase_service_key
        return SupabaseRestSink(
            settings.supabase_url,
            settings.supabase_service_key,
            timeout=settings.request_timeout,
            site=settings.site,
        )
    from gfx_sync.sinks.postgres import PostgresSink

    if database_url is None:
        raise ValueError("a Postgres target needs its resolved database URL")
    return PostgresSink(
        database_url,
        timeout=settings.request_timeout,
        concurrent_writes=settings.write_connections,
        site=settings.site,
    )
