"""One hand of no-limit hold'em, dealt and played by invented players with exact bookkeeping.

Events as PokerGFX records them: `Pot` is the pot before the action (0 for FOLD and BOARD
CARD); `BetAmt` is the player's total on the current street after the action (0 for FOLD and
CHECK). Blinds and the big-blind ante (`BB_ANTE_BB1ST`) are in the pot before the first event.
Chips are conserved.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

# Event types exactly as PokerGFX spells them (with a space in two of them).
FOLD, BET, CHECK, CALL, ALL_IN, BOARD_CARD = "FOLD", "BET", "CHECK", "CALL", "ALL IN", "BOARD CARD"
EVENT_TYPES = (FOLD, BET, CHECK, CALL, ALL_IN, BOARD_CARD)

RANKS = ("2", "3", "4", "5", "6", "7", "8", "9", "10", "j", "q", "k", "a")
SUITS = ("c", "d", "h", "s")

CHIP_UNIT = 100
_UNKNOWN_HOLE_CARDS = 0.02  # share of players whose cards the RFID reader missed
# Action probabilities (see _Style) at a full table and at a short one; sizes in between blend.
_TIGHT_AT, _LOOSE_AT = 9, 6
_TIGHT_STYLE = (0.90, 0.015, 0.76, 0.19, 0.07, 0.30, 0.57, 0.34)
_LOOSE_STYLE = (0.62, 0.05, 0.45, 0.45, 0.18, 0.48, 0.35, 0.52)


def chips(amount: float, minimum: int = CHIP_UNIT) -> int:
    """`amount` in whole chips (CHIP_UNIT), at least `minimum`: bets and stacks as dealt."""
    return max(minimum, round(amount / CHIP_UNIT) * CHIP_UNIT)


@dataclass(frozen=True)
class _Style:
    """Action probabilities. Short tables play looser (real 6-handed hands have ~18 events,
    9-handed ~12), which keeps bytes per hand in the real range at every table size."""

    open_fold: float
    limp: float
    raised_fold: float
    raised_call: float
    option_raise: float
    lead: float
    bet_fold: float
    bet_call: float

    @staticmethod
    def for_table(players: int) -> _Style:
        loose = min(1.0, max(0.0, (_TIGHT_AT - players) / (_TIGHT_AT - _LOOSE_AT)))
        return _Style(
            *(t + (lo - t) * loose for t, lo in zip(_TIGHT_STYLE, _LOOSE_STYLE, strict=True))
        )


class Deal:
    """Plays one hand: blinds, four betting rounds, board cards, showdown with side pots.

    Decisions are random but plausible; the bookkeeping (Pot, BetAmt, stacks) is exact."""

    def __init__(
        self,
        rng: random.Random,
        stacks: dict[int, int],
        nums: list[int],
        button: int,
        small: int,
        big: int,
    ) -> None:
        self.rng = rng
        self.style = _Style.for_table(len(nums))
        self.stacks = dict(stacks)
        self.big = big
        i = nums.index(button)
        order = nums[i + 1 :] + nums[: i + 1]  # left of the button first, button last
        if len(nums) == 2:
            self.sb_player, self.bb_player = button, order[0]
            self.preflop_order = [button, order[0]]
            self.postflop_order = [order[0], button]
        else:
            self.sb_player, self.bb_player = order[0], order[1]
            self.preflop_order = order[2:] + order[:2]
            self.postflop_order = order
        self.contrib = dict.fromkeys(nums, 0)
        self.street = dict.fromkeys(nums, 0)
        self.folded: set[int] = set()
        self.all_in: set[int] = set()
        self.pot = 0
        self.events: list[dict[str, Any]] = []
        deck = [rank + suit for rank in RANKS for suit in SUITS]
        rng.shuffle(deck)
        self.hole_cards = {
            num: "" if rng.random() < _UNKNOWN_HOLE_CARDS else f"{deck[2 * k]} {deck[2 * k + 1]}"
            for k, num in enumerate(nums)
        }
        self.board = deck[2 * len(nums) : 2 * len(nums) + 5]
        self.end_stacks: dict[int, int] = {}
        self._post(self.bb_player, big, street=False)  # BB_ANTE_BB1ST: the ante first
        self._post(self.sb_player, small)
        self._post(self.bb_player, big)

    def _post(self, num: int, amount: int, *, street: bool = True) -> None:
        paid = min(amount, self.stacks[num])
        self.stacks[num] -= paid
        self.contrib[num] += paid
        self.pot += paid
        if street:
            self.street[num] += paid
        if self.stacks[num] == 0:
            self.all_in.add(num)

    def live(self) -> list[int]:
        return [n for n in self.contrib if n not in self.folded]

    def can_act(self, num: int) -> bool:
        return num not in self.folded and num not in self.all_in

    def _event(self, kind: str, num: int, bet: int, pot: int, card: str | None = None) -> None:
        self.events.append(
            {
                "BetAmt": bet,
                "BoardCards": card,
                "BoardNum": 1 if kind == BOARD_CARD else 0,
                "DateTimeUTC": None,
                "EventType": kind,
                "NumCardsDrawn": 0,
                "PlayerNum": num,
                "Pot": pot,
            }
        )

    def run(self) -> None:
        self._betting(self.preflop_order, preflop=True, current=self.big)
        dealt = 0
        for count in (3, 1, 1):
            if len(self.live()) <= 1:
                break
            for card in self.board[dealt : dealt + count]:
                self._event(BOARD_CARD, 0, 0, 0, card)
            dealt += count
            self.street = dict.fromkeys(self.street, 0)
            if sum(self.can_act(n) for n in self.live()) >= 2:
                self._betting(self.postflop_order, preflop=False, current=0)
        self._settle()

    def _betting(self, order: list[int], *, preflop: bool, current: int) -> None:
        last_raise = self.big
        pending = [n for n in order if self.can_act(n)]
        while pending:
            if len(self.live()) <= 1:
                return
            num = pending.pop(0)
            if not self.can_act(num):
                continue
            owe = current - self.street[num]
            others = any(self.can_act(n) for n in self.live() if n != num)
            if owe <= 0 and not others:
                continue
            kind, to = self._decide(num, owe, current, last_raise, preflop, others)
            if kind == FOLD:
                self.folded.add(num)
                self._event(FOLD, num, 0, 0)
                continue
            if kind == CHECK:
                self._event(CHECK, num, 0, self.pot)
                continue
            self._event(kind, num, to, self.pot)
            added = to - self.street[num]
            self.stacks[num] -= added
            self.contrib[num] += added
            self.street[num] = to
            self.pot += added
            if self.stacks[num] == 0:
                self.all_in.add(num)
            if to > current:  # a bet or raise: everyone else acts again
                last_raise = max(last_raise, to - current)
                current = to
                i = order.index(num)
                pending = [n for n in order[i + 1 :] + order[:i] if self.can_act(n)]

    def _decide(
        self, num: int, owe: int, current: int, last_raise: int, preflop: bool, others: bool
    ) -> tuple[str, int]:
        """A random but plausible action, with sizes rounded to the chip unit."""
        rng, stack, street, style = self.rng, self.stacks[num], self.street[num], self.style
        most = street + stack  # all in
        roll = rng.random()
        if owe <= 0:
            if roll < (style.option_raise if preflop else style.lead):
                size = current * rng.uniform(3, 4) if preflop else self.pot * rng.uniform(0.3, 0.8)
                to = max(chips(size), current + last_raise)
                return (ALL_IN, most) if to >= most or roll < 0.004 else (BET, to)
            return CHECK, 0
        if preflop and current == self.big:  # nobody has raised yet
            fold, call = style.open_fold, style.limp
        elif preflop:
            fold, call = style.raised_fold, style.raised_call
        else:
            fold, call = style.bet_fold, style.bet_call
        if roll < fold:
            return FOLD, 0
        if roll < fold + call or not others:
            return (ALL_IN, most) if owe >= stack else (CALL, current)
        if preflop and current == self.big:
            size = self.big * rng.uniform(2.0, 3.0)
        else:
            size = current * rng.uniform(2.3, 3.3)
        to = max(chips(size), current + last_raise)
        return (ALL_IN, most) if to >= most or roll > 0.985 else (BET, to)

    def _settle(self) -> None:
        """Pay the pot: each layer of contributions goes to the best eligible contender
        (a random ranking stands in for hand strength). Chips are conserved exactly."""
        contenders = self.live()
        ranking = self.rng.sample(contenders, len(contenders))
        winnings = dict.fromkeys(self.contrib, 0)
        previous = 0
        for level in sorted({self.contrib[n] for n in contenders}):
            layer = sum(min(c, level) - min(c, previous) for c in self.contrib.values())
            winner = next(n for n in ranking if self.contrib[n] >= level)
            winnings[winner] += layer
            previous = level
        # Chips folded players put in above every contender's level (cannot happen in a legal
        # hand, kept for safety) go to the best contender.
        leftover = sum(max(0, c - previous) for c in self.contrib.values())
        winnings[ranking[0]] += leftover
        self.end_stacks = {n: self.stacks[n] + winnings[n] for n in self.contrib}
