"""A Postgres target that is slow, locked or half-dead while PokerGFX keeps writing.

The scenarios share one `gfx-sync up` (start-up is the expensive part, and each fault ends
before the next begins): each has its own producer with its own session-ID range, and the
judge looks only at that range (`shared_table`). Every scenario ends with the fault lifted,
one more new session (new data still flows), and the judge.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from support.faults import Producer, Rig, Verdict, env_seconds, fetch_rows
from support.system import RunningSystem, wait_for


@pytest.fixture(scope="module")
def system(module_rig: Rig) -> Iterator[RunningSystem]:
    with module_rig.up() as running:
        yield running


def scenario_producer(rig: Rig, scenario: int, **options: object) -> Producer:
    producer = rig.producer(seed=scenario, scenario=scenario)
    producer.shared_table = True
    for name, value in options.items():
        setattr(producer, name, value)
    return producer


def wait_until_syncing(rig: Rig, producer: Producer) -> None:
    """The fault must meet real writes: on a loaded machine the first runs start late."""
    wait_for(
        lambda: any(producer.owns(r.session_id) for r in fetch_rows(rig.database_url)),
        timeout=120,
    )


def sync_errors(database_url: str, scenario: Producer) -> list[tuple[str, str]]:
    """(error, outcome) of this scenario's failed writes, as recorded in `sync_events`."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select session_id, error, details->>'outcome' from sync_events "
            "where event_type = 'error' and session_id is not null"
        ).fetchall()
    return [(error, outcome) for session_id, error, outcome in rows if scenario.owns(session_id)]


def test_statement_timeout_from_a_table_lock(
    module_rig: Rig, system: RunningSystem, report: list[Verdict]
) -> None:
    """A lock held longer than GFX_SYNC_REQUEST_TIMEOUT: the sink's statement_timeout fires
    (57014) down to single records. That is the target being slow, an outage: retried without
    using up the files' retries, never dead-lettered, and everything arrives once it is gone."""
    hold = env_seconds("GFX_SYNC_FAULTS_LOCK", 8)
    producer = scenario_producer(module_rig, 11)
    with module_rig.watch() as watch:
        producer.run(2)
        wait_until_syncing(module_rig, producer)
        with psycopg.connect(module_rig.database_url) as conn:
            conn.execute("lock table gfx_sessions in access exclusive mode")
            producer.run(hold, interval=0.1)
            wait_for(  # held until a write has met it (sync_events is not locked)
                lambda: any(
                    "57014" in e for e, _ in sync_errors(module_rig.database_url, producer)
                ),
                timeout=60,
            )
        started = time.monotonic()
        producer.new_session()
        verdict = module_rig.converge(
            f"statement timeout (lock {hold:.0f} s)", producer, watch=watch, started=started
        )
    report.append(verdict)
    assert verdict.clean, verdict
    errors = sync_errors(module_rig.database_url, producer)
    assert {outcome for _, outcome in errors} == {"retry"}, errors


def test_target_accepting_then_hanging(
    module_rig: Rig, system: RunningSystem, report: list[Verdict]
) -> None:
    """Connections are accepted and then nothing comes back: only gfx-sync's own timeouts (the
    client watchdog on an open connection, connect_timeout on new ones) end the waits. Longer
    than those timeouts, so they must fire; nothing is left in flight afterwards."""
    hang = env_seconds("GFX_SYNC_FAULTS_HANG", 12)
    producer = scenario_producer(module_rig, 12)
    with module_rig.watch() as watch:
        producer.run(2)
        wait_until_syncing(module_rig, producer)
        module_rig.proxy.hang(True)
        try:
            producer.run(hang, interval=0.1)
        finally:
            module_rig.proxy.hang(False)
        started = time.monotonic()
        producer.new_session()
        verdict = module_rig.converge(
            f"target hanging {hang:.0f} s", producer, watch=watch, started=started
        )
    report.append(verdict)
    assert verdict.clean, verdict


def test_slow_network_fast_producer(
    module_rig: Rig, system: RunningSystem, report: list[Verdict]
) -> None:
    """200 ms round trips while the producer writes every 20 ms: batches grow, nothing lost."""
    slow = env_seconds("GFX_SYNC_FAULTS_SLOW", 8)
    producer = scenario_producer(module_rig, 13)
    with module_rig.watch() as watch:
        module_rig.proxy.set_delay(0.1)
        try:
            producer.run(slow, interval=0.02)
            producer.new_session()
            started = time.monotonic()
            verdict = module_rig.converge(
                f"slow network (100 ms one-way, {slow:.0f} s)",
                producer,
                watch=watch,
                started=started,
            )
        finally:
            module_rig.proxy.set_delay(0)
    report.append(verdict)
    assert verdict.clean, verdict


def test_slow_then_refused_with_chunked_writes(
    module_rig: Rig, system: RunningSystem, report: list[Verdict]
) -> None:
    """Slow network, then the target refuses, then slow again; most rewrites are chunked, so
    readers keep catching half-written files while writes fail."""
    outage = env_seconds("GFX_SYNC_FAULTS_COMBINED", 6)
    producer = scenario_producer(module_rig, 14, chunked_share=0.6)
    with module_rig.watch() as watch:
        module_rig.proxy.set_delay(0.05)
        try:
            producer.run(3, interval=0.05)
            wait_until_syncing(module_rig, producer)
            module_rig.proxy.refuse(True)
            try:
                producer.run(outage, interval=0.05)
            finally:
                module_rig.proxy.refuse(False)
            producer.run(3, interval=0.05)
        finally:
            module_rig.proxy.set_delay(0)
        started = time.monotonic()
        producer.new_session()
        verdict = module_rig.converge(
            f"slow + refused {outage:.0f} s + chunked", producer, watch=watch, started=started
        )
    report.append(verdict)
    assert verdict.clean, verdict
