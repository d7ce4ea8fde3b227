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
  group); ``cut(a, b)`` blocks one direction only; ``reconnect(n)`` unblocks
  every link of node ``n``; ``heal()`` clears all.  A message is dropped if
  its link is blocked when it is sent *or* when it would arrive (packets in
  flight on a cut link are lost too).
* Message rules (``MessageRule``: ``rule(types=..., src=..., dst=...,
  loss=..., duplicate=..., delay=...)``) add loss, duplication and delay for
  some message types and directions only, on top of the above: for example
  holding back replies, or losing one kind of message from one node.
  ``heal`` and ``reconnect`` leave them in place; ``remove_rule`` and
  ``clear_rules`` take them away.
* Crashed nodes neither send nor receive (the simulator enforces that).

FIFO links (``fifo``, the default, as TCP's are): each directed link
remembers the latest arrival time it has given (``link_last[src][dst]``), and
a message never arrives before it: ``arrival = max(now + drawn delay,
link_last)``.  So pipelined messages on a healthy link keep their order, as
on a real connection, whatever the delay distribution.  Faults still
reorder: a ``reorder``ed message's extra delay and a rule's ``delay`` come on
top of its FIFO arrival and do not hold back the messages behind it, and a
duplicate's second copy draws its own delay, as without FIFO.  A lost or
blocked message leaves the link's time as it was.

Speed: ``clean`` (no loss, duplication, reordering or rules) lets the
simulator skip ``transit`` altogether for one delay draw per message; a rule
makes the network not clean, so only runs that set one pay for matching.

Invariant: ``blocked`` never contains ``(n, n)``: a node always reaches itself.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Sequence

from consensus.config import Delay, MessageRule, NetworkConfig

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
        #: Links deliver in order (see the theory of operation).
        self.fifo = config.fifo
        #: ``link_last[src][dst]``: the latest arrival time given on that link.
        #: Mutated in place, never replaced: the simulator's senders hold its rows.
        size = max(self.nodes, default=-1) + 1
        self.link_last: list[list[float]] = [[0.0] * size for _ in range(size)]
        # (rule, type names, senders, receivers, extra-delay sampler): empty sets match any.
        self._rules: list[_Compiled] = []
        for rule in config.rules:
            self.add_rule(rule)

    # -- configuration, live ----------------------------------------------------

    # loss, duplicate and reorder are properties so that ``clean`` (no per-message
    # fault draws needed) stays current: the simulator's hot path reads only it.
    def _probability(name: str) -> property:  # type: ignore[misc]
        def get(self: NetworkModel) -> float:
            return getattr(self, "_" + name)

        def set_(self: NetworkModel, value: float) -> None:
            setattr(self, "_" + name, value)
            self._update_clean()

        return property(get, set_)

    loss = _probability("loss")
    duplicate = _probability("duplicate")
    reorder = _probability("reorder")
    del _probability

    def _update_clean(self) -> None:
        self.clean = not (
            getattr(self, "_loss", 0)
            or getattr(self, "_duplicate", 0)
            or getattr(self, "_reorder", 0)
            or getattr(self, "_rules", None)
        )

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

    def reconnect(self, node: int) -> None:
        """Unblock every link to and from ``node`` (undo its isolation, cuts and
        its side of a partition); other nodes' links stay as they are."""
        self.blocked.difference_update([link for link in self.blocked if node in link])

    def heal(self) -> None:
        self.blocked.clear()

    def reachable(self, src: int, dst: int) -> bool:
        return (src, dst) not in self.blocked

    # -- message rules -------------------------------------------------------------

    def rule(
        self,
        *,
        types: Iterable[type | str] | type | str = (),
        src: Iterable[int] | int = (),
        dst: Iterable[int] | int = (),
        loss: float = 0.0,
        duplicate: float = 0.0,
        delay: Delay | float | None = None,
    ) -> MessageRule:
        """Add a ``MessageRule`` (see ``consensus.config``) and return it.

        ``delay`` in seconds is a constant extra delay; a ``Delay`` is drawn
        per message.  ``remove_rule(returned)`` takes it away again.
        """
        if isinstance(delay, (int, float)):
            delay = Delay.constant(float(delay))
        made = MessageRule(
            types=types, src=src, dst=dst, loss=loss, duplicate=duplicate, delay=delay
        )
        return self.add_rule(made)

    def add_rule(self, rule: MessageRule) -> MessageRule:
        unknown = set(rule.src + rule.dst) - set(self.nodes)
        if unknown:
            raise ValueError(f"unknown nodes in message rule: {sorted(unknown)}")
        sampler = None if rule.delay is None else delay_sampler(rule.delay, self.rng)
        compiled = (rule, frozenset(rule.types), frozenset(rule.src), frozenset(rule.dst), sampler)
        self._rules.append(compiled)
        self._update_clean()
        return rule

    def remove_rule(self, rule: MessageRule) -> None:
        """Take away one rule added before (the first equal one)."""
        for i, compiled in enumerate(self._rules):
            if compiled[0] == rule:
                del self._rules[i]
                self._update_clean()
                return
        raise ValueError(f"no such rule: {rule!r}")

    def clear_rules(self) -> None:
        self._rules.clear()
        self._update_clean()

    @property
    def rules(self) -> tuple[MessageRule, ...]:
        """The message rules in force, in the order they were added."""
        return tuple(compiled[0] for compiled in self._rules)

    def _matching(self, src: int, dst: int, message: Any) -> list[_Compiled]:
        name = type(message).__name__
        found = []
        for c in self._rules:
            _, types, srcs, dsts, _ = c
            if (not types or name in types) and (not srcs or src in srcs):
                if not dsts or dst in dsts:
                    found.append(c)
        return found

    # -- per message --------------------------------------------------------------

    def transit(self, src: int, dst: int, message: Any = None) -> list[float]:
        """Delays of the copies of one message from ``src`` to ``dst`` that arrive,
        each drawn on its own (no FIFO; see ``arrivals``).

        ``message`` is needed only for message rules (matched by type)."""
        return [total for _, total in self._copies(src, dst, message)]

    def arrivals(self, src: int, dst: int, message: Any, now: float) -> list[float]:
        """Arrival times of the copies of a message sent from ``src`` to ``dst`` at
        ``now``, in order on a FIFO link (see the theory of operation)."""
        copies = self._copies(src, dst, message)
        if not copies:
            return []
        base, total = copies[0]
        if self.fifo:
            arrival = now + base
            row = self.link_last[src]
            if arrival < row[dst]:
                arrival = row[dst]
            row[dst] = arrival
            times = [arrival + (total - base) if total != base else arrival]
        else:
            times = [now + total]
        for _, total in copies[1:]:
            times.append(now + total)
        return times

    def _copies(self, src: int, dst: int, message: Any) -> list[tuple[float, float]]:
        # (drawn link delay, total delay with what faults add) of each copy that arrives.
        if (src, dst) in self.blocked:
            self.dropped += 1
            return []
        if self.clean:
            delay = self._sample(src, dst)
            return [(delay, delay)]  # the common case: a healthy link
        rand = self.rng.random
        # Without rules, the draws below are exactly those of a network without them.
        matched = self._matching(src, dst, message) if self._rules else ()
        if self.loss and rand() < self.loss:
            self.dropped += 1
            return []
        for rule in matched:
            loss = rule[0].loss
            if loss and rand() < loss:
                self.dropped += 1
                return []
        base = delay = self._sample(src, dst)
        for rule in matched:
            if rule[4] is not None:
                delay += rule[4](src, dst)
        if self.reorder and rand() < self.reorder:
            delay += self.reorder_delay * rand()
        twice = bool(self.duplicate) and rand() < self.duplicate
        for rule in matched:
            if twice:
                break
            duplicate = rule[0].duplicate
            twice = bool(duplicate) and rand() < duplicate
        if twice:
            self.duplicated += 1
            again_base = again = self._sample(src, dst)
            for rule in matched:
                if rule[4] is not None:
                    again += rule[4](src, dst)
            if self.reorder and rand() < self.reorder:
                again += self.reorder_delay * rand()
            return [(base, delay), (again_base, again)]
        return [(base, delay)]


_Compiled = tuple[
    MessageRule, frozenset[str], frozenset[int], frozenset[int], Callable[[int, int], float] | None
]
