"""bench: run comparisons of consensus protocols and get pandas DataFrames.

``run(config)`` takes a ``RunConfig``, a mapping, a TOML path or None (the
default comparison) and returns ``Results``; ``sweep(path)`` runs a grid
(``sweep_to(path, out)`` streams it into a parquet dataset, ``read_sweep(out)``
reads it back); ``chaos_run``/``chaos_runs`` run seeded fault-injection
checks.  Sweeps and soaks take ``jobs=N`` (local processes) or
``executor=DaskExecutor(...)`` (a Dask cluster), with the same results.
``why_consensus()`` runs the consensus plugins and the unsafe baselines on one
workload and fault schedule (``notebooks/why_consensus.ipynb``);
``read_modes()`` runs Raft's read paths (log, ReadIndex, lease, follower
reads) on one read-heavy workload.
"""

from bench.chaos import chaos_run, chaos_runs
from bench.executors import DaskExecutor
from bench.metrics import Results
from bench.reads import read_modes
from bench.runner import RunConfig, load_run_config, run
from bench.sweep import read_sweep, sweep, sweep_to
from bench.why import why_consensus
from bench.workload import WorkloadConfig

__all__ = [
    "DaskExecutor",
    "Results",
    "RunConfig",
    "WorkloadConfig",
    "chaos_run",
    "chaos_runs",
    "load_run_config",
    "read_modes",
    "read_sweep",
    "run",
    "sweep",
    "sweep_to",
    "why_consensus",
]
