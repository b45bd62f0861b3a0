"""Small SessionRecords built through the real parser, for sink and engine tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from gfx_sync.pokergfx import SessionRecord, parse_session_bytes
from gfx_sync.sinks.base import Delivery

BASE_MTIME = datetime(2025, 10, 19, 9, 0, tzinfo=UTC)
SESSION_ID = 638964611175191251


def session_document(session_id: int = SESSION_ID, hands: int = 1, **extra: object) -> dict:
    return {
        "CreatedDateTimeUTC": "2025-10-19T08:58:37.5191251Z",
        "EventTitle": "",
        "Hands": [
            {"HandNum": n, "Players": [{"Name": "Ada Quill", "PlayerNum": 1}]}
            for n in range(1, hands + 1)
        ],
        "ID": session_id,
        "Payouts": [0] * 10,
        "SoftwareVersion": "PokerGFX 3.2",
        "Type": "FEATURE_TABLE",
        **extra,
    }


def make_record(
    session_id: int = SESSION_ID,
    hands: int = 1,
    *,
    pc_id: str = "PC01",
    mtime_offset: float = 0.0,
    data: bytes | None = None,
) -> SessionRecord:
    """A snapshot of `session_id` with `hands` hands, written `mtime_offset` s after a base time."""
    name = f"PGFX_live_data_export GameID={session_id}.json"
    return parse_session_bytes(
        data if data is not None else orjson.dumps(session_document(session_id, hands)),
        path=Path("/nas") / pc_id / "hands" / name,
        pc_id=pc_id,
        relative_path=f"{pc_id}/hands/{name}",
        mtime=BASE_MTIME + timedelta(seconds=mtime_offset),
    )


def deliver(*records: SessionRecord) -> list[Delivery]:
    """`records` as a write's deliveries, as if queue items 0, 1, 2... held them."""
    return [Delivery(item_id, record) for item_id, record in enumerate(records)]
