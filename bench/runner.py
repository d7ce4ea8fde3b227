"""Running a comparison: one config, several protocols, the same everything else.

Theory of operation
-------------------
A ``RunConfig`` (``bench.config``) is a baseline cluster (size, network,
storage, seed), a workload, a fault schedule and a list of protocols with
per-protocol options.  ``run(config)`` builds one simulator per protocol from the same
baseline, seed, workload and faults, runs each for the workload's duration
plus a drain period, and returns ``Results``: tidy pandas DataFrames, one row
per operation, per protocol, per message type, per time interval, per fault.

The protocol is the only thing that differs between the simulators of one
run; the seed fixes the rest, so two runs of one config give identical
DataFrames.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from bench.config import DEFAULT_PROTOCOLS, RunConfig, load_run_config
from bench.faults import FaultLog, schedule_faults
from bench.metrics import Results, collect
from bench.workload import Workload
from consensus.sim.simulator import Simulator

__all__ = ["DEFAULT_PROTOCOLS", "RunConfig", "load_run_config", "run", "run_one"]


def run_one(
    config: RunConfig,
    protocol: str,
    *,
    progress: Callable[[float], None] | None = None,
) -> tuple[Simulator, FaultLog, float]:
    """Run one protocol under ``config``; returns the simulator, fault log, wall time."""
    sim = Simulator(
        config.cluster_for(protocol),
        record_applied=False,
        stats_interval=config.interval,
        trace=config.trace,
    )
    log: FaultLog = []
    schedule_faults(sim, list(config.faults), log)
    workload = Workload(sim, config.workload)
    workload.start()
    end = config.workload.duration + config.drain
    started = time.perf_counter()
    step = max(end / 50, 0.05)
    while sim.now < end:
        sim.run_until_time(min(end, sim.now + step))
        if progress is not None:
            progress(sim.now / end)
    sim.finish_pending()
    return sim, log, time.perf_counter() - started


def run(
    config: str | Path | dict[str, Any] | RunConfig | None = None,
    *,
    progress: Callable[[str, float], None] | None = None,
) -> Results:
    """Run every protocol of ``config`` on the same workload, network, faults and seed.

    ``config`` is a ``RunConfig``, a mapping, a TOML path, or None for the
    default comparison.  Returns ``Results`` with pandas DataFrames.  With
    ``network.kind = "tcp"`` each protocol runs as real node processes
    (``bench.tcprun``) and times are wall-clock seconds.
    """
    config = load_run_config(config)
    runs = []
    for protocol in config.protocols:
        callback = (lambda f, p=protocol: progress(p, f)) if progress else None
        if config.real:
            from bench.tcprun import run_tcp_one

            sim, log, wall = run_tcp_one(config, protocol, progress=callback)
        else:
            sim, log, wall = run_one(config, protocol, progress=callback)
        runs.append((protocol, sim, log, wall))
    return collect(config, runs)
