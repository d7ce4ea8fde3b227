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
Options must have ``max > min``, so "150-150" here is 150-150.001 ms.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pandas as pd

from consensus.commands import Put
from consensus.config import ClientConfig, ClusterConfig, CostConfig, Delay, NetworkConfig
from consensus.sim.simulator import Simulator
from protocols.raft.messages import AppendEntries

__all__ = ["PAPER", "RANGES", "election_study", "summarize", "trial"]

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
    return low, max(high, low + 0.001)


def trial(
    low_ms: float,
    high_ms: float,
    seed: int,
    *,
    delay: tuple[float, float] = (0.004, 0.006),
    fsync: float = 0.005,
    nodes: int = 5,
    limit: float = 10.0,
) -> dict[str, Any]:
    """One crash of a leader (see the theory of operation): the downtime and
    the elections it took.  ``limit``: virtual seconds to wait for a leader."""
    low, high = low_ms / 1000, high_ms / 1000
    heartbeat = low / 2
    options = {
        "election_timeout_min": low,
        "election_timeout_max": high,
        "heartbeat_interval": heartbeat,
        "prevote": False,
        "check_quorum": False,
    }
    config = ClusterConfig(
        protocol="raft",
        nodes=nodes,
        seed=seed,
        options=options,
        network=NetworkConfig(delay=Delay.uniform(*delay)),
        costs=CostConfig(fsync=fsync),
        client=ClientConfig(timeout=limit),
    )
    sim = Simulator(config, record_applied=False)
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
        return _unmeasured(sim)  # timeouts too short for the broadcast time: no leader
    leader = sim.leaders()[0]
    followers = [n for n in sim.node_ids if n != leader]
    behind = set(rng.sample(followers, len(followers) // 2))
    host = sim.host(leader)
    send = host._send
    broadcasts: list[float] = []

    # The leader's entries never reach the followers left behind; its heartbeats
    # (AppendEntries without entries) reach everyone and restart their timers.
    def leader_send(dst: int, message: Any) -> None:
        if type(message) is AppendEntries:
            if dst in behind and message.entries:
                return
            if dst == followers[-1]:
                broadcasts.append(sim.now)
        send(dst, message)

    host._send = leader_send
    op = sim.submit(Put(key="k", value=str(seed)), node=leader)
    sim.run_until(lambda: op.done, timeout=limit)
    seen = len(broadcasts)
    sim.run_until(lambda: len(broadcasts) > seen, timeout=limit)
    if not op.ok or sim.leaders() != [leader]:
        # Timeouts too short for the broadcast time: the leader lost its office
        # before the crash could be staged.
        return _unmeasured(sim)
    # Crashed at a random point of its heartbeat interval after that broadcast.
    sim.run_until_time(broadcasts[-1] + rng.uniform(0.0, heartbeat))
    crashed = sim.now
    before = sum(sim.protocol_counters(n)["elections_started"] for n in sim.node_ids)
    sim.crash(leader)
    elected = sim.run_until(lambda: bool(sim.leaders()), timeout=limit)
    after = sum(sim.protocol_counters(n)["elections_started"] for n in sim.node_ids)
    new = sim.leaders()
    return {
        "staged": True,
        "elected": elected,
        "downtime_ms": (sim.now - crashed) * 1000 if elected else math.inf,
        "elections": after - before,
        "new_leader": new[0] if new else -1,
        "new_leader_was_behind": bool(new) and new[0] in behind,
    }


def _unmeasured(sim: Simulator) -> dict[str, Any]:
    # A trial that could not stage the crash of a leader in office.
    return {
        "staged": False,
        "elected": False,
        "downtime_ms": math.nan,
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
) -> pd.DataFrame:
    """``trials`` leader crashes per election-timeout range ("150-300": ms);
    one row per trial: range, low_ms, high_ms, trial, seed, staged (a leader
    in office was crashed), elected (a new one within ``limit`` virtual
    seconds), downtime_ms (inf if none, NaN if not staged), elections,
    new_leader, new_leader_was_behind, and the settings (delay_ms, fsync_ms)."""
    calls = []
    labels = []
    for r, name in enumerate(ranges):
        low, high = _range_ms(name)
        for t in range(trials):
            trial_seed = seed * 1_000_003 + r * 10_007 + t
            settings = dict(delay=delay, fsync=fsync, nodes=nodes, limit=limit)
            calls.append(((low, high, trial_seed), settings))
            labels.append((name, low, high, t, trial_seed))
    if jobs == 1:
        results = [trial(*args, **kwargs) for args, kwargs in calls]
    else:
        from bench.parallel import map_in_processes, resolve_jobs

        results = list(map_in_processes(trial, calls, resolve_jobs(jobs)))
    rows = [
        {
            "range": name,
            "low_ms": low,
            "high_ms": high,
            "trial": t,
            "seed": trial_seed,
            **result,
            "delay_ms": 1000 * (delay[0] + delay[1]) / 2,
            "fsync_ms": 1000 * fsync,
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
                "elections": group["elections"].mean(),
                "paper_median_ms": paper.get("median_ms", math.nan),
                "paper_mean_ms": paper.get("mean_ms", math.nan),
                "paper_max_ms": paper.get("max_ms", math.nan),
                "paper_note": paper.get("note", ""),
            }
        )
    return pd.DataFrame(rows)
