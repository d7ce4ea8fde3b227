"""Raft's election study (the Raft paper, section 9.3 and figure 16), in simulation.

Theory of operation
-------------------
The paper measured how long a five-server cluster takes to detect and
replace a crashed leader, for several ranges of randomized election
timeouts, on a cluster whose *broadcast time* (send an RPC to every server
and hear back, including the disk write a vote or an entry needs before
its answer) was about 15 ms.  Each trial, as the paper describes it:

* the servers' logs have different lengths, so some candidates cannot win;
* right before the crash the leader broadcasts (the paper: a synchronous
  heartbeat, "which approximates the behavior of the leader replicating a
  new log entry prior to crashing"), so every follower's timer starts
  together, the worst case for split votes;
* the leader is crashed at a uniformly random point of its heartbeat
  interval, which is half the minimum election timeout;
* the downtime is the time from the crash until a new leader is elected.

Here, one trial is one seeded simulation (``trial``): five Raft nodes
without PreVote or CheckQuorum (the paper's Raft had neither), one-way
delays uniform in ``delay`` and a disk write of ``fsync`` seconds (costs
on: a node persists its term and vote, or an entry, before it answers), by
default 5 ms +- 1 ms each way and 5 ms on disk: a broadcast time of
2 x 5 + 5 = 15 ms.  An election round costs two disk writes (the
candidate's own vote, then the voter's) and a round trip, 20 ms here; the
paper's 12-24 ms timeouts elected leaders in 35 ms on average, so its disk
write cannot have been much longer (with 10 ms, no 12-24 ms candidate ever
hears back in time).  After a leader is elected, it takes a write whose
entries reach only two of its four followers (the other two stay one entry
behind: they cannot win against the first two, and the leader's entries
never reach them, though its heartbeats do), and it is crashed a random
time within its heartbeat interval after its next heartbeat broadcast.
A trial whose timeouts are too short to elect a first leader, or to keep
it in office until the crash, reports ``staged`` false and no downtime.

``election_study(ranges, trials, seed)`` runs ``trials`` trials per range
and returns one row per trial; ``summarize`` adds the paper's figures
beside the medians.  Trials are independent: ``jobs`` spreads them over
worker processes (``bench.parallel``) with the same rows as a serial run.

The paper states only some of its figure's numbers in its text
(``PAPER``): the median of 150-155 ms, the worst case of 150-200 ms, the
mean and worst case of 12-24 ms, and that 150-150 ms took more than 10 s.
"150-150" is a fixed timeout (Raft accepts ``election_timeout_min ==
election_timeout_max``).

The downtime is the issue's definition: from the crash until every other
server has received the new leader's first heartbeat (read from the
message trace, ``consensus.sim.trace``); ``elected_ms`` is the time until
the new leader is elected, a network delay or so earlier.

``protocol = "multipaxos"`` runs the same crash on Multi-Paxos (no logs of
different lengths: any node can lead, phase 1 recovers what is chosen),
timed until the others receive the new leader's first ``Heartbeat`` or
``Accept``; ``options`` pass its PreVote-like guard through
(``{"disruption_guard": True}``, where its options have it).
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs
import pandas as pd

from consensus.commands import Put
from consensus.config import ClientConfig, ClusterConfig, CostConfig, Delay, NetworkConfig
from consensus.sim.simulator import Simulator
from protocols.raft.messages import AppendEntries, RequestVote

__all__ = [
    "GUARD_OPTION",
    "HEARTBEATS",
    "PAPER",
    "RANGES",
    "election_study",
    "summarize",
    "trial",
    "trial_trace",
]

#: The paper's election-timeout ranges (ms): figure 16, top then bottom graph.
RANGES = (
    "150-150",
    "150-151",
    "150-155",
    "150-175",
    "150-200",
    "150-300",
    "12-24",
    "25-50",
    "50-100",
    "100-200",
)

#: What the paper's text states about figure 16 (milliseconds).
PAPER: dict[str, dict[str, Any]] = {
    "150-150": {"note": "more than 10 s (many split votes)", "min_ms": 10_000.0},
    "150-155": {"median_ms": 287.0},
    "150-200": {"max_ms": 513.0},
    "12-24": {"mean_ms": 35.0, "max_ms": 152.0},
}


def _range_ms(name: str) -> tuple[float, float]:
    low, high = (float(x) for x in name.split("-"))
    if high < low:
        raise ValueError(f"election timeout range {name!r}: the maximum is below the minimum")
    return low, high


#: The messages by which a new leader announces itself (its "heartbeat"), per protocol.
HEARTBEATS = {"raft": ("AppendEntries",), "multipaxos": ("Heartbeat", "Accept")}

#: Multi-Paxos's PreVote-like guard, once its options have it (passed through as given).
GUARD_OPTION = "disruption_guard"


def trial(low_ms: float, high_ms: float, seed: int, **settings: Any) -> dict[str, Any]:
    """One crash of a leader (see the theory of operation): the downtime and
    the elections it took; ``settings`` as ``trial_trace``'s."""
    return _trial(low_ms, high_ms, seed, **settings)[0]


def trial_trace(
    low_ms: float, high_ms: float, seed: int, **settings: Any
) -> tuple[dict[str, Any], pd.DataFrame]:
    """One trial's row (``trial``) and its message trace (``consensus.sim.trace``),
    to draw what happened after the crash (``crash_at``, virtual seconds)
    with ``bench.plots.space_time``."""
    row, sim = _trial(low_ms, high_ms, seed, **settings)
    return row, sim.trace()


def _trial(
    low_ms: float,
    high_ms: float,
    seed: int,
    *,
    protocol: str = "raft",
    options: dict[str, Any] | None = None,
    delay: tuple[float, float] = (0.004, 0.006),
    fsync: float = 0.005,
    nodes: int = 5,
    limit: float = 10.0,
    candidate_write: bool = True,
) -> tuple[dict[str, Any], Simulator]:
    """``trial``'s row and its simulator.  ``limit``: virtual seconds to wait for a leader.
    ``options``: more protocol options (Multi-Paxos: ``disruption_guard``).
    ``candidate_write`` False (Raft): a candidate sends its ``RequestVote``
    before its own vote is on disk, so an election round pays the voters'
    disk write only (a measurement of what the candidate's write costs)."""
    low, high = low_ms / 1000, high_ms / 1000
    heartbeat = low / 2
    settings = {
        "election_timeout_min": low,
        "election_timeout_max": high,
        "heartbeat_interval": heartbeat,
        "check_quorum": False,
    }
    if protocol == "raft":
        settings["prevote"] = False
    config = ClusterConfig(
        protocol=protocol,
        nodes=nodes,
        seed=seed,
        options={**settings, **(options or {})},
        network=NetworkConfig(delay=Delay.uniform(*delay)),
        costs=CostConfig(fsync=fsync),
        client=ClientConfig(timeout=limit),
    )
    sim = Simulator(config, record_applied=False, trace=True)
    rng = random.Random(f"{seed}:election-study")
    # The first election: start the nodes a quarter of a timeout apart, so that one
    # wins even without randomness (five timers that fire together split forever).
    for node in sim.node_ids[1:]:
        sim.crash(node)
        sim.at(node * low / 4, sim.restart, node)
    has_leader = sim.run_until(lambda: bool(sim.leaders()), timeout=limit)
    if has_leader:
        sim.run_for(2 * high)  # settle: every node has heard the leader
        has_leader = sim.run_until(lambda: bool(sim.leaders()), timeout=limit)
    if not has_leader:
        return _unmeasured(sim), sim  # timeouts too short for the broadcast time
    leader = sim.leaders()[0]
    followers = [n for n in sim.node_ids if n != leader]
    behind: set[int] = set()
    if protocol == "raft":
        # Logs of different lengths: the leader's entries never reach two followers
        # (they cannot win), its heartbeats reach everyone (stripped of entries).
        behind = set(rng.sample(followers, len(followers) // 2))
        host = sim.host(leader)
        send = host._send

        def leader_send(dst: int, message: Any) -> None:
            if type(message) is AppendEntries and dst in behind and message.entries:
                # Its heartbeats carry the entries the node lacks: deliver them
                # without (a heartbeat still restarts the node's election timer).
                message = attrs.evolve(message, entries=())
            send(dst, message)

        host._send = leader_send
    rows = sim._tracer.rows  # type: ignore[union-attr]
    types = HEARTBEATS.get(protocol, ())
    op = sim.submit(Put(key="k", value=str(seed)), node=leader)
    sim.run_until(lambda: op.done, timeout=limit)
    # The next broadcast of the leader (a heartbeat or entries) to its last follower,
    # looked for in the rows added since the last look (a cursor: not quadratic).
    cursor = [len(rows)]
    found: list[float] = []

    def broadcast() -> float | None:
        while not found and cursor[0] < len(rows):
            row = rows[cursor[0]]
            cursor[0] += 1
            if row[0] == "message" and row[3] == leader and row[4] == followers[-1]:
                if row[6] in types:
                    found.append(float(row[1]))
        return found[0] if found else None

    sim.run_until(lambda: broadcast() is not None, timeout=limit)
    sent = broadcast()
    if not op.ok or sim.leaders() != [leader] or sent is None:
        # Timeouts too short for the broadcast time: the leader lost its office
        # before the crash could be staged.
        return _unmeasured(sim), sim
    if not candidate_write:
        for node in followers:
            _ask_before_writing(sim.replica(node))
    # Crashed at a random point of its heartbeat interval after that broadcast.
    sim.run_until_time(sent + rng.uniform(0.0, heartbeat))
    crashed = sim.now
    before = sum(sim.protocol_counters(n)["elections_started"] for n in sim.node_ids)
    sim.crash(leader)
    elected = sim.run_until(lambda: bool(sim.leaders()), timeout=limit)
    elected_at = sim.now
    after = sum(sim.protocol_counters(n)["elections_started"] for n in sim.node_ids)
    new = sim.leaders()
    heard = math.inf
    if elected:
        # Until every other server has the new leader's first heartbeat.
        sim.run_for(2 * delay[1] + fsync + heartbeat)
        heard = _first_heard(rows, new[0], followers, elected_at, types)
    row = {
        "staged": True,
        "crash_at": crashed,
        "elected": elected,
        "downtime_ms": (heard - crashed) * 1000 if elected else math.inf,
        "elected_ms": (elected_at - crashed) * 1000 if elected else math.inf,
        "elections": after - before,
        "new_leader": new[0] if new else -1,
        "new_leader_was_behind": bool(new) and new[0] in behind,
    }
    return row, sim


def _first_heard(
    rows: list[list[Any]], leader: int, others: list[int], since: float, types: tuple[str, ...]
) -> float:
    # The time the last of ``others`` received the new leader's first heartbeat.
    first: dict[int, float] = {}
    for row in rows:
        if row[0] != "message" or row[3] != leader or row[1] < since or row[6] not in types:
            continue
        dst, arrival = row[4], row[2]
        if dst in others and dst != leader and not math.isnan(arrival):
            first[dst] = min(first.get(dst, math.inf), arrival)
    waiting = [n for n in others if n != leader]
    if not waiting or any(n not in first for n in waiting):
        return math.inf
    return max(first[n] for n in waiting)


def _ask_before_writing(replica: Any) -> None:
    # A measurement only: a candidate's RequestVote leaves before its own vote is
    # durable (Outputs.eager), so a round pays the voters' disk write only.
    tick = replica.tick

    def eager_tick(now: float) -> Any:
        out = tick(now)
        votes = [(d, m) for d, m in out.messages if type(m) is RequestVote]
        if votes and out.persist:
            out.messages = [(d, m) for d, m in out.messages if type(m) is not RequestVote]
            for dst, message in votes:
                out.send_eager(dst, message)
        return out

    replica.tick = eager_tick


def _unmeasured(sim: Simulator) -> dict[str, Any]:
    # A trial that could not stage the crash of a leader in office.
    return {
        "staged": False,
        "crash_at": math.nan,
        "elected": False,
        "downtime_ms": math.nan,
        "elected_ms": math.nan,
        "elections": sum(sim.protocol_counters(n)["elections_started"] for n in sim.node_ids),
        "new_leader": -1,
        "new_leader_was_behind": False,
    }


def election_study(
    ranges: tuple[str, ...] | list[str] = RANGES,
    trials: int = 100,
    seed: int = 1,
    *,
    delay: tuple[float, float] = (0.004, 0.006),
    fsync: float = 0.005,
    nodes: int = 5,
    limit: float = 10.0,
    jobs: int = 1,
    protocol: str = "raft",
    options: dict[str, Any] | None = None,
    candidate_write: bool = True,
) -> pd.DataFrame:
    """``trials`` leader crashes per election-timeout range ("150-300": ms);
    one row per trial: protocol, range, low_ms, high_ms, trial, seed, staged
    (a leader in office was crashed), elected (a new one within ``limit``
    virtual seconds), downtime_ms (from the crash until every other server
    has received the new leader's first heartbeat; inf if no leader, NaN if
    not staged), elected_ms (until a new leader is elected), elections,
    new_leader, new_leader_was_behind, and the settings (delay_ms, fsync_ms,
    candidate_write, options).  ``protocol``: ``"raft"`` or
    ``"multipaxos"``; ``options`` are passed through to it (for example
    ``{"disruption_guard": True}``); ``candidate_write``: see ``trial``."""
    calls = []
    labels = []
    for r, name in enumerate(ranges):
        low, high = _range_ms(name)
        for t in range(trials):
            trial_seed = seed * 1_000_003 + r * 10_007 + t
            settings = dict(
                delay=delay,
                fsync=fsync,
                nodes=nodes,
                limit=limit,
                protocol=protocol,
                options=options,
                candidate_write=candidate_write,
            )
            calls.append(((low, high, trial_seed), settings))
            labels.append((name, low, high, t, trial_seed))
    if jobs == 1:
        results = [trial(*args, **kwargs) for args, kwargs in calls]
    else:
        from bench.parallel import map_in_processes, resolve_jobs

        results = list(map_in_processes(trial, calls, resolve_jobs(jobs)))
    rows = [
        {
            "protocol": protocol,
            "range": name,
            "low_ms": low,
            "high_ms": high,
            "trial": t,
            "seed": trial_seed,
            **result,
            "delay_ms": 1000 * (delay[0] + delay[1]) / 2,
            "fsync_ms": 1000 * fsync,
            "candidate_write": candidate_write,
            "options": ", ".join(f"{k}={v}" for k, v in sorted((options or {}).items())),
        }
        for (name, low, high, t, trial_seed), result in zip(labels, results, strict=True)
    ]
    return pd.DataFrame(rows)


def summarize(study: pd.DataFrame) -> pd.DataFrame:
    """Per range: trials, the share elected within the limit, median, mean and
    worst downtime (ms; inf when a trial elected nobody), mean elections, and
    beside them what the paper states (``PAPER``; NaN where it is silent)."""
    rows = []
    for name, all_trials in study.groupby("range", sort=False):
        elected_ms = (
            all_trials[all_trials["staged"]]["elected_ms"] if "elected_ms" in all_trials else None
        )
        group = all_trials[all_trials["staged"]]
        downtime = group["downtime_ms"]
        paper = PAPER.get(str(name), {})
        rows.append(
            {
                "range": name,
                "trials": len(group),
                "unstaged": len(all_trials) - len(group),
                "elected": group["elected"].mean(),
                "median_ms": downtime.median(),
                "mean_ms": downtime.mean(),
                "max_ms": downtime.max(),
                "elected_median_ms": math.nan if elected_ms is None else elected_ms.median(),
                "elections": group["elections"].mean(),
                "paper_median_ms": paper.get("median_ms", math.nan),
                "paper_mean_ms": paper.get("mean_ms", math.nan),
                "paper_max_ms": paper.get("max_ms", math.nan),
                "paper_note": paper.get("note", ""),
            }
        )
    return pd.DataFrame(rows)
