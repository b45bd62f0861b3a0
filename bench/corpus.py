"""Benchmark input laid out like the NAS (`<base>/<PC>/hands/*.json`), from `gfx_synth`.

Why synth: real exports carry real names, so only look-alikes are generated (same format, about
5 KB per hand). Session sizes follow a log-uniform spread over 1..173 hands: most sessions on
disk are short, a few are long (mean ~33 hands, ~165 KB; 500 of them are ~80 MB, close to the
62 MB of 500 real-shaped documents in the shared notes). The real samples in
../shared/samples/pokergfx/ are added where a scenario asks for them and the folder exists;
they are copied into the run's temp dir only, never into the repository.
"""

from __future__ import annotations

import math
import random
import re
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import orjson

import gfx_synth as synth
from bench import SAMPLES

MAX_HANDS = 173  # the longest real session seen
SAMPLES_PC = "REAL"
_GAME_ID = re.compile(r"GameID=(\d+)")

HandsFn = Callable[[random.Random], int]


def loguniform_hands(rng: random.Random, low: int = 1, high: int = MAX_HANDS) -> int:
    return min(high, max(low, int(math.exp(rng.uniform(math.log(low), math.log(high + 1))))))


def fixed_hands(hands: int) -> HandsFn:
    return lambda _rng: hands


@dataclass(frozen=True)
class CorpusFile:
    pc_id: str
    path: Path
    session_id: int
    size: int
    hands: int
    real: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.pc_id, self.session_id)


@dataclass
class Corpus:
    base: Path
    files: list[CorpusFile]

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]

    @property
    def keys(self) -> set[tuple[str, int]]:
        """Distinct rows these files make (two snapshots of one session make one row)."""
        return {f.key for f in self.files}

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def describe(self) -> dict[str, object]:
        hands = [f.hands for f in self.files] or [0]
        return {
            "files": len(self.files),
            "real_sample_files": sum(f.real for f in self.files),
            "rows": len(self.keys),
            "total_mb": round(self.total_bytes / 1e6, 2),
            "mean_kb": round(self.total_bytes / 1e3 / max(1, len(self.files)), 1),
            "kb_per_hand": round(self.total_bytes / 1e3 / max(1, sum(hands)), 2),
            "hands_min_median_max": [min(hands), statistics.median(hands), max(hands)],
        }


def session_payloads(
    count: int, *, seed: int, hands: HandsFn = loguniform_hands
) -> list[tuple[int, int, bytes]]:
    """`count` invented sessions as (session_id, hands, bytes). IDs are unique across seeds
    (seeds sit 60 days apart; sessions 7 minutes apart), so scenarios never collide."""
    base = synth.ticks_from_datetime(synth.DEFAULT_CREATED_AT + timedelta(days=60 * seed))
    payloads = []
    for index in range(count):
        rng = random.Random(f"gfx-bench/{seed}/{index}")
        created = base + index * 7 * 60 * synth.TICKS_PER_SECOND
        created += rng.randrange(360 * synth.TICKS_PER_SECOND)
        n = hands(rng)
        doc = synth.make_session(
            hands=n,
            seed=rng.randrange(2**31),
            created_ticks=created,
            table_type="FINAL_TABLE" if rng.random() < 0.15 else "FEATURE_TABLE",
            players=rng.choice((6, 7, 7, 8, 8, 8, 9)),
        )
        payloads.append((created, n, synth.session_bytes(doc)))
    return payloads


def pc_folder(base: Path, pc_id: str) -> Path:
    folder = base / pc_id / "hands"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_corpus(
    base: Path,
    count: int,
    *,
    seed: int,
    pcs: int = 4,
    hands: HandsFn = loguniform_hands,
    samples: bool = False,
) -> Corpus:
    """Write `count` invented sessions spread over PC01..PCnn, plus the real samples (under
    `<base>/REAL/hands/<their folders>`) when `samples` and the shared folder exists."""
    files = []
    for index, (session_id, n, data) in enumerate(session_payloads(count, seed=seed, hands=hands)):
        pc_id = f"PC{index % pcs + 1:02d}"
        path = pc_folder(base, pc_id) / synth.session_file_name(session_id)
        path.write_bytes(data)
        files.append(CorpusFile(pc_id, path, session_id, len(data), n))
    if samples:
        files.extend(copy_samples(base))
    return Corpus(base, files)


def sample_files() -> list[Path]:
    return sorted(SAMPLES.rglob("*.json")) if SAMPLES.is_dir() else []


def copy_samples(base: Path) -> list[CorpusFile]:
    """The real samples, copied under the run's temp base (keeping their sub-folders: two of
    them share a name, being two snapshots of one session)."""
    copied = []
    for sample in sample_files():
        target = pc_folder(base, SAMPLES_PC) / sample.relative_to(SAMPLES)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample, target)
        data = target.read_bytes()
        doc = orjson.loads(data)
        match = _GAME_ID.search(sample.name)
        session_id = int(doc.get("ID") or (match.group(1) if match else 0))
        copied.append(
            CorpusFile(SAMPLES_PC, target, session_id, len(data), len(doc["Hands"]), real=True)
        )
    return copied


def sample_payloads() -> list[bytes]:
    return [p.read_bytes() for p in sample_files()]
