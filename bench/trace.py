"""Message traces: one command traced under any protocol, and the ShiViz export.

Theory of operation
-------------------
A trace is the DataFrame ``Simulator(..., trace=True).trace()`` returns
(``Results.trace`` for a run with ``trace = true``; its columns and the
rule that names the client operations a message serves are in
``consensus.sim.trace``).  This module reads traces; it never changes how
they are recorded.

``one_command(protocol)`` shows a protocol's message pattern with nothing
else going on: a cluster at a constant one-way delay ``d`` (costs off by
default), its background traffic (heartbeats, Paxos's ``Done`` gossip) set
far apart, a leader elected if the protocol has one, then one client
command at the leader (any node for leaderless protocols) once the network
is quiet.  Its ``messages`` are exactly what that command made happen.
The expected patterns (``EXPECTED``), at delay ``d``:

* Raft (figure 2): ``AppendEntries`` from the leader to each follower,
  ``AppendEntriesResponse`` back; the leader commits and answers at 2d.
* Multi-Paxos with a stable leader: phase 2 only, ``Accept`` to each
  acceptor and ``Accepted`` back: 2d.
* Paxos (one single-decree instance, no leader): ``Prepare`` / ``Promise``
  then ``Accept`` / ``Accepted`` (two round trips: 4d), then ``Decided``
  to every learner, which tells the others after the answer.

``to_shiviz(trace, path)`` writes the trace in ShiViz's log format (with
vector clocks computed from the sends and receives), to be viewed at
https://bestchai.bitbucket.io/shiviz/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import pandas as pd

from consensus.checker.history import Operation
from consensus.commands import Put
from consensus.config import ClientConfig, ClusterConfig, CostConfig, Delay, NetworkConfig
from consensus.sim.simulator import Simulator

__all__ = [
    "EXPECTED",
    "SHIVIZ_DELIMITER",
    "SHIVIZ_REGEX",
    "CommandTrace",
    "one_command",
    "to_shiviz",
]

#: ShiViz's parser regular expression for what ``to_shiviz`` writes (its default).
SHIVIZ_REGEX = r"(?<event>.*)\n(?<host>\S*) (?<clock>{.*})"
#: The line between executions (one per protocol) of a several-protocol trace.
SHIVIZ_DELIMITER = r"=== (?<trace>.*) ==="

#: Each protocol's messages for one command, as (type, from, to) where
#: "L" is the node the client asked and "F" each other node, and when the
#: client hears back, in one-way delays.
EXPECTED: dict[str, dict[str, Any]] = {
    "raft": {
        "messages": [("AppendEntries", "L", "F"), ("AppendEntriesResponse", "F", "L")],
        "commit_delays": 2,
    },
    "multipaxos": {
        "messages": [("Accept", "L", "F"), ("Accepted", "F", "L")],
        "commit_delays": 2,
    },
    "paxos": {
        "messages": [
            ("Prepare", "L", "F"),
            ("Promise", "F", "L"),
            ("Accept", "L", "F"),
            ("Accepted", "F", "L"),
            ("Decided", "L", "F"),
        ],
        "commit_delays": 4,
    },
}

# Background traffic far apart, so one command's messages stand alone: heartbeat
# every 1 s, elections only after 3-6 s of silence (names per protocol's options).
_QUIET: dict[str, dict[str, Any]] = {
    "raft": {"heartbeat_interval": 1.0, "election_timeout_min": 3.0, "election_timeout_max": 6.0},
    "multipaxos": {
        "heartbeat_interval": 1.0,
        "election_timeout_min": 3.0,
        "election_timeout_max": 6.0,
    },
    "paxos": {"done_gossip_interval": 5.0, "done_refresh_interval": 10.0},
}


@attrs.frozen(kw_only=True)
class CommandTrace:
    """One command's trace (``one_command``)."""

    #: The whole trace of the run (election included).
    trace: pd.DataFrame
    #: The rows from the command's invocation until its last message arrived.
    window: pd.DataFrame
    #: The client operation (invoke and complete times, status).
    op: Operation
    #: The node the client asked (the leader, for protocols with one).
    node: int
    delay: float
    sim: Simulator

    @property
    def messages(self) -> pd.DataFrame:
        """The window's messages only."""
        return self.window[self.window["kind"] == "message"].reset_index(drop=True)

    @property
    def start(self) -> float:
        return float(self.op.invoke)

    @property
    def end(self) -> float:
        """The last arrival of the window's messages (or the completion)."""
        arrivals = self.messages["arrival"].dropna()
        complete = float(self.op.complete or self.op.invoke)
        return max([complete, *arrivals.tolist()])


def one_command(
    protocol: str,
    *,
    delay: float = 0.01,
    nodes: int = 3,
    seed: int = 1,
    options: dict[str, Any] | None = None,
    costs: CostConfig | None = None,
    wire: str = "objects",
    network: NetworkConfig | None = None,
    node: int | None = None,
) -> CommandTrace:
    """Trace one client command under ``protocol`` at constant one-way ``delay``
    (see the theory of operation); ``options`` are added to the quiet ones.
    ``network`` replaces the constant delay (a WAN's delay matrix, say);
    ``node``: the node the client asks when the protocol has no leader
    (default 0)."""
    config = ClusterConfig(
        protocol=protocol,
        nodes=nodes,
        seed=seed,
        options={**_QUIET.get(protocol, {}), **(options or {})},
        network=network or NetworkConfig(delay=Delay.constant(delay)),
        costs=costs or CostConfig(),
        wire=wire,
        client=ClientConfig(timeout=10.0),  # one command: no retry muddles the picture
    )
    sim = Simulator(config, trace=True)
    if sim.spec.name in ("paxos",):
        sim.run_for(0.5)
        node = 0 if node is None else node
    else:
        sim.run_until(lambda: len(sim.leaders()) == 1, timeout=30.0)
        sim.run_for(0.2)  # the new leader's first round settles
        node = sim.leaders()[0]
    # Submit just after the latest message arrived: nothing else is in flight.
    busy = sim.trace()
    last = busy["arrival"].max()
    if isinstance(last, float) and not math.isnan(last) and last > sim.now:
        sim.run_until_time(last)
    sim.run_for(delay / 2)
    op = sim.submit(Put(key="x", value="1"), node=node)
    sim.run_until(lambda: op.done, timeout=10.0)
    sim.run_for(4 * delay)  # what follows the answer (Paxos's Decided, commit notices)
    trace = sim.trace()
    # The window: from the invocation until the answer, and the arrivals of what
    # was sent by then (a commit notice sent after the answer is the next round's).
    complete = op.complete if op.complete is not None else sim.now
    window = trace[(trace["time"] >= op.invoke) & (trace["time"] <= complete + 1e-12)]
    return CommandTrace(
        trace=trace,
        window=window.reset_index(drop=True),
        op=op,
        node=node,
        delay=delay,
        sim=sim,
    )


def _host(node: int) -> str:
    return f"node{node}"


def to_shiviz(trace: pd.DataFrame, path: str | Path, *, protocol: str | None = None) -> Path:
    """Write ``trace`` as a ShiViz log (https://bestchai.bitbucket.io/shiviz/).

    The file starts with ShiViz's parser regular expression (``SHIVIZ_REGEX``)
    and its multiple-executions delimiter line, then two lines per event: its
    description, then ``nodeN {"nodeN": k, ...}``, the node's vector clock.
    A send and its receive are two events (the receive merges the sender's
    clock); a dropped message is its send alone, named ``(dropped: why)``;
    client invocations and completions, role changes, crashes and restarts
    are local events.  A ``Results.trace`` of several protocols is written
    as one execution per protocol, each after a line ``=== protocol ===``
    (ShiViz shows them side by side); ``protocol`` picks one.  Open the page,
    choose "Try out ShiViz", and upload the file.
    """
    rows = trace
    sections: list[tuple[str, pd.DataFrame]] = [("", rows)]
    if "protocol" in rows.columns:
        if protocol is not None:
            rows = rows[rows["protocol"] == protocol]
            sections = [("", rows)]
        else:
            names = list(dict.fromkeys(rows["protocol"]))
            if len(names) > 1:
                sections = [(name, rows[rows["protocol"] == name]) for name in names]
    several = len(sections) > 1
    lines = [SHIVIZ_REGEX, SHIVIZ_DELIMITER if several else ""]
    for name, part in sections:
        if several:
            lines.append(f"=== {name} ===")
        lines.extend(_shiviz_events(part))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def _shiviz_events(rows: pd.DataFrame) -> list[str]:
    # (time, order, row key, node, description, key of the send it receives): a
    # receive sorts after its send at the same time (order 1 > 0).
    events: list[tuple[float, int, int, int, str, int]] = []
    for key, row in enumerate(rows.itertuples(index=False)):
        if row.kind == "message":
            label = f"send {row.type} to {_host(row.dst)} ({row.size} B)"
            if row.ops:
                label += f" [ops {row.ops}]"
            if row.dropped:
                label += f" (dropped: {row.dropped})"
            events.append((row.time, 0, key, row.src, label, -1))
            if not row.dropped and not math.isnan(row.arrival):
                label = f"receive {row.type} from {_host(row.src)}"
                events.append((row.arrival, 1, key, row.dst, label, key))
        else:
            label = row.kind if not row.detail else f"{row.kind} {row.detail}"
            if row.ops:
                label += f" [op {row.ops}]"
            events.append((row.time, 0, key, row.node, label, -1))
    events.sort()
    clocks: dict[int, dict[str, int]] = {}
    sent: dict[int, dict[str, int]] = {}
    lines = []
    for time, _, key, node, label, send_key in events:
        clock = clocks.setdefault(node, {})
        if send_key >= 0:
            for host, tick in sent.pop(send_key, {}).items():
                if tick > clock.get(host, 0):
                    clock[host] = tick
        host = _host(node)
        clock[host] = clock.get(host, 0) + 1
        if send_key < 0 and label.startswith("send "):
            sent[key] = dict(clock)
        lines.append(f"{label} at {time * 1000:.3f} ms")
        lines.append(f"{host} {json.dumps(clock, sort_keys=True)}")
    return lines
