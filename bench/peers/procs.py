"""Node processes of a real cluster on this machine: start, talk by lines, always stop.

Theory of operation
-------------------
A benchmark point starts one OS process per node and must never leave one
behind, whether the point succeeds, fails, times out or is interrupted by
Ctrl-C.  ``NodeProcesses`` is a context manager that owns them:

* each node starts in a session (and process group) of its own, so the
  terminal's Ctrl-C reaches only the parent, and stopping a node kills its
  whole group, anything it started included;
* the parent talks to a node by lines: it writes to the node's stdin and a
  daemon thread per node turns its stdout into ``(node, line)`` items on one
  queue, so reading never blocks on a full pipe and every wait has a timeout;
* stderr goes to a temporary file, whose tail is quoted when something fails;
* on exit (normal or not) every group gets SIGKILL and every process is
  reaped.  The nodes have their own safety nets too (a hard deadline, exit on
  stdin EOF), for a parent that is itself killed outright.

Nothing here knows which consensus system runs in the processes: our runtime's
node processes plug in the same way as PySyncObj's.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import IO, Sequence

__all__ = ["NodeProcesses", "PeerError", "free_ports"]


class PeerError(RuntimeError):
    """A node process failed, timed out or said something unexpected."""

    def __init__(self, message: str, pids: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.pids = list(pids)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the OS has just reported free on ``host``."""
    # All sockets stay open until every port is chosen, so the ports differ;
    # another program may still take one before a node binds it (rare).
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


class NodeProcesses:
    """The processes of one cluster, stopped (killed with their groups) on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self._errs: list[IO[bytes]] = []
        self._lines: queue.Queue[tuple[int, str | None]] = queue.Queue()
        self._stopped = False

    def __enter__(self) -> NodeProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        """Start a node; returns its index."""
        err = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
            start_new_session=True,
            env=env,
        )
        index = len(self.procs)
        self.procs.append(proc)
        self._errs.append(err)
        threading.Thread(target=self._pump, args=(index, proc), daemon=True).start()
        return index

    def _pump(self, index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in proc.stdout:
                self._lines.put((index, line.rstrip("\n")))
        self._lines.put((index, None))  # EOF: the node closed stdout or died

    def send(self, index: int, line: str) -> None:
        stdin = self.procs[index].stdin
        assert stdin is not None
        try:
            stdin.write(line + "\n")
            stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise self.error(f"node {index} is gone ({e})") from None

    def expect(self, word: str, indices: Sequence[int], timeout: float) -> dict[int, str]:
        """Wait until each node in ``indices`` printed a line starting with ``word``.

        Returns the rest of each such line by node.  Lines starting with other
        words are ignored (a node may log to stdout); a node that exits first,
        or the timeout, raises ``PeerError``.
        """
        end = time.monotonic() + timeout
        got: dict[int, str] = {}
        wanted = set(indices)
        while wanted - set(got):
            left = end - time.monotonic()
            if left <= 0:
                missing = sorted(wanted - set(got))
                raise self.error(f"no {word} from node(s) {missing} within {timeout:g}s")
            try:
                index, line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                if index in wanted and index not in got:
                    code = self.procs[index].poll()
                    raise self.error(f"node {index} exited (code {code}) before {word}")
                continue
            head, _, rest = line.partition(" ")
            if head == word and index in wanted:
                got[index] = rest
        return got

    def stderr_tail(self, index: int, limit: int = 2000) -> str:
        f = self._errs[index]
        with contextlib.suppress(OSError, ValueError):
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode(errors="replace")
        return ""

    def error(self, message: str) -> PeerError:
        tails = [
            f"--- node {i} stderr ---\n{tail}"
            for i in range(len(self.procs))
            if (tail := self.stderr_tail(i).strip())
        ]
        return PeerError("\n".join([message, *tails]), self.pids)

    def stop(self, grace: float = 0.0) -> None:
        """Close every node's stdin, wait up to ``grace`` s, then kill every group (once)."""
        if self._stopped:
            return
        self._stopped = True
        for proc in self.procs:
            with contextlib.suppress(OSError, ValueError):
                if proc.stdin is not None:
                    proc.stdin.close()
        end = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, end - time.monotonic()))
        for proc in self.procs:
            # The group too: whatever the node started dies with it, even when
            # the node itself already exited.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                with contextlib.suppress(OSError, ValueError):
                    proc.stdout.close()
        for f in self._errs:
            f.close()
