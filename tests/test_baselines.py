"""The framework's side of the unsafe baselines: answers without a log, the
lost-writes check, the registry's safety marker, the kit's honest skips,
the command line's marker, and the faults the comparison uses."""

from __future__ import annotations

import unittest
from typing import Any

import pytest
from core_helpers import lone_host

from bench.cli import main
from bench.config import load_run_config
from bench.faults import Fault
from bench.runner import run_one
from consensus.checker.history import INFO, OK, Operation
from consensus.checker.lost import lost_writes
from consensus.commands import Append, CompareAndSet, Delete, Get, Noop, Put, Request
from consensus.config import ConfigError
from consensus.host import ClientReply
from consensus.registry import CAPABILITIES, ProtocolSpec, get_protocol
from consensus.replica import Answer, Committed, Outputs, StateSnapshot
from consensus.testing import RULES, check_chaos, rules

# -- answers without the log ---------------------------------------------------------------


def test_an_answer_is_carried_out_merged_and_compared_like_the_other_outputs() -> None:
    request = Request(client_id=3, seq=4, command=Get(key="k"))
    out = Outputs()
    assert out.answers is None and not out and out == Outputs(answers=[])
    out.answer(request, "v")
    assert out and out.answers == [Answer(client_id=3, seq=4, result="v")]
    merged = Outputs()
    merged.extend(out)
    assert merged == out


def test_merged_outputs_drop_what_earlier_inputs_committed_when_a_later_one_rolls_back() -> None:
    # A primary-backup resync: one input commits 5-7, the next one truncates
    # the log to 4 and restores the state at 4, the next commits a new 5.
    first, second, third = Outputs(), Outputs(), Outputs()
    for index in (5, 6, 7):
        first.committed.append(Committed(index=index, payload=Noop()))
    second.restore = StateSnapshot(index=4, data={})
    third.committed.append(Committed(index=5, payload=Noop()))
    merged = Outputs()
    for out in (first, second, third):
        merged.extend(out)
    assert merged.restore.index == 4
    assert [c.index for c in merged.committed] == [5]


def test_the_host_replies_with_the_plugins_own_result() -> None:
    replies: list[Any] = []
    host = lone_host(replies=replies)
    request = Request(client_id=3, seq=4, command=Get(key="k"))
    host.waiting[(3, 4)] = (request, "waiter")
    out = Outputs()
    out.answer(request, "from a quorum")
    host.handle(0.0, out)
    host.handle(0.0, out)  # a second answer finds nobody waiting
    assert replies == [("waiter", ClientReply(ok=True, result="from a quorum", node=0))]
    assert host.sm.applied_index == 0  # the state machine was not consulted


# -- acknowledged writes lost ------------------------------------------------------------------


def op(
    i: int, command: Any, invoke: float, complete: float | None, result: Any = None
) -> Operation:
    status = OK if complete is not None else INFO
    return Operation(
        op_id=i, client=i, seq=1, command=command, node=0, invoke=invoke, complete=complete,
        status=status, result=result,
    )  # fmt: skip


def test_a_write_no_node_holds_is_lost_unless_a_later_write_may_have_replaced_it() -> None:
    first = op(1, Put(key="k", value="a"), 0.0, 1.0)
    second = op(2, Put(key="k", value="b"), 2.0, 3.0)
    assert lost_writes([first, second], {0: {"k": "b"}}) == []  # b replaced a
    assert lost_writes([first, second], {0: {"k": "a"}}) == [second]  # a was done before b
    overlapping = op(3, Put(key="k", value="c"), 0.5, 2.5)
    assert lost_writes([first, overlapping], {0: {"k": "c"}}) == []  # c may come after a
    unknown = op(4, Delete(key="k"), 5.0, None)
    assert lost_writes([second, unknown], {0: {}}) == []  # the delete may have happened


def test_appends_compare_and_sets_and_failed_writes() -> None:
    append = op(1, Append(key="k", value="x1"), 0.0, 1.0)
    cas = op(2, CompareAndSet(key="k", expected=None, new="y2"), 2.0, 3.0, result=True)
    failed = op(3, CompareAndSet(key="k", expected="zz", new="z3"), 4.0, 5.0, result=False)
    assert lost_writes([append], {0: {"k": "x0x1"}, 1: {}}) == []  # held inside a value
    assert lost_writes([append, cas, failed], {0: {"k": "x1"}}) == [cas]
    assert lost_writes([failed], {0: {}}) == []  # a failed compare-and-set wrote nothing


# -- the registry and the kit -----------------------------------------------------------------------


def test_unsafe_baselines_lack_linearizability_and_consensus_lacks_nothing() -> None:
    assert {"log", "linearizability"} <= set(CAPABILITIES)
    for name in ("raft", "multipaxos", "paxos"):
        assert get_protocol(name).safe and get_protocol(name).lacks == {}
    for name in ("primary-backup", "nwr"):
        spec = get_protocol(name)
        assert not spec.safe and "linearizability" in spec.lacks
        assert spec.hazards is not None and spec.hazards(spec.make_options())
    assert get_protocol("nwr").hazards(get_protocol("nwr").make_options())  # type: ignore[misc]
    pb = get_protocol("primary-backup")
    assert pb.hazards(pb.make_options({"reads": "confirmed"})) == ()  # type: ignore[misc]
    assert get_protocol("sequencer").safe


def test_the_kit_skips_what_a_baseline_is_meant_to_break_and_says_why() -> None:
    needs = {rule.name: set(rule.needs) for rule in RULES}
    assert needs["linearizable_under_faults"] == {"linearizability"}
    assert all(
        "log" in needs[r] for r in needs if r not in ("determinism", "linearizable_under_faults")
    )
    with pytest.raises(unittest.SkipTest, match="nwr lacks linearizability: stale reads"):
        check_chaos("nwr", runs=1)
    with pytest.raises(unittest.SkipTest, match="lacks log"):
        rules.agreement("nwr")
    rules.determinism("nwr")  # what it does promise, it is held to


def test_a_spec_with_a_misspelt_capability_is_refused() -> None:
    with pytest.raises(ValueError, match="linearisability"):
        ProtocolSpec(
            name="x", create=lambda ctx, r: None, summary="", lacks={"linearisability": ""}
        )  # type: ignore[arg-type,return-value]


# -- the command line ---------------------------------------------------------------------------


def test_the_protocol_list_marks_the_baselines_unsafe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--list"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if "│" in line}
    assert "UNSAFE" in rows["primary-backup"] and "UNSAFE" in rows["nwr"]
    assert "UNSAFE" not in rows["raft"] and "safe" in rows["raft"]


def test_the_run_summary_has_a_safety_column_and_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    config = tmp_path / "two.toml"
    config.write_text(
        'protocols = ["raft", "nwr"]\n[workload]\nduration = 0.3\nwarmup = 0.1\nclients = 2\n'
    )
    assert main(["run", str(config)]) == 0
    out = capsys.readouterr().out
    assert "safety" in out and "UNSAFE nwr: stale reads" in " ".join(out.split())


def test_chaos_reports_a_lost_write_with_its_replay_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["chaos", "--protocol", "primary-backup", "--runs", "1", "--seed", "0"]
    assert main([*args, "--option", "mode=async", "--mix", "registers", "--ops", "120"]) == 1
    out = capsys.readouterr().out
    assert "--mix registers" in out and "--option mode=async" in out


# -- faults ------------------------------------------------------------------------------------


def scenario(faults: list[dict[str, Any]], protocol: str = "raft") -> Any:
    config = load_run_config(
        {
            "protocols": [protocol],
            "cluster": {"nodes": 5, "seed": 1},
            "workload": {"duration": 1.0, "warmup": 0.1, "clients": 2},
            "faults": faults,
            "drain": 0.2,
        }
    )
    return run_one(config, protocol)


def test_a_slow_node_is_slower_for_the_faults_duration_then_fast_again() -> None:
    sim, log, _ = scenario(
        [{"at": 0.3, "action": "slow", "target": "1", "delay": 0.05, "duration": 0.2}]
    )
    assert [(f["action"], f["node"]) for f in log] == [("slow", 1), ("fast", 1)]
    assert sim.network.rules == ()


def test_a_partition_by_size_and_a_partial_partition_around_the_leader() -> None:
    sim, log, _ = scenario(
        [
            {"at": 0.3, "action": "partition", "target": "2", "size": 2, "duration": 0.1},
            {"at": 0.6, "action": "cut", "target": "4", "size": 2, "duration": 0.1},
        ]
    )
    fired = {f["action"]: f for f in log}
    assert fired["partition"]["groups"] == "[[2, 3], [0, 1, 4]]"
    assert fired["cut"]["groups"] == "[2, 3]"  # the two highest ids other than 4
    assert not sim.network.blocked


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"action": "slow"}, "delay"),
        ({"action": "cut"}, "size"),
        ({"action": "partition"}, "groups"),
    ],
)
def test_faults_missing_what_they_need_are_config_errors(
    fault: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Fault(at=0.0, **fault)
