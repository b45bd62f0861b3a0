"""Silent-failure alerts: the state machine on a hand-moved clock (one message per condition,
one when it clears, a cooldown between repeats of a flapping one), and once end to end: a
silent PC alerts through the real Prefect automation to a webhook, and clears."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import orjson
import pytest
from pydantic import SecretStr

from deployments.alerting import AlertingThread
from gfx_sync.alerts import PENDING_KEY, PROBLEMS_KEY, Alert, AlertKind, SilentFailureAlerts
from gfx_sync.observe import Observer, PcCard, PcState, Problem, QueueFigures, Snapshot
from gfx_sync.queue import ChangeKind, DurableQueue, ItemState, SyncedFile
from gfx_sync.settings import Settings
from support.clock import Clock
from support.nas import make_nas, nas_settings
from support.system import WebhookReceiver, wait_for
from tasks.status import STATUS_ARTIFACT_KEY, write_status_artifact

SILENT_AFTER = 300.0
PENDING_AFTER = 120.0
COOLDOWN = 600.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    make_nas(tmp_path)
    return nas_settings(
        tmp_path,
        pc_silent_after=SILENT_AFTER,
        pending_alert_after=PENDING_AFTER,
        alert_cooldown=COOLDOWN,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(1_750_000_000.0)


@pytest.fixture
def alerts(settings: Settings, clock: Clock) -> SilentFailureAlerts:
    return SilentFailureAlerts(settings, clock=clock)


def card(pc: str, state: PcState, last_sync_at: float | None) -> PcCard:
    return PcCard(pc, state, None, None, None, last_sync_at, 0.0, 0, 0)


def problem(item_id: int, state: ItemState = ItemState.QUARANTINED, pc: str = "PC01") -> Problem:
    path = f"/nas/{pc}/hands/{item_id}.json"
    return Problem(item_id, pc, path, state, f"{path}: truncated JSON", 1, None, None)


def snapshot(
    clock: Clock,
    *,
    pcs: Sequence[PcCard] = (),
    oldest_pending: float | None = None,
    problems: Sequence[Problem] = (),
    queue_readable: bool = True,
) -> Snapshot:
    figures = QueueFigures(
        counts={"pending": 0 if oldest_pending is None else 3}, due=0,
        oldest_pending_age=oldest_pending, expired_leases=0,
    )  # fmt: skip
    return Snapshot(
        taken_at=clock(),
        synced={}, bytes_synced={}, last_commit_at=None,
        queue=figures if queue_readable else None,
        checks=[], pcs=list(pcs), problems=list(problems) if queue_readable else [], sessions=[],
    )  # fmt: skip


def kinds(alerts: list[Alert]) -> list[tuple[AlertKind, str]]:
    return [(a.kind, a.key) for a in alerts]


RAISED, CLEARED = AlertKind.RAISED, AlertKind.CLEARED


# -- a silent PC --------------------------------------------------------------------------------


def test_a_silent_pc_raises_once_and_clears_once_when_it_writes_again(
    alerts: SilentFailureAlerts, clock: Clock
) -> None:
    last = clock() - 400
    writing = card("PC02", PcState.ONLINE, clock())
    first = alerts.evaluate(snapshot(clock, pcs=[card("PC01", PcState.SILENT, last), writing]))
    assert kinds(first) == [(RAISED, "silent.PC01")]
    assert first[0].subject == "gfx-sync: PC01 silent for 6 min"
    for _ in range(5):  # still silent: nothing more, however often it is checked
        clock.advance(5)
        assert alerts.evaluate(snapshot(clock, pcs=[card("PC01", PcState.SILENT, last)])) == []
    clock.advance(5)
    wrote = alerts.evaluate(snapshot(clock, pcs=[card("PC01", PcState.ONLINE, clock())]))
    assert kinds(wrote) == [(CLEARED, "silent.PC01")]
    assert wrote[0].subject == "gfx-sync: PC01 writes again"
    clock.advance(5)
    assert alerts.evaluate(snapshot(clock, pcs=[card("PC01", PcState.ONLINE, clock())])) == []
    assert alerts.raised == set()


def test_a_silent_pc_stays_raised_until_it_writes_even_when_its_state_changes(
    alerts: SilentFailureAlerts, clock: Clock
) -> None:
    """Offline (an hour passed) or idle (the others stopped too): it has still not written."""
    last = clock() - 400
    assert kinds(alerts.evaluate(snapshot(clock, pcs=[card("PC01", PcState.SILENT, last)]))) == [
        (RAISED, "silent.PC01")
    ]
    for state in (PcState.IDLE, PcState.OFFLINE):
        clock.advance(3600)
        assert alerts.evaluate(snapshot(clock, pcs=[card("PC01", state, last)])) == []
    assert alerts.raised == {"silent.PC01"}
    clock.advance(60)
    assert kinds(alerts.evaluate(snapshot(clock, pcs=[card("PC01", PcState.ONLINE, clock())]))) == [
        (CLEARED, "silent.PC01")
    ]


def test_a_pc_missing_from_a_snapshot_changes_nothing(
    alerts: SilentFailureAlerts, clock: Clock
) -> None:
    alerts.evaluate(snapshot(clock, pcs=[card("PC01", PcState.SILENT, clock() - 400)]))
    clock.advance(5)
    assert alerts.evaluate(snapshot(clock, pcs=[])) == []
    assert alerts.raised == {"silent.PC01"}


def test_a_flapping_condition_is_raised_again_only_after_the_cooldown(
    alerts: SilentFailureAlerts, clock: Clock
) -> None:
    def silent() -> Snapshot:
        return snapshot(clock, pcs=[card("PC01", PcState.SILENT, clock() - 400)])

    def writes() -> Snapshot:
        return snapshot(clock, pcs=[card("PC01", PcState.ONLINE, clock())])

    assert kinds(alerts.evaluate(silent())) == [(RAISED, "silent.PC01")]
    clock.advance(10)
    assert kinds(alerts.evaluate(writes())) == [(CLEARED, "silent.PC01")]
    # Silent again within the cooldown: held back...
    clock.advance(10)
    assert alerts.evaluate(silent()) == []
    clock.advance(COOLDOWN / 2)
    assert alerts.evaluate(silent()) == []
    # ...and sent once the cooldown has passed, since it still holds.
    clock.advance(COOLDOWN / 2)
    assert kinds(alerts.evaluate(silent())) == [(RAISED, "silent.PC01")]
    # A flap that ends inside the cooldown sends nothing at all: "cleared" is true again.
    clock.advance(10)
    assert kinds(alerts.evaluate(writes())) == [(CLEARED, "silent.PC01")]
    clock.advance(10)
    assert alerts.evaluate(silent()) == []
    clock.advance(10)
    assert alerts.evaluate(writes()) == []
    clock.advance(COOLDOWN)
    assert alerts.evaluate(writes()) == []


def test_a_zero_cooldown_sends_every_transition(settings: Settings, clock: Clock) -> None:
    alerts = SilentFailureAlerts(settings.model_copy(update={"alert_cooldown": 0.0}), clock=clock)
    for _ in range(3):
        clock.advance(1)
        assert kinds(alerts.evaluate(snapshot(clock, oldest_pending=PENDING_AFTER + 1))) == [
            (RAISED, PENDING_KEY)
        ]
        clock.advance(1)
        assert kinds(alerts.evaluate(snapshot(clock))) == [(CLEARED, PENDING_KEY)]


def test_pcs_are_separate_conditions(alerts: SilentFailureAlerts, clock: Clock) -> None:
    both = [
        card("PC01", PcState.SILENT, clock() - 400),
        card("PC02", PcState.SILENT, clock() - 500),
    ]
    assert kinds(alerts.evaluate(snapshot(clock, pcs=both))) == [
        (RAISED, "silent.PC01"),
        (RAISED, "silent.PC02"),
    ]
    clock.advance(5)
    one_back = [card("PC01", PcState.ONLINE, clock()), both[1]]
    assert kinds(alerts.evaluate(snapshot(clock, pcs=one_back))) == [(CLEARED, "silent.PC01")]


# -- a stalled queue ----------------------------------------------------------------------------


def test_an_old_pending_change_raises_once_and_clears(
    alerts: SilentFailureAlerts, clock: Clock
) -> None:
    assert alerts.evaluate(snapshot(clock, oldest_pending=PENDING_AFTER)) == []  # not older
    clock.advance(1)
    raised = alerts.evaluate(snapshot(clock, oldest_pending=PENDING_AFTER + 1))
    assert kinds(raised) == [(RAISED, PENDING_KEY)]
    assert "waiting 2 min" in raised[0].subject and "3 pending" in raised[0].text
    for _ in range(3):
        clock.advance(30)
        assert alerts.evaluate(snapshot(clock, oldest_pending=PENDING_AFTER + 31)) == []
    clock.advance(1)
    assert kinds(alerts.evaluate(snapshot(clock, oldest_pending=2.0))) == [(CLEARED, PENDING_KEY)]
    clock.advance(1)
    assert alerts.evaluate(snapshot(clock)) == []


def test_an_unreadable_queue_neither_raises_nor_clears(
    alerts: SilentFailureAlerts, clock: Clock
) -> None:
    alerts.evaluate(snapshot(clock, oldest_pending=PENDING_AFTER + 1, problems=[problem(1)]))
    assert alerts.raised == {PENDING_KEY, PROBLEMS_KEY}
    clock.advance(5)
    assert alerts.evaluate(snapshot(clock, queue_readable=False)) == []
    assert alerts.raised == {PENDING_KEY, PROBLEMS_KEY}
    clock.advance(5)
    assert kinds(alerts.evaluate(snapshot(clock))) == [
        (CLEARED, PENDING_KEY),
        (CLEARED, PROBLEMS_KEY),
    ]
    # Nothing is raised from a queue that cannot be read either.
    clock.advance(COOLDOWN)
    assert alerts.evaluate(snapshot(clock, queue_readable=False)) == []


# -- dead-lettered and quarantined files --------------------------------------------------------


def test_new_problems_are_announced_once_per_batch_and_cleared_when_none_is_left(
    alerts: SilentFailureAlerts, clock: Clock
) -> None:
    first = [problem(1), problem(2), problem(3, ItemState.DEAD, "PC02")]
    raised = alerts.evaluate(snapshot(clock, problems=first))
    assert kinds(raised) == [(RAISED, PROBLEMS_KEY)]  # one message for the batch
    assert raised[0].subject == (
        "gfx-sync: 2 file(s) quarantined and 1 change(s) dead-lettered: truncated JSON"
    )
    assert raised[0].text.splitlines()[:3] == [
        "PC01 /nas/PC01/hands/1.json: quarantined: truncated JSON",
        "PC01 /nas/PC01/hands/2.json: quarantined: truncated JSON",
        "PC02 /nas/PC02/hands/3.json: dead-lettered after 1 attempt(s): truncated JSON",
    ]
    clock.advance(5)
    assert alerts.evaluate(snapshot(clock, problems=first)) == []  # nothing new
    # A new one within the cooldown waits; a second one joins it; both go out together.
    clock.advance(5)
    assert alerts.evaluate(snapshot(clock, problems=[*first, problem(4)])) == []
    clock.advance(5)
    assert alerts.evaluate(snapshot(clock, problems=[*first, problem(4), problem(5)])) == []
    clock.advance(COOLDOWN)
    later = alerts.evaluate(snapshot(clock, problems=[*first, problem(4), problem(5)]))
    assert kinds(later) == [(RAISED, PROBLEMS_KEY)]
    assert later[0].subject.startswith("gfx-sync: 2 file(s) quarantined")
    assert "/4.json" in later[0].text and "/5.json" in later[0].text
    assert "/1.json" not in later[0].text
    assert "5 unresolved in all" in later[0].text
    # Requeued (or fixed and synced) one by one: cleared once none is left.
    clock.advance(5)
    assert alerts.evaluate(snapshot(clock, problems=[problem(5)])) == []
    clock.advance(5)
    cleared = alerts.evaluate(snapshot(clock))
    assert kinds(cleared) == [(CLEARED, PROBLEMS_KEY)]
    assert "no dead-lettered or quarantined" in cleared[0].subject


def test_an_item_that_fails_again_after_a_requeue_is_new_again(
    settings: Settings, clock: Clock
) -> None:
    alerts = SilentFailureAlerts(settings.model_copy(update={"alert_cooldown": 0.0}), clock=clock)
    assert kinds(alerts.evaluate(snapshot(clock, problems=[problem(1), problem(2)]))) == [
        (RAISED, PROBLEMS_KEY)
    ]
    clock.advance(5)
    assert alerts.evaluate(snapshot(clock, problems=[problem(2)])) == []  # 1 requeued
    clock.advance(5)
    again = alerts.evaluate(snapshot(clock, problems=[problem(1), problem(2)]))  # 1 failed again
    assert kinds(again) == [(RAISED, PROBLEMS_KEY)]
    assert "/1.json" in again[0].text and "/2.json" not in again[0].text


def test_long_lists_and_reasons_are_cut(alerts: SilentFailureAlerts, clock: Clock) -> None:
    many = [
        Problem(n, "PC01", f"/nas/PC01/hands/{n}.json", ItemState.DEAD, "x" * 5000, 9, None, None)
        for n in range(1, 31)
    ]
    (alert,) = alerts.evaluate(snapshot(clock, problems=many))
    assert "... and 20 more" in alert.text
    assert len(alert.subject) < 300 and len(alert.text) < 4000


# -- end to end: Prefect automation -> webhook -------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def prefect_api(tmp_path: Path) -> Iterator[str]:
    from support.prefect_env import prefect_server

    with prefect_server(tmp_path / "prefect-home") as api_url:
        yield api_url


def sync_one(queue: DurableQueue, base: Path, pc: str, name: str) -> None:
    """What a run does for one file: enqueue, claim, commit."""
    path = str(base / pc / "hands" / name)
    item_id = queue.enqueue(pc, path, ChangeKind.ADDED, 10, 1.0)
    (claimed,) = queue.claim(1, worker="test")
    assert claimed.id == item_id
    queue.ack_synced([SyncedFile(item_id, path, pc, 10, 1.0, "h")], source="realtime")


@pytest.mark.prefect
def test_a_silent_pc_alerts_through_the_automation_and_clears(
    prefect_api: str, webhook: WebhookReceiver, settings: Settings, clock: Clock
) -> None:
    """A real Prefect server and the automation `up` creates; the alerting thread on a real
    queue and observer, whose clock the test moves (no waiting for `pc_silent_after`)."""
    from deployments.automations import (
        AUTOMATION_NAME,
        SILENT_FAILURE_AUTOMATION_NAME,
        ensure_alert_automation,
    )

    settings = settings.model_copy(update={"alert_webhook_url": SecretStr(webhook.url)})
    ensure_alert_automation(settings)
    ensure_alert_automation(settings)  # every `up` does: updated in place, never doubled
    response = httpx.post(f"{prefect_api}/automations/filter", json={}, timeout=10)
    response.raise_for_status()
    assert sorted(a["name"] for a in response.json()) == sorted(
        [AUTOMATION_NAME, SILENT_FAILURE_AUTOMATION_NAME]
    )
    settings.state_dir.mkdir(parents=True)
    with DurableQueue(settings.resolved_queue_path, clock=clock) as queue:
        observer = Observer(settings, queue=queue, reader=None, clock=clock)
        thread = AlertingThread(
            settings,
            observer,
            alerts=SilentFailureAlerts(settings, clock=clock),
            interval=0.1,
            status_rows=lambda: [{"pc": "PC01", "files_synced": 1}],
            publish_status=write_status_artifact,
        ).start()
        try:
            sync_one(queue, settings.base_path, "PC01", "a.json")
            sync_one(queue, settings.base_path, "PC02", "b.json")
            clock.advance(SILENT_AFTER + 60)
            sync_one(queue, settings.base_path, "PC02", "c.json")  # PC02 writes on, PC01 does not
            raised = wait_for(lambda: list(webhook.bodies), 60)
            assert raised[0]["subject"] == "gfx-sync: PC01 silent for 6 min", raised
            assert "PC01 has not synced a file for 6 min" in raised[0]["text"]
            clock.advance(5)
            sync_one(queue, settings.base_path, "PC01", "d.json")
            bodies = wait_for(lambda: webhook.bodies if len(webhook.bodies) > 1 else [], 60)
        finally:
            thread.stop()
    assert [b["subject"] for b in bodies] == [
        "gfx-sync: PC01 silent for 6 min",
        "gfx-sync: PC01 writes again",
    ]
    # The status table was published from outside any run, once (it did not change).
    response = httpx.post(
        f"{prefect_api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [STATUS_ARTIFACT_KEY]}}},
        timeout=10,
    )
    response.raise_for_status()
    (artifact,) = response.json()
    assert artifact["flow_run_id"] is None
    assert orjson.loads(artifact["data"]) == [{"pc": "PC01", "files_synced": 1}]


def test_the_status_table_is_published_when_it_changed(settings: Settings) -> None:
    rows: list[dict[str, object]] = [{"pc": "PC01", "files_synced": 1}]
    published: list[list[dict[str, object]]] = []

    def publish(table: list[dict[str, object]]) -> None:
        if table[0]["files_synced"] == 3:
            raise ConnectionError("Prefect is away")
        published.append(table)

    thread = AlertingThread(
        settings, observer=None, status_rows=lambda: [dict(r) for r in rows], publish_status=publish
    )  # type: ignore[arg-type]
    assert thread.refresh_status()
    assert not thread.refresh_status()  # the same table: not published again
    rows[0]["files_synced"] = 2
    assert thread.refresh_status()
    rows[0]["files_synced"] = 3
    assert not thread.refresh_status()  # failed: tried again next time
    rows[0]["files_synced"] = 2
    assert not thread.refresh_status()
    assert [t[0]["files_synced"] for t in published] == [1, 2]
