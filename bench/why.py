"""What consensus buys: consensus and the schemes it replaces, on one workload and faults.

Theory of operation
-------------------
Every *contender* (a protocol with options: Raft, Multi-Paxos, Paxos, and
configurations of the ``primary-backup`` and ``nwr`` baselines) runs the same
``scenario``: a 5-node simulated cluster, closed-loop clients reading,
writing and compare-and-setting keys, and four faults in turn, each aimed at
the leader (the primary; node 0 for a leaderless protocol): it crashes and
comes back; it is cut off, with one other node, from the other three; it
loses its links to two nodes but keeps the others (a partial partition);
it turns slow.  Same config, same seed: only the protocol differs.

For each, ``why_consensus`` reports availability and latency the way ``bench
run`` does (``bench.metrics``), plus two safety counts taken from the same
run:

* ``violations``: keys whose history is not linearizable
  (``consensus.checker.check``; ``linearizable`` is None when the checker
  ran out of time, which counts as unknown, not as safe);
* ``lost_writes``: acknowledged writes that no node holds once the cluster
  has settled and that no later write replaced
  (``consensus.checker.lost_writes``; a conservative count: see there).

``unavailable_s`` is the time, inside the measured window, covered by
``interval``-wide bins in which no operation completed.  ``witness`` is the
first violation's minimal sub-history, or the first lost writes.  ``safe``
is what the plugin declares (``ProtocolSpec.safe``), ``hazards`` what the
plugin says this configuration may lose (``ProtocolSpec.hazards``; empty
for consensus, and for the baselines' configurations with nothing known to
lose).

Functions return DataFrames; the notebook ``notebooks/why_consensus.ipynb``
only calls ``why_consensus`` and plots.
"""

from __future__ import annotations

from typing import Any

import attrs
import pandas as pd

from bench.config import load_run_config
from bench.metrics import collect
from bench.runner import run_one
from consensus.checker.linearizability import check, describe_operation
from consensus.checker.lost import lost_writes
from consensus.registry import get_protocol
from consensus.testing.chaos import SETTLE

__all__ = ["CONTENDERS", "Comparison", "Contender", "scenario", "why_consensus"]


@attrs.frozen(kw_only=True)
class Contender:
    """One protocol with its options, under a short label for tables and plots."""

    label: str
    protocol: str
    options: dict[str, Any] = attrs.Factory(dict)


#: Every consensus plugin, and the baselines' instructive configurations.
CONTENDERS: tuple[Contender, ...] = (
    Contender(label="raft", protocol="raft"),
    Contender(label="multipaxos", protocol="multipaxos"),
    Contender(label="paxos", protocol="paxos"),
    Contender(
        label="pb sync fenced, confirmed reads",
        protocol="primary-backup",
        options={"reads": "confirmed"},
    ),
    Contender(label="pb sync fenced (default)", protocol="primary-backup"),
    Contender(
        label="pb sync, no failover", protocol="primary-backup", options={"failover": "none"}
    ),
    Contender(
        label="pb semi-sync fenced", protocol="primary-backup", options={"mode": "semi-sync"}
    ),
    Contender(
        label="pb semi-sync unfenced",
        protocol="primary-backup",
        options={"mode": "semi-sync", "failover": "monitor"},
    ),
    Contender(label="pb async fenced", protocol="primary-backup", options={"mode": "async"}),
    Contender(
        label="pb async unfenced (Sentinel)",
        protocol="primary-backup",
        options={"mode": "async", "failover": "monitor"},
    ),
    Contender(label="nwr W2 R2 (Dynamo)", protocol="nwr"),
    Contender(label="nwr W1 R1", protocol="nwr", options={"w": 1, "r": 1}),
    Contender(
        label="nwr W2 R2 ABD",
        protocol="nwr",
        options={"clock": "version", "read_repair": "blocking"},
    ),
    Contender(
        label="nwr W2 R2 ABD sloppy",
        protocol="nwr",
        options={"clock": "version", "read_repair": "blocking", "sloppy": True},
    ),
)


def scenario(duration: float = 16.0, seed: int = 1) -> dict[str, Any]:
    """The run config every contender runs (its ``protocols`` and ``options`` aside).

    Faults, at fixed fractions of ``duration``, each lasting 3/32 of it (1.5 s
    of 16): the leader crashes and restarts (1/8); the leader and the next node
    are cut off from the other three (11/32); the leader loses its links to
    the two highest-numbered other nodes but keeps the rest, a partial
    partition (9/16); the leader turns slow, 300 ms more each way, a pause
    longer than the failure detectors' timeouts (25/32).  Clients send 80% of
    their operations to 8 hot keys, where operations conflict and a stale
    read shows; the rest go to 992 cold keys, mostly written once, where a
    lost write shows in the final state.
    """
    lasting = duration * 3 / 32

    def fault(at: float, action: str, **more: Any) -> dict[str, Any]:
        base = {"at": duration * at, "action": action, "target": "leader", "duration": lasting}
        return base | more

    return {
        "name": "why-consensus",
        "cluster": {
            "nodes": 5,
            "seed": seed,
            "network": {
                "delay": {"kind": "uniform", "low": 0.0005, "high": 0.0015},
                "client_delay": 0.0005,
            },
        },
        "workload": {
            "mode": "closed",
            "clients": 10,
            "think_time": 0.02,
            "duration": duration,
            "warmup": min(0.5, duration / 10),
            "keys": 1000,
            "distribution": "hotspot",
            "hot_keys": 0.008,
            "hot_fraction": 0.8,
            "read_fraction": 0.5,
            "cas_fraction": 0.1,
        },
        "faults": [
            fault(4 / 32, "crash"),
            fault(11 / 32, "partition", size=2),
            fault(18 / 32, "cut", size=2),
            fault(25 / 32, "slow", delay=0.3),
        ],
        "drain": 1.0,
    }


@attrs.frozen
class Comparison:
    """``why_consensus``'s tables: one row per contender, and per contender and time bin."""

    summary: pd.DataFrame
    throughput: pd.DataFrame
    faults: pd.DataFrame


def why_consensus(
    contenders: tuple[Contender, ...] = CONTENDERS,
    *,
    duration: float = 16.0,
    seed: int = 1,
    check_timeout: float = 30.0,
) -> Comparison:
    """Run every contender on ``scenario(duration, seed)`` and measure it (see above)."""
    rows, throughput, faults = [], [], []
    for contender in contenders:
        base = scenario(duration, seed)
        base.update(
            protocols=[contender.protocol], options={contender.protocol: dict(contender.options)}
        )
        config = load_run_config(base)
        sim, log, wall = run_one(config, contender.protocol)
        results = collect(config, [(contender.protocol, sim, log, wall)])
        kv = [op for op in sim.history if op.is_kv]
        verdict = check(kv, timeout=check_timeout)
        sim.run_for(SETTLE)  # let followers catch up before reading what each node holds
        states = {n: getattr(sim.host(n).sm, "data", {}) for n in sim.up_nodes()}
        lost = lost_writes(kv, states)
        summary = results.summary.iloc[0]
        bins = results.throughput
        window = bins[(bins["time"] >= config.workload.warmup) & (bins["time"] < duration)]
        if verdict.violations:
            witness = verdict.violations[0].describe()
        elif lost:
            witness = "acknowledged writes lost:\n" + "\n".join(
                "  " + describe_operation(op) for op in lost[:3]
            )
        else:
            witness = ""
        spec = get_protocol(contender.protocol)
        chosen = config.cluster_for(contender.protocol).protocol_options()
        hazards = spec.hazards(chosen) if spec.hazards is not None else ()
        rows.append(
            {
                "contender": contender.label,
                "protocol": contender.protocol,
                "options": ", ".join(f"{k}={v}" for k, v in contender.options.items()),
                "safe": spec.safe,
                "hazards": "; ".join(hazards),
                "throughput": summary["throughput"],
                "p50_ms": summary["p50_ms"],
                "p99_ms": summary["p99_ms"],
                "unavailable_s": float((window["ops"] == 0).sum() * config.interval),
                "lost_writes": len(lost),
                "violations": len(verdict.violations),
                "linearizable": verdict.ok,
                "checked": verdict.operations,
                "witness": witness,
                "seed": seed,
            }
        )
        throughput.append(bins.assign(contender=contender.label))
        faults.append(results.faults.assign(contender=contender.label))
    return Comparison(
        summary=pd.DataFrame(rows),
        throughput=pd.concat(throughput, ignore_index=True),
        faults=pd.concat(faults, ignore_index=True),
    )
