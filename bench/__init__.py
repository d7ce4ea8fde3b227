"""bench: run comparisons of consensus protocols and get pandas DataFrames.

``run(config)`` takes a ``RunConfig``, a mapping, a TOML path or None (the
default comparison) and returns ``Results``; ``sweep(path)`` runs a grid;
``chaos_run``/``chaos_runs`` run seeded fault-injection checks.
"""

from bench.chaos import chaos_run, chaos_runs
from bench.metrics import Results
from bench.runner import RunConfig, load_run_config, run
from bench.sweep import sweep
from bench.workload import WorkloadConfig

__all__ = [
    "Results",
    "RunConfig",
    "WorkloadConfig",
    "chaos_run",
    "chaos_runs",
    "load_run_config",
    "run",
    "sweep",
]
