"""Test-only helpers: real-sample locations, a PostgREST-compatible server."""
