"""prefect.yaml and deployments/definitions.py declare the same deployments.

The committed file must be what `python -m deployments.prefect_yaml` writes, and read back the
way `prefect deploy` reads it, it must mean what definitions.py builds for `gfx-sync up`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentTriggerTypes
from pydantic import TypeAdapter

from deployments.definitions import WORK_POOL, work_pool_deployments
from deployments.prefect_yaml import ROOT, default_settings, render

PREFECT_YAML = ROOT / "prefect.yaml"
TRIGGERS = TypeAdapter(DeploymentTriggerTypes)  # what `prefect deploy` validates triggers with


def test_the_committed_prefect_yaml_is_written_from_the_definitions() -> None:
    assert PREFECT_YAML.read_text() == render(default_settings()), (
        "prefect.yaml differs from deployments/definitions.py: change the definitions, then "
        "run `python -m deployments.prefect_yaml > prefect.yaml`"
    )


def test_prefect_yaml_means_what_the_definitions_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every deployment, the watcher's included: entrypoint, trigger, schedules, concurrency
    limit and strategy, parameters, tags, description, work pool."""
    monkeypatch.chdir(ROOT)  # Prefect writes entrypoints relative to the working directory
    entries = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    declared = [declared_view(entry) for entry in entries]
    built = [built_view(deployment) for deployment in work_pool_deployments(default_settings())]
    assert [view["name"] for view in declared] == [view["name"] for view in built]
    assert "watcher" in [view["name"] for view in declared]
    for declared_deployment, built_deployment in zip(declared, built, strict=True):
        assert declared_deployment == built_deployment


def built_view(deployment: RunnerDeployment) -> dict[str, Any]:
    options = deployment.concurrency_options
    return {
        "name": deployment.name,
        "entrypoint": deployment.entrypoint,
        "description": deployment.description,
        "tags": deployment.tags,
        "parameters": deployment.parameters,
        "intervals": [schedule.schedule.interval for schedule in deployment.schedules],
        "concurrency": (
            deployment.concurrency_limit,
            options.collision_strategy if options else None,
            options.grace_period_seconds if options else None,
        ),
        "triggers": [trigger.model_dump() for trigger in deployment.triggers],
        "work_pool": WORK_POOL,
    }


def declared_view(entry: dict[str, Any]) -> dict[str, Any]:
    """A prefect.yaml deployment, with its values parsed by Prefect's own types."""
    limit = entry.get("concurrency_limit")
    if isinstance(limit, dict):
        strategy = ConcurrencyLimitStrategy(limit["collision_strategy"])
        concurrency = (limit["limit"], strategy, limit.get("grace_period_seconds"))
    else:
        concurrency = (limit, None, None)
    triggers = [
        # `prefect deploy` names an unnamed trigger this way before validating it
        TRIGGERS.validate_python({"name": f"{entry['name']}__automation_{number}", **spec})
        for number, spec in enumerate(entry.get("triggers", []), start=1)
    ]
    return {
        "name": entry["name"],
        "entrypoint": entry["entrypoint"],
        "description": entry.get("description"),
        "tags": entry.get("tags", []),
        "parameters": entry.get("parameters", {}),
        "intervals": [interval(schedule) for schedule in entry.get("schedules", [])],
        "concurrency": concurrency,
        "triggers": [trigger.model_dump() for trigger in triggers],
        "work_pool": entry["work_pool"]["name"],
    }


def interval(schedule: dict[str, Any]) -> timedelta:
    assert schedule.keys() == {"interval"}, f"a schedule with more than an interval: {schedule}"
    return IntervalSchedule(interval=schedule["interval"]).interval
