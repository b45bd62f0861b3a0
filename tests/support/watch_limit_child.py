"""A FolderWatcher run where the kernel grants only a few inotify watches.

Run by tests/test_watcher.py under `unshare --user --map-root-user`: inotify limits are per
user namespace, so lowering `/proc/sys/user/max_inotify_watches` here runs the real ENOSPC path
without touching the limits of anything else on the machine.

    python watch_limit_child.py LIMIT FOLDER QUEUE ERROR_DIR

FOLDER must already hold more sub-folders than LIMIT allows watches and one session file
(`before.json`, written before the watcher starts). Writes more files once the watcher has
fallen back to polling, waits (bounded) until every file is queued, and prints one JSON object:
the counters, the pending paths, and the ERROR log lines.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

from gfx_sync.queue import DurableQueue, ItemState
from gfx_sync.watcher import FolderWatcher, WatchTarget

WAIT = 20.0


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _wait_until(condition: object, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def main() -> None:
    limit, folder, queue_path, error_dir = sys.argv[1:5]
    Path("/proc/sys/user/max_inotify_watches").write_text(limit)
    errors = _Errors()
    logging.getLogger("gfx_sync").addHandler(errors)
    logging.getLogger("gfx_sync").setLevel(logging.INFO)
    root = Path(folder)
    with DurableQueue(Path(queue_path)) as queue:
        watcher = FolderWatcher(
            [WatchTarget("PC01", root, polling=False)],
            queue,
            error_dir=Path(error_dir),
            poll_delay_ms=100,
            native_reader="inotify",
        )
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        fell_back = _wait_until(lambda: watcher.counters.polling_fallbacks >= 1)
        expected = [root / "sub0" / "before.json"]
        if fell_back:  # right away: before the poll's first look, the fallback rescan covers
            for n, sub in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
                path = sub / f"PGFX_live_data_export GameID={n + 1}.json"
                path.write_bytes(json.dumps({"ID": n + 1, "Hands": []}).encode())
                expected.append(path)

        def all_queued() -> bool:
            pending = {item.path for item in queue.items(ItemState.PENDING)}
            return all(str(p) in pending for p in expected)

        _wait_until(all_queued)
        watcher.stop()
        thread.join(WAIT)
        print(
            json.dumps(
                {
                    "counters": watcher.snapshot(),
                    "expected": sorted(str(p) for p in expected),
                    "pending": sorted(item.path for item in queue.items(ItemState.PENDING)),
                    "errors": errors.messages,
                    "stopped": not thread.is_alive(),
                }
            )
        )


if __name__ == "__main__":
    main()
