"""Headless Chromium from Debian's package (`/usr/bin/chromium`), driven by Playwright's Python
API, for the console's browser tests and the console bench.

Playwright is told where the browser is (`executable_path`): nothing is downloaded, ever
(`playwright install` is never run; no network is reachable from the tests anyway). Each
context gets a fresh user-data directory, so no state leaks between runs. Without the browser
or the package a test skips, saying why; with CI=true it fails instead (`.ci/deps` installs
Debian's `chromium`, `pip install -e '.[test]'` installs Playwright).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (the tests may run as root, in a container); nothing that reaches out to the
# network on its own (component updates, sync, background fetches, QUIC probes).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
)
VIEWPORT = {"width": 1280, "height": 800}  # also the README screenshot's size


def missing_browser() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (Debian's chromium package)"
    return None


def require_browser() -> None:
    """Skip, saying why, when the browser cannot run; in CI that is a failure instead."""
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests: {reason} (bash .ci/deps installs chromium)")
    pytest.skip(f"{reason}; as root: bash .ci/deps")


@contextlib.contextmanager
def chromium(profile_dir: Path | None = None) -> Iterator[BrowserContext]:
    """A headless Chromium context with a fresh profile (in `profile_dir`, which must be
    empty or absent, else a temp dir removed afterwards), a 1280x800 viewport."""
    from playwright.sync_api import sync_playwright

    with contextlib.ExitStack() as stack:
        if profile_dir is None:
            profile_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chrome-")))
        playwright = stack.enter_context(sync_playwright())
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport=VIEWPORT,  # type: ignore[arg-type]
        )
        stack.callback(context.close)
        yield context
