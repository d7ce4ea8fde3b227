"""The simulated network's fault model: who can reach whom, and when.

Theory of operation
-------------------
``NetworkModel`` is pure: given a send ``(src, dst)`` it answers with the
delays after which copies of the message arrive (none: lost; two:
duplicated).  The simulator owns the clock and the event queue; this module
only decides.  Every draw comes from the ``random.Random`` it is given, and
draws happen in the simulator's deterministic event order, so a run is
reproducible from its seed.

Faults:

* ``loss``, ``duplicate``, ``reorder`` probabilities, adjustable at any time.
  A reordered message gets an extra uniform delay in ``[0, reorder_delay)``.
* Partitions are a set of *blocked directed links*.  ``partition(groups)``
  blocks every link between different groups (nodes not named form one more
  group); ``cut(a, b)`` blocks one direction only; ``heal()`` clears all.
  A message is dropped if its link is blocked when it is sent *or* when it
  would arrive (packets in flight on a cut link are lost too).
* Crashed nodes neither send nor receive (the simulator enforces that).

Invariant: ``blocked`` never contains ``(n, n)``: a node always reaches itself.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Sequence

from consensus.config import Delay, NetworkConfig

__all__ = ["NetworkModel", "delay_sampler"]

Sampler = Callable[[int, int], float]


def delay_sampler(delay: Delay, rng: random.Random) -> Sampler:
    """A function ``(src, dst) -> seconds`` drawing from ``delay``'s distribution."""
    if delay.kind == "constant":
        value = delay.value
        return lambda src, dst: value
    if delay.kind == "uniform":
        # random.uniform(low, high) is low + (high - low) * random(), inlined: one
        # draw per message, bit-for-bit the same value, one Python call fewer.
        low, span = delay.low, delay.high - delay.low
        rand = rng.random
        return lambda src, dst: low + span * rand()
    if delay.kind == "normal":
        mean, stddev, low = delay.mean, delay.stddev, delay.low
        gauss = rng.gauss
        return lambda src, dst: max(low, gauss(mean, stddev))
    if delay.kind == "matrix":
        matrix, jitter = delay.matrix, delay.jitter
        if jitter:
            rand = rng.random
            return lambda src, dst: matrix[src][dst] + jitter * rand()
        return lambda src, dst: matrix[src][dst]
    raise ValueError(f"unknown delay kind {delay.kind!r}")


class NetworkModel:
    """Delay, loss, duplication, reordering and partitions for ``nodes`` nodes."""

    #: No loss, duplication or reordering configured: one copy, one delay draw per
    #: message (kept current by the ``loss``/``duplicate``/``reorder`` setters).
    clean: bool

    def __init__(self, config: NetworkConfig, nodes: Sequence[int], rng: random.Random) -> None:
        self.nodes = tuple(nodes)
        self.rng = rng
        self.loss = config.loss
        self.duplicate = config.duplicate
        self.reorder = config.reorder
        self.reorder_delay = config.reorder_delay
        self.client_delay = config.client_delay
        self.blocked: set[tuple[int, int]] = set()
        self._delay = config.delay
        self._sample = delay_sampler(config.delay, rng)
        self.dropped = 0
        self.duplicated = 0

    # -- configuration, live ----------------------------------------------------

    # loss, duplicate and reorder are properties so that ``clean`` (no per-message
    # fault draws needed) stays current: the simulator's hot path reads only it.
    def _probability(name: str) -> property:  # type: ignore[misc]
        def get(self: NetworkModel) -> float:
            return getattr(self, "_" + name)

        def set_(self: NetworkModel, value: float) -> None:
            setattr(self, "_" + name, value)
            self.clean = not (
                getattr(self, "_loss", 0)
                or getattr(self, "_duplicate", 0)
                or getattr(self, "_reorder", 0)
            )

        return property(get, set_)

    loss = _probability("loss")
    duplicate = _probability("duplicate")
    reorder = _probability("reorder")
    del _probability

    @property
    def delay(self) -> Delay:
        return self._delay

    @delay.setter
    def delay(self, delay: Delay) -> None:
        self._delay = delay
        self._sample = delay_sampler(delay, self.rng)

    def partition(self, *groups: Iterable[int]) -> None:
        """Split the nodes into ``groups`` (the rest form one more group)."""
        sets = [set(g) for g in groups]
        named = set().union(*sets) if sets else set()
        unknown = named - set(self.nodes)
        if unknown:
            raise ValueError(f"unknown nodes in partition: {sorted(unknown)}")
        rest = set(self.nodes) - named
        if rest:
            sets.append(rest)
        side = {n: i for i, group in enumerate(sets) for n in group}
        # Mutated in place, never replaced: the simulator holds on to this set.
        self.blocked.clear()
        self.blocked.update(
            (a, b) for a in self.nodes for b in self.nodes if a != b and side[a] != side[b]
        )

    def cut(self, src: int, dst: int) -> None:
        """Block messages from ``src`` to ``dst`` (one direction)."""
        if src != dst:
            self.blocked.add((src, dst))

    def isolate(self, node: int) -> None:
        """Cut ``node`` off from every other node, both directions."""
        for other in self.nodes:
            if other != node:
                self.blocked.add((node, other))
                self.blocked.add((other, node))

    def heal(self) -> None:
        self.blocked.clear()

    def reachable(self, src: int, dst: int) -> bool:
        return (src, dst) not in self.blocked

    # -- per message --------------------------------------------------------------

    def transit(self, src: int, dst: int) -> list[float]:
        """Delays of the copies of one message from ``src`` to ``dst`` that arrive."""
        if (src, dst) in self.blocked:
            self.dropped += 1
            return []
        if self.clean:
            return [self._sample(src, dst)]  # the common case: a healthy link
        rand = self.rng.random
        if self.loss and rand() < self.loss:
            self.dropped += 1
            return []
        delay = self._sample(src, dst)
        if self.reorder and rand() < self.reorder:
            delay += self.reorder_delay * rand()
        if self.duplicate and rand() < self.duplicate:
            self.duplicated += 1
            again = self._sample(src, dst)
            if self.reorder and rand() < self.reorder:
                again += self.reorder_delay * rand()
            return [delay, again]
        return [delay]
