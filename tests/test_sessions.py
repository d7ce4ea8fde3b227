"""Client sessions through the host and the simulator: expiry and membership retries.

The state machine's rules are in ``test_statemachine.py``; here: a cluster
configured with ``max_sessions``/``session_ttl`` expires the same sessions
on every node, answers a request of an expired session with the rejection
``session_expired`` (a simulated client records it as unknown, never
retries it into a second execution), keeps working with packed proposals,
and a client that retries an old ``ChangeMembership`` after a later change
never brings the old membership back (Raft and Multi-Paxos).
"""

from __future__ import annotations

from typing import Any

import pytest
from core_helpers import lone_host

from consensus.checker.history import INFO
from consensus.commands import Append, ChangeMembership, Get, Put, Request
from consensus.config import ClusterConfig, ConfigError, Delay, NetworkConfig
from consensus.host import ClientReply
from consensus.sim.simulator import Simulator
from consensus.statemachine import KVStore

pytestmark = pytest.mark.filterwarnings("error")


def cluster(protocol: str = "raft", **kw: Any) -> Simulator:
    kw.setdefault("network", NetworkConfig(delay=Delay.uniform(0.001, 0.003)))
    return Simulator(ClusterConfig(protocol=protocol, nodes=3, seed=5, **kw))


def test_session_limits_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_sessions"):
        ClusterConfig(max_sessions=-1)


@pytest.mark.parametrize("protocol", ["raft", "multipaxos", "paxos"])
def test_a_request_of_an_expired_session_is_answered_session_expired(protocol: str) -> None:
    sim = cluster(protocol, max_sessions=2)
    old = sim.client()
    first = old.submit(Put(key="a", value="1"))
    assert sim.run_until(lambda: first.done, timeout=5) and first.ok
    for _ in range(2):  # two newer sessions push the old one out
        op = sim.submit(Put(key="b", value="2"))
        assert sim.run_until(lambda op=op: op.done, timeout=5) and op.ok
    again = old.submit(Append(key="a", value="x"))
    assert sim.run_until(lambda: again.done, timeout=5)
    assert again.status == INFO and again.retries == 0
    assert sim.run_until(lambda: all(sim.host(n).sm.applied_index > 3 for n in range(3)), 5)
    for n in range(3):  # every node expired it at the same index, nobody executed it
        store = sim.host(n).sm
        assert isinstance(store, KVStore)
        assert store.data["a"] == "1" and old.client_id not in store.sessions


def test_the_host_answers_session_expired_inside_a_pack() -> None:
    replies: list[tuple[Any, ClientReply]] = []
    host = lone_host(
        replies=replies, seed=1, pack_proposals=8, state_machine=KVStore(max_sessions=1)
    )
    host.start(0.0)
    items = [(Request(client_id=c, seq=1, command=Put(key="k", value=str(c))), c) for c in (1, 2)]
    host.handle(0.0, host.accept_many(0.0, items))
    late = (Request(client_id=1, seq=2, command=Get(key="k")), "late")
    fresh = (Request(client_id=3, seq=1, command=Append(key="k", value="!")), "fresh")
    host.handle(0.1, host.accept_many(0.1, [late, fresh]))
    answers = {waiter: (r.ok, r.reason) for waiter, r in replies}
    assert answers == {
        1: (True, ""),
        2: (True, ""),
        "late": (False, "session_expired"),
        "fresh": (True, ""),
    }


@pytest.mark.parametrize("protocol", ["raft", "multipaxos"])
def test_a_retried_old_membership_change_never_undoes_a_later_one(protocol: str) -> None:
    network = NetworkConfig(delay=Delay.uniform(0.001, 0.003))
    config = ClusterConfig(protocol=protocol, nodes=5, members=(0, 1, 2), seed=3, network=network)
    sim = Simulator(config)
    assert sim.run_until(lambda: len(sim.leaders()) == 1, timeout=5)
    first = sim.submit(ChangeMembership(members=(0, 1, 2, 3, 4)))
    assert sim.run_until(lambda: first.done, timeout=5) and first.ok
    later = sim.submit(ChangeMembership(members=(1, 2, 3)))
    assert sim.run_until(lambda: later.done, timeout=5) and later.ok
    sim.run_for(0.5)
    (leader,) = sim.leaders()
    replies: list[ClientReply] = []
    retry = Request(client_id=first.client, seq=first.seq, command=first.command)
    sim.propose(leader, retry, on_reply=replies.append)
    sim.run_for(1.0)
    assert [(r.ok, r.result) for r in replies] == [(True, (0, 1, 2, 3, 4))]  # its old answer
    (leader,) = sim.leaders()
    assert sim.replica(leader).status()["members"] == [1, 2, 3]
