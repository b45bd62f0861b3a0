"""The operator console in a real browser: headless Chromium (Debian's, through Playwright)
against the real `gfx-sync up` serving its console, with a real Postgres and Prefect server.

A file dropped into a PC folder changes its PC card and the overview without a reload; a
truncated file is listed among the problems with its reason and, once the operator has logged
in with the token and the file is fixed, the requeue button brings its row in; outside content
(file names, folder names, error texts) is shown literally and never runs.

Every step leaves a screenshot in `test-artifacts/console/` (repository root). With
UPDATE_README_SCREENSHOT=1 the overview with a listed problem is also copied to
docs/console.png, the README's picture of the console.

Waits are on what the page shows, with generous bounds for a busy shared machine: how fast
the page follows a commit is the bench's to measure (`python -m bench --only console`).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import orjson
import pytest

from gfx_synth import make_session, session_bytes, session_file_name, write_session
from support.browser import chromium, require_browser
from support.system import RunningSystem, free_port, gfx_sync_up, session_row, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "console"
README_SCREENSHOT = REPO / "docs" / "console.png"
TOKEN = f"console-test-{secrets.token_hex(16)}"
PAGE_WAIT_MS = 120_000  # what the page must show: seconds here, a bound only against hanging
ROW_WAIT_S = 120.0
# A PC whose folder and name hold quotes (ids cannot: the registry maps one to the other).
HOSTILE_PC = "PC03"
HOSTILE_FOLDER = "PC \"03\" 'quoted'"
HOSTILE_PC_NAME = "Stage \"B\" 'side'"

pytestmark = pytest.mark.timeout(900)


@dataclass
class Console:
    url: str
    base: Path
    database_url: str
    queue_path: Path
    outside: Path  # a folder no watch covers, beside the base
    system: RunningSystem


@pytest.fixture(scope="module", autouse=True)
def _browser_present() -> None:
    """Before `up` starts: without the browser there is nothing to run it for."""
    require_browser()


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str
) -> Iterator[Console]:
    root = tmp_path_factory.mktemp("console")
    base, state, outside = root / "nas", root / "state", root / "outside"
    folders = {"PC01": "PC01", "PC02": "PC02", HOSTILE_PC: HOSTILE_FOLDER}
    for folder in folders.values():
        (base / folder / "hands").mkdir(parents=True)
    state.mkdir()
    outside.mkdir()
    registry = root / "pc_registry.json"
    registry.write_bytes(
        orjson.dumps(
            {
                "pcs": [
                    {
                        "id": pc,
                        "name": HOSTILE_PC_NAME if pc == HOSTILE_PC else pc,
                        "watch_path": f"{folder}/hands",
                    }
                    for pc, folder in folders.items()
                ]
            }
        )
    )
    port = free_port()
    env = {
        "GFX_SYNC_BASE_PATH": str(base),
        "GFX_SYNC_STATE_DIR": str(state),
        "GFX_SYNC_REGISTRY_PATH": str(registry),
        "GFX_SYNC_DATABASE_URL": module_database_url,
        "GFX_SYNC_FLUSH_INTERVAL": "2",
        "GFX_SYNC_SETTLE_SECONDS": "0.5",
        "GFX_SYNC_REALTIME_GRACE": "30",
        # Prefect's paths, not the standby drainer's, on a slow machine (as test_system_e2e).
        "GFX_SYNC_ORCHESTRATOR_GRACE": "600",
        "GFX_SYNC_CONSOLE_PORT": str(port),
        "GFX_SYNC_CONSOLE_TOKEN": TOKEN,
    }
    url = f"http://127.0.0.1:{port}"
    with gfx_sync_up(env, cwd=state) as running:
        wait_for(lambda: _answers(f"{url}/health"), 60)
        yield Console(url, base, module_database_url, state / "queue.sqlite3", outside, running)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "gfx-sync-up.log").write_text(running.log())
    assert running.process.returncode == 0, running.log()[-5000:]
    assert TOKEN not in running.log()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code in (200, 503)
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium-profile") / "profile") as context:
        yield context


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    page.set_default_timeout(PAGE_WAIT_MS)
    yield page
    page.close()


def screenshot(page: Page, name: str) -> Path:
    """One step of a test, kept as an artifact (the whole page)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def field_text(page: Page, selector: str) -> str | None:
    return page.evaluate(
        "s => { const e = document.querySelector(s); return e ? e.textContent.trim() : null }",
        selector,
    )


def card(pc: str, field: str | None = None) -> str:
    selector = f'#pcs .pc-card[data-pc="{pc}"]'
    return selector if field is None else f"{selector} [data-field={field}]"


def figure(name: str) -> str:
    return f"#overview [data-figure={name}]"


def version(page: Page) -> int:
    return int(page.get_attribute("body", "data-version") or "-1")


def wait_until_changed(page: Page, before: dict[str, str | None]) -> None:
    """Until every selector's text differs from what it was."""
    page.wait_for_function(
        """before => Object.entries(before).every(([selector, text]) => {
            const e = document.querySelector(selector);
            return e !== null && e.textContent.trim() !== text;
        })""",
        arg=before,
        timeout=PAGE_WAIT_MS,
    )


def wait_for_text(page: Page, selector: str, text: str) -> None:
    """Until some element matching `selector` contains `text` (literally, as text)."""
    page.wait_for_function(
        """([selector, text]) => [...document.querySelectorAll(selector)]
            .some(e => e.textContent.includes(text))""",
        arg=[selector, text],
        timeout=PAGE_WAIT_MS,
    )


def problem_row(page: Page, file_name: str) -> Locator:
    return page.locator("#problems tr.problem").filter(
        has=page.locator("[data-field=path]", has_text=file_name)
    )


def queue_state(queue_path: Path, item_id: int) -> str | None:
    with sqlite3.connect(f"file:{queue_path}?mode=ro", uri=True) as conn:
        row = conn.execute("select state from items where id = ?", (item_id,)).fetchone()
    return row[0] if row else None


def log_in(page: Page, console: Console) -> None:
    page.goto(f"{console.url}/login")
    page.fill("input[name=token]", TOKEN)
    with page.expect_navigation():
        page.locator("form [type=submit], form button").first.click()
    assert page.url.rstrip("/") == console.url, (page.url, page.text_content("body"))


def test_a_dropped_file_changes_its_pc_card_and_the_overview_without_a_reload(
    console: Console, page: Page
) -> None:
    page.goto(console.url)
    page.wait_for_selector(card("PC01"))
    page.wait_for_selector(figure("synced-minute"))
    page.evaluate("window.__marker = 1")
    shown_version = version(page)
    watched = [card("PC01", "sessions"), card("PC01", "hands"), figure("synced-minute")]
    before = {selector: field_text(page, selector) for selector in watched}
    screenshot(page, "01-overview-before-drop")

    doc = make_session(hands=3, seed=1201)
    write_session(console.base / "PC01" / "hands", doc)

    pc, hands, _source = wait_for(lambda: session_row(console.database_url, doc["ID"]), ROW_WAIT_S)
    assert (pc, hands) == ("PC01", 3)
    wait_until_changed(page, before)
    screenshot(page, "02-overview-after-drop")
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    assert version(page) > shown_version
    after = {selector: field_text(page, selector) for selector in watched}
    sessions, hands, synced = watched
    assert int(after[sessions] or "?") == int(before[sessions] or "?") + 1, (before, after)
    assert int(after[hands] or "?") == int(before[hands] or "?") + 3, (before, after)
    assert int(after[synced] or "?") >= 1, after
    assert page.get_attribute(card("PC01"), "data-state") == "online"
    assert page.locator(f'#sessions tr.session[data-session="{doc["ID"]}"]').count() == 1


def test_a_truncated_file_is_listed_and_requeued_once_fixed(console: Console, page: Page) -> None:
    """The fix is written through a second link to the file from outside every watched
    folder: inotify reports a write only to the folder it went through, so no watch event
    announces the fixed file and only the requeue can bring it in."""
    doc = make_session(hands=3, seed=1202)
    data = session_bytes(doc)
    path = console.base / "PC02" / "hands" / session_file_name(doc["ID"])
    page.goto(console.url)
    page.evaluate("window.__marker = 1")

    path.write_bytes(data[: len(data) // 2])
    fix_link = console.outside / path.name
    os.link(path, fix_link)

    row = problem_row(page, path.name)
    row.wait_for()
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    assert row.get_attribute("data-state") == "quarantined"
    assert "truncated" in (row.locator("[data-field=reason]").text_content() or "")
    assert row.locator("[data-field=pc]").text_content().strip() == "PC02"
    assert row.locator("form.requeue").count() == 0, "read-only until the operator logs in"
    item_id = int(row.get_attribute("data-item") or "0")
    screenshot(page, "03-truncated-file-listed")

    log_in(page, console)
    row.locator("form.requeue").wait_for()
    screenshot(page, "04-logged-in-requeue-offered")
    if os.environ.get("UPDATE_README_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=README_SCREENSHOT)  # the viewport: 1280x800
    with fix_link.open("wb") as handle:  # the same inode: truncated, then the whole document
        handle.write(data)

    row.locator("form.requeue [type=submit], form.requeue button").first.click()
    problem_row(page, path.name).wait_for(state="detached")
    pc, hands, _source = wait_for(lambda: session_row(console.database_url, doc["ID"]), ROW_WAIT_S)
    assert (pc, hands) == ("PC02", 3)
    assert wait_for(lambda: queue_state(console.queue_path, item_id) == "done", ROW_WAIT_S)
    screenshot(page, "05-requeued-row-synced")


OWN_ELEMENTS = """() => ({
    scripts: document.scripts.length,
    images: document.images.length,
    svgs: document.querySelectorAll('svg').length,
    handlers: document.querySelectorAll('[onerror],[onload],[onclick]').length,
    javascriptLinks: [...document.links].filter(a => /^\\s*javascript:/i.test(a.href)).length,
})"""


def test_outside_content_is_shown_literally_and_never_runs(console: Console, page: Page) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(console.url)
    page.wait_for_selector(card(HOSTILE_PC))
    own = page.evaluate(OWN_ELEMENTS)
    page.evaluate("window.__marker = 1")
    folder = console.base / HOSTILE_FOLDER / "hands"
    markup_name = "x<img src=x onerror=alert(1)>.json"
    rtl_name = "rtl-\u202enosj.exe.json"
    rtl_shown = "rtl-\u27e8U+202E\u27e9nosj.exe.json"  # a bidi override is shown, not obeyed
    quarantined_name = "q\"'><svg onload=alert(3)>.json"
    script_reason = "<script>alert(2)</script>"

    for name, shown, seed in ((markup_name, markup_name, 1203), (rtl_name, rtl_shown, 1204)):
        doc = make_session(hands=2, seed=seed)
        (folder / name).write_bytes(session_bytes(doc))
        wait_for(lambda doc=doc: session_row(console.database_url, doc["ID"]), ROW_WAIT_S)
        wait_for_text(page, card(HOSTILE_PC, "newest-file"), shown)
        wait_for_text(page, "#sessions tr.session [data-field=file]", shown)
    bad = make_session(hands=1, seed=1205)
    bad["CreatedDateTimeUTC"] = script_reason
    (folder / quarantined_name).write_bytes(session_bytes(bad))
    wait_for_text(page, "#problems tr.problem [data-field=path]", quarantined_name)
    wait_for_text(page, "#problems tr.problem [data-field=reason]", script_reason)
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    screenshot(page, "06-outside-content-live")

    def assert_inert() -> None:
        assert dialogs == []
        assert page.evaluate(OWN_ELEMENTS) == own
        assert "\u202e" not in (page.text_content("body") or "")
        assert markup_name in (page.text_content("#sessions") or "")
        row = problem_row(page, quarantined_name)
        assert quarantined_name in (row.locator("[data-field=path]").text_content() or "")
        assert script_reason in (row.locator("[data-field=reason]").text_content() or "")

    assert_inert()  # as swapped in live (innerHTML: an <img onerror> there would fire)
    page.reload()
    wait_for_text(page, card(HOSTILE_PC, "newest-file"), rtl_shown)
    screenshot(page, "07-outside-content-reloaded")
    assert_inert()  # as rendered by the server
