"""Helpers shared by the Raft suites on reads, leadership transfer and learners.

``make`` builds one sans-I/O replica over nodes ``0..n-1`` (options by
keyword), ``elect`` drives it to leadership with every peer's vote, ``ack``
and ``append`` write the messages a test hands it; ``cluster`` builds a
simulated Raft cluster on constant 1 ms links, ``elect_sim`` runs it until
one leader.
"""

from __future__ import annotations

from typing import Any

from core_helpers import build

from consensus.commands import Get, Noop, Put, Request
from consensus.config import ClusterConfig, Delay, NetworkConfig
from consensus.replica import Outputs
from consensus.sim.simulator import Simulator
from protocols.raft import (
    PROTOCOL,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    RaftOptions,
    RaftReplica,
    RequestVoteResponse,
    Role,
)

HB = 0.05  # default heartbeat interval
ET_MIN, ET_MAX = 0.15, 0.30


def make(
    node: int = 0, n: int = 3, records: Any = (), seed: int = 0, now: float = 0.0, **opts: Any
) -> RaftReplica:
    members = tuple(opts.pop("members", range(n)))
    replica = build(PROTOCOL, node, members, RaftOptions(**opts), records, seed)
    replica.start(now)
    return replica  # type: ignore[no-any-return]


def elect(r: RaftReplica) -> tuple[float, Outputs]:
    """Drive ``r`` through PreVote and an election won with every peer's vote."""
    now = r.next_deadline()
    assert now is not None
    out = r.tick(now)
    if r.role is Role.PRECANDIDATE:
        for peer in r.peers:
            grant = RequestVoteResponse(term=r.term + 1, vote_granted=True, prevote=True)
            out.extend(r.step(now, peer, grant))
            if r.role is not Role.PRECANDIDATE:
                break
    assert r.role is Role.CANDIDATE
    for peer in r.peers:
        out.extend(r.step(now, peer, RequestVoteResponse(term=r.term, vote_granted=True)))
        if r.role is Role.LEADER:
            break
    assert r.role is Role.LEADER
    return now, out


def ack(
    r: RaftReplica, now: float, peer: int, index: int, read_round: int = 0, term: int | None = None
) -> Outputs:
    response = AppendEntriesResponse(
        term=r.term if term is None else term, success=True, index=index, read_round=read_round
    )
    return r.step(now, peer, response)


def append(
    term: int, prev: int, prev_term: int, *entry_terms: int, commit: int = 0, read_round: int = 0
) -> AppendEntries:
    entries = tuple(Entry(term=t, payload=Noop()) for t in entry_terms)
    return AppendEntries(
        term=term,
        prev_log_index=prev,
        prev_log_term=prev_term,
        entries=entries,
        leader_commit=commit,
        read_round=read_round,
    )


def getreq(seq: int, client: int = 9, key: str = "k") -> Request:
    return Request(client_id=client, seq=seq, command=Get(key=key))


def putreq(seq: int, client: int = 1, key: str = "k") -> Request:
    return Request(client_id=client, seq=seq, command=Put(key=key, value=str(seq)))


def cluster(nodes: int = 3, seed: int = 7, **kwargs: Any) -> Simulator:
    kwargs.setdefault("network", NetworkConfig(delay=Delay.constant(0.001)))
    return Simulator(ClusterConfig(protocol="raft", nodes=nodes, seed=seed, **kwargs))


def raft(sim: Simulator, node: int) -> RaftReplica:
    replica = sim.replica(node)
    inner = getattr(replica, "inner", replica)  # a DriftingReplica's replica
    assert isinstance(inner, RaftReplica)
    return inner


def elect_sim(sim: Simulator, timeout: float = 5.0) -> int:
    assert sim.run_until(lambda: len(sim.leaders()) == 1, timeout=timeout)
    (leader,) = sim.leaders()
    return leader
