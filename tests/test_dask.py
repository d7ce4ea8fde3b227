"""Sweeps and soaks on a Dask cluster give exactly the serial results, even when a worker dies.

One 2-worker ``LocalCluster`` (single-threaded worker processes, each under a
nanny that restarts it) serves the module; the tests that kill workers run
last.  Skipped when Dask is not installed (``pip install -e '.[dask]'``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="Dask is an optional extra: pip install -e '.[dask]'")

from sweep_helpers import assert_same_results  # noqa: E402

from bench.cli import main  # noqa: E402
from bench.executors import DaskExecutor, TaskFailed  # noqa: E402
from bench.sweep import read_sweep, sweep, sweep_to  # noqa: E402

# 2 points x 2 protocols, runs of 0.3-0.8 s here: long enough to kill a
# worker in the middle of one; a fault so the faults table has rows.
SWEEP = {
    "name": "dask",
    "protocols": ["raft", "multipaxos"],
    "drain": 0.3,
    "cluster": {"seed": 3},
    "workload": {"clients": 8, "duration": 1.0, "warmup": 0.1},
    "faults": [{"at": 0.5, "action": "crash", "target": "follower", "duration": 0.2}],
    "sweep": {"cluster.nodes": [3, 5]},
}


@pytest.fixture(scope="module")
def serial():
    return sweep(SWEEP)


@pytest.fixture(scope="module")
def dask():
    with DaskExecutor("local", workers=2) as executor:
        yield executor


def workers(executor: DaskExecutor) -> set[str]:
    return set(executor.client.scheduler_info()["workers"])


def test_a_sweep_on_a_two_worker_local_cluster_equals_the_serial_sweep(dask, serial):
    assert len(workers(dask)) == 2
    calls = []
    got = sweep(SWEEP, executor=dask, progress=lambda *call: calls.append(call))
    assert_same_results(got, serial)
    assert len(serial.faults) > 0 and len(serial.ops) > 1000
    assert [done for done, _, _ in calls] == [1, 2, 3, 4]
    assert str(dask).startswith("Dask LocalCluster: 2 workers")


def test_a_run_that_raises_on_a_worker_is_retried_once_then_reraised_naming_its_call(
    dask, tmp_path
):
    attempts = tmp_path / "attempts"
    with pytest.raises(ValueError, match="no such thing") as raised:
        list(dask.map(_fail, [((attempts,), {})], describe=lambda i: "the failing call"))
    assert attempts.read_text() == "xx"  # the first try and one retry
    assert any("the failing call" in note for note in raised.value.__notes__)


def test_ctrl_c_cancels_every_task_left_on_the_cluster(dask):
    def interrupt(done, total, label):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(SWEEP, executor=dask, progress=interrupt)

    def left() -> int:
        return dask.client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))

    assert eventually(lambda: left() == 0)


def test_a_worker_killed_mid_sweep_loses_nothing(dask, serial, tmp_path):
    before = workers(dask)
    killed = []

    def kill_a_busy_worker(done, total, label):
        if killed:
            return
        busy = [address for address, keys in dask.client.processing().items() if keys]
        assert busy, "no run left in flight to interrupt"
        killed.append(busy[0])
        (pid,) = dask.client.run(os.getpid, workers=busy[:1]).values()
        os.kill(pid, signal.SIGKILL)

    out = sweep_to(SWEEP, tmp_path / "out", executor=dask, progress=kill_a_busy_worker)
    assert killed[0] not in workers(dask)
    assert_same_results(read_sweep(out), serial)
    from dask import dataframe as dd

    assert len(dd.read_parquet(out / "ops")) == len(serial.ops)
    dask.client.wait_for_workers(2, timeout=30)
    assert workers(dask) != before


def test_a_run_whose_worker_dies_twice_is_reported_with_its_call(dask):
    with pytest.raises(
        TaskFailed, match="the doomed call: its worker died each of the 2 times"
    ) as raised:
        list(dask.map(os._exit, [((3,), {})], describe=lambda i: "the doomed call"))
    assert raised.value.call == "the doomed call" and raised.value.index == 0


def test_cli_chaos_on_dask_reports_the_serial_violations_with_replay_commands(capsys):
    # Seed 20 of the deliberately broken variant shows a stale read.
    chaos = ["chaos", "--protocol", "raft-stale-reads", "--runs", "4", "--seed", "18"]
    chaos += ["--ops", "150"]
    assert main(chaos) == 1
    serial = capsys.readouterr().out
    assert "replay: python -m bench chaos --protocol raft-stale-reads --runs 1 --seed 20" in serial
    assert main([*chaos, "--dask", "local", "--dask-workers", "2"]) == 1
    assert capsys.readouterr().out == serial


def eventually(check, timeout: float = 30.0) -> bool:
    # The scheduler acts on some messages (a cancel) after the call returns.
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _fail(attempts: Path) -> None:
    with attempts.open("a") as f:
        f.write("x")
    raise ValueError("no such thing")
