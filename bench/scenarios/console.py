"""console: how fast the operator console follows a commit, and what it costs at idle.

Latency (`console` row): `gfx-sync up` serving its console, with the console open in headless
Chromium (Debian's, through Playwright: tests/support/browser.py). A script in the page
records, on the page's clock (`performance.timeOrigin + now()`, this machine's wall clock),
when each session's row first appears in `#sessions` (a MutationObserver on the DOM the live
update swaps in) and when `body[data-version]` changes. New session files are dropped into
PC01 one at a time; a row's commit time is when this process receives its NOTIFY (delivered at
commit, see bench/pg.py). Result: commit -> the row shown by the page; baseline: file drop ->
row committed (the realtime path itself, same files, same run); ratio: the first over the
second. Without a browser an SSE client does what the page's script does (on each `/live`
message it fetches `/fragment`), timed when the fragment holding the row arrives; the row's
notes say which client measured.

Idle (`console_idle` row): a second `up` with `GFX_SYNC_CONSOLE_PORT=0` runs beside the first
(the console open in the browser, its event stream connected); with no file changes, both are
measured over the same windows: CPU of the `up` process itself (where the console's server and
change feed run) and of its process tree without the Prefect server, and the `up` process's
RSS / PSS / USS. Measuring side by side in the same windows keeps the machine's drift out of
the comparison.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil

import gfx_synth as synth
from bench.context import Bench
from bench.corpus import session_payloads
from bench.report import Result, fmt, fmt_ratio, ratio, summarize
from bench.system import System, cpu_between, running_system, snapshot
from tests.support.browser import chromium, missing_browser
from tests.support.system import free_port

TARGET_P95_MS = 1000.0  # the issue: the page updates within a second of a commit
TARGET_CPU_PP = 0.5  # percentage points of one core the console may add at idle
TARGET_PSS_MB = 40.0
MIN_FILES = 20
SPACING_S = 1.5
WAIT_S = 30.0  # per file, for its commit and then for the page
IDLE_S, IDLE_WINDOWS = 30.0, 3
CACHE_KEY = "console"

RECORDER = """() => {
    const now = () => performance.timeOrigin + performance.now();
    window.__seen = {};
    window.__versions = [];
    const scan = () => {
        const at = now();
        for (const row of document.querySelectorAll('#sessions tr.session[data-session]')) {
            if (!(row.dataset.session in window.__seen)) window.__seen[row.dataset.session] = at;
        }
    };
    new MutationObserver(scan).observe(document.body, {childList: true, subtree: true});
    new MutationObserver(() => window.__versions.push([now(), document.body.dataset.version]))
        .observe(document.body, {attributes: true, attributeFilter: ['data-version']});
    scan();
}"""
SESSION_ROW = re.compile(r'data-session="(\d+)"')


class SseClient:
    """What console.js does, without a browser: on each `/live` message fetch `/fragment`;
    remembers when each session row first arrived (time.time())."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: dict[int, float] = {}
        self.versions: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sse", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
            client.stream("GET", f"{self.url}/live") as stream,
        ):
            for line in stream.iter_lines():
                if self._stop.is_set():
                    return
                if not line.startswith("data:"):
                    continue
                fragment = client.get(f"{self.url}/fragment").text
                at = time.time()
                with self._cond:
                    self.versions.append((at, line[5:].strip()))
                    for session_id in SESSION_ROW.findall(fragment):
                        self.seen.setdefault(int(session_id), at)
                    self._cond.notify_all()

    def shown_at(self, session_id: int, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while session_id not in self.seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.seen[session_id]

    def close(self) -> None:
        self._stop.set()  # the stream ends at the next keep-alive, or with the process


class PageClient:
    """The console open in headless Chromium, recording in the page when rows appear."""

    def __init__(self, page: Any) -> None:
        self.page = page
        page.evaluate(RECORDER)

    def shown_at(self, session_id: int, timeout: float) -> float | None:
        try:
            self.page.wait_for_function(
                "id => id in window.__seen", arg=str(session_id), timeout=timeout * 1000
            )
        except Exception:  # playwright's TimeoutError: the row never showed
            return None
        return self.page.evaluate("id => window.__seen[id]", str(session_id)) / 1000

    @property
    def versions(self) -> list[tuple[float, str]]:
        return [(at / 1000, v) for at, v in self.page.evaluate("() => window.__versions")]


@contextlib.contextmanager
def console_client(url: str) -> Iterator[tuple[str, Any]]:
    """("chromium", PageClient) when the browser is there, else ("sse", SseClient)."""
    missing = missing_browser()
    if missing is not None:
        client = SseClient(url)
        try:
            yield f"SSE client ({missing})", client
        finally:
            client.close()
        return
    with chromium() as context:
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("#live")
        yield "headless Chromium (Playwright)", PageClient(page)


def wait_for_console(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=5).status_code in (200, 503):
                return
        time.sleep(0.2)
    raise RuntimeError(f"the console at {url} did not answer within {timeout:g} s")


def measure_latency(bench: Bench, system: System, client: Any) -> dict[str, Any]:
    """Drop files one at a time; per file: drop -> commit, commit -> shown by the page."""
    warmup = 2
    files = max(MIN_FILES, bench.profile.realtime_files) + warmup
    payloads = session_payloads(files, seed=12, hands=lambda rng: rng.randint(1, 3))
    folder = system.folder("PC01").resolve()
    bench.say(f"console: dropping {files} files, {SPACING_S:g} s apart, watching the page")
    to_commit: list[float] = []
    to_page: list[float] = []
    drop_to_page: list[float] = []
    version_lag: list[float] = []
    missing = 0
    for index, (session_id, _, data) in enumerate(payloads):
        started = time.time()
        with (folder / synth.session_file_name(session_id)).open("wb") as handle:
            handle.write(data)
        dropped = time.time()
        key = ("PC01", session_id)
        commit = system.listener.wait_for([key], WAIT_S).get(key)
        shown = client.shown_at(session_id, WAIT_S)
        if commit is None or shown is None:
            missing += 1
        elif index >= warmup:
            committed = commit[0]
            to_commit.append((committed - dropped) * 1000)
            to_page.append((shown - committed) * 1000)
            drop_to_page.append((shown - dropped) * 1000)
            changes = [at for at, _ in client.versions if at >= committed]
            if changes:
                version_lag.append((min(changes) - committed) * 1000)
        time.sleep(max(0.0, started + SPACING_S - time.time()))
    return {
        "commit_to_page_ms": to_page,
        "drop_to_commit_ms": to_commit,
        "drop_to_page_ms": drop_to_page,
        "commit_to_version_change_ms": version_lag,
        "missing": missing,
        "warmup_files": warmup,
    }


def _memory_mb(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {
        name: getattr(info, name) / 2**20 for name in ("rss", "pss", "uss") if hasattr(info, name)
    }


def _own_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure_idle(bench: Bench, systems: dict[str, System], idle_s: float) -> dict[str, Any]:
    """CPU% of each system's `up` process and of its tree (no Prefect server), over the same
    windows; memory of each `up` process at the end."""
    settle = bench.profile.idle_settle_s
    bench.say(f"console idle: settling {settle:g} s, then {idle_s:g} s in {IDLE_WINDOWS} windows")
    time.sleep(settle)
    windows: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    for _ in range(IDLE_WINDOWS):
        started = time.monotonic()
        own = {name: _own_cpu(s.process.pid) for name, s in systems.items()}
        trees = {name: snapshot(s.process.pid) for name, s in systems.items()}
        time.sleep(idle_s / IDLE_WINDOWS)
        wall = time.monotonic() - started
        for name, system in systems.items():
            used = cpu_between(trees[name], snapshot(system.process.pid))
            windows[name].append(
                {
                    "up_pct": 100 * (_own_cpu(system.process.pid) - own[name]) / wall,
                    "tree_pct": 100 * used["gfx_s"] / wall,
                }
            )
    figures: dict[str, Any] = {}
    for name, system in systems.items():
        spent = windows[name]
        figures[name] = {
            "up_pct": sum(w["up_pct"] for w in spent) / len(spent),
            "tree_pct": sum(w["tree_pct"] for w in spent) / len(spent),
            "windows": spent,
            **{f"{k}_mb": v for k, v in _memory_mb(system.process.pid).items()},
        }
    return figures


def _measure(bench: Bench) -> list[Result]:
    idle_s = bench.profile.idle_s if bench.profile.quick else IDLE_S
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    on_env = {"GFX_SYNC_CONSOLE_PORT": str(port)}
    with running_system(bench, "warm", name="console_on", extra_env=on_env) as on:
        wait_for_console(url, bench.profile.system_start_timeout_s)
        with console_client(url) as (client_name, client):
            latency = measure_latency(bench, on, client)
            off_env = {"GFX_SYNC_CONSOLE_PORT": "0"}
            with running_system(bench, "warm", name="console_off", extra_env=off_env) as off:
                idle = measure_idle(bench, {"on": on, "off": off}, idle_s)
    return [_latency_result(latency, client_name), _idle_result(idle, idle_s)]


def _latency_result(latency: dict[str, Any], client_name: str) -> Result:
    mine = summarize(latency["commit_to_page_ms"])
    theirs = summarize(latency["drop_to_commit_ms"])
    through = summarize(latency["drop_to_page_ms"])
    versions = summarize(latency["commit_to_version_change_ms"])
    ratios = {"p50": ratio(mine["p50"], theirs["p50"]), "p95": ratio(mine["p95"], theirs["p95"])}
    met = mine["p95"] is not None and mine["p95"] <= TARGET_P95_MS and latency["missing"] == 0
    return Result(
        scenario="console",
        measure="commit -> row shown in the console page",
        unit="ms",
        figures=mine,
        baseline_name="file drop -> row committed (the realtime path, same files)",
        baseline=theirs,
        ratios=ratios,
        ratio_meaning="console's delay after the commit / the realtime path's own latency",
        target=f"p95 <= {TARGET_P95_MS:g} ms",
        met=met,
        cells={
            "result": f"p50 {fmt(mine['p50'])} / p95 {fmt(mine['p95'])} ms",
            "baseline": f"p50 {fmt(theirs['p50'])} / p95 {fmt(theirs['p95'])} ms",
            "ratio": f"{fmt_ratio(ratios['p50'])} / {fmt_ratio(ratios['p95'])}",
        },
        notes=[
            f"measured by: {client_name}",
            f"file drop -> shown: p50 {fmt(through['p50'])} / p95 {fmt(through['p95'])} ms; "
            f"commit -> body[data-version] change: p50 {fmt(versions['p50'])} / "
            f"p95 {fmt(versions['p95'])} ms",
            *(
                [f"files never committed or never shown: {latency['missing']}"]
                if latency["missing"]
                else []
            ),
        ],
        details={
            "client": client_name,
            "drop_to_page": through,
            "commit_to_version_change": versions,
            **latency,
        },
    )


def _idle_result(idle: dict[str, Any], idle_s: float) -> Result:
    on, off = idle["on"], idle["off"]
    cpu_added = on["up_pct"] - off["up_pct"]
    pss_added = on.get("pss_mb", on["rss_mb"]) - off.get("pss_mb", off["rss_mb"])
    ratios = {
        "up_cpu": ratio(on["up_pct"], off["up_pct"]),
        "pss": ratio(on.get("pss_mb"), off.get("pss_mb")),
    }
    return Result(
        scenario="console_idle",
        measure=f"idle `up` process with the console, {idle_s:g} s",
        unit="% of a core / MB",
        figures=on,
        baseline_name="the same, GFX_SYNC_CONSOLE_PORT=0, side by side over the same windows",
        baseline=off,
        ratios=ratios,
        ratio_meaning="console on / off (up process CPU; PSS)",
        target=f"adds <= {TARGET_CPU_PP:g} pp CPU, <= {TARGET_PSS_MB:g} MB PSS",
        met=cpu_added <= TARGET_CPU_PP and pss_added <= TARGET_PSS_MB,
        cells={
            "result": f"CPU {fmt(on['up_pct'], 2)}% (tree {fmt(on['tree_pct'], 2)}%), "
            f"RSS {fmt(on['rss_mb'])} / PSS {fmt(on.get('pss_mb'))} MB",
            "baseline": f"CPU {fmt(off['up_pct'], 2)}% (tree {fmt(off['tree_pct'], 2)}%), "
            f"RSS {fmt(off['rss_mb'])} / PSS {fmt(off.get('pss_mb'))} MB",
            "ratio": f"{fmt_ratio(ratios['up_cpu'])} / {fmt_ratio(ratios['pss'])}",
        },
        notes=[
            f"console adds {cpu_added:+.2f} pp CPU (up process), {pss_added:+.1f} MB PSS; the "
            "browser keeps the page open (event stream connected) during the windows"
        ],
        details={"cpu_added_pp": cpu_added, "pss_added_mb": pss_added},
    )


def run(bench: Bench) -> list[Result]:
    """Both rows (latency and idle), measured once per bench run."""
    if CACHE_KEY not in bench.cache:
        try:
            bench.cache[CACHE_KEY] = _measure(bench)
        except Exception as exc:
            bench.cache[CACHE_KEY] = exc
            raise
    cached = bench.cache[CACHE_KEY]
    if isinstance(cached, Exception):
        raise cached
    return cached


def run_idle(bench: Bench) -> list[Result]:
    """`--only console_idle`: the same measurement (the idle row needs the console's system)."""
    return [r for r in run(bench) if r.scenario == "console_idle"]
