"""Fault schedules: timed crashes, restarts, partitions, as config.

Each ``Fault`` names a time ``at`` (virtual seconds) and an ``action``:

* ``crash`` a ``target`` (``"leader"``, ``"follower"`` or a node id), and
  restart it after ``duration`` seconds if ``duration > 0``;
* ``isolate`` a target (cut both ways), healed after ``duration`` if set;
* ``partition`` into ``groups`` (lists of node ids), or, with ``size``, cut
  the ``target`` and the next ``size - 1`` node ids (cyclically) off from
  the others; healed after ``duration``;
* ``cut`` a target off from the ``size`` highest-numbered other nodes, both
  ways, while it still reaches the rest (a partial partition: a flaky
  switch), healed after ``duration``;
* ``slow`` a target: every message to and from it takes ``delay`` seconds
  longer (a slow disk, an overloaded machine), until ``duration`` ends it;
* ``heal`` every link; ``restart`` a node id;
* ``membership``: change the voting members to ``members`` (a client
  submits ``ChangeMembership``; protocols with membership support only);
* ``transfer_leader``: hand leadership to ``target`` (``"follower"``: the
  first live follower, or a node id): the admin request
  ``TransferLeadership`` is stepped into the leader, as its operator would
  (``consensus.testing.nemesis.step_admin``; protocols that list that
  message, such as Raft): a planned handover, to compare with a crash;
* ``learners``: make ``learners`` the non-voting members (the admin request
  ``ChangeLearners``; a voter named there is demoted).

Targets are resolved when the fault fires (the leader *then*).  For a
leaderless protocol (single-decree Paxos) ``leader`` means the lowest-numbered
live node, so a "leader crash" still removes a node clients are using and
the comparison stays like for like.  Every fault
that fires is logged with its time and resolved node, so plots can mark it.
"""

from __future__ import annotations

from typing import Any

import attrs

from consensus.commands import ChangeMembership
from consensus.config import ConfigError, non_negative, one_of
from consensus.sim.simulator import Simulator
from consensus.testing.nemesis import admin_request, step_admin

__all__ = ["Fault", "FaultLog", "schedule_faults"]

ACTIONS = (
    "crash",
    "restart",
    "isolate",
    "partition",
    "heal",
    "membership",
    "slow",
    "cut",
    "transfer_leader",
    "learners",
)
#: The admin request each of these actions steps into the leader.
ADMIN_ACTIONS = {"transfer_leader": "TransferLeadership", "learners": "ChangeLearners"}


@attrs.frozen(kw_only=True)
class Fault:
    at: float = attrs.field(validator=non_negative)
    action: str = attrs.field(validator=one_of(*ACTIONS))
    target: str = "leader"
    duration: float = attrs.field(default=0.0, validator=non_negative)
    groups: tuple[tuple[int, ...], ...] = ()
    members: tuple[int, ...] = ()
    delay: float = attrs.field(default=0.0, validator=non_negative)
    size: int = attrs.field(default=0, validator=non_negative)
    learners: tuple[int, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.action == "cut" and not self.size:
            raise ConfigError("size: a cut needs the number of nodes to cut the target from")
        if self.action == "slow" and not self.delay:
            raise ConfigError("delay: a slow node needs a delay in seconds, e.g. 0.05")
        if self.action == "partition" and not self.groups and not self.size:
            raise ConfigError(
                "groups: a partition needs groups, e.g. [[0], [1, 2]], or a target and a size"
            )
        if self.action == "membership" and not self.members:
            raise ConfigError("members: a membership change needs members, e.g. [0, 1, 2, 3]")
        if self.action == "transfer_leader" and self.target == "leader":
            raise ConfigError(
                "target: a transfer_leader names the new leader: 'follower' or a node id"
            )
        if self.target not in ("leader", "follower") and not self.target.isdigit():
            raise ConfigError(
                f"target: must be 'leader', 'follower' or a node id, got {self.target!r}"
            )


FaultLog = list[dict[str, Any]]


def _resolve(sim: Simulator, target: str) -> int | None:
    if target.isdigit():
        return int(target)
    leaders = [n for n in sim.leaders() if sim.is_up(n)]
    if target == "leader":
        if leaders:
            return leaders[0]
        leaderless = all(sim.replica(n).leader() is None for n in sim.up_nodes())
        up = sim.up_nodes()
        return up[0] if leaderless and up else None
    followers = [n for n in sim.up_nodes() if n not in leaders]
    return followers[0] if followers else None


def schedule_faults(sim: Simulator, faults: list[Fault], log: FaultLog) -> None:
    """Arrange for every fault to fire on ``sim``; fired faults go to ``log``."""

    def record(action: str, node: int | None, **extra: Any) -> None:
        log.append({"time": sim.now, "action": action, "node": node, **extra})

    def fire(fault: Fault) -> None:
        if fault.action == "membership":
            members = tuple(fault.members)

            def done(op: Any) -> None:
                record(
                    "membership-done" if op.ok else "membership-failed",
                    None,
                    members=str(list(members)),
                )

            sim.submit(ChangeMembership(members=members), on_done=done)
            record("membership", None, members=str(list(members)))
        elif fault.action in ADMIN_ACTIONS:
            leader = _resolve(sim, "leader")
            fields: dict[str, Any] = {"learners": fault.learners}
            if fault.action == "transfer_leader":
                fields = {"target": _resolve(sim, fault.target)}
            extra = {name: str(value) for name, value in fields.items()}
            request = None
            if leader is not None and None not in fields.values():
                request = admin_request(sim.spec, ADMIN_ACTIONS[fault.action], **fields)
            if request is None:
                record(f"{fault.action}-skipped", leader, **extra)
            else:
                step_admin(sim, leader, request)
                record(fault.action, leader, **extra)
        elif fault.action == "heal":
            sim.heal()
            record("heal", None)
        elif fault.action == "partition":
            groups = [list(g) for g in fault.groups]
            if not groups:
                first = _resolve(sim, fault.target)
                if first is None:
                    record("partition-skipped", None, target=fault.target)
                    return
                ids = list(sim.node_ids)
                side = [ids[(ids.index(first) + i) % len(ids)] for i in range(fault.size)]
                groups = [sorted(side), [n for n in ids if n not in side]]
            sim.partition(*groups)
            record("partition", None, groups=str(groups))
            if fault.duration:
                sim.after(fault.duration, lambda: (sim.heal(), record("heal", None)))
        else:
            node = _resolve(sim, fault.target)
            if node is None:
                record(f"{fault.action}-skipped", None, target=fault.target)
                return
            if fault.action == "crash":
                sim.crash(node)
                record("crash", node, target=fault.target)
                if fault.duration:
                    sim.after(fault.duration, lambda: (sim.restart(node), record("restart", node)))
            elif fault.action == "restart":
                sim.restart(node)
                record("restart", node)
            elif fault.action == "cut":
                others = sorted((n for n in sim.node_ids if n != node), reverse=True)
                far = sorted(others[: fault.size])
                for other in far:
                    sim.cut(node, other)
                    sim.cut(other, node)
                record("cut", node, target=fault.target, groups=str(far))
                if fault.duration:
                    sim.after(fault.duration, lambda: (sim.heal(), record("heal", None)))
            elif fault.action == "slow":
                rules = [
                    sim.network.rule(src=node, delay=fault.delay),
                    sim.network.rule(dst=node, delay=fault.delay),
                ]
                record("slow", node, target=fault.target, delay=fault.delay)

                def fast() -> None:
                    for rule in rules:
                        sim.network.remove_rule(rule)
                    record("fast", node)

                if fault.duration:
                    sim.after(fault.duration, fast)
            elif fault.action == "isolate":
                sim.isolate(node)
                record("isolate", node, target=fault.target)
                if fault.duration:
                    sim.after(fault.duration, lambda: (sim.heal(), record("heal", None)))

    for fault in faults:
        sim.at(fault.at, fire, fault)
