"""bench.peers: measurement logic on hand-made results, process hygiene, one real smoke run.

No assertion here depends on timing: the peak search runs on a fake system
with a known saturation curve and a fake clock, the percentile merge on
hand-made samples, and the real PySyncObj run only checks that commands were
committed.  Every process a test starts is stopped by the code under test,
and the tests check that it was.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pandas as pd
import pytest
from rich.console import Console

from bench.peers import (
    SYSTEMS,
    LoadPoint,
    NodeProcesses,
    PeakSearch,
    PeerError,
    PointResult,
    add_arguments,
    compare,
    comparison_table,
    find_peak,
    merge_latencies,
    peers_command,
    pysyncobj_node,
    run_pysyncobj_point,
    split_clients,
    unloaded,
    weighted_percentiles,
)
from bench.peers.pysyncobj import merge_node_results

# --- percentiles and merging -------------------------------------------------


def test_equal_weights_give_the_nearest_rank_percentile():
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert weighted_percentiles(values, [1.0] * 100, [0.5, 0.9, 0.99, 1.0]) == [50, 90, 99, 100]
    assert weighted_percentiles([7.0], [1.0], [0.01, 0.5, 0.99]) == [7.0, 7.0, 7.0]


def test_no_samples_give_nan():
    assert all(math.isnan(x) for x in weighted_percentiles([], [], [0.5, 0.99]))
    assert all(math.isnan(x) for x in merge_latencies([(0, []), (5, [])]))


def test_the_node_and_the_parent_agree_on_percentiles():
    rng = random.Random(4)
    for n in (1, 2, 3, 10, 99, 100, 101, 1000):
        values = sorted(rng.uniform(0, 500) for _ in range(n))
        for q in (0.5, 0.9, 0.99):
            assert (
                pysyncobj_node._percentile(values, q)
                == weighted_percentiles(values, [1.0] * n, [q])[0]
            )


def test_a_subsampled_busy_node_weighs_by_its_count_not_its_sample_size():
    # Node A committed 1,000 commands at 10 ms but kept only 100 samples; node B
    # committed 100 at 100 ms and kept them all.  Of 1,100 commands, 1,000 took
    # 10 ms: p50 and p90 are 10 ms, p99 (rank 1,089) is 100 ms.  Concatenating
    # the samples naively would put p50 on a 10/100 ms coin flip.
    parts = [(1000, [10.0] * 100), (100, [100.0] * 100)]
    assert merge_latencies(parts) == [10.0, 10.0, 100.0]


def _node(addr, *, ok, samples, failed=0, reasons=None, leader=False, clients=1):
    return {
        "self": addr,
        "is_leader": leader,
        "clients": clients,
        "ok": ok,
        "failed": failed,
        "fail_reasons": reasons or {},
        "outstanding": 0,
        "term_start": 1,
        "term_end": 1,
        "duration": 2.0,
        "samples_ms": samples,
        "p50_ms": None,
        "batch": True,
        "pysyncobj": "0.3.17",
    }


def test_node_results_merge_into_one_point():
    point = LoadPoint(clients=3, window=4, duration=2.0)
    results = [
        _node("a", ok=200, samples=[100.0] * 200, leader=True),
        _node("b", ok=100, samples=[200.0] * 50, failed=1, reasons={"1": 1}),
        _node("c", ok=100, samples=[300.0] * 100, failed=2, reasons={"1": 1, "5": 1}),
    ]
    r = merge_node_results(results, point, system="x", wall_s=9.0)
    assert (r.system, r.protocol, r.nodes, r.clients, r.window) == ("x", "raft", 3, 3, 4)
    assert (r.committed, r.failed, r.throughput, r.duration) == (400, 3, 200.0, 2.0)
    assert (r.p50_ms, r.p90_ms, r.p99_ms) == (100.0, 300.0, 300.0)
    assert r.notes["fail_reasons"] == {"1": 2, "5": 1}
    assert [n["committed"] for n in r.notes["per_node"]] == [200, 100, 100]
    assert r.offered_rate is None and r.wall_s == 9.0


def test_clients_split_leader_first_as_evenly_as_possible():
    assert split_clients(1, 3) == [1, 0, 0]
    assert split_clients(4, 3) == [2, 1, 1]
    assert split_clients(12, 3) == [4, 4, 4]
    assert sum(split_clients(1000, 7)) == 1000


def test_the_node_recorder_keeps_a_bounded_uniform_sample_of_the_window():
    rec = pysyncobj_node.Recorder(t0=10.0, t1=20.0, cap=100, seed=1)
    for i in range(1000):
        rec.submitted_one()
        rec.answered_one(t_submit=10.0 + i / 100, t_done=10.0 + i / 100 + 0.005, err=0)
    rec.submitted_one()
    rec.answered_one(t_submit=19.9, t_done=20.5, err=0)  # after the window: not counted
    rec.submitted_one()
    rec.answered_one(t_submit=12.0, t_done=12.1, err=1)
    rec.submitted_one()  # still outstanding
    assert (rec.ok, rec.failed, rec.outstanding) == (1000, 1, 1)
    assert len(rec.samples) == 100 and dict(rec.fail_reasons) == {1: 1}
    assert all(abs(x - 5.0) < 1e-6 for x in rec.samples)


# --- the peak search on a fake system ------------------------------------------


class FakeSystem:
    """Throughput rises with outstanding commands until ``capacity``; latency by Little's law."""

    def __init__(self, name="fake", capacity=8000.0, per_command=1000.0, clock=None, wall=1.0):
        self.name = name
        self.capacity = capacity
        self.per_command = per_command
        self.clock = clock
        self.wall = wall
        self.calls: list[LoadPoint] = []

    def __call__(self, point: LoadPoint) -> PointResult:
        self.calls.append(point)
        if self.clock is not None:
            self.clock.now += self.wall
        tp = min(self.per_command * point.outstanding, self.capacity)
        latency = 1000.0 * point.outstanding / tp
        return PointResult(
            system=self.name,
            protocol="raft",
            nodes=3,
            command_size=point.command_size,
            clients=point.clients,
            window=point.window,
            offered_rate=point.rate,
            committed=int(tp * point.duration),
            throughput=tp,
            p50_ms=latency,
            p90_ms=latency * 1.5,
            p99_ms=latency * 2,
            failed=0,
            wall_s=self.wall,
            duration=point.duration,
        )


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_find_peak_stops_three_points_after_saturation_and_reports_the_knee():
    system = FakeSystem(capacity=8000.0, per_command=1000.0)
    peak = find_peak(system, clients=1, windows=(1, 2, 4, 8, 16, 32, 64, 128))
    # 1k, 2k, 4k, 8k, then 8k three times without a 5% gain: stop after window 64.
    assert [p.window for p in system.calls] == [1, 2, 4, 8, 16, 32, 64]
    assert peak.best.window == 8 and peak.best.throughput == 8000.0
    assert "flat" in peak.stop_reason


def test_one_low_point_in_a_ladder_does_not_end_the_search():
    # A shared machine: window 4 came out low, the load goes on rising after it.
    curve = {1: 1000.0, 2: 4000.0, 4: 2000.0, 8: 3600.0, 16: 8000.0, 32: 8100.0}
    system = FakeSystem()

    def run(point):
        return attrs.evolve(system(point), throughput=curve.get(point.window, 8000.0), p50_ms=1.0)

    peak = find_peak(run, clients=1, windows=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    assert peak.best.window == 32 and peak.best.throughput == 8100.0


def test_small_gains_count_as_flat():
    # +3% per step is below the 5% threshold: three such steps end the search.
    curve = {1: 1000.0, 2: 2000.0, 4: 2060.0, 8: 2120.0, 16: 2180.0, 32: 5000.0}
    system = FakeSystem()

    def run(point):
        return attrs.evolve(system(point), throughput=curve[point.window], p50_ms=1.0)

    peak = find_peak(run, clients=1, windows=(1, 2, 4, 8, 16, 32))
    assert [p.window for p in peak.points] == [1, 2, 4, 8, 16]
    assert peak.best.window == 16


def test_the_knee_is_the_lightest_load_within_min_gain_of_the_peak():
    curve = {1: 1000.0, 2: 1960.0, 4: 2000.0, 8: 2010.0, 16: 2020.0}
    system = FakeSystem()

    def run(point):
        return attrs.evolve(system(point), throughput=curve[point.window], p50_ms=point.window)

    peak = find_peak(run, clients=1, windows=(1, 2, 4, 8, 16))
    assert peak.best.window == 16 and peak.knee.window == 2


def test_find_peak_stops_on_failed_commands_and_excludes_that_point():
    system = FakeSystem(capacity=1e12)

    def run(point):
        r = system(point)
        return attrs.evolve(r, failed=r.committed // 10 if point.window >= 4 else 0)

    peak = find_peak(run, clients=1, windows=(1, 2, 4, 8))
    assert [p.window for p in peak.points] == [1, 2, 4]
    assert peak.best.window == 2 and "failed" in peak.stop_reason


def test_find_peak_stops_when_p50_passes_the_bound_and_excludes_that_point():
    # Latency = outstanding / capacity once saturated: window 64 gives 8 s.
    system = FakeSystem(capacity=8.0, per_command=1.0)
    peak = find_peak(system, clients=1, windows=(1, 2, 4, 8, 16, 32), max_p50_ms=1500.0)
    assert [p.window for p in peak.points] == [1, 2, 4, 8, 16]
    assert peak.points[-1].p50_ms > 1500.0
    assert peak.best.window == 8 and peak.best.p50_ms <= 1500.0
    assert "p50" in peak.stop_reason


def test_find_peak_is_bounded_in_points_and_in_time():
    system = FakeSystem(capacity=1e12)  # never saturates
    peak = find_peak(system, clients=1, max_points=4)
    assert len(peak.points) == 4 and peak.stop_reason == "ladder exhausted"

    clock = FakeClock()
    system = FakeSystem(capacity=1e12, clock=clock, wall=100.0)
    peak = find_peak(system, clients=1, max_seconds=250.0)
    # Each point takes 100 s: a third would end at 300 s, past the budget.
    assert len(peak.points) == 2 and "time budget" in peak.stop_reason
    assert clock.now <= 250.0


def test_a_point_that_commits_nothing_stops_the_search():
    system = FakeSystem()

    def run(point):
        return attrs.evolve(system(point), throughput=0.0, committed=0, p50_ms=math.nan)

    peak = find_peak(run, clients=1)
    assert len(peak.points) == 1 and peak.best.window == 1


def test_peak_search_refuses_a_record_after_it_stopped():
    search = PeakSearch([LoadPoint()])
    point = search.next_point()
    search.record(FakeSystem()(point))
    assert search.next_point() is None and search.done
    with pytest.raises(AssertionError):
        search.record(FakeSystem()(point))


def test_unloaded_is_one_client_one_command_at_a_time():
    system = FakeSystem()
    unloaded(system, command_size=33, duration=1.5, warmup=0.25)
    assert system.calls == [
        LoadPoint(clients=1, window=1, command_size=33, duration=1.5, warmup=0.25)
    ]


def test_compare_interleaves_the_systems_and_gives_one_row_per_system_and_clients():
    order: list[str] = []
    a = FakeSystem("a", capacity=4000.0)
    b = FakeSystem("b", capacity=16000.0)

    def tracked(name, system):
        def run(point):
            order.append(name)
            return system(point)

        return run

    df = compare(
        {"a": tracked("a", a), "b": tracked("b", b)},
        clients=(1, 4),
        windows=(1, 2, 4, 8, 16, 32, 64),
        duration=1.0,
    )
    assert list(zip(df["system"], df["clients"])) == [("a", 1), ("b", 1), ("a", 4), ("b", 4)]
    # Unloaded a, b; then one point each in turn while both searches run.
    assert order[:6] == ["a", "b", "a", "b", "a", "b"]
    assert df.loc[(df.system == "a") & (df.clients == 1), "peak_throughput"].item() == 4000.0
    assert df.loc[(df.system == "b") & (df.clients == 1), "peak_window"].item() == 16
    for column in [
        "protocol",
        "nodes",
        "command_size",
        "unloaded_p50_ms",
        "unloaded_p99_ms",
        "peak_p50_ms",
        "peak_p99_ms",
        "python",
        "pysyncobj_version",
        "date",
        "cpu_count",
    ]:
        assert column in df.columns
    points = df.attrs["points"]
    assert len(points) == len(order) and set(points["stage"]) == {"unloaded", "peak"}


def test_the_peers_command_prints_one_row_per_system_and_writes_tidy_files(tmp_path, monkeypatch):
    monkeypatch.setitem(SYSTEMS, "fake", FakeSystem("fake"))
    args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--systems", "fake", "--clients", "2", "--duration", "1", "--out", str(tmp_path / "s.csv")]
    )
    console = Console(record=True, width=140)
    assert peers_command(args, console) == 0
    text = console.export_text()
    assert "fake" in text and "8,000" in text
    summary = pd.read_csv(tmp_path / "s.csv")
    points = pd.read_csv(tmp_path / "s-points.csv")
    assert list(summary["system"]) == ["fake"] and len(points) > 1
    with pytest.raises(SystemExit):
        add_arguments(argparse.ArgumentParser()).parse_args(["--systems", "nope"])


def test_the_table_shows_missing_numbers_as_a_dash():
    df = pd.DataFrame([{"system": "s", "protocol": "raft", "clients": 3, "peak_p50_ms": math.nan}])
    console = Console(record=True, width=140)
    console.print(comparison_table(df))
    assert "-" in console.export_text()


# --- processes are always stopped ----------------------------------------------

# A node that never answers, with a child of its own; it writes both pids.
HANG = r"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(os.path.join(sys.argv[1], str(os.getpid())), "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
time.sleep(120)
"""


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _assert_all_dead(pids, within=10.0):
    end = time.monotonic() + within
    while time.monotonic() < end and not all(_dead(p) for p in pids):
        time.sleep(0.05)
    assert [p for p in pids if not _dead(p)] == []


def _wait_for_files(folder: Path, count: int, within=10.0) -> list[int]:
    end = time.monotonic() + within
    while time.monotonic() < end and len(list(folder.iterdir())) < count:
        time.sleep(0.02)
    pids = []
    for f in folder.iterdir():
        pids += [int(x) for x in f.read_text().split()]
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to see processes")
def test_node_processes_kill_nodes_and_their_children_when_the_caller_fails(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), NodeProcesses() as procs:
        for _ in range(2):
            procs.spawn([sys.executable, "-c", HANG, str(tmp_path)])
        pids = _wait_for_files(tmp_path, 2)
        assert len(pids) == 4
        raise RuntimeError("boom")
    _assert_all_dead(pids)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to see processes")
def test_a_point_whose_nodes_hang_fails_and_leaves_no_process(tmp_path):
    with pytest.raises(PeerError, match="HELLO") as err:
        run_pysyncobj_point(
            LoadPoint(duration=1.0),
            startup_timeout=1.0,
            node_command=[sys.executable, "-c", HANG, str(tmp_path)],
        )
    assert len(err.value.pids) == 3
    written = [int(x) for f in tmp_path.iterdir() for x in f.read_text().split()]
    _assert_all_dead(err.value.pids + written)


def test_a_node_that_exits_early_is_reported_with_its_stderr():
    with pytest.raises(PeerError, match="exited") as err, NodeProcesses() as procs:
        procs.spawn([sys.executable, "-c", "import sys; sys.exit('no such luck')"])
        procs.expect("HELLO", [0], timeout=30.0)
    assert "no such luck" in str(err.value)


# --- the real thing, briefly --------------------------------------------------


def test_pysyncobj_three_processes_commit_commands():
    pytest.importorskip("pysyncobj", reason="pysyncobj not installed (pip install -e '.[peers]')")
    closed = run_pysyncobj_point(LoadPoint(clients=3, window=2, duration=1.0, warmup=0.3))
    assert closed.committed > 0 and closed.throughput > 0
    assert closed.failed == 0 and closed.p50_ms > 0
    nodes = closed.notes["per_node"]
    assert len(nodes) == 3 and sum(n["clients"] for n in nodes) == 3
    assert [n["leader"] for n in nodes].count(True) == 1 and nodes[0]["leader"]
    json.dumps(closed.notes)  # tidy: the notes serialize

    opened = run_pysyncobj_point(LoadPoint(rate=60.0, duration=1.0, warmup=0.3))
    assert opened.committed > 0 and opened.offered_rate == 60.0


def test_the_node_module_imports_nothing_from_the_project():
    source = Path(pysyncobj_node.__file__).read_text()
    assert "from bench" not in source and "import bench" not in source
    assert "import consensus" not in source and "from consensus" not in source
    assert os.path.basename(pysyncobj_node.__file__) == "pysyncobj_node.py"


def test_against_reference_bounds_latency_by_a_tenth_of_the_references_peak_p50():
    import pandas as pd

    from bench.peers.measure import against_reference

    summary = pd.DataFrame(
        [
            {
                "system": "pysyncobj",
                "protocol": "raft",
                "clients": 3,
                "unloaded_p50_ms": 100.0,
                "peak_throughput": 20_000.0,
                "peak_p50_ms": 300.0,
            },
            {
                "system": "pysyncobj",
                "protocol": "raft",
                "clients": 12,
                "unloaded_p50_ms": 100.0,
                "peak_throughput": 30_000.0,
                "peak_p50_ms": 200.0,
            },
            {  # another configuration: neither the reference nor judged
                "system": "pysyncobj-nobatch",
                "protocol": "raft",
                "clients": 3,
                "unloaded_p50_ms": 0.2,
                "peak_throughput": 35_000.0,
                "peak_p50_ms": 1.0,
            },
            {
                "system": "raft",
                "protocol": "raft",
                "clients": 12,
                "unloaded_p50_ms": 0.8,
                "peak_throughput": 90_000.0,
                "peak_p50_ms": 50.0,
            },
        ]
    )
    points = pd.DataFrame(
        [
            {
                "system": "raft",
                "stage": "peak",
                "throughput": 40_000.0,
                "p50_ms": 5.0,
                "clients": 12,
                "window": 16,
            },
            {
                "system": "raft",
                "stage": "peak",
                "throughput": 65_000.0,
                "p50_ms": 19.0,
                "clients": 12,
                "window": 64,
            },
            {
                "system": "raft",
                "stage": "peak",
                "throughput": 90_000.0,
                "p50_ms": 50.0,
                "clients": 12,
                "window": 256,
            },  # faster, but over the bound (20 ms)
            {
                "system": "raft",
                "stage": "unloaded",
                "throughput": 1_000.0,
                "p50_ms": 0.8,
                "clients": 1,
                "window": 1,
            },
        ]
    )
    (row,) = against_reference(summary, points, peers=("pysyncobj-nobatch",)).to_dict("records")
    assert row["reference_peak"] == 30_000 and row["latency_bound_ms"] == pytest.approx(20.0)
    assert row["bounded_peak"] == 65_000 and row["bounded_peak_window"] == 64
    assert row["ratio"] == pytest.approx(65 / 30)
    assert row["unloaded_target_met"] and row["throughput_target_met"]


def _load_spec(*, index: int = 0, processes: int = 1, duration: float = 1.0, **more: Any) -> dict:
    """A load process's spec (``bench.tcpload``): one closed-loop client, and ``more``."""
    return {
        "index": index,
        "processes": processes,
        "start_at": 0.0,
        "workload": {"mode": "closed", "clients": 1, "duration": duration},
        **more,
    }


def test_the_puts_load_writes_unique_values_of_the_command_size_to_1000_keys():
    from bench.tcpload import _Load

    spec = _load_spec(index=1, processes=2, kind="puts", command_size=12, seed=5)
    load = _Load(spec)
    commands = [load.command() for _ in range(20_000)]
    values = [c.value for c in commands]
    assert len(set(values)) == len(values)
    assert all(len(v) == 12 for v in values[:9_000])  # "p1.9999" + padding
    assert all(v.startswith(f"p1.{i + 1}") for i, v in enumerate(values))
    keys = {c.key for c in commands}
    assert keys <= {f"k{i}" for i in range(1000)} and len(keys) > 900
    again = _Load(spec)  # the same seed draws the same keys
    assert [c.key for c in commands[:50]] == [again.command().key for _ in range(50)]


def test_a_latency_load_tallies_operations_as_they_end_and_keeps_none():
    from bench.tcpload import _latencies, _Load
    from consensus.checker.history import INFO, OK, Operation
    from consensus.commands import Put

    spec = _load_spec(duration=3.0, record="latency", measure_from=1.0)
    load = _Load(spec)
    assert load.history is None and load.tally is not None

    def op(i: int, invoke: float, complete: float | None, status: str | None) -> Operation:
        o = Operation(
            op_id=i, client=1, seq=i, command=Put(key="k", value="v"), node=0, invoke=invoke
        )
        o.complete, o.status = complete, status
        load.tally.live[i] = o
        return o

    cases = [
        op(1, 0.5, 0.9, OK),  # ended before the window: not counted
        op(2, 0.9, 1.2, OK),  # ended in it: counted, 300 ms
        op(3, 2.0, 2.004, OK),  # 4 ms
        op(4, 2.5, 3.1, OK),  # ended after it: not counted
        op(5, 1.5, None, INFO),  # given up, started in it: failed
        op(6, 0.2, None, INFO),  # given up, started before it: not counted
    ]
    for o in cases:
        load._settle(o)
    load._settle(cases[1])  # a second end of one operation counts once
    assert (load.tally.ok, load.tally.failed) == (2, 1) and not load.tally.live
    op(7, 2.9, None, None)  # still outstanding when the run ends: failed
    op(8, 3.2, None, None)  # started after the window (drain): not counted
    load._give_up_unended()
    assert not load.tally.live
    out = _latencies(load, spec)
    assert out["ok"] == 2 and out["failed"] == 2 and out["duration"] == 2.0
    assert sorted(out["samples_ms"]) == pytest.approx([4.0, 300.0])
