"""Where the runs of a sweep, a soak or a study go: executors with one contract.

Theory of operation
-------------------
Every simulated run is a pure function of its config and seed, so a sweep's
runs, a chaos soak's seeds or a study's trials can run anywhere and still
give exactly the serial results.  An *executor* runs a list of calls
``fn(*args, **kwargs)`` and hands back their results; three exist:

* ``Serial()``: in this process, one after another: the reference;
* ``Processes(jobs)``: ``jobs`` local worker processes (``-j N``);
* ``bench.ondask.DaskExecutor``: tasks on a Dask cluster (``--dask``),
  imported only when asked for, since Dask is an optional extra.

All three keep one contract, ``executor.map(fn, calls, on_done=, describe=)``:

* results come back in call order, whatever order the calls finish in;
* ``on_done(i, result)`` fires in the caller as call ``i`` finishes
  (completion order): a progress bar counts these;
* a call's exception is re-raised unchanged (same type and message) at its
  turn, so the caller sees what a serial loop would have seen, with a note
  naming the call (``describe(i)``: its config or seed);
* Ctrl-C, an exception, or a caller that stops iterating early stops the
  work: queued calls are dropped and workers this executor started end.

An executor is also a context manager (re-entrant): ``with executor: ...``
keeps what it starts (a Dask cluster) across several ``map`` calls;
otherwise each ``map`` starts and stops its own.  ``executor_for(jobs, dask=...)`` turns
command-line choices into an executor (``bench.executors``, above this
module and ``bench.ondask``).  Wiring a new kind of study in is one
line: ``executor.map(trial, calls, on_done=...)``.

The remote executors share ``in_call_order``: it keeps at most ``ahead``
calls in flight beyond the next one to yield, so a 10,000-seed soak never
holds all its results at once, and turns "finished in any order" into "in
call order".

Local processes are started with "spawn" (no fork of a process that may hold
threads, such as a progress bar's) and are sent config *values* (attrs
configs pickle) and a top-level function, never a live simulator.  They
ignore SIGINT: Ctrl-C reaches the parent only, which cancels the queued calls
and terminates the workers, so none outlive it.  A worker whose parent is
killed outright exits by itself.  Starting a pool costs 1.5-2 s here (each
worker imports bench and pandas), so it pays for jobs longer than a few
seconds.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from types import TracebackType
from typing import Any, Callable, Hashable, Iterable, Iterator, Protocol, Sequence, TypeVar

from consensus.config import ConfigError
from consensus.runtime.cli import tune_gc

__all__ = [
    "Call",
    "Executor",
    "Processes",
    "Serial",
    "TaskFailed",
    "call_namer",
    "in_call_order",
    "map_in_processes",
    "resolve_jobs",
]

T = TypeVar("T")
F = TypeVar("F", bound=Hashable)

Call = tuple[tuple[Any, ...], dict[str, Any]]
"""One call: positional and keyword arguments."""


class TaskFailed(RuntimeError):
    """A call lost with its workers, after the retry: reported with its config.

    Raised in place of a result (at the call's turn) when the call itself
    did not fail but the machinery around it did: its worker died each time
    it ran, or the cluster dropped it.
    """

    def __init__(self, index: int, call: str, reason: str) -> None:
        super().__init__(f"{call}: {reason}")
        self.index = index
        self.call = call


class Executor(Protocol):
    """Runs calls somewhere; results in call order (see the module docstring)."""

    def map(
        self,
        fn: Callable[..., T],
        calls: Sequence[Call],
        *,
        on_done: Callable[[int, T], None] | None = None,
        describe: Callable[[int], str] | None = None,
    ) -> Iterator[T]: ...

    def __enter__(self) -> Executor: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def resolve_jobs(jobs: int | None) -> int:
    """Worker processes for ``jobs``: 0 or None means one per CPU."""
    if jobs is None or jobs == 0:
        return os.cpu_count() or 1
    if jobs < 0:
        raise ConfigError(f"jobs: must be >= 0 (0: one per CPU), got {jobs}")
    return jobs


def call_namer(
    fn: Callable[..., Any], describe: Callable[[int], str] | None
) -> Callable[[int], str]:
    """``describe``, or a stand-in naming call ``i`` of ``fn``: the executors' error notes."""
    if describe is not None:
        return describe
    name = getattr(fn, "__qualname__", repr(fn))
    return lambda i: f"call {i} of {name}"


def _noted(exc: BaseException, what: str) -> BaseException:
    exc.add_note(f"(raised by {what})")
    return exc


class _NoResources:
    # Serial and Processes start nothing that outlives a ``map``.
    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class Serial(_NoResources):
    """Every call in this process, in order: the reference the others reproduce."""

    def map(
        self,
        fn: Callable[..., T],
        calls: Sequence[Call],
        *,
        on_done: Callable[[int, T], None] | None = None,
        describe: Callable[[int], str] | None = None,
    ) -> Iterator[T]:
        what = call_namer(fn, describe)
        for i, (args, kwargs) in enumerate(calls):
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                _noted(exc, what(i))
                raise
            if on_done is not None:
                on_done(i, result)
            yield result

    def __repr__(self) -> str:
        return "Serial()"


class Processes(_NoResources):
    """Calls in ``jobs`` local worker processes (0 or None: one per CPU).

    A single call, or ``jobs`` = 1, runs in this process: starting a worker
    would only cost time.
    """

    def __init__(self, jobs: int | None) -> None:
        self.jobs = resolve_jobs(jobs)

    def map(
        self,
        fn: Callable[..., T],
        calls: Sequence[Call],
        *,
        on_done: Callable[[int, T], None] | None = None,
        describe: Callable[[int], str] | None = None,
    ) -> Iterator[T]:
        if min(self.jobs, len(calls)) <= 1:
            return Serial().map(fn, calls, on_done=on_done, describe=describe)
        return map_in_processes(fn, calls, self.jobs, on_done=on_done, describe=describe)

    def __repr__(self) -> str:
        return f"Processes({self.jobs})"


def in_call_order(
    count: int,
    submit: Callable[[int], F],
    first_done: Callable[[list[F]], Iterable[F]],
    outcome: Callable[[int, F], T],
    *,
    ahead: int,
    on_done: Callable[[int, T], None] | None = None,
    describe: Callable[[int], str],
) -> Iterator[T]:
    """Results of calls ``0 .. count-1`` in call order, whatever order they finish in.

    ``submit(i)`` starts call ``i`` and returns its future; ``first_done``
    blocks until at least one of the futures given is done and returns the
    done ones; ``outcome(i, future)`` is the call's result or raises its
    exception (once per call).  At most ``ahead`` calls are started beyond
    the next one to yield.  Stopping the work when this generator is left
    early is the caller's (it knows its futures' owner).
    """
    index: dict[F, int] = {}
    # Finished calls waiting for their turn: (True, result) or (False, exception).
    ready: dict[int, tuple[bool, Any]] = {}
    submitted = next_i = 0
    while next_i < count:
        while submitted < min(count, next_i + ahead):
            index[submit(submitted)] = submitted
            submitted += 1
        while next_i not in ready:
            for future in sorted(first_done(list(index)), key=index.__getitem__):
                i = index.pop(future)
                try:
                    result = outcome(i, future)
                except Exception as exc:
                    ready[i] = (False, exc)
                    continue
                ready[i] = (True, result)
                if on_done is not None:
                    on_done(i, result)
        while next_i in ready:
            ok, value = ready.pop(next_i)
            if not ok:
                # A TaskFailed names its call already.
                raise value if isinstance(value, TaskFailed) else _noted(value, describe(next_i))
            next_i += 1
            yield value


def _init_worker() -> None:
    # Ctrl-C is the parent's to handle: it stops the workers (see _stop).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Simulations allocate many short-lived objects: collect as a node does.
    tune_gc()
    # A parent killed outright (SIGTERM, SIGKILL) cannot stop its workers, and
    # an idle worker would wait for work forever: each watches its parent.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent.sentinel,), daemon=True).start()


def _exit_after(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


#: Seconds the pool's manager thread gets to finish once its workers are gone.
_MANAGER_GRACE = 2.0


def _stop(executor: ProcessPoolExecutor) -> None:
    # Interrupted, failed, or abandoned: drop queued calls and end the running
    # ones now instead of waiting for them.  The workers and the manager
    # thread are private attributes (3.14 adds ``terminate_workers()``, which
    # does not wait); shutdown clears them, so they are read first.  Joining
    # the manager thread matters: it reaps workers too, and a worker it reaps
    # still looks alive to ``Process.join`` here until the thread finishes.
    #
    # A worker terminated while it wrote a result leaves part of a message in
    # the result pipe, and the manager thread waits for the rest forever (the
    # parent holds the pipe's write end too).  If the thread has not finished
    # soon after the workers are gone, the parent closes its write end: the
    # thread reads end-of-file, takes the pool for broken and finishes.
    workers = list((getattr(executor, "_processes", None) or {}).values())
    manager = getattr(executor, "_executor_manager_thread", None)
    results = getattr(executor, "_result_queue", None)
    executor.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.terminate()
    if manager is not None:
        manager.join(timeout=_MANAGER_GRACE)
        writer = getattr(results, "_writer", None)
        if manager.is_alive() and writer is not None:
            writer.close()
        manager.join()
    for process in workers:
        process.join()


def map_in_processes(
    fn: Callable[..., T],
    calls: Iterable[Call],
    jobs: int,
    *,
    on_done: Callable[[int, T], None] | None = None,
    describe: Callable[[int], str] | None = None,
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
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
    )

    def submit(i: int) -> Future[T]:
        args, kwargs = pending[i]
        return executor.submit(fn, *args, **kwargs)

    def first_done(futures: list[Future[T]]) -> set[Future[T]]:
        return wait(futures, return_when=FIRST_COMPLETED).done

    completed = False
    try:
        # 16 calls per worker ahead of the next to yield: keeps every worker
        # busy behind a slow call without holding a whole soak's results.
        yield from in_call_order(
            len(pending),
            submit,
            first_done,
            lambda _, future: future.result(),  # re-raises the call's exception
            ahead=16 * workers,
            on_done=on_done,
            describe=call_namer(fn, describe),
        )
        completed = True
    finally:
        if completed:
            executor.shutdown(wait=True)
        else:
            _stop(executor)
