"""The operator console: a small web app over one `Snapshot` of the system (see
`gfx_sync.observe`), served by `gfx-sync up` and by `gfx-sync console`."""

from __future__ import annotations

from gfx_sync.console.app import create_app
from gfx_sync.console.auth import ConsoleBindError, check_bind
from gfx_sync.console.server import ConsoleServer

__all__ = ["ConsoleBindError", "ConsoleServer", "check_bind", "create_app"]
