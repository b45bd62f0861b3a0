"""Where the real PokerGFX samples live (../shared, beside the repo), and how tests skip without."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO.parent / "shared" / "samples" / "pokergfx"
NO_SAMPLES_REASON = (
    "../shared/samples/pokergfx not present: real-sample checks need the shared folder "
    "(CI always has it)"
)

needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=NO_SAMPLES_REASON)


def sample_files() -> list[Path]:
    return sorted(SAMPLES.rglob("*.json")) if SAMPLES.is_dir() else []
