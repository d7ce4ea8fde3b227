"""Sweeps streamed into a parquet dataset read back as the in-memory sweep, and resume.

``sweep_to`` writes each run (a grid point with one protocol) as it
finishes; ``read_sweep`` must give exactly what ``sweep`` returns, also
after a sweep was stopped and resumed, whatever ran where.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sweep_helpers import assert_same_results

from bench.cli import main
from bench.dataset import MANIFEST
from bench.sweep import read_sweep, sweep, sweep_to
from consensus.config import ConfigError

# 2 delays x 2 sizes x 2 protocols = 8 short runs, no faults: the faults
# table is empty in every run.
SWEEP = {
    "protocols": ["sequencer", "paxos"],
    "cluster": {"seed": 2},
    "workload": {"clients": 2, "duration": 0.3, "warmup": 0.1},
    "sweep": {
        "cluster.network.delay": [
            {"kind": "constant", "value": 0.001},
            {"kind": "uniform", "low": 0.001, "high": 0.003},
        ],
        "cluster.nodes": [3, 5],
    },
}


@pytest.fixture(scope="module")
def serial():
    return sweep(SWEEP)


def test_a_streamed_sweep_reads_back_as_the_in_memory_sweep(serial, tmp_path):
    out = sweep_to(SWEEP, tmp_path / "out")
    assert_same_results(read_sweep(out), serial)
    assert len(serial.faults) == 0 and len(serial.summary) == 8
    # A table or list value is a column of its JSON text, so it groups.
    delays = serial.summary["cluster.network.delay"]
    assert json.loads(delays[0]) == SWEEP["sweep"]["cluster.network.delay"][0]
    assert len(serial.summary.groupby(["cluster.network.delay", "protocol"])) == 4
    # Plain pandas reads a table as a hive-partitioned dataset (protocol last).
    ops = pd.read_parquet(out / "ops")
    assert len(ops) == len(serial.ops)
    assert set(ops["protocol"]) == {"sequencer", "paxos"}
    assert (out / "ops" / "protocol=paxos" / "part-00003.parquet").exists()


def test_a_stopped_sweep_keeps_its_finished_runs_and_resumes_to_the_same_result(serial, tmp_path):
    out = tmp_path / "out"

    def stop_after_three(done, total, label):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep_to(SWEEP, out, progress=stop_after_three)
    with pytest.raises(FileNotFoundError, match="5 of 8 runs are not written.*--resume"):
        read_sweep(out)
    assert len(read_sweep(out, partial=True).summary) == 3

    counts = []
    sweep_to(SWEEP, out, resume=True, progress=lambda done, total, label: counts.append(done))
    assert counts == [4, 5, 6, 7, 8]  # the three written runs count as done
    assert_same_results(read_sweep(out), serial)


def test_an_out_directory_is_replaced_only_when_it_holds_a_sweep(tmp_path):
    small = {**SWEEP, "protocols": ["sequencer"], "sweep": {"cluster.nodes": [3]}}
    out = sweep_to(small, tmp_path / "out")
    (out / "summary" / "protocol=stale").mkdir()
    sweep_to(small, out)  # the same command again: a fresh dataset
    assert not (out / "summary" / "protocol=stale").exists()
    other = {**small, "sweep": {"cluster.nodes": [5]}}
    with pytest.raises(ConfigError, match="holds another sweep"):
        sweep_to(other, out, resume=True)
    (out / MANIFEST).unlink()
    with pytest.raises(ConfigError, match="no _sweep.json"):
        sweep_to(small, out)


def test_cli_sweep_out_writes_the_dataset_and_resume_needs_out(tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text(
        'protocols = ["sequencer"]\n[workload]\nduration = 0.3\nwarmup = 0.1\n'
        '[sweep]\n"workload.clients" = [1, 2]\n'
    )
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "2 points, 2 runs" in capsys.readouterr().out
    assert list(read_sweep(tmp_path / "out").summary["workload.clients"]) == [1, 2]
    assert main(["sweep", str(path), "--resume"]) == 2
    assert "--resume" in capsys.readouterr().err
