"""Costs in the benchmark harness: the shipped measured table and presets, the
node-load DataFrames and summary columns, and calibration (``bench.calibrate``)."""

from __future__ import annotations

import gc
import random

import pandas as pd
import pytest

from bench.calibrate import fit, to_toml
from bench.cli import main
from bench.config import cost_preset, load_run_config
from bench.metrics import Results
from bench.runner import run
from consensus.config import ConfigError, CostConfig, structure

SMALL = {
    "protocols": ["raft"],
    "cluster": {"nodes": 3, "seed": 2},
    "workload": {"clients": 4, "duration": 1.0, "warmup": 0.2},
}


def test_a_benchmark_pays_the_shipped_measured_costs_unless_told_otherwise():
    shipped = load_run_config(SMALL).cluster.costs
    assert shipped.enabled and shipped.fsync > 0 and shipped.note
    assert shipped == structure(CostConfig, cost_preset("default"), path="costs")
    assert not load_run_config({**SMALL, "costs": "off"}).cluster.costs.enabled
    tuned = load_run_config({**SMALL, "costs": {"fsync": 0.002}}).cluster.costs
    assert tuned.fsync == 0.002 and tuned.request == shipped.request
    inline = {**SMALL, "cluster": {**SMALL["cluster"], "costs": {"preset": "off", "apply": 1e-6}}}
    assert load_run_config(inline).cluster.costs == CostConfig(apply=1e-6)


def test_a_cost_table_file_is_a_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[costs]\nrequest = 0.001\n[costs.inputs]\n"raft.tick" = 2e-6\n')
    costs = load_run_config({**SMALL, "costs": {"preset": str(path)}}).cluster.costs
    assert costs.request == 0.001 and costs.input_row("raft", "tick").base == 2e-6


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"costs": {"preset": "nowhere.toml"}}, "costs.preset"),
        ({"costs": {"fsync": -1.0}}, "cluster.costs.fsync"),
        ({"costs": {"inputs": {"raft.AppendEntries": {"per_entry": 1e-6}}}}, "entries"),
        ({"costs": {}, "cluster": {"costs": {}}}, "costs"),
    ],
)
def test_a_bad_cost_setting_names_its_key(bad, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_run_config({**SMALL, **bad})


def test_node_load_tables_and_the_busiest_node_in_the_summary(tmp_path):
    # Twice what a leader that needs 1 ms per request can serve, in an open loop.
    config = {
        **SMALL,
        "costs": {"preset": "off", "request": 0.001},
        "cluster": {**SMALL["cluster"], "client": {"timeout": 30.0}, "max_batch": 16},
        "workload": {"mode": "open", "rate": 2000.0, "duration": 2.0, "warmup": 1.0},
        "interval": 0.25,
    }
    results = run(config)
    (row,) = results.summary.to_dict("records")
    assert row["busiest_cpu"] == pytest.approx(1.0, abs=0.01)
    assert row["completed_per_s"] == pytest.approx(1000, rel=0.05)  # served: 1/S
    assert row["throughput"] > 1200  # the rest of what was offered completes in the drain
    leader = row["busiest_node"]
    nodes = results.nodes.set_index("node")
    assert nodes.loc[leader, "cpu_util"] == pytest.approx(1.0, abs=0.01)
    assert (nodes.drop(leader)["cpu_util"] < 0.1).all()
    queue = results.queues[results.queues.node == leader].set_index("time")["queue_mean"]
    queue = queue.loc[1.0:1.99]  # the measured window
    assert queue.is_monotonic_increasing and queue.iloc[-1] > 500
    results.save(tmp_path / "out")
    loaded = Results.load(tmp_path / "out")
    pd.testing.assert_frame_equal(loaded.nodes, results.nodes)
    pd.testing.assert_frame_equal(loaded.queues, results.queues)
    # A directory saved before these tables existed still loads, with them empty.
    (tmp_path / "out" / "nodes.parquet").unlink()
    (tmp_path / "out" / "queues.parquet").unlink()
    older = Results.load(tmp_path / "out")
    assert older.nodes.empty and "cpu_util" in older.nodes.columns


def test_with_costs_off_there_is_no_node_load():
    results = run({**SMALL, "costs": "off"})
    assert results.nodes.empty and results.queues.empty
    assert results.summary.loc[0, "busiest_node"] == -1


def test_fit_recovers_known_costs_from_noisy_timings():
    rng = random.Random(1)
    rows = []
    for _ in range(2000):
        size, entries = rng.randrange(20, 20_000), rng.randrange(0, 40)
        seconds = 1e-5 + 2e-9 * size + 3e-6 * entries
        rows.append((size, entries, seconds * rng.uniform(0.95, 1.05)))
    rows += [(100, 1, 0.01)] * 10  # a few garbage collections: dropped as the slowest 2%
    base, per_byte, per_entry = fit(rows)
    assert base == pytest.approx(1e-5, rel=0.1)
    assert per_byte == pytest.approx(2e-9, rel=0.1)
    assert per_entry == pytest.approx(3e-6, rel=0.1)
    # Sizes that hardly vary (a fixed-layout message) give no per-byte cost.
    assert fit([(12 + i % 3, 0, 1e-5) for i in range(100)]) == (pytest.approx(1e-5), 0.0, 0.0)


def test_calibration_writes_a_table_the_simulator_reads(tmp_path, capsys):
    path = tmp_path / "costs.toml"
    args = ["calibrate", "--protocol", "raft", "--seconds", "0.4", "--no-real", "--out", str(path)]
    collector = gc.get_threshold()
    assert main(args) == 0
    # Probes run with the collector tuned as in a node; this process gets its own back.
    assert gc.get_threshold() == collector and gc.get_freeze_count() == 0
    assert str(path) in capsys.readouterr().out
    costs = structure(CostConfig, cost_preset(str(path)), path="costs")
    assert costs.enabled and costs.fsync > 0 and costs.send > 0 and costs.apply > 0
    # The device's share of an fsync, measured with three logs syncing at once.
    assert 0 < costs.fsync_serial <= costs.fsync and costs.disks == 0
    append = costs.input_row("raft", "AppendEntries")
    assert append is not None and append.base > 0
    assert costs.input_row("raft", "request").base > 0
    assert costs.send_row("raft", "AppendEntries") is not None
    results = run({**SMALL, "costs": {"preset": str(path)}})
    assert results.summary.loc[0, "ops"] > 0
    assert to_toml(calibrate_table(path)) == path.read_text()


def test_repeated_calibration_keeps_each_numbers_median():
    from bench.calibrate import combine

    def table(fsync, append, per_entry, extra=None):
        inputs = {"raft.AppendEntries": {"base": append, "entries": "requests"}}
        if per_entry:
            inputs["raft.AppendEntries"]["per_entry"] = per_entry
        if extra:
            inputs["raft.RequestVote"] = {"base": extra}
        return {
            "note": "measured",
            "fsync": fsync,
            "send": 1e-5,
            "inputs": inputs,
            "sends": {},
            "records": {"raft.Entry": {"base": 2e-6}},
            "end_to_end": {"real_node": fsync * 10},
        }

    runs = [table(1e-4, 2e-5, 4e-7), table(3e-4, 1e-5, 0.0), table(2e-4, 3e-5, 5e-7, 9e-6)]
    combined = combine(runs)
    assert combined["note"] == "measured, median of 3 runs"
    assert combined["fsync"] == pytest.approx(2e-4) and combined["send"] == 1e-5
    # A per-entry term one run's fit dropped counts as zero in the median.
    assert combined["inputs"]["raft.AppendEntries"] == {
        "base": pytest.approx(2e-5),
        "per_entry": pytest.approx(4e-7),
        "entries": "requests",
    }
    # A row only one run saw is that run's.
    assert combined["inputs"]["raft.RequestVote"] == {"base": 9e-6}
    assert combined["end_to_end"]["real_node"] == pytest.approx(2e-3)
    # Dropped by most runs, the term is left out and so is the entries field.
    runs[2]["inputs"]["raft.AppendEntries"].pop("per_entry")
    assert combine(runs)["inputs"]["raft.AppendEntries"] == {"base": pytest.approx(2e-5)}
    assert combine(runs[:1]) is runs[0]
    structure(CostConfig, {k: v for k, v in combined.items() if k != "end_to_end"}, path="costs")


def test_calibrate_repeat_is_checked():
    with pytest.raises(SystemExit):
        main(["calibrate", "--repeat", "0"])


def calibrate_table(path):
    # The table as calibrate returned it, back from its TOML (to_toml round-trips it).
    import tomllib

    table = tomllib.loads(path.read_text())["costs"]
    table.setdefault("end_to_end", None)
    return table


def test_validate_peaks_compare_each_modes_best_point_and_latency_at_the_real_peak():
    import pandas as pd

    from bench.validate import compare, peaks

    rows = pd.DataFrame(
        [
            {
                "mode": "sim",
                "protocol": "raft",
                "clients": 16,
                "completed_per_s": 100.0,
                "p50_ms": 1.0,
            },
            {
                "mode": "sim",
                "protocol": "raft",
                "clients": 64,
                "completed_per_s": 300.0,
                "p50_ms": 2.0,
            },
            {
                "mode": "tcp",
                "protocol": "raft",
                "clients": 16,
                "completed_per_s": 200.0,
                "p50_ms": 1.5,
            },
            {
                "mode": "tcp",
                "protocol": "raft",
                "clients": 64,
                "completed_per_s": 150.0,
                "p50_ms": 4.0,
            },
        ]
    )
    (row,) = peaks(rows).to_dict("records")
    assert (row["sim_peak"], row["sim_clients"], row["tcp_peak"], row["tcp_clients"]) == (
        300.0,
        64,
        200.0,
        16,
    )
    # Latency compares the same load: the real peak's 16 clients.
    assert row["peak_ratio"] == 1.5 and row["sim_p50_at_tcp_peak_ms"] == 1.0
    assert row["p50_ratio"] == 1.0 / 1.5
    simulated = compare(
        {**SMALL, "workload": {"clients": 4, "duration": 0.6, "warmup": 0.2}},
        [2, 8],
        modes=("sim",),
    )
    assert list(simulated["clients"]) == [2, 8] and (simulated["mode"] == "sim").all()
    assert simulated["completed_per_s"].iloc[1] > simulated["completed_per_s"].iloc[0]


def test_accept_timings_split_into_a_cost_per_request_and_one_per_proposal():
    from bench.calibrate import fit_requests

    rng = random.Random(2)
    rows = [(1, 1, (2e-6 + 9e-6) * rng.uniform(0.95, 1.05)) for _ in range(500)]  # unpacked
    for _ in range(500):  # packed: up to 64 requests per proposal
        n = rng.randrange(2, 300)
        rows.append((n, -(-n // 64), (2e-6 * n + 9e-6 * -(-n // 64)) * rng.uniform(0.95, 1.05)))
    rows += [(1, 1, 0.01)] * 10  # garbage collections: dropped
    per_request, per_proposal = fit_requests(rows)
    assert per_request == pytest.approx(2e-6, rel=0.1)
    assert per_proposal == pytest.approx(9e-6, rel=0.1)
    # A protocol whose proposals cost nothing extra gets no negative proposal cost.
    flat = [(n, -(-n // 64), 3e-6 * n) for n in range(1, 300)]
    assert fit_requests(flat) == (pytest.approx(3e-6), pytest.approx(0.0, abs=1e-12))


def test_apply_cost_per_command_drops_the_slowest_calls():
    from bench.calibrate import per_command

    calls = [(10, 10e-6)] * 98 + [(1, 5e-3)] * 2  # two calls caught by a collection
    assert per_command(calls) == pytest.approx(1e-6)
    assert per_command([]) == 0.0 and per_command([(0, 1e-6)]) == 0.0
