"""The nemesis: seeded random fault schedules for chaos runs (``consensus.testing.chaos``).

Theory of operation
-------------------
Every ``interval`` (a random draw) the nemesis picks one fault from its menu
and applies it to the simulator; most faults schedule their own end after a
random ``duration``.  All draws come from one ``random.Random`` seeded by the
run, and the simulator is deterministic, so a schedule is replayed exactly
from its seed.

The menu:

* ``crash``: a random live node crashes, restarts later (from its storage);
* ``kill_leader``: the current leader crashes, restarts later;
* ``partition``: a random majority/minority split, healed later;
* ``bridge``: two sides that cannot talk, joined only through one node;
* ``one_way``: a few directed links cut (asymmetric partitions);
* ``isolate``: one node cut off both ways;
* ``loss``, ``duplicate``, ``reorder``: that fault's probability raised;
* ``delay_spike``: every link 10-50x slower for a while;
* ``membership`` (only for protocols with ``ProtocolSpec.membership``): a
  fresh client asks for a random voting set of at least three of all node
  ids that keeps a majority of the current members (as the leader reports
  them), so the change can complete while a minority is down; one at a time.
* ``transfer_leader`` (only for protocols whose messages include an admin
  request ``TransferLeadership(target)``, as Raft's): the leader is asked to
  hand leadership to a random other voter (up, down or cut off: a transfer
  that cannot complete is aborted).
* ``learners`` (only for protocols with an admin request
  ``ChangeLearners(learners)``): the leader is asked for a random set of
  learners among the servers that are not voters, sometimes with one voter
  demoted (when the remaining voters that are up are still a majority).

An *admin request* is a message an operator steps into a node
(``step_admin``: ``ReplicaHost.step`` with the node as its own source); the
protocol forwards it to its leader.  A protocol offers one by listing a
message class of that name among its ``ProtocolSpec.messages``
(``admin_request``).

At most a minority of nodes is down at once, so a healthy majority always
exists once the network heals.  ``stop()`` ends every fault: links healed,
network settings restored, crashed nodes restarted; then clients can finish.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

from consensus.checker.history import Operation
from consensus.commands import ChangeMembership
from consensus.config import Delay
from consensus.registry import ProtocolSpec
from consensus.sim.simulator import Simulator

__all__ = ["FAULTS", "Nemesis", "admin_request", "step_admin"]

FAULTS = (
    "crash",
    "kill_leader",
    "partition",
    "bridge",
    "one_way",
    "isolate",
    "loss",
    "duplicate",
    "reorder",
    "delay_spike",
    "membership",
    "transfer_leader",
    "learners",
)

#: Faults offered only to protocols with the admin request of that name.
_ADMIN_FAULTS = {"transfer_leader": "TransferLeadership", "learners": "ChangeLearners"}


def admin_request(spec: ProtocolSpec, name: str, **fields: Any) -> Any | None:
    """The protocol's admin request ``name`` built from ``fields`` (a message
    class of that name in ``spec.messages``), or None if it has none."""
    for cls in spec.messages:
        if cls.__name__ == name:
            return cls(**fields)
    return None


def step_admin(sim: Simulator, node: int, request: Any) -> bool:
    """Step an admin request into ``node`` as its operator would (the node is
    its own source); False if the node is down."""
    if not sim.is_up(node):
        return False
    sim.host(node).step(sim.now, node, request)
    return True


@attrs.define
class Nemesis:
    sim: Simulator
    rng: random.Random
    faults: tuple[str, ...] = FAULTS
    interval: tuple[float, float] = (0.1, 0.6)
    duration: tuple[float, float] = (0.2, 1.5)
    #: (time, fault, detail) for every fault applied and ended.
    log: list[tuple[float, str, str]] = attrs.Factory(list)
    _running: bool = False
    _baseline: dict[str, Any] = attrs.Factory(dict)
    #: The membership change under way, if any (one at a time).
    _change: Operation | None = None

    def __attrs_post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
        if not self.sim.spec.membership:
            # Offered only to protocols that handle ChangeMembership.
            self.faults = tuple(f for f in self.faults if f != "membership")
        names = {cls.__name__ for cls in self.sim.spec.messages}
        self.faults = tuple(
            f for f in self.faults if f not in _ADMIN_FAULTS or _ADMIN_FAULTS[f] in names
        )
        net = self.sim.network
        self._baseline = {
            "loss": net.loss,
            "duplicate": net.duplicate,
            "reorder": net.reorder,
            "reorder_delay": net.reorder_delay,
            "delay": net.delay,
        }

    @property
    def max_down(self) -> int:
        return (len(self.sim.node_ids) - 1) // 2

    def start(self, at: float = 0.0) -> None:
        self._running = True
        self.sim.at(at, self._next)

    def _next(self) -> None:
        if not self._running:
            return
        fault = self.rng.choice(self.faults)
        getattr(self, f"_{fault}")()
        self.sim.after(self.rng.uniform(*self.interval), self._next)

    def _note(self, fault: str, detail: str = "") -> None:
        self.log.append((self.sim.now, fault, detail))

    def _later(self, fn: Any, *args: Any) -> None:
        self.sim.after(self.rng.uniform(*self.duration), fn, *args)

    # -- node faults ------------------------------------------------------------------

    def _down(self) -> list[int]:
        return [n for n in self.sim.node_ids if not self.sim.is_up(n)]

    def _crash_node(self, node: int, fault: str) -> None:
        self.sim.crash(node)
        self._note(fault, f"node {node}")
        self._later(self._restart, node)

    def _restart(self, node: int) -> None:
        if not self.sim.is_up(node):
            self.sim.restart(node)
            self._note("restart", f"node {node}")

    def _crash(self) -> None:
        if len(self._down()) >= self.max_down:
            return
        self._crash_node(self.rng.choice(self.sim.up_nodes()), "crash")

    def _kill_leader(self) -> None:
        leaders = self.sim.leaders()
        if not leaders or len(self._down()) >= self.max_down:
            return
        self._crash_node(self.rng.choice(leaders), "kill_leader")

    # -- network faults ---------------------------------------------------------------

    def _heal(self) -> None:
        self.sim.heal()
        self._note("heal")

    def _shuffled(self) -> list[int]:
        nodes = list(self.sim.node_ids)
        self.rng.shuffle(nodes)
        return nodes

    def _partition(self) -> None:
        nodes = self._shuffled()
        minority = self.rng.randint(1, (len(nodes) - 1) // 2 or 1)
        groups = (nodes[:minority], nodes[minority:])
        self.sim.partition(*groups)
        self._note("partition", f"{sorted(groups[0])} | {sorted(groups[1])}")
        self._later(self._heal)

    def _bridge(self) -> None:
        nodes = self._shuffled()
        if len(nodes) < 3:
            return
        bridge, rest = nodes[0], nodes[1:]
        half = len(rest) // 2
        left, right = rest[:half], rest[half:]
        self.sim.heal()
        for a in left:
            for b in right:
                self.sim.cut(a, b)
                self.sim.cut(b, a)
        self._note("bridge", f"{sorted(left)} - {bridge} - {sorted(right)}")
        self._later(self._heal)

    def _one_way(self) -> None:
        nodes = list(self.sim.node_ids)
        cuts = []
        for _ in range(self.rng.randint(1, len(nodes))):
            a, b = self.rng.sample(nodes, 2)
            self.sim.cut(a, b)
            cuts.append(f"{a}->{b}")
        self._note("one_way", ", ".join(cuts))
        self._later(self._heal)

    def _isolate(self) -> None:
        node = self.rng.choice(self.sim.node_ids)
        self.sim.isolate(node)
        self._note("isolate", f"node {node}")
        self._later(self._heal)

    def _set(self, name: str, value: Any, fault: str, detail: str = "") -> None:
        setattr(self.sim.network, name, value)
        self._note(fault, detail or f"{name}={value}")
        self._later(self._restore, name)

    def _restore(self, name: str) -> None:
        setattr(self.sim.network, name, self._baseline[name])
        self._note("restore", name)

    def _loss(self) -> None:
        self._set("loss", round(self.rng.uniform(0.05, 0.4), 3), "loss")

    def _duplicate(self) -> None:
        self._set("duplicate", round(self.rng.uniform(0.05, 0.4), 3), "duplicate")

    def _reorder(self) -> None:
        self.sim.network.reorder_delay = max(self._baseline["reorder_delay"], 0.02)
        self._set("reorder", round(self.rng.uniform(0.1, 0.5), 3), "reorder")

    def _delay_spike(self) -> None:
        base = self._baseline["delay"].mean_delay(len(self.sim.node_ids))
        factor = self.rng.uniform(10, 50)
        low, high = base * factor / 2, base * factor
        self._set(
            "delay",
            Delay.uniform(low, high),
            "delay_spike",
            f"delay uniform {low * 1000:.1f}-{high * 1000:.1f} ms",
        )

    # -- membership changes -----------------------------------------------------------

    def _current_members(self) -> list[int] | None:
        for node in self.sim.leaders():
            members = self.sim.replica(node).status().get("members")
            if members:
                return sorted(members)
        return None

    def _membership(self) -> None:
        nodes = list(self.sim.node_ids)
        current = self._current_members()
        if (self._change is not None and not self._change.done) or not current or len(nodes) < 3:
            return
        keep = self.rng.sample(current, len(current) // 2 + 1)
        others = [n for n in nodes if n not in keep]
        size = self.rng.randint(max(3, len(keep)), len(nodes))
        new = tuple(sorted(keep + self.rng.sample(others, size - len(keep))))
        self._note("membership", f"{current} -> {list(new)}")
        self._change = self.sim.submit(ChangeMembership(members=new), on_done=self._membership_done)

    def _membership_done(self, op: Operation) -> None:
        self._note("membership_done", f"{op.status} {op.result}")

    def _leader_status(self) -> tuple[int, dict[str, Any]] | None:
        for node in self.sim.leaders():
            return node, self.sim.replica(node).status()
        return None

    def _transfer_leader(self) -> None:
        found = self._leader_status()
        if found is None:
            return
        leader, status = found
        voters = [n for n in status.get("members", ()) if n != leader]
        if not voters:
            return
        target = self.rng.choice(sorted(voters))
        request = admin_request(self.sim.spec, "TransferLeadership", target=target)
        step_admin(self.sim, leader, request)
        self._note("transfer_leader", f"{leader} -> {target}")

    def _learners(self) -> None:
        found = self._leader_status()
        if found is None:
            return
        leader, status = found
        voters = sorted(status.get("members", ()))
        spares = [n for n in self.sim.node_ids if n not in voters]
        wanted = [n for n in spares if self.rng.random() < 0.5]
        up = set(self.sim.up_nodes())
        demotable = [
            v
            for v in voters
            if 2 * len([n for n in voters if n != v and n in up]) > len(voters) - 1
        ]
        if len(voters) >= 3 and demotable and self.rng.random() < 0.5:
            wanted.append(self.rng.choice(demotable))
        request = admin_request(self.sim.spec, "ChangeLearners", learners=tuple(sorted(wanted)))
        step_admin(self.sim, leader, request)
        self._note("learners", f"{sorted(status.get('learners', ()))} -> {sorted(wanted)}")

    def stop(self) -> None:
        """End every fault: heal, restore the network, restart crashed nodes."""
        self._running = False
        self.sim.heal()
        for name, value in self._baseline.items():
            setattr(self.sim.network, name, value)
        for node in self._down():
            self.sim.restart(node)
        self._note("stop")
