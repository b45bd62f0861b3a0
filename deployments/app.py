"""`gfx-sync` as installed: the core's command line plus the commands that run the system.

The core CLI (`gfx_sync/cli.py`) knows nothing of Prefect or of this package; the commands that
orchestrate (`up`, `worker`, `deploy`, `server`, `console`) are added here, where
the orchestration lives. `python -m deployments.app` is the same as the `gfx-sync` script.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gfx_sync import cli
from gfx_sync.settings import Settings


def add_orchestration_commands(commands: cli.Commands) -> None:
    up = commands.add_parser(
        "up", help="run everything: Prefect server, deployments, watcher (Ctrl-C stops)"
    )
    up.set_defaults(handler=run_up)
    console = commands.add_parser(
        "console", help="serve the operator console on the configured queue and target"
    )
    console.set_defaults(handler=run_console)
    worker = commands.add_parser(
        "worker",
        help="one site's agent on a shared Prefect server (PREFECT_API_URL): runs, watcher",
    )
    worker.set_defaults(handler=run_worker)
    deploy = commands.add_parser(
        "deploy", help="register this site's deployments, work pool and alerts, then exit"
    )
    deploy.set_defaults(handler=run_deploy)
    server = commands.add_parser(
        "server", help="a Prefect server for many sites, with gfx-sync's run retention"
    )
    server.set_defaults(handler=run_server)


def run_up(settings: Settings, args: argparse.Namespace) -> int:
    """Imported only for this command: the others start without loading Prefect."""
    from deployments.up import up

    return up(settings)


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    from deployments.up import up

    return up(settings, worker=True)


def run_deploy(settings: Settings, args: argparse.Namespace) -> int:
    from deployments.deploy import deploy

    return deploy(settings)


def run_server(settings: Settings, args: argparse.Namespace) -> int:
    from deployments.up import serve_prefect

    return serve_prefect(settings)


def run_console(settings: Settings, args: argparse.Namespace) -> int:
    """The console on its own (`up` serves one too): no Prefect is loaded."""
    from gfx_sync.console.server import serve_console

    return serve_console(settings)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, extra_commands=[add_orchestration_commands])


if __name__ == "__main__":
    sys.exit(main())
