"""Choosing where runs go: ``executor_for(jobs, dask=...)`` and the executors in one place.

The contract every executor keeps (results in call order, ``on_done`` as
calls finish, a call's exception re-raised at its turn, Ctrl-C stops the
work) is written down in ``bench.parallel``, which also holds the local
ones (``Serial``, ``Processes``); ``bench.ondask`` holds ``DaskExecutor``.
This module sits above both, so that a sweep, a soak or a study takes an
``executor`` and the command line builds one from ``-j N``, ``--dask
ADDRESS`` and ``--dask-workers N``.  A study wires in with one line::

    results = (executor or executor_for(jobs)).map(trial, calls, on_done=progress)
"""

from __future__ import annotations

from bench.ondask import DaskExecutor
from bench.parallel import Executor, Processes, Serial, TaskFailed, resolve_jobs
from consensus.config import ConfigError

__all__ = ["DaskExecutor", "Executor", "Processes", "Serial", "TaskFailed", "executor_for"]


def executor_for(
    jobs: int | None = 1, *, dask: str | None = None, dask_workers: int | None = None
) -> Executor:
    """The executor for ``-j N``, ``--dask ADDRESS`` and ``--dask-workers N``.

    ``dask``: "local" (a LocalCluster on this machine, ``dask_workers``
    worker processes, default one per CPU) or a scheduler address such as
    ``tcp://scheduler:8786``.  Raises ``ConfigError`` for a mix that makes
    no sense, or for ``dask`` when Dask is not installed.
    """
    if dask is None:
        if dask_workers is not None:
            raise ConfigError("--dask-workers: goes with --dask local")
        return Serial() if resolve_jobs(jobs) <= 1 else Processes(jobs)
    if jobs != 1:
        raise ConfigError("--jobs: give either -j N (local processes) or --dask, not both")
    return DaskExecutor(dask, workers=dask_workers)
