"""The Supabase REST target (supabase-py through the PostgREST-compatible test server on the
real Postgres) answering 503 for a while, as a gateway does when the project is overloaded."""

from __future__ import annotations

import threading
import time

from support.faults import Rig, Verdict, env_seconds
from support.postgrest import RecordedRequest, run_postgrest
from support.system import gfx_sync_up


def test_rest_target_answering_503_then_healthy(rig: Rig, report: list[Verdict]) -> None:
    window = env_seconds("GFX_SYNC_FAULTS_503", 8)
    producer = rig.producer(seed=15, scenario=15)
    failing = threading.Event()
    refused: list[RecordedRequest] = []

    def during_window(request: RecordedRequest) -> bool:
        if failing.is_set():
            refused.append(request)
            return True
        return False

    with run_postgrest(rig.database_url) as server:
        server.fail_next(503, None, "upstream unavailable", times=10**9, when=during_window)
        env = rig.env(SUPABASE_URL=server.url, SUPABASE_SERVICE_KEY=server.key)
        del env["GFX_SYNC_DATABASE_URL"]
        with gfx_sync_up(env, cwd=rig.state), rig.watch() as watch:
            producer.run(3)
            failing.set()
            producer.run(window, interval=0.1)
            failing.clear()
            started = time.monotonic()
            producer.new_session()
            verdict = rig.converge(
                f"REST target 503 for {window:.0f} s", producer, watch=watch, started=started
            )
    report.append(verdict)
    assert verdict.clean, verdict
    upserts = [r for r in refused if r.method == "POST" and r.path.endswith("/gfx_sessions")]
    assert upserts, "no upsert ever met the 503s: the scenario did not test anything"
