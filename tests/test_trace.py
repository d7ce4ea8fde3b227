"""The message trace, one command's message pattern per protocol, the ShiViz
export and the space-time diagram."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from bench.cli import main
from bench.metrics import Results
from bench.plots import space_time
from bench.runner import run
from bench.trace import EXPECTED, SHIVIZ_DELIMITER, SHIVIZ_REGEX, one_command, to_shiviz
from consensus.commands import Put
from consensus.config import CostConfig
from consensus.sim.simulator import Simulator
from consensus.sim.trace import TRACE_COLUMNS, carried_ops

D = 0.01  # the constant one-way delay of the acceptance tests


def _pattern(ct, protocol):
    """The window's messages as (type, L/F, L/F), the client's node being L."""
    role = {ct.node: "L"}
    return [
        (row.type, role.get(row.src, "F"), role.get(row.dst, "F"))
        for row in ct.messages.itertuples(index=False)
    ]


@pytest.mark.parametrize("protocol", sorted(EXPECTED))
def test_one_command_shows_exactly_the_protocols_messages_and_its_commit_time(protocol):
    ct = one_command(protocol, delay=D, nodes=3)
    expected = EXPECTED[protocol]
    followers = 2
    want = [m for m in expected["messages"] for _ in range(followers)]
    assert _pattern(ct, protocol) == want
    messages = ct.messages
    assert (messages["dropped"] == "").all()
    # Every message takes exactly d, and each phase starts when the last one arrives.
    assert ((messages["arrival"] - messages["time"]) - D).abs().max() < 1e-9
    phases = sorted(set((messages["time"] - ct.start).round(9)))
    assert phases == pytest.approx([k * D for k in range(len(expected["messages"]))])
    assert ct.op.ok
    assert ct.op.complete - ct.op.invoke == pytest.approx(expected["commit_delays"] * D)
    # The commands the leader sends carry the operation; the answers carry none.
    client_op = f"{ct.op.client}:{ct.op.seq}"
    carriers = messages[messages["ops"] != ""]
    assert set(carriers["ops"]) == {client_op}
    assert set(carriers["type"]) <= {"AppendEntries", "Accept", "Decided"}
    events = ct.window[ct.window["kind"].isin(["invoke", "complete"])]
    assert list(events["kind"]) == ["invoke", "complete"]
    assert set(events["node"]) == {ct.node}


def test_raft_five_nodes_sends_one_append_entries_per_follower():
    ct = one_command("raft", delay=D, nodes=5)
    counts = ct.messages.groupby("type").size().to_dict()
    assert counts == {"AppendEntries": 4, "AppendEntriesResponse": 4}
    # The leader commits on the first two answers (a majority with itself) at 2d.
    assert ct.op.complete - ct.op.invoke == pytest.approx(2 * D)


def test_with_costs_a_message_leaves_after_its_senders_cpu_and_fsync():
    fsync, cpu = 0.005, 0.0001
    ct = one_command("raft", delay=D, costs=CostConfig(fsync=fsync, message=cpu, request=cpu))
    messages = ct.messages
    out = messages[messages["type"] == "AppendEntries"]
    back = messages[messages["type"] == "AppendEntriesResponse"]
    # The leader sends eagerly (before its own fsync), after the request's CPU.
    assert (out["time"] - ct.start).min() == pytest.approx(cpu, abs=1e-6)
    # A follower answers after receiving, its CPU and its fsync.
    for row in back.itertuples(index=False):
        received = out[out["dst"] == row.src]["arrival"].iloc[0]
        assert row.time - received == pytest.approx(cpu + fsync, abs=1e-6)
        assert row.arrival - row.time == pytest.approx(D)


def _busy_config(**extra):
    return {
        "protocol": "raft",
        "nodes": 3,
        "seed": 4,
        "network": {"delay": {"kind": "uniform", "low": 0.001, "high": 0.003}, **extra},
    }


def _run(sim, clients=3, seconds=1.0):
    def closed_loop(client):
        def again(op):
            if sim.now < seconds:
                command = Put(key="k", value=str(op.op_id))
                sim.after(0.0, client.submit, command, None, again)

        client.submit(Put(key="k", value="0"), on_done=again)

    for _ in range(clients):
        closed_loop(sim.client())
    sim.run_for(seconds + 0.5)
    return [(op.client, op.seq, op.invoke, op.complete, op.status) for op in sim.history]


@pytest.mark.parametrize("costs", [False, True])
def test_tracing_changes_nothing_in_the_run(costs):
    extra = {"costs": {"fsync": 0.001, "message": 0.00002}} if costs else {}
    plain = Simulator({**_busy_config(loss=0.05), **extra})
    traced = Simulator({**_busy_config(loss=0.05), **extra}, trace=True)
    assert _run(plain) == _run(traced)
    assert plain.message_counts() == traced.message_counts()
    with pytest.raises(RuntimeError, match="trace=True"):
        plain.trace()


@pytest.mark.parametrize("costs", [False, True])
def test_drops_say_why(costs):
    extra = {"costs": {"fsync": 0.001}} if costs else {}
    sim = Simulator({**_busy_config(loss=0.1), **extra}, trace=True)
    sim.run_until(lambda: sim.leaders(), 5)
    leader = sim.leaders()[0]
    other = (leader + 1) % 3
    sim.isolate(other)
    sim.run_for(0.3)
    sim.reconnect(other)
    sim.crash(other)
    sim.run_for(0.3)
    sim.restart(other)
    sim.run_for(0.3)
    trace = sim.trace()
    assert list(trace.columns) == TRACE_COLUMNS
    messages = trace[trace["kind"] == "message"]
    reasons = set(messages["dropped"])
    assert {"", "loss", "partition", "down"} <= reasons
    dropped = messages[messages["dropped"] != ""]
    assert dropped["arrival"].isna().all()
    assert messages[messages["dropped"] == ""]["arrival"].notna().all()
    assert (messages["size"] > 0).all()
    assert set(trace["kind"]) >= {"message", "role", "crash", "restart"}
    roles = trace[trace["kind"] == "role"]
    assert "leader" in set(roles["detail"])
    down = messages[messages["dropped"] == "down"]
    assert set(down["dst"]) == {other}


def test_carried_ops_finds_requests_in_entries_and_batches():
    from consensus.commands import Batch, Request
    from protocols.raft.messages import AppendEntries, Entry

    a = Request(client_id=3, seq=7, command=Put(key="a", value="1"))
    b = Request(client_id=4, seq=1, command=Put(key="b", value="2"))
    message = AppendEntries(
        term=1,
        prev_log_index=0,
        prev_log_term=0,
        entries=(Entry(term=1, payload=a), Entry(term=1, payload=Batch(requests=(b,)))),
        leader_commit=0,
    )
    assert carried_ops(message) == ["3:7", "4:1"]


SMALL = {
    "protocols": ["raft", "multipaxos"],
    "trace": True,
    "cluster": {"nodes": 3, "seed": 2, "costs": "off"},
    "workload": {"clients": 2, "duration": 0.5, "warmup": 0.1},
}


def test_results_trace_is_saved_and_loaded(tmp_path):
    results = run(SMALL)
    trace = results.trace
    assert set(trace["protocol"]) == {"raft", "multipaxos"}
    assert list(trace.columns) == ["protocol", *TRACE_COLUMNS]
    ops = trace[trace["kind"] == "complete"]
    assert len(ops) == len(results.ops[results.ops["status"] == "ok"])
    loaded = Results.load(results.save(tmp_path / "out"))
    pd.testing.assert_frame_equal(loaded.trace, trace)
    untraced = run({**SMALL, "trace": False})
    assert untraced.trace.empty
    pd.testing.assert_frame_equal(untraced.ops, results.ops)


def test_cli_run_trace_writes_trace_parquet(tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text(
        'protocols = ["raft"]\n[cluster]\nnodes = 3\ncosts = "off"\n'
        "[workload]\nclients = 2\nduration = 0.3\nwarmup = 0.1\n"
    )
    assert main(["run", str(config), "--trace", "--out", str(tmp_path / "out")]) == 0
    assert "trace:" in capsys.readouterr().out
    trace = pd.read_parquet(tmp_path / "out" / "trace.parquet")
    assert (trace["kind"] == "message").sum() > 10


def test_shiviz_export_has_the_regex_and_consistent_vector_clocks(tmp_path):
    ct = one_command("paxos", delay=D)
    path = to_shiviz(ct.window, tmp_path / "one.log")
    lines = path.read_text().splitlines()
    assert lines[0] == SHIVIZ_REGEX and lines[1] == ""
    body = lines[2:]
    assert len(body) % 2 == 0
    messages = len(ct.messages)
    events = len(ct.window) - messages
    assert len(body) // 2 == 2 * messages + events  # a send and a receive per message
    last: dict[str, int] = {}
    for event, clock_line in zip(body[::2], body[1::2]):
        host, clock_text = clock_line.split(" ", 1)
        clock = json.loads(clock_text)
        assert re.fullmatch(r"node\d+", host)
        assert clock[host] == last.get(host, 0) + 1  # each host counts 1, 2, 3...
        last[host] = clock[host]
        if event.startswith("receive"):
            assert len(clock) >= 2  # merged the sender's clock
    # A run of several protocols: one execution each, after its delimiter line.
    two = to_shiviz(run(SMALL).trace, tmp_path / "two.log").read_text().splitlines()
    assert two[1] == SHIVIZ_DELIMITER
    assert [line for line in two[2:] if line.startswith("===")] == [
        "=== raft ===",
        "=== multipaxos ===",
    ]
    one = to_shiviz(run(SMALL).trace, tmp_path / "raft.log", protocol="raft").read_text()
    assert "===" not in one.splitlines()[2]


def test_space_time_draws_a_titled_labelled_figure_with_a_legend():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct = one_command("raft", delay=D)
    fig, ax = plt.subplots()
    assert space_time(ct.trace, ct.start, ct.end, ax=ax) is fig
    assert ax.get_title() and "ms" in ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"AppendEntries", "AppendEntriesResponse", "client invokes"} <= set(labels)
    assert len(ax.get_yticks()) == 3
    plt.close(fig)
    # Without an Axes it makes one; drops and role changes are marked.
    sim = Simulator(_busy_config(loss=0.3), trace=True)
    sim.run_for(1.0)
    fig = space_time(sim.trace(), 0.0, 1.0)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"dropped", "role change"} <= set(labels)
    plt.close(fig)
    # A run's trace of several protocols: one panel each, titled with its name.
    trace = run(SMALL).trace
    fig = space_time(trace, 0.2, 0.25)
    assert [a.get_title().split(": ")[-1] for a in fig.axes] == ["raft", "multipaxos"]
    with pytest.raises(ValueError, match="several protocols"):
        space_time(trace, 0.2, 0.25, ax=fig.axes[0])
    plt.close(fig)
