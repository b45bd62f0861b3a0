"""Session files as PokerGFX writes them: the bytes, the file name, the in-place rewrite; and a
corpus laid out like the NAS."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from gfx_synth.dotnet_time import TICKS_PER_SECOND, ticks_from_datetime
from gfx_synth.sessions import DEFAULT_CREATED_AT, SEED_STEP, make_session

FILE_NAME_PREFIX = "PGFX_live_data_export GameID="


def session_bytes(doc: dict) -> bytes:
    """Bytes exactly as PokerGFX writes them: compact one-line JSON, keys sorted at every level,
    ASCII, no BOM, no trailing newline. orjson for speed; the stdlib when escaping is needed."""
    data = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    if not data.isascii():
        data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return data


def session_file_name(session_id: int) -> str:
    """The real file name, with its space: "PGFX_live_data_export GameID=<id>.json"."""
    if isinstance(session_id, bool) or not isinstance(session_id, int) or session_id < 0:
        raise ValueError(f"session id must be a non-negative int, got {session_id!r}")
    return f"{FILE_NAME_PREFIX}{session_id}.json"


def write_session(folder: Path, doc: dict) -> Path:
    """Write the session file in place (truncate and write the same inode, no rename), as
    PokerGFX does: a watcher must see the same modify events a GFX PC produces."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / session_file_name(doc["ID"])
    with path.open("wb") as handle:
        handle.write(session_bytes(doc))
    return path


def write_in_chunks(
    path: Path,
    data: bytes,
    *,
    chunk_size: int,
    pause: float = 0.0,
    on_chunk: Callable[[int], None] | None = None,
) -> None:
    """Rewrite a file slowly: truncate, then write and flush one chunk at a time, so a reader
    can catch it mid-write (truncated JSON). `on_chunk(bytes_written)` runs after each flush,
    for tests that read at a known point instead of racing a thread."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    with path.open("wb") as handle:
        for start in range(0, len(data), chunk_size):
            handle.write(data[start : start + chunk_size])
            handle.flush()
            written = min(start + chunk_size, len(data))
            if on_chunk is not None:
                on_chunk(written)
            if pause > 0 and written < len(data):
                time.sleep(pause)


def make_corpus(
    root: Path,
    *,
    pcs: int,
    sessions_per_pc: int,
    hands: tuple[int, int] = (1, 40),
    seed: int = 0,
) -> list[Path]:
    """Benchmark input laid out like the NAS: `<root>/PC01/hands/PGFX_live_data_export ...json`.

    Every session has its own creation time, so IDs (and file names) never collide."""
    low, high = hands
    if not 0 <= low <= high:
        raise ValueError(f"hands must be a (low, high) range with 0 <= low <= high, got {hands}")
    base = ticks_from_datetime(DEFAULT_CREATED_AT + seed * SEED_STEP)
    paths: list[Path] = []
    for pc in range(1, pcs + 1):
        folder = root / f"PC{pc:02d}" / "hands"
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(sessions_per_pc):
            rng = random.Random(f"gfx-synth/corpus/{seed}/{pc}/{number}")
            slot = number * pcs + (pc - 1)
            created = base + slot * 7 * 60 * TICKS_PER_SECOND
            created += rng.randrange(360 * TICKS_PER_SECOND)
            doc = make_session(
                hands=rng.randint(low, high),
                seed=rng.randrange(2**31),
                created_ticks=created,
                table_type="FINAL_TABLE" if rng.random() < 0.15 else "FEATURE_TABLE",
                players=rng.choice((6, 7, 7, 8, 8, 8, 9)),
            )
            paths.append(write_session(folder, doc))
    return paths
