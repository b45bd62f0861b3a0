"""A warm runner for gfx-sync's deployments: real Prefect runs without the per-run start-up.

Prefect's stock runner polls for scheduled runs (10 s by default) and starts each run in a
fresh interpreter (~1.2 s of importing Prefect). This runner:
- hears about triggered runs from the server's event stream (`prefect.flow-run.Scheduled`),
  and about scheduled ones from one slow query a minute (the scheduler creates those without
  an event), so it neither waits for a poll nor keeps the server busy answering one;
- runs each run in a child forked from a forkserver that has Prefect and the flows already
  imported, and forked *before* the run exists: a spare child that has its API client, its
  suspension observer and gfx-sync's engine ready and waits for the claimed `FlowRun` on a
  pipe (child.py), where Prefect's own `run_flow` runs it: states, logs, retries, artifacts
  and the UI work as with the stock runner; one run per child;
- reports a child that dies or outlives its time limit as Crashed (and alerts), without going
  down itself; a run cancelled in the UI has its child stopped;
- skips the child for a batch run when the queue holds nothing due: the run still goes
  Pending -> Running -> Completed in the UI, saying so, for a few cheap API calls instead of a
  process (this is what keeps a 5-second schedule nearly free while idle).

Its children rest on Prefect internals (deployments/compat.py): `up` builds it only on a
Prefect version compat was tested with, or when told to.
"""

from deployments.warm.runner import WarmRunner
from deployments.warm.served import ServedDeployment, register
from deployments.warm.states import crash_leftover_runs

__all__ = ["ServedDeployment", "WarmRunner", "crash_leftover_runs", "register"]
