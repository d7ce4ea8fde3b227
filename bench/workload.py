"""Workloads: who sends what, when, on which keys.

Theory of operation
-------------------
A ``Workload`` drives a ``Simulator`` with client operations drawn from one
RNG seeded from the run's seed, so the same config and seed issue the same
operations at the same virtual times.

* ``closed`` loop: ``clients`` clients, each with one operation outstanding;
  a client issues its next operation ``think_time`` after the previous one
  completes.  Throughput is set by latency.
* ``open`` loop: operations arrive as a Poisson process at ``rate`` per
  second whatever the latency, each from an idle client (a new one if all
  are busy).  Latency under load shows queueing.  With ``leader_cache`` (the
  default) a new client starts at the node that answered the workload's
  latest successful operation, as the clients of a real load generator
  share one client library and its leader cache (``bench.tcpload``);
  without it, new clients start at the nodes in turn, so under overload
  most first attempts land on followers and are redirected.  A closed loop
  makes all its clients at the start, so the setting changes nothing there.

Keys follow a ``uniform``, ``zipfian`` (``zipf_skew``) or ``hotspot``
(``hot_fraction`` of the operations go to ``hot_keys`` fraction of the keys)
distribution.  Each operation is a read (``Get``) with probability
``read_fraction``, a compare-and-set with ``cas_fraction``, else a write
(``write_op``: ``put`` or ``append``).  Written values are unique
(``client.seq`` padded to ``value_size``) so a history can be checked.

Operations are issued while ``0 <= time < duration``; those invoked before
``warmup`` are excluded from the results, not from the run.

A closed loop with ``think_time = 0`` needs operations to take virtual time:
on a 1-node cluster (or with zero network delays) and ``client_delay = 0``
every operation completes at the instant it starts and the clock would never
move, so after 100,000 such operations in a row the run stops with a
``ConfigError`` that says which setting to raise.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random
from typing import Any

import attrs

from consensus.checker.history import Operation
from consensus.commands import Append, CompareAndSet, Get, Put
from consensus.config import ConfigError, in_range, non_negative, one_of, positive, probability
from consensus.sim.simulator import SimClient, Simulator

__all__ = ["KeyChooser", "Workload", "WorkloadConfig", "draw_command"]

#: Zero-latency operations in a row after which a closed loop is declared stuck.
_MAX_INSTANT_OPS = 100_000


@attrs.frozen(kw_only=True)
class WorkloadConfig:
    mode: str = attrs.field(default="closed", validator=one_of("closed", "open"))
    clients: int = attrs.field(default=8, validator=in_range(1))
    think_time: float = attrs.field(default=0.0, validator=non_negative)
    rate: float = attrs.field(default=1000.0, validator=positive)
    duration: float = attrs.field(default=5.0, validator=positive)
    warmup: float = attrs.field(default=0.5, validator=non_negative)
    max_ops: int = attrs.field(default=0, validator=non_negative)
    keys: int = attrs.field(default=100, validator=in_range(1))
    distribution: str = attrs.field(
        default="uniform", validator=one_of("uniform", "zipfian", "hotspot")
    )
    zipf_skew: float = attrs.field(default=0.99, validator=non_negative)
    hot_keys: float = attrs.field(default=0.1, validator=probability)
    hot_fraction: float = attrs.field(default=0.9, validator=probability)
    read_fraction: float = attrs.field(default=0.5, validator=probability)
    cas_fraction: float = attrs.field(default=0.0, validator=probability)
    write_op: str = attrs.field(default="put", validator=one_of("put", "append"))
    value_size: int = attrs.field(default=16, validator=in_range(1))
    leader_cache: bool = True

    def __attrs_post_init__(self) -> None:
        if self.read_fraction + self.cas_fraction > 1:
            raise ConfigError(
                f"cas_fraction: read_fraction + cas_fraction must be <= 1, got"
                f" {self.read_fraction} + {self.cas_fraction}"
            )
        if self.warmup >= self.duration:
            raise ConfigError(f"warmup: must be < duration ({self.duration}), got {self.warmup}")


class KeyChooser:
    """Draws key names from the configured distribution."""

    def __init__(self, config: WorkloadConfig, rng: random.Random) -> None:
        self.rng = rng
        self.names = [f"k{i}" for i in range(config.keys)]
        self.config = config
        if config.distribution == "zipfian":
            weights = [1.0 / (rank**config.zipf_skew) for rank in range(1, config.keys + 1)]
            self._cumulative = list(itertools.accumulate(weights))
        hot = max(1, round(config.keys * config.hot_keys))
        self._hot = hot

    def __call__(self) -> str:
        config, rng, names = self.config, self.rng, self.names
        if config.distribution == "uniform":
            return names[rng.randrange(len(names))]
        if config.distribution == "zipfian":
            point = rng.random() * self._cumulative[-1]
            return names[min(bisect.bisect_left(self._cumulative, point), len(names) - 1)]
        if rng.random() < config.hot_fraction or self._hot == len(names):
            return names[rng.randrange(self._hot)]
        return names[rng.randrange(self._hot, len(names))]


def draw_command(
    config: WorkloadConfig,
    rng: random.Random,
    choose_key: KeyChooser,
    last_written: dict[str, str],
    value: str,
) -> Any:
    """The next operation: a read, a compare-and-set or a write of ``value``
    (unique per operation, padded to ``value_size``); ``last_written`` tracks
    each key's latest written value, which a compare-and-set expects."""
    key = choose_key()
    draw = rng.random()
    if draw < config.read_fraction:
        return Get(key=key)
    value = value.ljust(config.value_size, "x")
    if draw < config.read_fraction + config.cas_fraction:
        return CompareAndSet(key=key, expected=last_written.get(key), new=value)
    last_written[key] = value
    if config.write_op == "append":
        return Append(key=key, value=value)
    return Put(key=key, value=value)


class Workload:
    """Issues a workload's operations on a simulator."""

    def __init__(self, sim: Simulator, config: WorkloadConfig) -> None:
        self.sim = sim
        self.config = config
        self.rng = random.Random(f"{sim.seed}:workload")
        self.choose_key = KeyChooser(config, self.rng)
        self.issued = 0
        self._idle: list[SimClient] = []
        # The last value written per key: compare-and-set expects it, so some
        # CAS operations succeed and some race and fail.
        self._last_written: dict[str, str] = {}
        self._callbacks: dict[int, functools.partial[None]] = {}
        self._instant = 0  # operations in a row that completed in zero virtual time
        # The node that answered the latest successful operation (the shared leader cache).
        self._answered: int | None = None

    def start(self) -> None:
        if self.config.mode == "closed":
            for _ in range(self.config.clients):
                client = self.sim.client()
                self.sim.after(0.0, self._issue, client)
        else:
            self.sim.after(self.rng.expovariate(self.config.rate), self._arrival)

    def _command(self, client: SimClient) -> Any:
        value = f"{client.client_id}.{client.seq + 1}"
        return draw_command(self.config, self.rng, self.choose_key, self._last_written, value)

    def _may_issue(self) -> bool:
        if self.sim.now >= self.config.duration:
            return False
        return not (self.config.max_ops and self.issued >= self.config.max_ops)

    def _issue(self, client: SimClient) -> None:
        if not self._may_issue():
            return
        self.issued += 1
        done = self._callbacks.get(client.client_id)
        if done is None:  # one callback per client, not a closure per operation
            done = self._callbacks[client.client_id] = functools.partial(self._done, client)
        client.submit(self._command(client), on_done=done)

    def _done(self, client: SimClient, op: Operation) -> None:
        if op.ok:
            self._answered = client.preferred
        if self.config.mode == "closed":
            if self.config.think_time:
                self.sim.after(self.config.think_time, self._issue, client)
                return
            if op.complete == op.invoke:
                # Zero latency and zero think time: virtual time would never advance.
                self._instant += 1
                if self._instant > _MAX_INSTANT_OPS:
                    raise ConfigError(
                        f"workload.think_time: {self._instant} operations completed in zero"
                        f" virtual time at t={self.sim.now}, so a closed loop with think_time"
                        " = 0 never advances the clock (a 1-node cluster or zero network"
                        " delays with network.client_delay = 0); set workload.think_time or"
                        " network.client_delay above 0"
                    )
            else:
                self._instant = 0
            self._issue(client)
        else:
            self._idle.append(client)

    def _arrival(self) -> None:
        if not self._may_issue():
            return
        if self._idle:
            client = self._idle.pop()
        else:
            client = self.sim.client()
            if self.config.leader_cache:
                client.preferred = self._answered
        self._issue(client)
        self.sim.after(self.rng.expovariate(self.config.rate), self._arrival)
