"""The benchmark harness: workloads, faults, metrics, the command line."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.faults import Fault
from bench.metrics import Results
from bench.runner import RunConfig, load_run_config, run
from bench.sweep import read_sweep
from bench.workload import KeyChooser, WorkloadConfig
from consensus.config import ClusterConfig, ConfigError, Delay, NetworkConfig, load_toml

SMALL = {
    "protocols": ["sequencer"],
    "cluster": {
        "nodes": 3,
        "seed": 5,
        "network": {"delay": {"kind": "uniform", "low": 0.001, "high": 0.002}},
    },
    "workload": {"clients": 4, "duration": 1.0, "warmup": 0.1},
}


def test_same_seed_gives_identical_dataframes():
    first, second = run(SMALL), run(SMALL)
    pd.testing.assert_frame_equal(first.ops, second.ops)
    pd.testing.assert_frame_equal(first.throughput, second.throughput)
    assert len(first.ops) > 100


def test_summary_reports_throughput_and_latency_of_the_measured_window():
    results = run(SMALL)
    (row,) = results.summary.to_dict("records")
    measured = results.ops[results.ops["measured"] & (results.ops["status"] == "ok")]
    assert row["ops"] == len(measured)
    assert row["throughput"] == pytest.approx(len(measured) / 0.9)
    assert 2.0 <= row["p50_ms"] <= 4.0  # one round trip of 1-2 ms links
    assert row["msgs_per_op"] > 0


def test_results_round_trip_through_parquet(tmp_path):
    results = run(SMALL)
    results.save(tmp_path / "out")
    loaded = Results.load(tmp_path / "out")
    pd.testing.assert_frame_equal(loaded.summary, results.summary)
    pd.testing.assert_frame_equal(loaded.ops, results.ops)


def test_leader_crash_fault_is_logged_and_measured():
    config = load_run_config(
        {
            **SMALL,
            "workload": {"clients": 4, "duration": 2.0, "warmup": 0.1},
            "faults": [{"at": 1.0, "action": "crash", "target": "follower", "duration": 0.5}],
        }
    )
    results = run(config)
    actions = list(results.faults["action"])
    assert actions == ["crash", "restart"]
    assert results.faults["time"].tolist() == pytest.approx([1.0, 1.5])


def test_zipfian_and_hotspot_keys_are_skewed():
    rng = random.Random(1)
    zipf = KeyChooser(WorkloadConfig(keys=100, distribution="zipfian", zipf_skew=1.2), rng)
    counts = Counter(zipf() for _ in range(20000))
    assert counts.most_common(1)[0][0] == "k0"
    assert counts["k0"] > 10 * counts.get("k50", 1)
    hot = KeyChooser(
        WorkloadConfig(keys=100, distribution="hotspot", hot_keys=0.1, hot_fraction=0.9), rng
    )
    draws = [hot() for _ in range(20000)]
    share = sum(int(k[1:]) < 10 for k in draws) / len(draws)
    assert share == pytest.approx(0.9, abs=0.02)


def test_open_loop_arrivals_follow_the_rate():
    config = {**SMALL, "workload": {"mode": "open", "rate": 500.0, "duration": 2.0, "warmup": 0.1}}
    results = run(config)
    assert len(results.ops) == pytest.approx(1000, rel=0.1)


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"protocols": ["nope"]}, "protocols"),
        ({"workload": {"rate": -1.0}}, "workload.rate"),
        ({"workload": {"clientz": 3}}, "workload.clientz"),
        ({"cluster": {"network": {"loss": 2.0}}}, "cluster.network.loss"),
        (
            {"protocols": ["sequencer"], "options": {"sequencer": {"nope": 1}}},
            "options.sequencer.nope",
        ),
        ({"faults": [{"at": 1.0, "action": "explode"}]}, "faults[0].action"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(bad, key):
    with pytest.raises(ConfigError) as info:
        load_run_config({"protocols": ["sequencer"], **bad})
    assert key in str(info.value)


def test_cli_bad_config_exits_nonzero_and_writes_nothing(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('protocols = ["sequencer"]\n[workload]\nrate = -5.0\n')
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "workload.rate" in err and "-5.0" in err
    assert not out.exists()


def test_cli_run_prints_the_table_and_writes_parquet(tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text(
        'protocols = ["sequencer"]\n[workload]\nclients = 2\nduration = 1.0\nwarmup = 0.1\n'
    )
    assert main(["run", str(config), "--seed", "3", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "sequencer" in printed and "p99" in printed
    assert (tmp_path / "out" / "ops.parquet").exists()
    assert set(Results.load(tmp_path / "out").ops["seed"]) == {3}


def test_cli_run_plot_writes_a_png(tmp_path):
    config = tmp_path / "small.toml"
    config.write_text(
        'protocols = ["sequencer"]\n[workload]\nclients = 2\nduration = 1.0\nwarmup = 0.1\n'
    )
    png = tmp_path / "run.png"
    assert main(["run", str(config), "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_run_config_evolves_the_baseline_per_protocol():
    config = RunConfig(
        protocols=("sequencer",),
        cluster=ClusterConfig(nodes=5, network=NetworkConfig(delay=Delay.constant(0.002))),
        options={"sequencer": {"heartbeat": 0.1}},
        faults=(Fault(at=0.5, action="heal"),),
    )
    cluster = config.cluster_for("sequencer")
    assert cluster.protocol == "sequencer" and cluster.nodes == 5
    assert cluster.protocol_options().heartbeat == 0.1


SWEEP = {
    "protocols": ["sequencer"],
    "workload": {"clients": 2, "duration": 0.5, "warmup": 0.1},
    "sweep": {"cluster.nodes": [3, 5], "workload.clients": [1, 4]},
}


def test_sweep_runs_every_grid_point_into_one_dataframe():
    from bench.sweep import sweep

    results = sweep(SWEEP)
    summary = results.summary
    assert len(summary) == 4
    assert sorted(zip(summary["cluster.nodes"], summary["workload.clients"])) == [
        (3, 1), (3, 4), (5, 1), (5, 4)
    ]  # fmt: skip
    assert (summary["nodes"] == summary["cluster.nodes"]).all()
    assert set(results.ops["point"]) == {0, 1, 2, 3}
    # More nodes, more messages per operation.
    by_nodes = summary.groupby("cluster.nodes")["msgs_per_op"].mean()
    assert by_nodes[5] > by_nodes[3]


def test_sweep_rejects_a_bad_point_before_running(tmp_path, capsys):
    bad = tmp_path / "sweep.toml"
    bad.write_text('protocols = ["sequencer"]\n[sweep]\n"cluster.nodes" = [3, 0]\n')
    assert main(["sweep", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cluster.nodes" in err and "0" in err
    assert not (tmp_path / "out").exists()


def test_sweep_cli_prints_and_saves(tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text(
        'protocols = ["sequencer"]\n[workload]\nduration = 0.5\nwarmup = 0.1\n'
        '[sweep]\n"workload.clients" = [1, 2]\n'
    )
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "workload.clients" in capsys.readouterr().out
    assert len(read_sweep(tmp_path / "out").summary) == 2


def test_runs_count_bytes_per_message_type_by_default():
    results = run(SMALL)
    assert (results.messages["bytes"] > 0).all()
    assert results.summary.loc[0, "bytes_per_op"] > 0


def test_a_closed_loop_that_cannot_advance_virtual_time_is_a_config_error():
    # One node commits at once; with no client delay, no think time and nodes
    # that cost nothing, every operation completes at the instant it starts, so
    # t never moves past 0.
    stuck = {**SMALL, "cluster": {"nodes": 1, "seed": 5}, "costs": "off"}
    with pytest.raises(ConfigError, match="think_time"):
        run(stuck)
    moving = {**stuck, "workload": {**SMALL["workload"], "think_time": 0.001}}
    (row,) = run(moving).summary.to_dict("records")
    assert row["ops"] > 100
    # With costs on, the node's service time moves the clock.
    (row,) = run({**stuck, "costs": "default"}).summary.to_dict("records")
    assert row["ops"] > 100


CONFIGS = sorted(
    p
    for p in (Path(__file__).parent.parent / "bench" / "configs").glob("*.toml")
    if "sweep" not in load_toml(p) and set(load_toml(p)) != {"costs"}  # not a cost table
)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_commits_operations_with_every_protocol_it_lists(path):
    # Timers that suit a LAN stall a WAN run (a retry before any answer can come
    # back); each example config must carry the options its network needs.
    data = load_toml(path)
    workload = data.get("workload", {})
    clients = min(workload.get("clients", 8), 2)
    data["workload"] = {**workload, "clients": clients, "duration": 2.0, "warmup": 0.5}
    summary = run(data).summary.set_index("protocol")
    assert set(summary.index) == set(data["protocols"])
    assert (summary["ops"] >= 5).all(), summary["ops"].to_dict()
