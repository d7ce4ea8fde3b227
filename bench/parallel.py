"""Running calls in worker processes, results in call order: parallel sweeps and soaks.

Theory of operation
-------------------
Every simulated run is a pure function of its config and seed, so a sweep's
grid points or a chaos soak's seeds can run in worker processes and still
give exactly the serial results.  ``map_in_processes(fn, calls, jobs)`` is
that machinery:

* workers are started with "spawn" (no fork of a process that may hold
  threads, such as a progress bar's) and are sent config *values* (attrs
  configs pickle) and a top-level function, never a live simulator;
* results come back in call order; a worker's exception is re-raised in the
  caller unchanged (same type and message) at the position of its call, so
  the caller sees what a serial loop would have seen;
* workers ignore SIGINT: Ctrl-C reaches the parent only, which cancels the
  queued calls and terminates the workers, so none outlive it.  The same
  happens when a call fails or the caller stops iterating early.  A worker
  whose parent is killed outright exits by itself.

Starting a pool costs 1.5-2 s here (each worker imports bench and pandas), so
it pays for jobs longer than a few seconds.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator, TypeVar

from consensus.config import ConfigError

__all__ = ["map_in_processes", "resolve_jobs"]

T = TypeVar("T")


def resolve_jobs(jobs: int | None) -> int:
    """Worker processes for ``jobs``: 0 or None means one per CPU."""
    if jobs is None or jobs == 0:
        return os.cpu_count() or 1
    if jobs < 0:
        raise ConfigError(f"jobs: must be >= 0 (0: one per CPU), got {jobs}")
    return jobs


def _init_worker() -> None:
    # Ctrl-C is the parent's to handle: it stops the workers (see _stop).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed outright (SIGTERM, SIGKILL) cannot stop its workers, and
    # an idle worker would wait for work forever: each watches its parent.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent.sentinel,), daemon=True).start()


def _exit_after(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _stop(executor: ProcessPoolExecutor) -> None:
    # Interrupted, failed, or abandoned: drop queued calls and end the running
    # ones now instead of waiting for them.  The workers and the manager
    # thread are private attributes (3.14 adds ``terminate_workers()``, which
    # does not wait); shutdown clears them, so they are read first.  Joining
    # the manager thread matters: it reaps workers too, and a worker it reaps
    # still looks alive to ``Process.join`` here until the thread finishes.
    workers = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    executor.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.terminate()
    if manager is not None:
        manager.join()
    for process in workers:
        process.join()


def map_in_processes(
    fn: Callable[..., T],
    calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]],
    jobs: int,
    *,
    on_done: Callable[[int, T], None] | None = None,
) -> Iterator[T]:
    """``fn(*args, **kwargs)`` for each call, in ``jobs`` worker processes.

    Yields the results in call order.  ``on_done(i, result)`` fires in the
    caller's process as each call finishes (completion order).  An exception
    raised by a call is re-raised, unchanged, when its turn comes.  ``fn``
    and the arguments must pickle (a top-level function and plain values).
    """
    pending = list(calls)
    if not pending:
        return
    workers = max(1, min(jobs, len(pending)))
    # Calls submitted ahead of the next one to yield: keeps every worker busy
    # behind a slow call without holding a whole soak's results in memory.
    ahead = 16 * workers
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
    )
    completed = False
    try:
        index: dict[Future[T], int] = {}
        ready: dict[int, Future[T]] = {}
        submitted = next_i = 0
        while next_i < len(pending):
            while submitted < min(len(pending), next_i + ahead):
                args, kwargs = pending[submitted]
                index[executor.submit(fn, *args, **kwargs)] = submitted
                submitted += 1
            if next_i not in ready:
                done, _ = wait(index, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=index.__getitem__):
                    i = index.pop(future)
                    ready[i] = future
                    if on_done is not None and future.exception() is None:
                        on_done(i, future.result())
            while next_i in ready:
                result = ready.pop(next_i).result()  # re-raises the call's exception
                next_i += 1
                yield result
        completed = True
    finally:
        if completed:
            executor.shutdown(wait=True)
        else:
            _stop(executor)
