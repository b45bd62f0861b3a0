"""footprint: the memory of the whole running stack, process by process, idle and under load.

One `gfx-sync up` with its local Prefect server (the bench's Postgres is the target, so the
database is not counted). Proportional set size (PSS, /proc/<pid>/smaps_rollup), so pages shared
between processes (the forkserver's preloaded modules in its children) count once in the sum.
Idle: after the start-up recovery run, the 5-s schedule on. Under load: the peak of the sum,
sampled while a burst of new sessions is committed.

Baseline, same run: a bare Python interpreter that has imported prefect, the floor of any
process that runs Prefect code; the ratio says how many such floors the agent's own processes
cost together.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

import gfx_synth as synth
from bench.context import Bench
from bench.report import Result, fmt, fmt_ratio, ratio
from bench.system import (
    _is_prefect_server,
    _label,
    memory_mb,
    running_system,
    wait_for_startup_recovery,
)

TARGET_STACK_MB = 350.0  # issue 15: the whole stack idle, the local Prefect server included
TARGET_AGENT_MB = 150.0  # the agent's own processes
SAMPLE_S = 0.25


def _role(process: psutil.Process) -> str:
    """The forkserver's command line names the modules it preloads (prefect.engine among them),
    so it is told apart before the labels the CPU scenarios use."""
    with contextlib.suppress(psutil.Error):
        if any("forkserver" in part for part in process.cmdline()):
            return "forkserver"
    return _label(process)


def stack_pss(root_pid: int) -> dict[str, Any]:
    """PSS per process of `up`'s tree, labelled; the Prefect server's subtree apart."""
    root = psutil.Process(root_pid)
    members = [root, *root.children(recursive=True)]
    server: set[int] = set()
    for process in members:
        if _is_prefect_server(process):
            with contextlib.suppress(psutil.Error):
                server |= {process.pid, *(p.pid for p in process.children(recursive=True))}
    labels = {p.pid: _role(p) for p in members}
    agent: dict[str, float] = {}
    server_mb = 0.0
    for process in members:
        with contextlib.suppress(psutil.Error, OSError):
            mb = memory_mb(process.pid)["pss_mb"]
            if process.pid in server:
                server_mb += mb
                continue
            label = labels[process.pid]
            if labels.get(process.ppid()) == "forkserver" and label != "flows.watcher":
                label = "spare or run child"
            agent[label] = agent.get(label, 0.0) + mb
    return {"agent": agent, "agent_mb": sum(agent.values()), "server_mb": server_mb}


def bare_prefect_mb() -> float:
    """PSS of a Python interpreter that has imported prefect and waits."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import prefect, sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()
        return memory_mb(child.pid)["pss_mb"]
    finally:
        child.kill()
        child.wait()


def run(bench: Bench) -> list[Result]:
    profile = bench.profile
    files = 40 if profile.quick else 400
    with running_system(bench, "warm", name="footprint") as system:
        wait_for_startup_recovery(system, profile.system_start_timeout_s)
        time.sleep(profile.idle_settle_s)  # the idle state: the schedule ticking, nothing due
        idle = stack_pss(system.process.pid)
        peak = {"agent_mb": 0.0, "server_mb": 0.0, "agent": {}}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(psutil.Error, OSError):
                    shot = stack_pss(system.process.pid)
                    if shot["agent_mb"] + shot["server_mb"] > peak["agent_mb"] + peak["server_mb"]:
                        peak.update(shot)
                done.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        keys = []
        for index in range(files):
            pc_id = f"PC{index % profile.pcs + 1:02d}"
            doc = synth.make_session(hands=1 + index % 20, seed=9000 + index)
            synth.write_session(system.folder(pc_id), doc)
            keys.append((pc_id, doc["ID"]))
        committed = system.listener.wait_for(keys, profile.burst_wait_s)
        done.set()
        sampler.join()
    floor = bare_prefect_mb()
    idle_stack = idle["agent_mb"] + idle["server_mb"]
    load_stack = peak["agent_mb"] + peak["server_mb"]
    floors = ratio(idle["agent_mb"], floor)

    def table(shot: dict[str, Any]) -> str:
        rows = sorted(shot["agent"].items(), key=lambda item: -item[1])
        parts = [f"{label} {fmt(mb)}" for label, mb in rows]
        return ", ".join([*parts, f"Prefect server {fmt(shot['server_mb'])}"])

    return [
        Result(
            scenario="footprint",
            measure="PSS of the whole stack, idle and under load (local Prefect server)",
            unit="MB",
            figures={
                "idle_stack_mb": idle_stack,
                "idle_agent_mb": idle["agent_mb"],
                "load_stack_mb": load_stack,
                "load_agent_mb": peak["agent_mb"],
                "idle": idle,
                "load": peak,
                "committed": len(committed),
                "files": files,
            },
            baseline_name="a bare Python interpreter with prefect imported (same run)",
            baseline={"pss_mb": floor},
            ratios={"agent_over_bare_prefect": floors},
            ratio_meaning="the agent's own processes, idle / one bare Prefect process",
            target=f"idle: stack <= {TARGET_STACK_MB:g} MB, agent <= {TARGET_AGENT_MB:g} MB",
            met=idle_stack <= TARGET_STACK_MB and idle["agent_mb"] <= TARGET_AGENT_MB,
            cells={
                "result": f"idle {fmt(idle_stack)} MB (agent {fmt(idle['agent_mb'])}); load "
                f"{fmt(load_stack)} MB (agent {fmt(peak['agent_mb'])})",
                "baseline": f"{fmt(floor)} MB",
                "ratio": fmt_ratio(floors),
            },
            notes=[
                f"idle, by process (MB PSS): {table(idle)}",
                f"peak while {files} new sessions were committed ({len(committed)} seen): "
                f"{table(peak)}",
            ],
        )
    ]
