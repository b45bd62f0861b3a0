"""`gfx-sync doctor`: the preflight an operator runs before a broadcast.

Each check is a small function that looks at one thing (settings, registry, folders, inotify
limits, state folder and disk, the durable queue, the target, its schema and privileges, the
clock, the Prefect server) and returns findings: one line each, with the fix. A blocker makes
the command exit non-zero; warnings do not. A check that raises is itself a blocker naming the
check, and the others still run.

Nothing here waits long: the target and the Prefect server get at most `TIMEOUT_CAP` seconds
(less if GFX_SYNC_REQUEST_TIMEOUT is lower), name resolution included, so a doctor run over a
dead network still answers within seconds. Nothing it prints holds a secret: every message
goes through `gfx_sync.redact` and the configured keys are blanked.

It leaves no trace: probe files are removed, and folders it had to create to test that they
can be created are removed again. Core package: no Prefect import (the server is probed over
plain HTTP).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import logging
import math
import os
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from gfx_sync import inotify_tree
from gfx_sync.embedded_pg import start_embedded_postgres
from gfx_sync.health import probe_writable
from gfx_sync.migrate import LEDGER, migration_files
from gfx_sync.queue import DurableQueue, QueueError
from gfx_sync.redact import REDACTED, redact_url, scrub
from gfx_sync.schema import EVENTS_TABLE, SESSIONS_TABLE
from gfx_sync.settings import (
    NETWORK_FILESYSTEMS,
    PcConfig,
    Settings,
    SettingsError,
    Target,
    ensure_under_base,
    filesystem_type,
    load_registry,
    load_settings,
    pc_check_watches,
    uses_polling,
)
from gfx_sync.sinks.postgres import shutdown_socket
from gfx_sync.site import SessionFiles
from gfx_sync.target import describe_target

log = logging.getLogger(__name__)

# Row-level security is off for this role on the table, or a policy for the command (or ALL)
# names PUBLIC or a role this one is a member of (policies for a role apply to its members).
POLICY_ALLOWS = """
select not row_security_active(%s::text::regclass) or exists (
    select 1 from pg_policies p
    where p.schemaname = 'public' and p.tablename = %s and p.cmd in (%s, 'ALL')
      and exists (
          select 1 from unnest(p.roles) as r(name)
          where r.name = 'public' or pg_has_role(current_user, r.name, 'MEMBER')
      )
)
"""
TIMEOUT_CAP = 5.0  # seconds for any one network step, whatever GFX_SYNC_REQUEST_TIMEOUT says
FREE_SPACE_WARNING = 1024**3  # bytes free in the state folder below which it is a warning
FREE_SPACE_BLOCKER = 64 * 1024**2  # ... and below which nothing can be relied on
CLOCK_SKEW_WARNING = 2.0  # seconds between this machine and the database
PROBE_BYTES = 4096


class Level(StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    BLOCKER = "blocker"


TAGS = {Level.OK: "OK", Level.INFO: "INFO", Level.WARNING: "WARN", Level.BLOCKER: "FAIL"}


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    check: str
    message: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class InotifyLimits:
    """The effective per-user limits and the sysctl that sets each (the lowest one wins: in a
    user namespace, a container, `user.max_inotify_*` may be below the host's value)."""

    watches: int | None
    watches_knob: str
    instances: int | None
    instances_knob: str


Check = Callable[["Context"], Iterable[Finding]]


@dataclass
class Context:
    """What the checks share: settings, injected probes, and what earlier checks found."""

    settings: Settings
    environ: Mapping[str, str]
    inotify_limits: Callable[[], InotifyLimits]
    clock: Callable[[], float]
    timeout: float
    pcs: list[PcConfig] | None = None  # None: the registry is invalid
    database: _Database | None = None  # the target answered (Postgres, embedded)
    rest: _RestProbe | None = None  # the target answered (Supabase REST)
    target_failed: bool = False
    created: list[Path] = field(default_factory=list)  # folders made by a probe, removed after


# -- running and rendering ----------------------------------------------------------------------


def diagnose(
    settings: Settings | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    inotify_limits: Callable[[], InotifyLimits] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Finding]:
    """Every finding; `settings=None` loads them from the environment and reports a bad one."""
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            return [
                Finding(
                    Level.BLOCKER,
                    "settings",
                    str(exc),
                    "fix that variable (environment or .env); README, Settings",
                ),
                Finding(Level.INFO, "other checks", "skipped: they need valid settings"),
            ]
    return run_checks(settings, environ=environ, inotify_limits=inotify_limits, clock=clock)


def run_checks(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    inotify_limits: Callable[[], InotifyLimits] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Finding]:
    """Run every check in order; one that raises becomes a blocker naming it."""
    context = Context(
        settings=settings,
        environ=os.environ if environ is None else environ,
        inotify_limits=inotify_limits or read_inotify_limits,
        clock=clock,
        timeout=min(settings.request_timeout, TIMEOUT_CAP),
    )
    findings: list[Finding] = []
    redact = _redactor(settings, context.environ)
    try:
        for name, check in CHECKS:
            try:
                findings.extend(check(context))
            except Exception as exc:
                trace = "".join(traceback.format_exception(exc))
                log.debug("doctor check %s failed:\n%s", name, redact(trace))
                findings.append(
                    Finding(
                        Level.BLOCKER,
                        name,
                        f"the check itself failed: {type(exc).__name__}: {exc}",
                        "run `gfx-sync -v doctor` and report it",
                    )
                )
    finally:
        if context.database is not None:
            context.database.close()
        if context.rest is not None:
            context.rest.client.close()
        for folder in reversed(context.created):
            with contextlib.suppress(OSError):
                folder.rmdir()
    return [Finding(f.level, f.check, redact(f.message), f.fix and redact(f.fix)) for f in findings]


def has_blocker(findings: Iterable[Finding]) -> bool:
    return any(f.level is Level.BLOCKER for f in findings)


def render(findings: list[Finding], seconds: float | None = None) -> str:
    """One aligned line per finding (`OK`, `INFO`, `WARN`, `FAIL`), its fix after `->`, then a
    summary line."""
    width = max((len(f.check) for f in findings), default=0)
    lines = []
    for f in findings:
        line = f"{TAGS[f.level]:<4}  {f.check:<{width}}  {f.message}"
        lines.append(line + (f"  -> {f.fix}" if f.fix else ""))
    counts = {level: sum(f.level is level for f in findings) for level in Level}
    took = f" ({seconds:.2f} s)" if seconds is not None else ""
    if counts[Level.BLOCKER]:
        verdict = (
            f"NOT READY: {counts[Level.BLOCKER]} blocker(s), {counts[Level.WARNING]} warning(s)"
        )
    elif counts[Level.WARNING]:
        verdict = f"ready, with {counts[Level.WARNING]} warning(s)"
    else:
        verdict = "ready"
    lines.append(f"doctor: {verdict}{took}")
    return "\n".join(lines)


def to_json(findings: list[Finding], seconds: float | None = None) -> str:
    document = {
        "ready": not has_blocker(findings),
        "seconds": seconds,
        "findings": [asdict(f) for f in findings],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def _redactor(settings: Settings, environ: Mapping[str, str]) -> Callable[[str], str]:
    """Belt and braces: whatever a server or a library echoed, no configured secret survives."""
    url = settings.database_url.get_secret_value() if settings.database_url else None
    secrets = [
        s.get_secret_value()
        for s in (settings.supabase_service_key, settings.alert_webhook_url)
        if s is not None
    ]
    secrets += [environ.get(name) or "" for name in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")]
    secrets = [s for s in secrets if len(s) >= 4]

    def redact(text: str) -> str:
        text = scrub(text, url)
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        return text

    return redact


# -- settings and registry ----------------------------------------------------------------------


def check_settings(context: Context) -> Iterator[Finding]:
    settings = context.settings
    yield Finding(Level.OK, "settings", f"valid; target: {describe_target(settings)}")


def check_registry(context: Context) -> Iterator[Finding]:
    settings = context.settings
    path = settings.registry_path
    try:
        pcs = load_registry(settings)
    except SettingsError as exc:
        fix = (
            f"correct {path} (README: the registry)"
            if path.exists()
            else "rename that folder, or give it an id in a PC registry (GFX_SYNC_REGISTRY_PATH)"
        )
        yield Finding(Level.BLOCKER, "registry", str(exc), fix)
        return
    context.pcs = pcs
    enabled = [pc.id for pc in pcs if pc.enabled]
    names = ", ".join(enabled) if enabled else "none"
    if path.exists():
        where = f"{path}: {len(pcs)} PC(s), {len(enabled)} enabled ({names})"
    else:
        where = (
            f"no registry file ({path}): {len(pcs)} PC folder(s) found as "
            f"{settings.base_path}/<PC>/hands/ ({names})"
        )
    if not enabled:
        yield Finding(
            Level.WARNING,
            "registry",
            f"{where}: nothing will be watched",
            f"create {settings.base_path}/<PC>/hands/ per GFX PC, or list the PCs in {path}",
        )
    else:
        yield Finding(Level.OK, "registry", where)


# -- folders ------------------------------------------------------------------------------------


def check_base_folder(context: Context) -> Iterator[Finding]:
    base = context.settings.base_path
    if not base.exists():
        yield Finding(
            Level.BLOCKER,
            "base folder",
            f"{base} (GFX_SYNC_BASE_PATH) does not exist: the NAS share is not mounted?",
            f"mount the share at {base}, or set GFX_SYNC_BASE_PATH to where it is mounted",
        )
        return
    unusable = unreadable_folder(
        base,
        "base folder",
        "set GFX_SYNC_BASE_PATH to the folder holding one folder per PC",
        "give the user running gfx-sync read access to the share (mount options, ACLs)",
    )
    if unusable:
        yield unusable
        return
    kind = filesystem_type(base) or "unknown file system"
    if kind in NETWORK_FILESYSTEMS:
        auto = [pc.id for pc in context.pcs or [] if pc.enabled and pc.watch_mode == "auto"]
        how = (
            f"PCs with watch_mode auto ({', '.join(auto)}) are polled every "
            f"{context.settings.poll_delay_ms} ms"
            if auto
            else "only PCs with watch_mode auto or polling are polled"
        )
        message = (
            f"{base} on {kind}, a network share: other hosts' writes raise no events, so {how}"
        )
        yield Finding(Level.INFO, "base folder", message)
    else:
        yield Finding(Level.OK, "base folder", f"{base} present, on {kind} (local)")


def unreadable_folder(folder: Path, name: str, not_a_folder: str, no_access: str) -> Finding | None:
    """A blocker if `folder` (which exists) is not a folder or cannot be listed; else None."""
    if not folder.is_dir():
        return Finding(Level.BLOCKER, name, f"{folder} is not a folder", not_a_folder)
    try:
        with os.scandir(folder) as entries:
            next(entries, None)
    except OSError as exc:
        return Finding(
            Level.BLOCKER, name, f"cannot read {folder}: {exc.strerror or exc}", no_access
        )
    return None


def check_pc_folders(context: Context) -> Iterator[Finding]:
    if context.pcs is None:
        yield Finding(Level.INFO, "PC folders", "not checked: the registry is invalid")
        return
    settings = context.settings
    for pc in context.pcs:
        name = f"PC {pc.id}"
        if not pc.enabled:
            yield Finding(Level.INFO, name, "disabled in the registry: not watched")
            continue
        folder = ensure_under_base(settings.base_path, pc)
        if not folder.exists():
            yield Finding(
                Level.WARNING,
                name,
                f"folder {folder} does not exist yet: it is watched once it exists",
                f"check watch_path {pc.watch_path!r} and that PC {pc.id} writes to the share"
                " (nothing to do if it has not written yet)",
            )
            continue
        unusable = unreadable_folder(
            folder,
            name,
            f"point watch_path of PC {pc.id} at its folder",
            "give the user running gfx-sync read access to it (mount options, ACLs)",
        )
        if unusable:
            yield unusable
            continue
        kind = filesystem_type(folder) or "unknown file system"
        if uses_polling(pc, folder):
            if pc.watch_mode == "polling":
                why = "watch_mode polling"
            elif os.environ.get("WATCHFILES_FORCE_POLLING"):
                why = "WATCHFILES_FORCE_POLLING is set"
            else:
                why = f"{kind} is a network share, watch_mode auto"
            how = f"polled every {settings.poll_delay_ms} ms ({why})"
        else:
            how = f"native events ({kind})"
            if kind in NETWORK_FILESYSTEMS:
                yield Finding(
                    Level.WARNING,
                    name,
                    f"{folder} is on {kind}, a network share, but watch_mode is native: "
                    "files written by the GFX PC over the network raise no events here",
                    f"set watch_mode of PC {pc.id} to auto or polling in {settings.registry_path}",
                )
                continue
        yield Finding(Level.OK, name, f"{folder} readable; {how}")


def check_quarantine(context: Context) -> Iterator[Finding]:
    base, error_dir = context.settings.base_path, context.settings.error_dir
    if not base.is_dir():
        yield Finding(Level.INFO, "quarantine", "not checked: the base folder is missing")
        return
    problem = _probe_writable(error_dir, context, fsync=False)
    if problem:
        yield Finding(
            Level.BLOCKER,
            "quarantine",
            f"cannot write in {error_dir}: {problem}; broken files cannot be quarantined",
            f"make {error_dir} writable for gfx-sync (the share mounted read-write)",
        )
    else:
        yield Finding(Level.OK, "quarantine", f"{error_dir} writable")


# -- inotify ------------------------------------------------------------------------------------


def read_inotify_limits() -> InotifyLimits:
    """fs.inotify.max_user_* and, where lower, this user namespace's user.max_inotify_*."""

    def lowest(fs_name: str, user_name: str) -> tuple[int | None, str]:
        found: list[tuple[int, str]] = []
        text = inotify_tree.sysctl(fs_name)
        if text.isdigit():
            found.append((int(text), f"fs.inotify.{fs_name}"))
        with contextlib.suppress(OSError, ValueError):
            found.append(
                (int(Path("/proc/sys/user", user_name).read_text().strip()), f"user.{user_name}")
            )
        if not found:
            return None, f"fs.inotify.{fs_name}"
        return min(found, key=lambda item: item[0])

    watches, watches_knob = lowest("max_user_watches", "max_inotify_watches")
    instances, instances_knob = lowest("max_user_instances", "max_inotify_instances")
    return InotifyLimits(watches, watches_knob, instances, instances_knob)


def inotify_usage(uid: int | None = None) -> tuple[int, int]:
    """About how many inotify instances and watches this user's processes hold now (from
    /proc; an instance shared by forked processes is counted once per process)."""
    uid = os.geteuid() if uid is None else uid
    instances = watches = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                    continue
                info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            except OSError:
                continue
            instances += 1
            watches += info.count("inotify wd:")
    return instances, watches


def native_folders(context: Context) -> list[Path]:
    """The existing folders the watcher would watch with inotify (enabled PCs, not polled)."""
    roots: dict[Path, None] = {}
    for pc in context.pcs or []:
        if not pc.enabled:
            continue
        folder = ensure_under_base(context.settings.base_path, pc)
        if folder.is_dir() and not uses_polling(pc, folder):
            roots[folder] = None
    return list(roots)


def count_watched_folders(roots: list[Path], error_dir: Path) -> int:
    """Folders an inotify watch over `roots` takes, one watch each: the roots and every
    sub-folder, skipping those the watcher skips (hidden, `_`-prefixed, the quarantine)."""
    files = SessionFiles(error_dir)
    seen: set[str] = set()
    stack = [os.fspath(root) for root in roots]
    while stack:
        folder = stack.pop()
        if folder in seen:
            continue
        seen.add(folder)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir and not files.skips_dir(folder, entry.name):
                stack.append(entry.path)
    return len(seen)


def check_inotify(context: Context) -> Iterator[Finding]:
    if not inotify_tree.AVAILABLE:
        yield Finding(
            Level.INFO, "inotify", "not available here: native folders are read with watchfiles"
        )
        return
    roots = native_folders(context)
    if not roots:
        yield Finding(Level.INFO, "inotify", "no folder is watched natively: nothing to check")
        return
    need = count_watched_folders(roots, context.settings.error_dir)
    pc_check = pc_check_watches(context.settings)
    need += pc_check
    limits = context.inotify_limits()
    used_instances, used_watches = inotify_usage()

    def raise_to(knob: str, value: int) -> str:
        if knob.startswith("user."):  # this user namespace's own limit (a container)
            return f"sysctl -w {knob}={value} in this user namespace (the container's settings)"
        return f"sysctl -w {knob}={value} (and in /etc/sysctl.d/ to keep it after a reboot)"

    watches = limits.watches
    if watches is None:
        yield Finding(
            Level.WARNING,
            "inotify watches",
            f"{need} folder(s) to watch natively; the limit {limits.watches_knob} is unreadable",
            f"check it with `sysctl {limits.watches_knob}`",
        )
    else:
        what = (
            f"{need} folder(s) to watch natively: {need - pc_check} in {len(roots)} PC "
            f"folder(s), {pc_check} for up's PC check, {limits.watches_knob}={watches}"
        )
        suggest = max(524288, 2 * (need + used_watches))
        fix = raise_to(limits.watches_knob, suggest)
        if watches < need:
            yield Finding(
                Level.BLOCKER,
                "inotify watches",
                f"{what}: too low; the watcher would fall back to polling (slower detection, "
                "more CPU)",
                fix,
            )
        elif watches < need + used_watches:
            yield Finding(
                Level.WARNING,
                "inotify watches",
                f"{what}, about {used_watches} already in use by this user's processes: "
                "may run out",
                fix,
            )
        else:
            yield Finding(
                Level.OK,
                "inotify watches",
                f"{what} (about {used_watches} in use)",
            )

    instances = limits.instances
    wanted, needs = (2, "the watcher, up's PC check") if pc_check else (1, "the watcher")
    if instances is None:
        yield Finding(
            Level.INFO,
            "inotify instances",
            f"the limit {limits.instances_knob} is unreadable; gfx-sync needs {wanted}",
        )
    elif instances < used_instances + wanted:
        yield Finding(
            Level.BLOCKER,
            "inotify instances",
            f"{limits.instances_knob}={instances}, about {used_instances} in use by this user's "
            f"processes: gfx-sync needs {wanted} more ({needs})",
            raise_to(limits.instances_knob, max(512, 2 * (used_instances + wanted))),
        )
    else:
        yield Finding(
            Level.OK,
            "inotify instances",
            f"{wanted} needed ({needs}), {limits.instances_knob}={instances} "
            f"(about {used_instances} in use)",
        )


# -- state folder and queue ---------------------------------------------------------------------


def check_state_folder(context: Context) -> Iterator[Finding]:
    state = context.settings.state_dir
    problem = _probe_writable(state, context, fsync=True)
    if problem:
        yield Finding(
            Level.BLOCKER,
            "state folder",
            f"cannot write in {state} (GFX_SYNC_STATE_DIR): {problem}",
            "make it writable, or set GFX_SYNC_STATE_DIR to a writable folder on a local disk",
        )
    else:
        yield Finding(
            Level.OK, "state folder", f"{state} writable (probe file written, fsynced, removed)"
        )
    where = _nearest_existing(state)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        yield Finding(
            Level.WARNING, "disk space", f"cannot tell the free space of {where}: {exc.strerror}"
        )
        return
    numbers = f"{_size(usage.free)} free of {_size(usage.total)} on {where}"
    fix = (
        "free space on that disk, or move GFX_SYNC_STATE_DIR (the durable queue and the "
        "embedded database live there)"
    )
    if usage.free < FREE_SPACE_BLOCKER:
        yield Finding(
            Level.BLOCKER,
            "disk space",
            f"{numbers}: below {_size(FREE_SPACE_BLOCKER)}, changes cannot be queued safely",
            fix,
        )
    elif usage.free < FREE_SPACE_WARNING:
        yield Finding(
            Level.WARNING, "disk space", f"{numbers}: below {_size(FREE_SPACE_WARNING)}", fix
        )
    else:
        yield Finding(Level.OK, "disk space", numbers)


def check_queue(context: Context) -> Iterator[Finding]:
    path = context.settings.resolved_queue_path
    if not path.exists():
        yield Finding(Level.INFO, "queue", f"{path} not created yet: the first start creates it")
        return
    try:
        with DurableQueue(path, lease_seconds=context.settings.lease_seconds) as queue:
            stats = queue.stats()
    except QueueError as exc:
        yield Finding(
            Level.BLOCKER,
            "queue",
            f"cannot open the durable queue: {exc}",
            f"check {path} and its folder (writable, local disk); keep the file: it holds "
            "changes not yet synced",
        )
        return
    counts = (
        f"{path}: {stats.pending} pending ({stats.due} due), {stats.inflight} in flight, "
        f"{stats.dead} dead, {stats.quarantined} quarantined"
    )
    if stats.oldest_pending_age is not None:
        counts += f"; oldest pending {stats.oldest_pending_age:.0f} s"
    if stats.dead or stats.quarantined:
        yield Finding(
            Level.WARNING,
            "queue",
            counts,
            "`gfx-sync status` lists them with their reason; after fixing the cause, "
            "`gfx-sync requeue` (`--quarantined` too) retries them",
        )
    else:
        yield Finding(Level.OK, "queue", counts)


# -- the target ---------------------------------------------------------------------------------


def check_target(context: Context) -> Iterator[Finding]:
    settings = context.settings
    if settings.target is Target.SUPABASE:
        yield from _check_rest_target(context)
        return
    if settings.target is Target.EMBEDDED:
        yield Finding(
            Level.INFO,
            "target",
            f"embedded Postgres in {settings.embedded_pg_dir}: neither GFX_SYNC_DATABASE_URL "
            "nor SUPABASE_URL is set",
        )
        started = time.monotonic()
        try:
            url = start_embedded_postgres(settings.embedded_pg_dir)
            database = _Database.connect(url, context.timeout)
        except Exception as exc:
            context.target_failed = True
            yield Finding(
                Level.BLOCKER,
                "target",
                f"the embedded Postgres does not start: {_first_line(exc)}",
                f"check {settings.embedded_pg_dir} (writable, space left); its log is there",
            )
            return
        context.database = database
        yield Finding(
            Level.OK,
            "target",
            f"embedded Postgres starts and answers ({database.server_version}, "
            f"{_ms(time.monotonic() - started)})",
        )
        return
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    where = f"Postgres {redact_url(url)}"
    started = time.monotonic()
    try:
        database = _Database.connect(url, context.timeout)
    except Exception as exc:
        context.target_failed = True
        yield Finding(
            Level.BLOCKER,
            "target",
            f"{where} {'refused us' if _server_answered(exc) else 'unreachable'}: "
            f"{_first_line(exc)}",
            _postgres_fix(exc, context.timeout),
        )
        return
    context.database = database
    yield Finding(
        Level.OK,
        "target",
        f"{where} answers ({database.server_version}, "
        f"connected in {_ms(time.monotonic() - started)})",
    )


def check_schema(context: Context) -> Iterator[Finding]:
    if context.rest is not None:
        yield from _check_rest_schema(context)
        return
    database = context.database
    if database is None:
        yield _not_checked("schema", context)
        return
    expected = [p.stem for p in migration_files()]
    exists = database.query("select to_regclass(%s) is not null", (f"public.{LEDGER}",))[0][0]
    recorded: set[str] = set()
    if exists:
        ledger = f"public.{LEDGER}"
        readable = (
            database.query("select has_table_privilege(%s, 'SELECT')", (ledger,))[0][0]
            and database.query(POLICY_ALLOWS, (ledger, LEDGER, "SELECT"))[0][0]
        )
        if not readable:
            yield Finding(
                Level.BLOCKER,
                "schema",
                f"this role may not read {ledger} (privilege or row-level security), so "
                "gfx-sync cannot tell whether the schema is current and would try to migrate "
                "at start-up",
                "connect as a member of gfx_sync_writer, which may read it (README, Security)",
            )
            return
        recorded = {row[0] for row in database.query(f"select version from {ledger}")}
    yield _compare_migrations(context, expected, recorded)


def check_privileges(context: Context) -> Iterator[Finding]:
    if context.rest is not None:
        yield Finding(
            Level.INFO,
            "privileges",
            "Supabase REST with the service key (role service_role): not checked beyond the "
            "read above",
        )
        return
    database = context.database
    if database is None:
        yield _not_checked("privileges", context)
        return
    (user, sessions, events, ledger) = database.query(
        "select current_user, to_regclass(%s) is not null, to_regclass(%s) is not null, "
        "to_regclass(%s) is not null",
        (f"public.{SESSIONS_TABLE}", f"public.{EVENTS_TABLE}", f"public.{LEDGER}"),
    )[0]
    if not (sessions and events):
        yield Finding(Level.INFO, "privileges", "not checked: the tables are missing (see schema)")
        return
    wanted = [
        (SESSIONS_TABLE, "SELECT"),
        (SESSIONS_TABLE, "INSERT"),
        (SESSIONS_TABLE, "UPDATE"),
        (EVENTS_TABLE, "INSERT"),
    ] + ([(LEDGER, "SELECT")] if ledger else [])
    checks = ", ".join(f"has_table_privilege('public.{t}', '{p}')" for t, p in wanted)
    row = database.query(
        f"select {checks}, has_database_privilege(current_database(), 'TEMPORARY')"
    )[0]
    missing = [f"{p} on {t}" for (t, p), granted in zip(wanted, row, strict=False) if not granted]
    if not row[-1]:
        missing.append("TEMPORARY on the database (the batch upsert uses a temporary table)")
    fix = (
        f"connect as a login that is a member of gfx_sync_writer (README, Security): "
        f"`grant gfx_sync_writer to {user}` as the owner"
    )
    if missing:
        yield Finding(Level.BLOCKER, "privileges", f"role {user} lacks {', '.join(missing)}", fix)
        return
    # Privileges are not enough under row-level security: a policy must let this role in.
    refused = [
        f"{command} on {table}"
        for table, command in wanted
        if not database.query(POLICY_ALLOWS, (f"public.{table}", table, command))[0][0]
    ]
    if refused:
        yield Finding(
            Level.BLOCKER,
            "privileges",
            f"row-level security: no policy lets role {user} {', '.join(refused)} (it has "
            "the privileges, but every such row would be refused)",
            fix,
        )
        return
    yield Finding(
        Level.OK,
        "privileges",
        f"role {user} may select/insert/update {SESSIONS_TABLE}, insert {EVENTS_TABLE}, "
        "create temporary tables",
    )


def check_clock(context: Context) -> Iterator[Finding]:
    if context.settings.target is Target.EMBEDDED and context.database is not None:
        yield Finding(Level.OK, "clock", "the embedded Postgres runs on this machine's clock")
        return
    if context.rest is not None:
        yield from _check_rest_clock(context)
        return
    database = context.database
    if database is None:
        yield _not_checked("clock", context)
        return
    before = context.clock()
    (server,) = database.query("select extract(epoch from clock_timestamp())::float8")[0]
    after = context.clock()
    skew = float(server) - (before + after) / 2
    yield _clock_finding(skew, after - before, "database")


def _clock_finding(skew: float, round_trip: float, what: str, resolution: float = 0.0) -> Finding:
    direction = "ahead of" if skew > 0 else "behind"
    detail = f"round trip {_ms(round_trip)}" + (
        f", {resolution:.0f} s resolution" if resolution else ""
    )
    message = f"the {what} clock is {abs(skew):.3f} s {direction} this machine's ({detail})"
    if abs(skew) > CLOCK_SKEW_WARNING + resolution + round_trip / 2:
        return Finding(
            Level.WARNING,
            "clock",
            f"{message}: more than {CLOCK_SKEW_WARNING:.0f} s; PokerGFX's CreatedDateTimeUTC "
            "and the online/idle/offline status in pc_status compare clocks",
            "synchronise the clocks with NTP (`timedatectl set-ntp true`, chrony), here, on the "
            "GFX PCs and on the database host",
        )
    return Finding(Level.OK, "clock", message)


def _compare_migrations(context: Context, expected: list[str], recorded: set[str]) -> Finding:
    missing = [v for v in expected if v not in recorded]
    unknown = sorted(recorded - set(expected))
    if missing:
        if context.settings.target is Target.EMBEDDED:
            return Finding(
                Level.INFO,
                "schema",
                f"{len(missing)} of {len(expected)} migration(s) not applied yet: gfx-sync "
                "applies them to the embedded database when it starts",
            )
        return Finding(
            Level.BLOCKER,
            "schema",
            f"behind: {len(missing)} of {len(expected)} migration(s) not applied "
            f"({', '.join(missing)})",
            "run `gfx-sync migrate` (as the owner: `gfx-sync migrate --database-url "
            "<owner's URL>`; or `supabase db push`)",
        )
    if unknown:
        return Finding(
            Level.WARNING,
            "schema",
            f"the database has migration(s) this gfx-sync does not know ({', '.join(unknown)}):"
            " a newer gfx-sync migrated it",
            "upgrade gfx-sync on this machine",
        )
    return Finding(
        Level.OK, "schema", f"current: {len(expected)} migration(s), newest {expected[-1]}"
    )


def _not_checked(check: str, context: Context) -> Finding:
    why = "the target did not answer" if context.target_failed else "no database connection"
    return Finding(Level.INFO, check, f"not checked: {why}")


def _postgres_fix(exc: BaseException, timeout: float) -> str:
    text = str(exc)
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if "resolve host" in text or isinstance(exc, socket.gaierror):
        return "check the host name in GFX_SYNC_DATABASE_URL, and DNS on this machine"
    if "refused" in text.lower():
        return (
            "start the database, or check host and port in GFX_SYNC_DATABASE_URL "
            "(a firewall refusing?)"
        )
    if isinstance(exc, TimeoutError) or "timeout" in text.lower():
        return f"no answer within {timeout:.0f} s: check the network, VPN and firewall to the host"
    if sqlstate.startswith("28") or "password" in text.lower() or "role" in text.lower():
        return "check the user and password in GFX_SYNC_DATABASE_URL"
    if sqlstate == "3D000" or ("database" in text and "does not exist" in text):
        return "the database does not exist: check its name in GFX_SYNC_DATABASE_URL"
    return "check GFX_SYNC_DATABASE_URL and that the database is up"


def _server_answered(exc: BaseException) -> bool:
    """The server itself refused us (a wrong password, no such database): libpq's connection
    errors carry no SQLSTATE, but the server's own message is a FATAL."""
    return bool(getattr(exc, "sqlstate", None)) or "FATAL:" in str(exc)


class _Database:
    """One connection to the target for the checks, every step bounded by `timeout`: the
    connect (name resolution included) in a thread we stop waiting for, each query by a
    watchdog that cuts the socket of a server that accepted and then hangs."""

    def __init__(self, conn: psycopg.Connection, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.server_version = self._version()

    @classmethod
    def connect(cls, url: str, timeout: float) -> _Database:
        outcome: dict[str, Any] = {}
        lock = threading.Lock()

        def attempt() -> None:
            try:
                conn = psycopg.connect(
                    url,
                    autocommit=True,
                    prepare_threshold=None,
                    connect_timeout=max(1, math.ceil(timeout)),
                    application_name="gfx-sync doctor",
                )
            except Exception as exc:
                outcome["error"] = exc
                return
            with lock:
                if outcome.get("abandoned"):
                    conn.close()  # answered after we gave up on it
                else:
                    outcome["conn"] = conn

        thread = threading.Thread(target=attempt, name="doctor-connect", daemon=True)
        thread.start()
        thread.join(timeout + 1.0)
        with lock:
            if "conn" not in outcome and "error" not in outcome:
                outcome["abandoned"] = True
                raise TimeoutError(f"no answer within {timeout:.0f} s (connect)")
        if "error" in outcome:
            raise outcome["error"]
        try:
            return cls(outcome["conn"], timeout)
        except BaseException:
            outcome["conn"].close()
            raise

    def _version(self) -> str:
        number = self.query("show server_version")[0][0]
        return f"PostgreSQL {str(number).split()[0]}"

    def query(self, statement: str, params: tuple[object, ...] | None = None) -> list[tuple]:
        watchdog = threading.Timer(self.timeout, shutdown_socket, args=(self.conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            return self.conn.execute(statement, params).fetchall()  # type: ignore[arg-type]
        finally:
            watchdog.cancel()

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


# -- Supabase REST ------------------------------------------------------------------------------


@dataclass(slots=True)
class _RestProbe:
    """The answer to a limit-0 read of gfx_sessions through PostgREST."""

    client: httpx.Client
    base: str
    status: int
    code: str | None
    message: str
    date: str | None
    round_trip: float
    sent_at: float
    received_at: float


def _check_rest_target(context: Context) -> Iterator[Finding]:
    settings = context.settings
    assert settings.supabase_url is not None and settings.supabase_service_key is not None
    key = settings.supabase_service_key.get_secret_value()
    base = settings.supabase_url.rstrip("/")
    client = httpx.Client(
        timeout=httpx.Timeout(context.timeout),
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
        follow_redirects=True,
    )
    where = f"Supabase REST at {settings.supabase_url}"
    sent_at = context.clock()
    started = time.monotonic()
    try:
        response = client.get(
            f"{base}/rest/v1/{SESSIONS_TABLE}", params={"select": "session_id", "limit": "0"}
        )
    except httpx.HTTPError as exc:
        client.close()
        context.target_failed = True
        yield Finding(
            Level.BLOCKER,
            "target",
            f"{where} unreachable: {type(exc).__name__}: {_first_line(exc)}",
            "check SUPABASE_URL, the network and DNS (is the project paused?)",
        )
        return
    round_trip = time.monotonic() - started
    code, message = _rest_error(response)
    probe = _RestProbe(
        client,
        base,
        response.status_code,
        code,
        message,
        response.headers.get("date"),
        round_trip,
        sent_at,
        context.clock(),
    )
    status = response.status_code
    if status in (401, 403) and code not in ("42501",):
        client.close()
        context.target_failed = True
        yield Finding(
            Level.BLOCKER,
            "target",
            f"{where} rejected the key (HTTP {status}: {message})",
            "set SUPABASE_SERVICE_KEY to the project's service_role (secret) key, not the anon key",
        )
        return
    if status >= 500 or code in ("PGRST000", "PGRST001", "PGRST002", "PGRST003"):
        client.close()
        context.target_failed = True
        yield Finding(
            Level.BLOCKER,
            "target",
            f"{where} answers, its database does not (HTTP {status}, {code}: {message})",
            "check the project's status in the Supabase dashboard",
        )
        return
    context.rest = probe
    yield Finding(Level.OK, "target", f"{where} answers (HTTP {status}, {_ms(round_trip)})")


def _check_rest_schema(context: Context) -> Iterator[Finding]:
    probe = context.rest
    assert probe is not None
    push = "`supabase db push`, or `gfx-sync migrate --database-url <its connection string>`"
    if probe.code in ("PGRST205", "42P01") or probe.status == 404:
        yield Finding(
            Level.BLOCKER,
            "schema",
            f"behind: {SESSIONS_TABLE} not found through the REST API ({probe.code}: "
            f"{probe.message})",
            f"apply supabase/migrations: {push}",
        )
        return
    if probe.status >= 400:
        yield Finding(
            Level.BLOCKER,
            "schema",
            f"reading {SESSIONS_TABLE} fails (HTTP {probe.status}, {probe.code}: {probe.message})",
            f"apply supabase/migrations ({push}) and check the service key's role",
        )
        return
    try:
        response = probe.client.get(f"{probe.base}/rest/v1/{LEDGER}", params={"select": "version"})
    except httpx.HTTPError as exc:
        response = None
        why = f"{type(exc).__name__}"
    else:
        why = f"HTTP {response.status_code}"
    if response is None or response.status_code != 200:
        yield Finding(
            Level.INFO,
            "schema",
            f"{SESSIONS_TABLE} is there; the ledger {LEDGER} is not readable over REST "
            f"({why}): compare with `supabase migration list`",
        )
        return
    recorded = {row["version"] for row in response.json() if isinstance(row, dict)}
    yield _compare_migrations(context, [p.stem for p in migration_files()], recorded)


def _check_rest_clock(context: Context) -> Iterator[Finding]:
    probe = context.rest
    assert probe is not None
    try:
        server = parsedate_to_datetime(probe.date).timestamp() if probe.date else None
    except (TypeError, ValueError):
        server = None
    if server is None:
        yield Finding(Level.INFO, "clock", "not checked: the REST answer had no Date header")
        return
    # The Date header is whole seconds, truncated: its true time is up to 1 s later.
    skew = server + 0.5 - (probe.sent_at + probe.received_at) / 2
    yield _clock_finding(skew, probe.round_trip, "Supabase REST server", resolution=1.0)


def _rest_error(response: httpx.Response) -> tuple[str | None, str]:
    if response.status_code < 400:
        return None, "ok"
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200] or response.reason_phrase
    if not isinstance(body, dict):
        return None, str(body)[:200]
    code = body.get("code")
    return (str(code) if code else None), str(body.get("message") or body)[:200]


# -- Prefect ------------------------------------------------------------------------------------


def check_prefect(context: Context) -> Iterator[Finding]:
    url = (context.environ.get("PREFECT_API_URL") or "").rstrip("/")
    client_version = _installed("prefect")
    if not url:
        yield Finding(
            Level.INFO,
            "prefect",
            "PREFECT_API_URL not set: `gfx-sync up` starts a local Prefect server on port "
            f"{context.settings.prefect_port}"
            + (f" (Prefect {client_version})" if client_version else ""),
        )
        return
    headers = {}
    if context.environ.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {context.environ['PREFECT_API_KEY']}"
    elif context.environ.get("PREFECT_API_AUTH_STRING"):
        token = base64.b64encode(context.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    fix = (
        "start that server (`prefect server start`), fix PREFECT_API_URL, or unset it so "
        "`gfx-sync up` starts its own"
    )
    with httpx.Client(timeout=httpx.Timeout(context.timeout), headers=headers) as client:
        try:
            health = client.get(f"{url}/health")
        except httpx.HTTPError as exc:
            yield Finding(
                Level.BLOCKER,
                "prefect",
                f"the Prefect server at {url} (PREFECT_API_URL) does not answer: "
                f"{type(exc).__name__}: {_first_line(exc)}",
                fix,
            )
            return
        if health.status_code != 200:
            yield Finding(
                Level.BLOCKER,
                "prefect",
                f"the Prefect server at {url} answers /health with HTTP {health.status_code}",
                fix,
            )
            return
        try:
            answer = client.get(f"{url}/admin/version")
            server_version = answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            server_version = None
    where = f"Prefect server at {url} healthy"
    if not isinstance(server_version, str):
        yield Finding(Level.OK, "prefect", f"{where}; its version is not readable")
        return
    versions = f"server {server_version}, client {client_version or 'not installed'}"
    if client_version and _minor(server_version) != _minor(client_version):
        yield Finding(
            Level.WARNING,
            "prefect",
            f"{where}, but {versions}: client and server should run the same minor version",
            "upgrade the older one (server, or this machine's gfx-sync environment)",
        )
        return
    yield Finding(Level.OK, "prefect", f"{where} ({versions})")


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


# -- helpers ------------------------------------------------------------------------------------


def _probe_writable(folder: Path, context: Context, *, fsync: bool) -> str | None:
    """None if a file can be created, written (and fsynced) and removed in `folder`, which is
    created if missing (and removed again afterwards); else the reason."""
    try:
        missing = []
        for parent in [folder, *folder.parents]:
            if parent.exists():
                break
            missing.append(parent)
        for parent in reversed(missing):
            parent.mkdir()
            context.created.append(parent)
    except OSError as exc:
        return f"cannot create it ({exc.strerror or exc})"
    try:
        probe_writable(folder, PROBE_BYTES, fsync=fsync)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _nearest_existing(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return candidate
    return Path("/")


def _size(count: float) -> str:
    if count >= 1024**3:
        return f"{count / 1024**3:.1f} GiB"
    if count >= 1024**2:
        return f"{count / 1024**2:.0f} MiB"
    return f"{count / 1024:.0f} KiB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


CHECKS: list[tuple[str, Check]] = [
    ("settings", check_settings),
    ("registry", check_registry),
    ("base folder", check_base_folder),
    ("PC folders", check_pc_folders),
    ("quarantine", check_quarantine),
    ("inotify", check_inotify),
    ("state folder", check_state_folder),
    ("queue", check_queue),
    ("target", check_target),
    ("schema", check_schema),
    ("privileges", check_privileges),
    ("clock", check_clock),
    ("prefect", check_prefect),
]
