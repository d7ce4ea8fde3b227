"""Running calls on a Dask cluster: the executor behind ``--dask``.

Theory of operation
-------------------
``DaskExecutor`` keeps ``bench.parallel``'s executor contract (results in
call order, ``on_done`` as calls finish, a call's exception re-raised at its
turn, Ctrl-C stops the work) on a ``distributed`` cluster:

* ``"local"`` starts a ``LocalCluster`` on this machine: ``workers``
  single-threaded worker processes (the simulator is pure Python; threads
  would share one interpreter lock), each under a nanny that restarts it if
  it dies.  Anything else is a scheduler address (``tcp://host:8786``) whose
  workers were started with Dask's own commands; a ``distributed.Client``
  is used as it is.
* One call is one task: ``functools.partial(fn, *args, **kwargs)``,
  submitted with an explicit key (``pure=False``: never deduplicated) and in
  call order, which is also the scheduler's priority order, so a caller
  that submits big runs first gets them started first.  Results are fetched
  and released as they finish (``bench.parallel.in_call_order``, at most 16
  calls per worker thread in flight beyond the next to yield).
* Failures.  A call that raises is retried once (``retries=1``): runs are
  deterministic, so a second failure is the call's own and is re-raised
  unchanged, as a serial run would raise it.  A call whose worker dies is
  rescheduled by the scheduler, at most ``allowed-failures`` times; for a
  LocalCluster we set that to ``retries`` (1).  A scheduler of your own keeps
  its setting (Dask's default is 3).  A call lost that way too often comes
  back as ``TaskFailed`` naming the call (its config or seed), not a bare
  ``KilledWorker``.
* Before the first call the workers are checked: at least one must have
  joined, and every worker must import this framework from the same source
  (a hash of the ``consensus``, ``protocols`` and ``bench`` sources), since
  a worker running other code would silently break "same results as a serial
  run".  Workers that join later are not checked.
* Leaving early (Ctrl-C, an exception, a caller that stops iterating)
  cancels every outstanding task.  A task already running on a remote worker
  cannot be interrupted and runs to its end unobserved; the worker processes
  of a LocalCluster this executor started are killed at once (a graceful
  close would wait seconds for a running simulation), then it is closed.

Nothing here imports Dask at module level: ``bench`` works without it, and
``require()`` turns a missing install into one clear ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import os
import signal
import uuid
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from bench.parallel import Call, TaskFailed, call_namer, in_call_order
from consensus.config import ConfigError

__all__ = ["LOCAL", "DaskExecutor", "require"]

T = TypeVar("T")

LOCAL = "local"
PACKAGES = ("consensus", "protocols", "bench")


def require() -> None:
    """Raise ``ConfigError`` (one line) unless ``dask.distributed`` can be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--dask: Dask is not installed here; install the extra: pip install -e '.[dask]'"
        ) from None


def code_fingerprint() -> str:
    """A hash of this framework's Python sources, as imported by this process."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for root in importlib.import_module(package).__path__:
            for path in sorted(Path(root).rglob("*.py")):
                digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class DaskExecutor:
    """Calls as tasks on a Dask cluster; see the module docstring.

    ``address``: ``"local"`` (start a LocalCluster of ``workers`` processes,
    default one per CPU), a scheduler address, or a ``distributed.Client``.
    ``retries``: extra attempts for a failed call.  ``timeout``: seconds to
    reach the scheduler and to wait for a first worker.
    """

    def __init__(
        self,
        address: Any = LOCAL,
        *,
        workers: int | None = None,
        retries: int = 1,
        timeout: float = 30.0,
    ) -> None:
        require()
        if workers is not None and address != LOCAL:
            raise ConfigError(
                "--dask-workers: only for --dask local; a cluster's workers are started"
                " with `dask worker`"
            )
        if workers is not None and workers < 1:
            raise ConfigError(f"--dask-workers: must be >= 1, got {workers}")
        self.address = address
        self.workers = workers
        self.retries = retries
        self.timeout = timeout
        self._client: Any = None
        self._cluster: Any = None
        self._own_client = False
        self._depth = 0  # open ``with`` blocks, ``map`` calls included

    @property
    def client(self) -> Any:
        """The ``distributed.Client``, inside ``with executor:`` (None outside)."""
        return self._client

    def _open(self) -> Any:
        # Connect (or start the LocalCluster) and check the workers; idempotent.
        if self._client is not None:
            return self._client
        import dask
        from distributed import Client, LocalCluster

        if isinstance(self.address, Client):
            self._client = self.address
        elif self.address == LOCAL:
            # The scheduler runs in this process and reads its config now.
            with dask.config.set({"distributed.scheduler.allowed-failures": self.retries}):
                self._cluster = LocalCluster(
                    n_workers=self.workers or os.cpu_count() or 1,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                )
            self._client, self._own_client = Client(self._cluster), True
        else:
            try:
                self._client = Client(self.address, timeout=self.timeout)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"--dask {self.address}: cannot reach the scheduler ({exc})"
                ) from None
            self._own_client = True
        try:
            self._check_workers()
        except BaseException:
            self._close()
            raise
        return self._client

    def _check_workers(self) -> None:
        where = f"--dask {self.address}"
        try:
            self._client.wait_for_workers(1, timeout=self.timeout)
        except TimeoutError:
            raise ConfigError(
                f"{where}: no worker joined within {self.timeout:g} s"
                " (start some with `dask worker ADDRESS`)"
            ) from None
        try:
            theirs: dict[str, str] = self._client.run(code_fingerprint)
        except Exception as exc:
            raise ConfigError(
                f"{where}: a worker cannot run this framework ({type(exc).__name__}: {exc});"
                " install it on every worker (see the README)"
            ) from None
        mine = code_fingerprint()
        other = sorted(address for address, print_ in theirs.items() if print_ != mine)
        if other:
            raise ConfigError(
                f"{where}: {len(other)} of {len(theirs)} workers ({', '.join(other[:3])})"
                f" import other framework sources than this machine ({mine}); install the"
                " same version everywhere"
            )

    def _close(self, abort: bool = False) -> None:
        # Close the client and the LocalCluster, if this executor started them.
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if cluster is not None and abort:
            # Interrupted: a graceful close would wait up to 5 s for each
            # running task; end the worker processes (ours, on this machine).
            with contextlib.suppress(Exception):
                for pid in client.run(os.getpid).values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if client is not None and self._own_client:
            client.close()
        if cluster is not None:
            cluster.close()
        self._own_client = False

    def __enter__(self) -> DaskExecutor:
        self._open()
        self._depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._close(abort=kind is not None)

    def __str__(self) -> str:
        client = self._client
        if client is None:
            return f"Dask at {self.address} (not connected)"
        threads = client.nthreads()
        where = "LocalCluster" if self._cluster else f"scheduler {client.scheduler.address}"
        text = f"Dask {where}: {len(threads)} workers, {sum(threads.values())} threads"
        if importlib.util.find_spec("bokeh") is not None:
            text += f", dashboard {client.dashboard_link}"
        return text

    def map(
        self,
        fn: Callable[..., T],
        calls: Sequence[Call],
        *,
        on_done: Callable[[int, T], None] | None = None,
        describe: Callable[[int], str] | None = None,
    ) -> Iterator[T]:
        """``fn(*args, **kwargs)`` per call as Dask tasks; results in call order."""
        calls = list(calls)
        if not calls:
            return
        with self:
            yield from self._map(fn, calls, on_done, call_namer(fn, describe))

    def _map(
        self,
        fn: Callable[..., T],
        calls: list[Call],
        on_done: Callable[[int, T], None] | None,
        what: Callable[[int], str],
    ) -> Iterator[T]:
        from distributed import KilledWorker
        from distributed import wait as dask_wait

        client = self._client
        prefix = f"{getattr(fn, '__name__', 'call')}-{uuid.uuid4().hex[:8]}"
        futures: dict[int, Any] = {}

        def submit(i: int) -> Any:
            args, kwargs = calls[i]
            task = functools.partial(fn, *args, **kwargs)
            futures[i] = client.submit(task, key=f"{prefix}-{i}", pure=False, retries=self.retries)
            return futures[i]

        def first_done(pending: list[Any]) -> set[Any]:
            return dask_wait(pending, return_when="FIRST_COMPLETED").done

        def outcome(i: int, future: Any) -> T:
            del futures[i]
            try:
                return future.result()
            except KilledWorker as exc:
                raise TaskFailed(
                    i,
                    what(i),
                    f"its worker died each of the {exc.allowed_failures + 1} times it ran ({exc})",
                ) from None
            except CancelledError as exc:
                raise TaskFailed(i, what(i), f"dropped by the Dask cluster ({exc})") from None
            finally:
                future.release()

        try:
            yield from in_call_order(
                len(calls),
                submit,
                first_done,
                outcome,
                ahead=16 * max(1, sum(client.nthreads().values())),
                on_done=on_done,
                describe=what,
            )
        finally:
            if futures:
                try:
                    client.cancel(list(futures.values()), force=True)
                except Exception:  # a client that lost its scheduler has nothing to cancel
                    pass
