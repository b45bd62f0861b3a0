"""Hypothesis settings for the fuzz tests: bounded in CI, long by hand.

`GFX_SYNC_FUZZ=soak` (optionally `GFX_SYNC_FUZZ_EXAMPLES=<n>`) runs each fuzz test for many
more examples; the default keeps each to a few seconds. The deadline is a hang guard, not a
speed check: generous, so a loaded CI machine never trips it.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

MODE = os.environ.get("GFX_SYNC_FUZZ", "ci")
_EXAMPLES = {"ci": 150, "soak": 20_000}


def fuzz_settings(*, weight: float = 1.0) -> settings:
    """Settings for one fuzz test; `weight` scales its example count (cheap vs costly inputs)."""
    if MODE not in _EXAMPLES:
        raise ValueError(f"GFX_SYNC_FUZZ must be one of {sorted(_EXAMPLES)}, got {MODE!r}")
    examples = int(os.environ.get("GFX_SYNC_FUZZ_EXAMPLES", _EXAMPLES[MODE]))
    return settings(
        max_examples=max(1, int(examples * weight)),
        deadline=timedelta(seconds=10),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        derandomize=False,
        print_blob=True,
    )
