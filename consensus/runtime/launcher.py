"""Local clusters: every node of a cluster file as an OS process on this machine.

Theory of operation
-------------------
``LocalCluster(path)`` starts ``python -m consensus serve --config path
--node i`` for each node (or one node at a time), waits until each prints
its ``READY`` line (it is listening), and stops them: ``stop`` sends SIGTERM
(a clean shutdown: the write-ahead log is synced and closed) and SIGKILL
after a grace period.  ``kill`` (SIGKILL, no chance to clean up),
``pause``/``resume`` (SIGSTOP/SIGCONT) and ``restart`` are what a nemesis
needs.  Each node's log goes to ``log_dir/node-<id>.log`` (or to this
process's stderr).

Every child runs in its own session (Ctrl-C at a terminal reaches only the
launcher, which then stops the nodes in order) and, on Linux, gets SIGTERM
if the launcher dies, so no node outlives the process that started it.
Everything started is stopped on ``close`` and on leaving a ``with`` block,
also after an error.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from consensus.runtime.clusterfile import ClusterFile, load_cluster_file

__all__ = ["LocalCluster", "NodeFailedToStart", "READY", "free_ports", "write_local_cluster_file"]

READY = "READY"


class NodeFailedToStart(RuntimeError):
    """A node process exited or stayed silent instead of listening."""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` right now (the OS picks them)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind((host, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def write_local_cluster_file(
    path: str | Path,
    protocol: str,
    *,
    nodes: int = 3,
    ports: list[int] | None = None,
    options: dict[str, Any] | None = None,
    secret: str | None = None,
    data_dir: str = "data",
    fsync: str = "batch",
    settings: dict[str, Any] | None = None,
    extra: str = "",
) -> Path:
    """Write a cluster file for ``nodes`` nodes on 127.0.0.1 (free ports unless
    given) and return its path.  ``settings``: more top-level keys;
    ``extra`` is appended verbatim (more TOML tables)."""
    path = Path(path)
    ports = ports if ports is not None else free_ports(nodes)
    secret = secret if secret is not None else secrets.token_hex(16)
    lines = [
        f"protocol = {json.dumps(protocol)}",
        f"secret = {json.dumps(secret)}",
        f"data_dir = {json.dumps(data_dir)}",
        f"fsync = {json.dumps(fsync)}",
        *(f"{key} = {json.dumps(value)}" for key, value in (settings or {}).items()),
    ]
    if options:
        lines.append("[options]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    for i, port in enumerate(ports[:nodes]):
        lines += ["[[nodes]]", f"id = {i}", f'address = "127.0.0.1:{port}"']
    text = "\n".join(lines) + "\n" + (extra.strip() + "\n" if extra else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalCluster:
    """Node processes of one cluster file on this machine (see the module docstring)."""

    def __init__(
        self,
        config: str | Path,
        *,
        log_dir: str | Path | None = None,
        log_level: str | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.path = Path(config)
        self.cluster: ClusterFile = load_cluster_file(self.path)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.log_level = log_level
        self.python = python
        self.env = dict(os.environ if env is None else env)
        self.start_timeout = start_timeout
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.paused: set[int] = set()
        self._logs: dict[int, IO[str]] = {}

    @property
    def node_ids(self) -> tuple[int, ...]:
        return self.cluster.node_ids

    def command(self, node: int) -> list[str]:
        cmd = [self.python, "-m", "consensus", "serve", "--config", str(self.path)]
        cmd += ["--node", str(node)]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        return cmd

    # -- lifecycle -------------------------------------------------------------------

    def start(self, node: int | None = None) -> None:
        """Start ``node`` (or every node not running) and wait until each listens."""
        nodes = [node] if node is not None else [n for n in self.node_ids if not self.running(n)]
        data_dir = self.cluster.path(self.cluster.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        started = []
        for n in nodes:
            if self.running(n):
                continue
            stderr: Any = None
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                log = self._logs.get(n)
                if log is None or log.closed:
                    log = self._logs[n] = open(self.log_dir / f"node-{n}.log", "a")  # noqa: SIM115
                stderr = log
            self.procs[n] = subprocess.Popen(
                self.command(n),
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            started.append(n)
        try:
            for n in started:
                self._wait_ready(n)
        except BaseException:
            for n in started:
                self.kill(n)
            raise

    def _wait_ready(self, node: int) -> None:
        proc = self.procs[node]
        assert proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodeFailedToStart(
                    f"node {node} did not report {READY} within {self.start_timeout:g} s"
                    f"{self._log_hint(node)}"
                )
            ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.2))
            if ready:
                line = proc.stdout.readline()
                if line.startswith(READY):
                    return
                if line == "":
                    code = proc.wait()
                    raise NodeFailedToStart(
                        f"node {node} exited with status {code} before listening"
                        f"{self._log_hint(node)}"
                    )
            elif proc.poll() is not None:
                raise NodeFailedToStart(
                    f"node {node} exited with status {proc.returncode} before listening"
                    f"{self._log_hint(node)}"
                )

    def _log_hint(self, node: int) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"node-{node}.log"
        try:
            tail = path.read_text().strip().splitlines()[-3:]
        except OSError:
            return ""
        return f" ({path}: {' | '.join(tail)})" if tail else ""

    def running(self, node: int) -> bool:
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def pid(self, node: int) -> int:
        return self.procs[node].pid

    def stop(self, node: int | None = None, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after ``timeout`` seconds."""
        nodes = [node] if node is not None else list(self.procs)
        for n in nodes:
            if self.running(n):
                if n in self.paused:
                    self.resume(n)
                self.procs[n].send_signal(signal.SIGTERM)
        for n in nodes:
            proc = self.procs.get(n)
            if proc is None:
                continue
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._reap(n)

    def kill(self, node: int) -> None:
        """SIGKILL: the process dies at once, with no chance to clean up."""
        proc = self.procs.get(node)
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self.paused.discard(node)
        self._reap(node)

    def pause(self, node: int) -> None:
        """SIGSTOP: the node stops dead (its sockets stay open) until ``resume``."""
        if self.running(node):
            os.kill(self.procs[node].pid, signal.SIGSTOP)
            self.paused.add(node)

    def resume(self, node: int) -> None:
        if self.running(node) and node in self.paused:
            os.kill(self.procs[node].pid, signal.SIGCONT)
        self.paused.discard(node)

    def restart(self, node: int) -> None:
        self.kill(node)
        self.start(node)

    def _reap(self, node: int) -> None:
        proc = self.procs.pop(node, None)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        """Stop every node (also the paused ones) and close the log files."""
        try:
            self.stop()
        finally:
            for n in list(self.procs):
                self.kill(n)
            for log in self._logs.values():
                log.close()
            self._logs.clear()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
