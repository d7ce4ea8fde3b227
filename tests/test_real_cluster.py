"""Real clusters: node processes on loopback, killed with SIGKILL and frozen with SIGSTOP.

Every test starts its own processes on free ports, bounds every wait, and
stops everything it started (``LocalCluster`` is a context manager; the
chaos runner closes its cluster in ``finally``).  Nothing asserts on timing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from bench.realchaos import _Nemesis, real_chaos_run
from consensus.runtime.launcher import LocalCluster, free_ports, write_local_cluster_file

PROTOCOLS = ["raft", "multipaxos", "paxos"]

# Kill the leader, keep writing, restart it; then freeze the (new) leader and thaw it.
SCRIPT = ((0.6, "kill_leader", 0.8), (2.0, "pause_leader", 0.8))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sigkill_and_sigstop_of_the_leader_lose_no_acknowledged_write(tmp_path, protocol):
    result = real_chaos_run(
        protocol, seed=11, duration=3.2, script=SCRIPT, workdir=tmp_path, clients=4
    )
    faults = " / ".join(text for _, text in result.faults)
    assert "kill_leader node" in faults and "(SIGKILL)" in faults, faults
    assert "pause_leader node" in faults and "(SIGSTOP)" in faults, faults
    assert result.acknowledged_writes > 0
    assert result.ok, f"not linearizable: {result.violations[:1]} (faults: {faults})"
    missing = {node: keys for node, keys in result.missing.items() if keys}
    assert not missing, f"acknowledged writes missing after recovery: {missing}"
    assert set(result.missing) == {0, 1, 2}


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consensus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_cli_client_and_status_against_a_local_cluster(tmp_path):
    path = write_local_cluster_file(tmp_path / "cluster.toml", "raft")
    with LocalCluster(path, log_dir=tmp_path / "logs"):
        put = run_cli("client", "--config", str(path), "put", "greeting", "hello")
        assert put.returncode == 0 and put.stdout.strip() == "ok", put.stderr
        get = run_cli("client", "--config", str(path), "get", "greeting")
        assert get.returncode == 0 and get.stdout.strip() == "hello", get.stderr
        cas = run_cli("client", "--config", str(path), "cas", "greeting", "hello", "bye")
        assert cas.returncode == 0 and cas.stdout.strip() == "True", cas.stderr
        missing = run_cli("client", "--config", str(path), "get", "nothing")
        assert missing.stdout.strip() == "(absent)"
        status = run_cli("status", "--config", str(path), "--json")
        assert status.returncode == 0, status.stderr
        rows = [__import__("json").loads(line) for line in status.stdout.splitlines()]
        assert [r["node"] for r in rows] == [0, 1, 2]
        assert sum(r["role"] == "leader" for r in rows) == 1
        assert all(r["up"] for r in rows)


def test_the_cluster_command_starts_every_node_and_stops_them_on_sigterm(tmp_path):
    path = write_local_cluster_file(tmp_path / "cluster.toml", "multipaxos")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consensus",
            "cluster",
            "--config",
            str(path),
            "--logs",
            str(tmp_path / "logs"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for _ in range(20):
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        assert "node 0" in text and "node 2" in text, text
        put = run_cli("client", "--config", str(path), "put", "k", "v")
        assert put.returncode == 0, put.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status = run_cli("status", "--config", str(path), "--timeout", "0.5")
    assert status.returncode == 1 and "down" in status.stdout  # nothing left running


def test_a_killed_node_restarts_from_its_data_directory(tmp_path):
    path = write_local_cluster_file(tmp_path / "cluster.toml", "raft")
    with LocalCluster(path, log_dir=tmp_path / "logs") as cluster:
        assert run_cli("client", "--config", str(path), "put", "x", "1").returncode == 0
        for node in cluster.node_ids:
            cluster.kill(node)
        cluster.start()
        get = run_cli("client", "--config", str(path), "get", "x")
        assert get.stdout.strip() == "1", get.stderr


# -- operator mistakes: one line, exit status 2, no traceback ----------------------------


def assert_operator_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines


def test_a_missing_data_directory_is_one_clear_line(tmp_path):
    path = write_local_cluster_file(tmp_path / "cluster.toml", "raft", data_dir="nowhere")
    assert_operator_error(run_cli("serve", "--config", str(path), "--node", "0"), "does not exist")


def test_a_port_in_use_is_one_clear_line(tmp_path):
    import socket

    port = free_ports(1)[0]
    (tmp_path / "data").mkdir()
    path = write_local_cluster_file(tmp_path / "cluster.toml", "raft", ports=[port] + free_ports(2))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert_operator_error(
            run_cli("serve", "--config", str(path), "--node", "0"), "cannot listen on"
        )


def test_a_bad_address_and_an_unknown_node_are_one_clear_line(tmp_path):
    (tmp_path / "data").mkdir()
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'protocol = "raft"\nsecret = "s"\n[[nodes]]\nid = 0\naddress = "localhost-no-port"\n'
    )
    assert_operator_error(run_cli("serve", "--config", str(bad), "--node", "0"), "host:port")
    path = write_local_cluster_file(tmp_path / "cluster.toml", "raft")
    assert_operator_error(run_cli("serve", "--config", str(path), "--node", "7"), "no node 7")
    assert_operator_error(
        run_cli("client", "--config", str(tmp_path / "absent.toml"), "get", "k"),
        "no such config file",
    )


def test_a_second_process_on_the_same_data_directory_is_refused(tmp_path):
    path = write_local_cluster_file(tmp_path / "cluster.toml", "raft")
    with LocalCluster(path, log_dir=tmp_path / "logs"):
        other = write_local_cluster_file(tmp_path / "other.toml", "raft")  # same data dir
        assert_operator_error(
            run_cli("serve", "--config", str(other), "--node", "0"), "in use by another process"
        )


def test_processes_do_not_outlive_the_launcher(tmp_path):
    path = write_local_cluster_file(tmp_path / "cluster.toml", "raft")
    cluster = LocalCluster(path, log_dir=tmp_path / "logs")
    cluster.start()
    pids = [cluster.pid(n) for n in cluster.node_ids]
    cluster.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_run_config_over_tcp_gives_the_same_dataframes_as_a_simulated_run(tmp_path):
    from bench.runner import run

    config = {
        "protocols": ["raft"],
        "cluster": {"nodes": 3, "seed": 3},
        "network": {"kind": "tcp"},
        "workload": {"clients": 4, "duration": 2.0, "warmup": 0.3, "read_fraction": 0.5},
        "faults": [{"at": 1.0, "action": "crash", "target": "leader", "duration": 0.4}],
        "tcp": {"processes": 2, "keep": str(tmp_path / "kept")},
    }
    real = run(config)
    simulated = run({**config, "network": {"kind": "sim"}, "tcp": {}})
    for table in ("ops", "summary", "messages", "throughput", "faults", "counters"):
        assert list(getattr(real, table).columns) == list(getattr(simulated, table).columns)
    ops = real.ops
    assert (ops["status"] == "ok").sum() > 50
    assert set(ops["op"]) >= {"get", "put"}
    assert ops["invoke"].min() >= 0 and ops["invoke"].max() < 2.0 + 1.0  # seconds since start
    summary = real.summary.iloc[0]
    assert summary["throughput"] > 0 and summary["msgs_per_op"] > 0 and summary["bytes_per_op"] > 0
    assert set(real.messages["type"]) >= {"AppendEntries", "AppendEntriesResponse"}
    assert list(real.faults["action"]) == ["crash", "restart"]
    assert (tmp_path / "kept" / "raft" / "logs" / "node-0.log").exists()


def test_an_overloaded_leader_answers_everyone_and_keeps_its_leadership(tmp_path):
    """Far more outstanding requests than a node admits: every one is answered
    (committed, or ``busy`` and retried), and the leader stays the leader."""
    from bench.peers.measure import LoadPoint
    from bench.peers.ours import run_ours_point

    point = LoadPoint(clients=8, window=256, command_size=10, duration=2.0, warmup=0.5)
    result = run_ours_point(
        point,
        protocol="raft",
        options={
            "election_timeout_min": 1.0,
            "election_timeout_max": 2.0,
            "heartbeat_interval": 0.05,
        },
        max_pending=512,
    )
    assert result.committed > 0
    assert result.failed == 0  # busy answers are retried, never given up on
    assert result.notes["busy"] > 0  # the node did turn requests away
    assert result.notes["leader_changes"] == 3  # each node saw one leader, once


def test_bench_chaos_over_tcp_reports_each_seed_and_the_last_line():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "chaos",
            "--protocol",
            "multipaxos",
            "--tcp",
            "--runs",
            "1",
            "--seed",
            "5",
            "--duration",
            "1.5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("seed 5: ok,") and "acknowledged writes on every node" in lines[0]
    assert lines[-1].startswith("multipaxos: 1 runs over tcp, 0 violations,")


def test_an_open_loop_over_tcp_offers_its_rate_whatever_the_latency(tmp_path):
    from bench.runner import run

    config = {
        "protocols": ["multipaxos"],
        "cluster": {"nodes": 3, "seed": 4},
        "network": {"kind": "tcp"},
        "workload": {"mode": "open", "rate": 400.0, "duration": 2.0, "warmup": 0.5},
        "tcp": {"processes": 1},
    }
    results = run(config)
    ops = results.ops
    measured = ops[ops["measured"]]
    # A Poisson process at 400/s over the 1.5 s window: about 600 arrivals.
    assert 400 < len(measured) < 800
    assert (measured["status"] == "ok").mean() > 0.95


def test_the_status_table_shows_the_ballot_a_paxos_follower_promised():
    from consensus.runtime.cli import term_of
    from consensus.sim.simulator import Simulator

    sim = Simulator({"protocol": "multipaxos", "nodes": 3, "seed": 1})
    sim.run_for(1.0)
    (leader,) = sim.leaders()
    rows = [sim.host(n).replica.status() for n in sim.node_ids]
    leading = rows[leader]["ballot"]
    # Every node shows the leader's ballot, not the one it would campaign with.
    assert [term_of(row) for row in rows] == [leading] * 3
    assert term_of({"term": 7, "ballot": "x"}) == 7 and term_of({}) == "-"


async def test_a_scripted_fault_waits_for_the_one_before_it_to_heal():
    # No processes: a stand-in cluster whose restart takes 0.3 s, so the first
    # fault still holds its node when the second one's time comes (as on a loaded
    # machine).  The second is injected once the first has healed, not skipped.
    class SlowCluster:
        node_ids = (0, 1, 2)

        def __init__(self) -> None:
            self.calls: list[str] = []

        def kill(self, node: int) -> None:
            self.calls.append(f"kill {node}")

        def start(self, node: int) -> None:
            time.sleep(0.3)  # in a worker thread, as the nemesis calls it
            self.calls.append(f"start {node}")

        def pause(self, node: int) -> None:
            self.calls.append(f"pause {node}")

        def resume(self, node: int) -> None:
            self.calls.append(f"resume {node}")

    class Client:
        leader = None

        async def status(self, node: int) -> dict[str, int]:
            return {"leader": 1}

    cluster = SlowCluster()
    nemesis = _Nemesis(cluster, random.Random(1), ("kill_leader", "pause_leader"))
    script = ((0.0, "kill_leader", 0.1), (0.15, "pause_leader", 0.05))
    with trio.fail_after(10):
        await nemesis.run(Client(), time.monotonic() + 5.0, script)
    assert cluster.calls == ["kill 1", "start 1", "pause 1", "resume 1"]
    notes = [text for _, text in nemesis.log]
    assert "pause_leader node 1 (SIGSTOP)" in notes and not any("no target" in n for n in notes)
