"""State hooks shared by the deployments' flows.

Alerts listen for these `gfx.flow-run.*` events rather than Prefect's own state events: in
Prefect 3.9 the scheduler creates runs without a `Scheduled` event, so the state events of
scheduled runs wait in the trigger service's causal ordering for up to 15 minutes before an
automation sees them. A hook's event has no predecessor and is evaluated at once.
"""

from __future__ import annotations

from prefect import Flow
from prefect.client.schemas.objects import FlowRun, State
from prefect.events import emit_event

RUN_PROBLEM_EVENT_PREFIX = "gfx.flow-run."


def announce_run_problem(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """on_failure / on_crashed: emit `gfx.flow-run.failed` or `.crashed` (no secrets inside)."""
    emit_event(
        f"{RUN_PROBLEM_EVENT_PREFIX}{state.type.value.lower()}",
        resource={
            "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
            "prefect.resource.name": flow_run.name,
        },
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow.name,
            },
            *(
                {"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
                for tag in flow_run.tags
            ),
        ],
        payload={
            "flow": flow.name,
            "run": flow_run.name,
            "state": state.name,
            "message": (state.message or "")[:2000],
        },
    )
