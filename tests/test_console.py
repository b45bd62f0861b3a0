"""The operator console over a real durable queue, a real observer and change feed: each
section renders, outside text stays text, actions need the token, a cookie, a csrf value and
the console's own origin, and a queue change reaches an open SSE stream."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from gfx_sync.console.app import create_app, duration_text
from gfx_sync.console.auth import COOKIE_NAME, ConsoleBindError, safe_http_base
from gfx_sync.console.server import ConsoleServer, bind_problem
from gfx_sync.health import UP_FILE, WATCHER_FILE, write_state
from gfx_sync.observe import (
    ChangeFeed,
    Check,
    FailedRun,
    Observer,
    OrchestratorView,
    PcCard,
    PcState,
    Problem,
    QueueFigures,
    RecentSession,
    Snapshot,
)
from gfx_sync.queue import ChangeKind, DurableQueue, ItemState
from gfx_sync.settings import Settings
from support.nas import make_nas, nas_settings

TOKEN = "console-token-3f9a0c7e1b"
UI = "http://127.0.0.1:4200"
PREFECT_OK = OrchestratorView(True, "Prefect reachable", ui_url=UI)
SCRIPT = "<script>alert(1)</script>"
QUOTES = '"\' onmouseover="alert(2)" x=\''
JS_URL = "javascript:alert(1)"
RLO = "\u202e"
HOSTILE_PATH = f"hands/{SCRIPT}{QUOTES}{RLO}nosj.exe"
HOSTILE_REASON = f"truncated JSON {SCRIPT} {QUOTES} {JS_URL} {RLO}txt"
CONSOLE = "http://127.0.0.1"  # bound to loopback, the console answers loopback names only
OWN_ORIGIN = CONSOLE
ATTRIBUTES = {  # every attribute name the templates write
    "lang", "charset", "name", "content", "rel", "href", "src", "defer", "data-version",
    "class", "id", "target", "method", "action", "type", "value", "title", "datetime",
    "role", "for", "autocomplete", "required", "aria-labelledby", "aria-hidden", "data-state",
    "data-figure", "data-check", "data-ok", "data-pc", "data-field", "data-item", "data-session",
    "data-site",
}  # fmt: skip


class Page(HTMLParser):
    """Elements (tag, attributes) and text of a page, as a browser's parser sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            a
            for t, a in self.elements
            if t == tag and all(a.get(k) == v for k, v in wanted.items())
        ]

    def all_text(self) -> str:
        return "".join(self.text)


def figure(html: str, name: str) -> str:
    found = re.search(rf'data-figure="{name}">([^<]*)<', html)
    assert found, name
    return found.group(1)


def assert_inert(html: str) -> Page:
    """No element or attribute came from content: the only script is ours, no event
    handler attributes, every link is ours or the configured Prefect UI."""
    page = Page(html)
    scripts = [a for t, a in page.elements if t == "script"]
    assert scripts == [{"src": "/static/console.js", "defer": None}] or scripts == []
    for tag, attrs in page.elements:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        assert set(attrs) <= ATTRIBUTES, (tag, attrs)
        href = attrs.get("href")
        if href is not None:
            assert href.startswith(("/", "#", UI + "/")), href
    assert "javascript:" not in " ".join(str(a.get("href")) for _, a in page.elements)
    assert RLO not in html
    return page


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    make_nas(tmp_path, ("PC01",))
    (tmp_path / "state").mkdir()
    return nas_settings(tmp_path, console_port=0)


@pytest.fixture
def token_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"console_token": SecretStr(TOKEN)})


@pytest.fixture
def queue(settings: Settings) -> Iterator[DurableQueue]:
    with DurableQueue(settings.resolved_queue_path) as queue:
        yield queue


@pytest.fixture
def feed(settings: Settings) -> Iterator[ChangeFeed]:
    feed = ChangeFeed(settings.resolved_queue_path, None, poll=0.05).start()
    yield feed
    feed.stop()


def observer_for(settings: Settings, queue: DurableQueue, reader: object = None) -> Observer:
    return Observer(settings, queue=queue, reader=reader, orchestrator=lambda: PREFECT_OK)


def fail(queue: DurableQueue, path: str, reason: str, state: ItemState, pc: str = "PC01") -> int:
    """A change that ends dead-lettered or quarantined, through the queue's own calls."""
    item_id = queue.enqueue(pc, path, ChangeKind.ADDED, size=10, mtime=1.0)
    (claimed,) = queue.claim(1, worker="test")
    assert claimed.id == item_id
    if state is ItemState.DEAD:
        queue.dead_letter(item_id, reason)
    else:
        queue.quarantine(item_id, reason)
    return item_id


def client_for(settings: Settings, queue: DurableQueue, feed: ChangeFeed) -> TestClient:
    app = create_app(settings, observer_for(settings, queue), feed)
    return TestClient(app, base_url=CONSOLE, follow_redirects=False)


def csrf_of(client: TestClient) -> str:
    forms = Page(client.get("/").text).find("input", name="csrf")
    assert forms, "an authorised page carries csrf values"
    value = forms[0]["value"]
    assert value
    return value


def sign_in(client: TestClient) -> str:
    response = client.post("/login", data={"token": TOKEN}, headers={"Origin": OWN_ORIGIN})
    assert response.status_code == 303
    return response.headers["set-cookie"]


# -- rendering --------------------------------------------------------------------------------


def hand_built(taken_at: float = 1_000_000.0) -> Snapshot:
    """Every outside string hostile, including the Prefect UI address and a run's link."""
    return Snapshot(
        taken_at=taken_at,
        synced={"minute": 3, "hour": 40, "day": 900},
        bytes_synced={"minute": 3000, "hour": 40_000, "day": 900_000},
        last_commit_at=taken_at - 0.4,
        queue=QueueFigures(
            counts={"pending": 2, "inflight": 0, "done": 5, "dead": 1, "quarantined": 1},
            due=2,
            oldest_pending_age=12.0,
            expired_leases=0,
        ),
        checks=[
            Check("process", True, "pid 1"),
            Check("watcher", False, f"watcher {SCRIPT}"),
            Check("target", True, "reachable"),
            Check("schema", True, "current"),
            Check("orchestrator", True, "Prefect reachable"),
        ],
        pcs=[
            PcCard(
                pc_id=f"PC{SCRIPT}{QUOTES}",
                state=PcState.SILENT,
                sessions=4,
                hands=120,
                newest_file=HOSTILE_PATH,
                last_sync_at=taken_at - 240,
                lag=0.0,
                pending=1,
                errors_last_hour=2,
            )
        ],
        problems=[
            Problem(
                7,
                "PC01",
                HOSTILE_PATH,
                ItemState.QUARANTINED,
                HOSTILE_REASON,
                1,
                taken_at - 30,
                f"/errors/{SCRIPT}",
            ),
        ],
        sessions=[
            RecentSession("PC01", 42, f"{SCRIPT}.json", f"{SCRIPT}{QUOTES}{RLO}", 17, taken_at - 5)
        ],
        failed_runs=[
            FailedRun(f"run {SCRIPT}", "sync", "Crashed", HOSTILE_REASON, taken_at - 60, JS_URL),
            FailedRun(
                "good-run", "sync", "Failed", "boom", taken_at - 90, f"{UI}/runs/flow-run/0b0e6a8e"
            ),
        ],
        prefect_ui=UI,
    )


class FixedObserver:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.requeued: list[list[int]] = []

    def snapshot(self, *, target: bool = True, orchestrator: bool = True) -> Snapshot:
        return self.snap

    def requeue(self, item_ids: list[int]) -> int:
        self.requeued.append(list(item_ids))
        return len(item_ids)


def test_every_section_renders_with_ages_and_hostile_text_stays_text(
    token_settings: Settings, feed: ChangeFeed
) -> None:
    app = create_app(token_settings, FixedObserver(hand_built()), feed)
    with TestClient(app, base_url=CONSOLE, follow_redirects=False) as client:
        sign_in(client)  # the requeue forms render too
        html = client.get("/").text
    page = assert_inert(html)

    body = page.find("body")[0]
    assert body["data-version"] == str(feed.version)
    for section in ("overview", "pcs", "problems", "runs", "sessions"):
        assert page.find("section", id=section), section
    figures = {a["data-figure"] for t, a in page.elements if "data-figure" in a}
    assert figures == {
        "synced-minute", "synced-hour", "synced-day", "queue-pending", "queue-dead",
        "queue-quarantined", "oldest-pending", "last-commit",
    }  # fmt: skip
    assert {a["data-check"]: a["data-ok"] for a in page.find("li") if "data-check" in a} == {
        "process": "true",
        "watcher": "false",
        "target": "true",
        "schema": "true",
        "orchestrator": "true",
    }
    (card,) = page.find("article", **{"class": "pc-card"})
    assert card["data-pc"] == f"PC{SCRIPT}{QUOTES}"  # an attribute value, intact
    assert card["data-state"] == "silent"
    assert page.find("a", **{"class": "runs", "href": f"{UI}/runs"})
    (problem,) = page.find("tr", **{"class": "problem"})
    assert problem == {"class": "problem", "data-item": "7", "data-state": "quarantined"}
    assert page.find("form", **{"class": "requeue", "action": "/actions/requeue"})
    assert page.find("tr", **{"class": "session", "data-session": "42"})
    runs = page.find("tr", **{"class": "run"})
    assert len(runs) == 2
    # the javascript: run link is not a link; the one into the Prefect UI is
    assert [a["href"] for a in page.find("a") if "flow-run" in str(a.get("href"))] == [
        f"{UI}/runs/flow-run/0b0e6a8e"
    ]

    text = page.all_text()
    assert SCRIPT in text and HOSTILE_REASON.replace(RLO, "⟨U+202E⟩") in text
    assert "⟨U+202E⟩nosj.exe" in text  # the override shows as a mark, reordering nothing
    assert "0.4 s ago" in text and "4 min ago" in text and "12 s" in text
    times = page.find("time")
    assert times and all(t["title"] and t["datetime"] for t in times)


def test_a_prefect_ui_that_is_not_http_never_becomes_a_link(
    settings: Settings, feed: ChangeFeed
) -> None:
    snap = hand_built()
    for ui in (JS_URL, "data:text/html,x", "//evil.example", "http://user:pw@ui.example:4200"):
        object.__setattr__(snap, "prefect_ui", ui)
        with TestClient(
            create_app(settings, FixedObserver(snap), feed), base_url=CONSOLE
        ) as client:
            html = client.get("/").text
        page = assert_inert(html.replace("http://ui.example:4200", UI))
        assert "pw@" not in html and JS_URL not in str(page.find("a"))
    assert safe_http_base("http://user:pw@ui.example:4200/") == "http://ui.example:4200"
    assert safe_http_base("HTTPS://ui.example/base/") == "https://ui.example/base"
    assert safe_http_base("java\tscript:alert(1)") is None


def test_no_secret_of_the_settings_reaches_the_page_or_ready(
    settings: Settings, feed: ChangeFeed
) -> None:
    password = "pw-canary-9c1d/:@?"
    url = f"postgresql://writer:{password.replace('/', '%2F')}@db.example:5432/gfx"
    secret_settings = settings.model_copy(
        update={
            "database_url": SecretStr(url),
            "supabase_service_key": SecretStr("service-key-canary-77"),
            "console_token": SecretStr(TOKEN),
        }
    )
    snap = hand_built()
    leaky = [Check("target", False, f"cannot connect to {url} (key service-key-canary-77)")]
    object.__setattr__(snap, "checks", leaky)
    with TestClient(
        create_app(secret_settings, FixedObserver(snap), feed), base_url=CONSOLE
    ) as client:
        texts = [client.get(path).text for path in ("/", "/fragment", "/ready", "/login")]
    for text in texts:
        for secret in ("pw-canary", "%2F:@", "service-key-canary-77", TOKEN):
            assert secret not in text


def test_ages_read_as_people_say_them() -> None:
    assert [duration_text(s) for s in (0.4, 12.2, 240, 3600 * 2 + 300, 86400 * 3)] == [
        "0.4 s", "12 s", "4 min", "2 h 5 min", "3 d",
    ]  # fmt: skip


# -- the real queue -----------------------------------------------------------------------------


def test_hostile_names_from_the_real_queue_come_out_escaped(
    settings: Settings, queue: DurableQueue, feed: ChangeFeed
) -> None:
    dead = fail(queue, HOSTILE_PATH, HOSTILE_REASON, ItemState.DEAD)
    with client_for(settings, queue, feed) as client:
        html = client.get("/").text
        fragment = client.get("/fragment")
    for text in (html, fragment.text):
        page = assert_inert(text)
        (row,) = page.find("tr", **{"class": "problem"})
        assert row["data-item"] == str(dead) and row["data-state"] == "dead"
        assert SCRIPT in page.all_text()
    # The version the fragment shows: one the feed had (the queue writes above may still
    # be reaching the feed, which then moves on).
    assert 0 <= int(fragment.headers["X-Console-Version"]) <= feed.version
    assert "<main" not in fragment.text  # the inner HTML of #live only


def test_the_site_is_named_in_the_header_and_title_of_every_page(
    settings: Settings, queue: DurableQueue, feed: ChangeFeed
) -> None:
    """Several venues' consoles open side by side are told apart; a single-site install keeps
    its plain header."""
    with client_for(settings, queue, feed) as client:
        page = assert_inert(client.get("/").text)
        assert not page.find("span", **{"class": "site"})
        assert "<title>gfx-sync console</title>" in client.get("/").text
    venue = settings.model_copy(update={"site": "venue-a"})
    with client_for(venue, queue, feed) as client:
        for path in ("/", "/login"):
            html = client.get(path).text
            [site] = assert_inert(html).find("span", **{"class": "site"})
            assert site["data-site"] == "venue-a", path
            assert "<title>" in html and "venue-a · " in html.split("<title>")[1], path


def test_read_only_without_a_token(
    settings: Settings, queue: DurableQueue, feed: ChangeFeed
) -> None:
    dead = fail(queue, "hands/a.json", "target refused", ItemState.DEAD)
    with client_for(settings, queue, feed) as client:
        page = Page(client.get("/").text)
        assert page.find("tr", **{"class": "problem"}) and not page.find(
            "form", **{"class": "requeue"}
        )
        assert (
            client.post("/login", data={"token": ""}, headers={"Origin": OWN_ORIGIN}).status_code
            == 403
        )
        refused = client.post("/actions/requeue", data={"item": str(dead), "csrf": "x"})
    assert refused.status_code == 403
    assert queue.state_of(dead) is ItemState.DEAD  # fmt: skip


def test_sign_in_and_requeue_need_token_cookie_csrf_and_own_origin(
    token_settings: Settings, queue: DurableQueue, feed: ChangeFeed
) -> None:
    dead = fail(queue, "hands/dead.json", "target refused", ItemState.DEAD)
    quarantined = fail(queue, "hands/bad.json", "truncated JSON", ItemState.QUARANTINED)
    with client_for(token_settings, queue, feed) as client:
        assert not Page(client.get("/").text).find("form", **{"class": "requeue"})
        wrong = client.post("/login", data={"token": TOKEN + "x"}, headers={"Origin": OWN_ORIGIN})
        assert wrong.status_code == 403 and "set-cookie" not in wrong.headers
        foreign_login = client.post(
            "/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"}
        )
        assert foreign_login.status_code == 403

        cookie_header = sign_in(client)
        assert "httponly" in cookie_header.lower()
        assert "samesite=strict" in cookie_header.lower()
        value = client.cookies[COOKIE_NAME]
        assert value and TOKEN not in cookie_header and value != TOKEN

        csrf = csrf_of(client)
        both = {"item": [str(dead), str(quarantined)]}
        no_csrf = client.post("/actions/requeue", data=both, headers={"Origin": OWN_ORIGIN})
        bad_csrf = client.post("/actions/requeue", data={**both, "csrf": "0" * 64})
        foreign = client.post(
            "/actions/requeue",
            data={**both, "csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        cross_site = client.post(
            "/actions/requeue",
            data={**both, "csrf": csrf},
            headers={"Sec-Fetch-Site": "cross-site"},
        )
        assert [r.status_code for r in (no_csrf, bad_csrf, foreign, cross_site)] == [403] * 4
        assert queue.state_of(dead) is ItemState.DEAD
        assert queue.state_of(quarantined) is ItemState.QUARANTINED

        stranger = TestClient(client.app, base_url=CONSOLE, follow_redirects=False)
        stranger.cookies.set(COOKIE_NAME, TOKEN)  # the token itself is not a session
        assert stranger.post("/actions/requeue", data={**both, "csrf": csrf}).status_code == 403

        done = client.post(
            "/actions/requeue", data={**both, "csrf": csrf}, headers={"Origin": OWN_ORIGIN}
        )
        assert done.status_code == 303 and done.headers["location"] == "/?requeued=2#problems"
        assert queue.state_of(dead) is ItemState.PENDING
        assert queue.state_of(quarantined) is ItemState.PENDING
        after = Page(client.get(done.headers["location"]).text)
        assert not after.find("tr", **{"class": "problem"})
        assert "Requeued 2 item(s)." in after.all_text()

        assert client.post("/logout", headers={"Origin": OWN_ORIGIN}).status_code == 303
        assert not Page(client.get("/").text).find("input", name="csrf")


def test_security_headers(settings: Settings, queue: DurableQueue, feed: ChangeFeed) -> None:
    with client_for(settings, queue, feed) as client:
        for path in ("/", "/fragment", "/health", "/static/console.js"):
            headers = client.get(path).headers
            assert "default-src 'self'" in headers["content-security-policy"], path
            assert headers["x-content-type-options"] == "nosniff"
        script = client.get("/static/console.js").text
    assert "EventSource" in script and "innerHTML" in script


def test_bound_to_loopback_it_answers_loopback_names_only(
    settings: Settings, queue: DurableQueue, feed: ChangeFeed
) -> None:
    """A page whose DNS name is made to point at 127.0.0.1 (DNS rebinding) gets nothing."""
    with client_for(settings, queue, feed) as client:
        assert client.get("/", headers={"host": "localhost:4300"}).status_code == 200
        rebound = client.get("/fragment", headers={"host": "attacker.example:4300"})
    assert rebound.status_code == 400 and "gfx" not in rebound.text.lower()


# -- probes and metrics ---------------------------------------------------------------------------


def test_health_and_ready_say_what_fails_and_answer_503(
    settings: Settings, queue: DurableQueue, feed: ChangeFeed
) -> None:
    with client_for(settings, queue, feed) as client:  # no `up`, no target
        health, ready = client.get("/health"), client.get("/ready")
    assert health.status_code == 503 and ready.status_code == 503
    assert health.json()["ok"] is False
    assert [c["name"] for c in health.json()["checks"]] == ["process", "watcher"]
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]} == {
        "target": False,
        "schema": False,
        "orchestrator": True,
    }
    for check in ready.json()["checks"]:
        assert set(check) == {"name", "ok", "detail"} and isinstance(check["detail"], str)


class CountingReader:
    """A target that counts every read (and has nothing to say)."""

    def __init__(self) -> None:
        self.reads = 0

    def __getattr__(self, name: str) -> Callable[..., list]:
        def read(*args: object, **kwargs: object) -> list:
            self.reads += 1
            return []

        return read


def test_health_reads_neither_the_target_nor_prefect(
    settings: Settings, queue: DurableQueue, feed: ChangeFeed
) -> None:
    write_state(settings.state_dir / UP_FILE, {"pid": os.getpid(), "updated_at": time.time()})
    write_state(settings.state_dir / WATCHER_FILE, {"pid": os.getpid(), "mode": "inotify"})
    reader, prefect_reads = CountingReader(), []

    def orchestrator() -> OrchestratorView:
        prefect_reads.append(1)
        return PREFECT_OK

    observer = Observer(settings, queue=queue, reader=reader, orchestrator=orchestrator)
    with TestClient(create_app(settings, observer, feed), base_url=CONSOLE) as client:
        health = client.get("/health")
        assert (health.status_code, health.json()["ok"]) == (200, True)
        assert (reader.reads, prefect_reads) == (0, [])
        client.get("/ready")  # the readiness probe does read both
    assert reader.reads > 0 and prefect_reads


def test_health_and_ready_answer_200_with_a_running_up_and_target(
    settings: Settings, queue: DurableQueue, feed: ChangeFeed, database_url: str
) -> None:
    from gfx_sync.target_views import PostgresReader

    write_state(settings.state_dir / UP_FILE, {"pid": os.getpid(), "updated_at": time.time()})
    write_state(settings.state_dir / WATCHER_FILE, {"pid": os.getpid(), "mode": "inotify"})
    reader = PostgresReader(database_url)
    try:
        app = create_app(settings, observer_for(settings, queue, reader), feed)
        with TestClient(app, base_url=CONSOLE) as client:
            health, ready = client.get("/health"), client.get("/ready")
    finally:
        reader.close()
    assert (health.status_code, health.json()["ok"]) == (200, True)
    assert (ready.status_code, ready.json()["ok"]) == (200, True)
    assert all(c["ok"] for c in ready.json()["checks"])


def test_ready_turns_not_ready_while_the_target_is_cut_and_ready_when_it_is_back(
    settings: Settings,
    queue: DurableQueue,
    feed: ChangeFeed,
    database_url: str,
    postgres_server_url: str,
) -> None:
    from gfx_sync.target_views import PostgresReader

    def ready_now(client: TestClient) -> httpx.Response:
        feed.bump()  # a new version: the console's cached snapshot is not reused
        return client.get("/ready")

    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    reader = PostgresReader(database_url)
    try:
        app = create_app(settings, observer_for(settings, queue, reader), feed)
        with (
            TestClient(app, base_url=CONSOLE) as client,
            psycopg.connect(postgres_server_url, autocommit=True) as admin,
        ):
            assert ready_now(client).status_code == 200
            admin.execute(f"alter database {name} with allow_connections false")
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s",
                (name,),
            )
            cut = ready_now(client)
            admin.execute(f"alter database {name} with allow_connections true")
            back = ready_now(client)
    finally:
        reader.close()
    assert cut.status_code == 503
    assert {c["name"]: c["ok"] for c in cut.json()["checks"]}["target"] is False
    assert database_url not in cut.text
    assert back.status_code == 200 and back.json()["ok"] is True


def test_metrics(settings: Settings, queue: DurableQueue, feed: ChangeFeed) -> None:
    fail(queue, "hands/dead.json", "target refused", ItemState.DEAD)
    with client_for(settings, queue, feed) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    names = {f.name for f in text_string_to_metric_families(response.text)}
    assert names and all(name.startswith("gfx_sync_") for name in names)

    given = create_app(
        settings, FixedObserver(hand_built()), feed, metrics=lambda: (b"x 1\n", "text/plain")
    )
    with TestClient(given, base_url=CONSOLE) as client:
        assert client.get("/metrics").text == "x 1\n"


# -- the server ---------------------------------------------------------------------------------


def test_beyond_loopback_without_a_token_it_refuses_to_start(
    settings: Settings, queue: DurableQueue, feed: ChangeFeed
) -> None:
    observer = observer_for(settings, queue)
    for host in ("0.0.0.0", "::", "192.0.2.10", "console.example"):
        with pytest.raises(ConsoleBindError, match="GFX_SYNC_CONSOLE_TOKEN"):
            ConsoleServer(settings, observer, feed, host=host)
        exposed = settings.model_copy(update={"console_host": host, "console_port": 4300})
        assert "GFX_SYNC_CONSOLE_TOKEN" in str(bind_problem(exposed))
    guarded = settings.model_copy(
        update={"console_host": "0.0.0.0", "console_token": SecretStr(TOKEN)}
    )
    assert bind_problem(guarded) is None
    ConsoleServer(guarded, observer, feed)  # allowed (not started: it would listen outside)
    for host in ("127.0.0.1", "::1", "localhost"):
        ConsoleServer(settings, observer, feed, host=host)


@pytest.fixture
def server(settings: Settings, queue: DurableQueue, feed: ChangeFeed) -> Iterator[ConsoleServer]:
    console = ConsoleServer(settings, observer_for(settings, queue), feed, port=0).start()
    yield console
    console.stop()


def test_a_queue_change_reaches_an_open_sse_stream(
    server: ConsoleServer, queue: DurableQueue, feed: ChangeFeed
) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url) and server.port != 0
    assert feed.following["queue"].wait(10)
    before = feed.version
    page = Page(httpx.get(server.url + "/").text)
    shown = int(page.find("body")[0]["data-version"])
    assert shown >= before
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(5, read=30)) as client:
        with client.stream("GET", "/live", params={"since": shown}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")  # the stream is open
            queue.enqueue("PC01", "hands/new.json", ChangeKind.ADDED, size=1, mtime=1.0)
            data = next(line for line in lines if line.startswith("data:"))
        version = int(data.removeprefix("data:").strip())
        assert version > shown
        fragment = client.get("/fragment")
    assert int(fragment.headers["X-Console-Version"]) >= version
    assert figure(fragment.text, "queue-pending") == "1"


def test_stop_ends_open_streams(server: ConsoleServer) -> None:
    with (
        httpx.Client(base_url=server.url, timeout=httpx.Timeout(5, read=30)) as client,
        client.stream("GET", "/live") as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        server.stop()
        assert not [line for line in lines if line.startswith("data:")]  # then EOF
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=2)
