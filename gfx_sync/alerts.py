"""Alerts on what fails silently: no run fails, yet nothing (or not everything) lands.

Three conditions, read from an `Observer` snapshot:
- a PC is silent (`PcState.SILENT`: in use this hour, quiet for `pc_silent_after` while other
  PCs write). It clears when that PC commits again: a silent PC that goes on to count as
  offline (an hour without a sync) or idle (the others stopped too) has still not written.
- the oldest pending change has waited longer than `pending_alert_after`.
- dead-lettered or quarantined files the operator has not been told about (by item id): one
  message per new batch of them; it clears when no such file is left.

`SilentFailureAlerts.evaluate` turns snapshots into transitions, "raised" and "cleared": one
message when a condition starts, one when it ends. A condition that flaps is raised again
at most once per `alert_cooldown` (per condition): a raise that falls inside the cooldown
waits, and is sent once the cooldown has passed if the condition still holds then (if it
cleared meanwhile, nothing is sent: the last message, "cleared", is true again). Clears are
never delayed. New dead-lettered or quarantined files while that condition is raised are
announced under the same cooldown, together.

A source the snapshot could not read (the queue) leaves its conditions as they were: an
unreadable queue neither raises nor clears anything.

Pure logic on a clock; core package: no Prefect here (deployments/alerting.py sends them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from gfx_sync.observe import PcCard, PcState, Problem, Snapshot
from gfx_sync.queue import ItemState
from gfx_sync.settings import Settings

PENDING_KEY = "pending"
PROBLEMS_KEY = "problems"
SILENT_PREFIX = "silent."
LISTED_PROBLEMS = 10  # problems named in one message; the rest are counted
REASON_CHARS = 200


class AlertKind(StrEnum):
    RAISED = "raised"
    CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class Alert:
    """One message to send: `key` names the condition (`silent.PC03`, `pending`,
    `problems`); subject and text are for people."""

    kind: AlertKind
    key: str
    subject: str
    text: str
    at: float


@dataclass(frozen=True, slots=True)
class _Holds:
    """A condition that holds now, described for a message."""

    subject: str
    text: str
    news: frozenset[int] = frozenset()  # problem ids not announced yet


@dataclass(slots=True)
class _Track:
    active: bool = False  # the condition holds (as last known)
    announced: bool = False  # the last message sent for it said "raised"
    last_raised_at: float | None = None
    since_sync: float | None = None  # silent PCs: their last sync when they went silent
    started_at: float | None = None
    announced_ids: set[int] = field(default_factory=set)  # problems: already told


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= REASON_CHARS else flat[: REASON_CHARS - 1] + "…"


class SilentFailureAlerts:
    """Snapshots in, alert transitions out (see the module's docstring)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.pending_after = settings.pending_alert_after
        self.silent_after = settings.pc_silent_after
        self.cooldown = settings.alert_cooldown
        self._clock = clock
        self._tracks: dict[str, _Track] = {}

    @property
    def raised(self) -> set[str]:
        """The conditions whose last message said "raised"."""
        return {key for key, track in self._tracks.items() if track.announced}

    def evaluate(self, snap: Snapshot) -> list[Alert]:
        now = self._clock()
        holding, known = self._conditions(snap)
        alerts: list[Alert] = []
        for key in sorted({*self._tracks, *holding}):
            if key not in known:
                continue  # its source could not be read: nothing changes
            track = self._tracks.setdefault(key, _Track())
            holds = holding.get(key)
            if holds is None:
                alerts.extend(self._ended(key, track, snap, now))
            else:
                alerts.extend(self._holds(key, track, holds, snap, now))
            if self._forgettable(track, now):
                del self._tracks[key]
        return alerts

    def _forgettable(self, track: _Track, now: float) -> bool:
        """Nothing left to remember: over, told so, and out of its cooldown."""
        if track.active or track.announced or track.announced_ids:
            return False
        return track.last_raised_at is None or now - track.last_raised_at >= self.cooldown

    def _holds(
        self, key: str, track: _Track, holds: _Holds, snap: Snapshot, now: float
    ) -> list[Alert]:
        if not track.active:
            track.active, track.started_at = True, now
            if key.startswith(SILENT_PREFIX):
                card = _card(snap, key.removeprefix(SILENT_PREFIX))
                track.since_sync = card.last_sync_at if card else None
        due = not track.announced or (key == PROBLEMS_KEY and bool(holds.news))
        cooled = track.last_raised_at is None or now - track.last_raised_at >= self.cooldown
        if not (due and cooled):
            return []
        track.announced, track.last_raised_at = True, now
        if key == PROBLEMS_KEY:
            track.announced_ids |= holds.news
        return [Alert(AlertKind.RAISED, key, holds.subject, holds.text, now)]

    def _ended(self, key: str, track: _Track, snap: Snapshot, now: float) -> list[Alert]:
        was_announced = track.announced
        track.active, track.announced = False, False
        track.announced_ids.clear()
        if not was_announced:
            return []
        subject, text = self._cleared_words(key, track, snap, now)
        return [Alert(AlertKind.CLEARED, key, subject, text, now)]

    # -- conditions ---------------------------------------------------------------------

    def _conditions(self, snap: Snapshot) -> tuple[dict[str, _Holds], set[str]]:
        """The conditions that hold now, and every key this snapshot can tell about."""
        holding: dict[str, _Holds] = {}
        known: set[str] = set()
        for card in snap.pcs:
            key = SILENT_PREFIX + card.pc_id
            known.add(key)
            if self._silent(key, card):
                holding[key] = self._silent_words(card, snap.taken_at)
        if snap.queue is not None:
            known |= {PENDING_KEY, PROBLEMS_KEY}
            age = snap.queue.oldest_pending_age
            if age is not None and age > self.pending_after:
                pending = snap.queue.counts.get(ItemState.PENDING.value, 0)
                holding[PENDING_KEY] = _Holds(
                    f"gfx-sync: oldest pending change waiting {_duration(age)}",
                    f"The oldest of {pending} pending change(s) has waited {_duration(age)} "
                    f"(alert after {_duration(self.pending_after)}): the queue is not draining.",
                )
            if snap.problems:
                holding[PROBLEMS_KEY] = self._problem_words(snap.problems)
        return holding, known

    def _silent(self, key: str, card: PcCard) -> bool:
        if card.state is PcState.SILENT:
            return True
        track = self._tracks.get(key)
        if track is None or not track.active:
            return False
        # Silent until it writes again, whatever its state says meanwhile.
        wrote = card.last_sync_at is not None and (
            track.since_sync is None or card.last_sync_at > track.since_sync
        )
        return not wrote

    def _silent_words(self, card: PcCard, now: float) -> _Holds:
        quiet = _duration(now - card.last_sync_at) if card.last_sync_at is not None else "long"
        return _Holds(
            f"gfx-sync: {card.pc_id} silent for {quiet}",
            f"{card.pc_id} has not synced a file for {quiet} while other PCs are writing "
            f"(silent after {_duration(self.silent_after)}): is PokerGFX running and its "
            "folder reachable?",
        )

    def _problem_words(self, problems: list[Problem]) -> _Holds:
        track = self._tracks.get(PROBLEMS_KEY)
        told = track.announced_ids if track is not None else set()
        # Ids told of that are no longer problems (requeued) may fail again: new then.
        if track is not None:
            told &= {p.item_id for p in problems}
        new = [p for p in problems if p.item_id not in told]
        shown = new or problems
        dead = sum(1 for p in shown if p.state is ItemState.DEAD)
        quarantined = len(shown) - dead
        parts = [f"{quarantined} file(s) quarantined"] if quarantined else []
        parts += [f"{dead} change(s) dead-lettered"] if dead else []
        reasons = sorted({_reason(p) for p in shown if p.reason})
        subject = f"gfx-sync: {' and '.join(parts)}" + (f": {reasons[0]}" if reasons else "")
        lines = [
            f"{p.pc_id} {p.path}: {_how(p)}: {_reason(p) or 'no reason recorded'}"
            for p in shown[:LISTED_PROBLEMS]
        ]
        if len(shown) > LISTED_PROBLEMS:
            lines.append(f"... and {len(shown) - LISTED_PROBLEMS} more")
        lines.append(f"{len(problems)} unresolved in all; requeue them from the console.")
        return _Holds(subject, "\n".join(lines), frozenset(p.item_id for p in new))

    def _cleared_words(
        self, key: str, track: _Track, snap: Snapshot, now: float
    ) -> tuple[str, str]:
        lasted = _duration(now - track.started_at) if track.started_at is not None else "a while"
        if key == PENDING_KEY:
            return (
                "gfx-sync: the queue drains again",
                f"No pending change has waited longer than {_duration(self.pending_after)} "
                f"any more (after {lasted}).",
            )
        if key == PROBLEMS_KEY:
            return (
                "gfx-sync: no dead-lettered or quarantined files left",
                "Every dead-lettered or quarantined file was requeued or has synced since.",
            )
        pc_id = key.removeprefix(SILENT_PREFIX)
        card = _card(snap, pc_id)
        if card and card.last_sync_at is not None and track.since_sync is not None:
            lasted = _duration(card.last_sync_at - track.since_sync)
        return (
            f"gfx-sync: {pc_id} writes again",
            f"{pc_id} synced a file again after {lasted} without one.",
        )


def _reason(problem: Problem) -> str:
    """Its error text, one line, without the file's path (the message names it already)."""
    return _one_line(problem.reason.removeprefix(f"{problem.path}: "))


def _how(problem: Problem) -> str:
    if problem.state is ItemState.DEAD:
        return f"dead-lettered after {problem.attempts} attempt(s)"
    return "quarantined"


def _card(snap: Snapshot, pc_id: str) -> PcCard | None:
    return next((card for card in snap.pcs if card.pc_id == pc_id), None)


__all__ = [
    "PENDING_KEY",
    "PROBLEMS_KEY",
    "SILENT_PREFIX",
    "Alert",
    "AlertKind",
    "SilentFailureAlerts",
]
