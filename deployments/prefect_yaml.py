"""prefect.yaml, written from deployments/definitions.py so the two cannot disagree.

`python -m deployments.prefect_yaml > prefect.yaml` after changing a deployment;
tests/test_prefect_yaml.py fails while the committed file differs from what this writes.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import prefect
import yaml
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentTriggerTypes

from deployments.definitions import WORK_POOL, work_pool_deployments
from gfx_sync.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# gfx-sync deployments for `prefect deploy --all` + `prefect worker start --pool gfx-sync`.
# Written by `python -m deployments.prefect_yaml > prefect.yaml` from deployments/definitions.py:
# change that, not this file (tests/test_prefect_yaml.py checks that the two agree).
# One host per site: the durable queue and the NAS mount are local to the worker's host, so
# run the worker there, from this repository, with the same GFX_SYNC_* environment.
# `gfx-sync up` serves the same deployments without a work pool and runs the watcher itself.
# Schedules are at the settings' default intervals; a parameter not set here takes the flow's
# default. The realtime trigger starts a run only for events the watcher marks
# `gfx.trigger: run` (the lead of a burst; see flows/watcher.py).
# Alerts (automations) cannot be declared here: `gfx-sync up` creates them, see
# deployments/automations.py. For the default site; another site's (names, tags, trigger and
# work pool carrying the site): `GFX_SYNC_SITE=<site> gfx-sync deploy`, which registers the
# same deployments as this file does, and the site's automations.
"""
# The worker runs the flows from this repository (GFX_SYNC_HOME on the worker's host).
PULL_STEPS = [
    {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $GFX_SYNC_HOME }}"}}
]
# Trigger fields written even at their defaults, so that the file shows how a trigger fires.
SHOWN_TRIGGER_FIELDS = [
    "type",
    "name",
    "enabled",
    "match",
    "expect",
    "posture",
    "threshold",
    "within",
    "parameters",
]


def default_settings() -> Settings:
    """The settings' defaults, without the environment or .env: the same file on every host."""
    return Settings.model_construct()


def render(settings: Settings) -> str:
    entries = [deployment_entry(deployment) for deployment in work_pool_deployments(settings)]
    sections = [
        dump({"name": "gfx-sync", "prefect-version": prefect.__version__}),
        dump({"pull": PULL_STEPS}),
        "deployments:\n" + "\n".join(textwrap.indent(dump([entry]), "  ") for entry in entries),
    ]
    return HEADER + "\n".join(sections)


def deployment_entry(deployment: RunnerDeployment) -> dict[str, Any]:
    """One deployment in prefect.yaml's shape; keys that are unset are left out."""
    entry: dict[str, Any] = {
        "name": deployment.name,
        "entrypoint": entrypoint(deployment),
        "description": deployment.description,
        "tags": list(deployment.tags),
        "work_pool": {"name": WORK_POOL, "work_queue_name": "default", "job_variables": {}},
    }
    if deployment.parameters:
        entry["parameters"] = deployment.parameters
    if deployment.schedules:
        entry["schedules"] = [
            {"interval": interval_seconds(s.schedule)} for s in deployment.schedules
        ]
    if deployment.concurrency_limit is not None:
        entry["concurrency_limit"] = concurrency_entry(deployment)
    if deployment.triggers:
        entry["triggers"] = [trigger_entry(trigger) for trigger in deployment.triggers]
    return entry


def entrypoint(deployment: RunnerDeployment) -> str:
    """Prefect writes the flow's file relative to the working directory; prefect.yaml needs
    it relative to the repository, where the worker runs (`set_working_directory`)."""
    file, function = str(deployment.entrypoint).rsplit(":", 1)
    return f"{(Path.cwd() / file).resolve().relative_to(ROOT).as_posix()}:{function}"


def interval_seconds(schedule: object) -> int | float:
    if not isinstance(schedule, IntervalSchedule):
        raise TypeError(f"only interval schedules can be written, not {schedule!r}")
    return whole(schedule.interval.total_seconds())


def concurrency_entry(deployment: RunnerDeployment) -> int | dict[str, Any]:
    """A bare limit, or the limit with what happens to a run that would exceed it."""
    options = deployment.concurrency_options
    if options is None:
        return deployment.concurrency_limit
    entry: dict[str, Any] = {
        "limit": deployment.concurrency_limit,
        "collision_strategy": options.collision_strategy.value,
    }
    if options.grace_period_seconds is not None:
        entry["grace_period_seconds"] = options.grace_period_seconds
    return entry


def trigger_entry(trigger: DeploymentTriggerTypes) -> dict[str, Any]:
    """SHOWN_TRIGGER_FIELDS, then every other field that is not at its default."""
    every_field = trigger.model_dump(mode="json")
    entry = {name: every_field[name] for name in SHOWN_TRIGGER_FIELDS if name in every_field}
    entry |= trigger.model_dump(mode="json", exclude_defaults=True)
    return {
        name: whole(value) if isinstance(value, float) else value for name, value in entry.items()
    }


def whole(seconds: float) -> int | float:
    """5.0 is written `5`, as a person would."""
    return int(seconds) if seconds.is_integer() else seconds


class _Dumper(yaml.SafeDumper):
    """Block style with lists indented under their key; a list of plain values on one line
    (`tags: [gfx-sync]`); Jinja templates in double quotes, as Prefect's docs write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)

    def represent_list(self, data: list[Any]) -> yaml.SequenceNode:
        plain = not any(isinstance(item, list | dict) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=plain)

    def represent_str(self, data: str) -> yaml.ScalarNode:
        style = '"' if "{{" in data else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(str, _Dumper.represent_str)


def dump(data: object) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


if __name__ == "__main__":
    sys.stdout.write(render(default_settings()))
