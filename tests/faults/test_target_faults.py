"""The target misbehaves while PokerGFX keeps writing: nothing is lost, doubled or regressed.

Each scenario runs the real `gfx-sync up` against a fresh database behind a fault proxy, keeps
the producer writing through the fault, ends the fault, writes once more (new data must still
flow), and lets the judge compare the table with the producer's truth.
"""

from __future__ import annotations

import time

from support.faults import Rig, Verdict, env_seconds


def test_target_refusing_connections_then_back(rig: Rig, report: list[Verdict]) -> None:
    outage = env_seconds("GFX_SYNC_FAULTS_OUTAGE", 10)
    producer = rig.producer(seed=1, scenario=1)
    with rig.up(), rig.watch() as watch:
        producer.run(3)
        rig.proxy.refuse(True)
        producer.run(outage, interval=0.1)
        rig.proxy.refuse(False)
        started = time.monotonic()
        producer.new_session()  # new data still flows after the fault
        verdict = rig.converge(
            f"target refused {outage:.0f} s", producer, watch=watch, started=started
        )
    report.append(verdict)
    assert verdict.clean, verdict
