"""The linearizability checker: hand-made histories, a brute-force oracle, generated ones.

Histories are written as tables: ``(client, "put x 1", invoke, complete,
result[, status])``.  Commands: ``get x``, ``put x V``, ``append x V``,
``cas x E N`` (``-`` for None), ``delete x``.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.histories import corrupt, generate_linearizable_history
from consensus.checker.history import FAIL, INFO, OK, History, Operation
from consensus.checker.linearizability import check, check_key, describe_operation
from consensus.commands import Append, CompareAndSet, Delete, Get, Put
from consensus.statemachine import KVStore


def _command(text: str) -> Any:
    kind, key, *args = text.split()
    some = [None if a == "-" else a for a in args]
    if kind == "get":
        return Get(key=key)
    if kind == "put":
        return Put(key=key, value=args[0])
    if kind == "append":
        return Append(key=key, value=args[0])
    if kind == "cas":
        return CompareAndSet(key=key, expected=some[0], new=args[1])
    assert kind == "delete"
    return Delete(key=key)


def H(*rows: tuple[Any, ...]) -> list[Operation]:
    ops = []
    for n, (client, text, invoke, complete, result, *status) in enumerate(rows):
        st_ = status[0] if status else OK
        ops.append(
            Operation(
                op_id=n,
                client=client,
                seq=n,
                command=_command(text),
                node=None,
                invoke=float(invoke),
                complete=None if st_ == INFO else float(complete),
                status=st_,
                result=result if st_ == OK else None,
            )
        )
    return ops


def linearizable(ops: list[Operation]) -> bool | None:
    return check(ops).ok


# --- a brute-force oracle, independent of the checker -------------------------------------


def brute_force(ops: list[Operation]) -> bool:
    """Try every order (memoized on the set done and the data), per Jepsen's rules."""
    live = [op for op in ops if op.status != FAIL and not (op.status != OK and _is_get(op))]
    n = len(live)

    @functools.cache
    def go(done: int, data: tuple[tuple[str, str], ...]) -> bool:
        todo = [i for i in range(n) if not done >> i & 1]
        if all(live[i].status != OK for i in todo):
            return True
        for i in todo:
            op = live[i]
            # Nothing left may have completed strictly before ``op`` was invoked.
            if any(
                live[j].status == OK and live[j].complete < op.invoke  # type: ignore[operator]
                for j in todo
                if j != i
            ):
                continue
            store = KVStore()
            store.data = dict(data)
            result = store.execute(op.command)
            if op.status == OK and result != op.result:
                continue
            if go(done | 1 << i, tuple(sorted(store.data.items()))):
                return True
        return False

    return go(0, ())


def _is_get(op: Operation) -> bool:
    return isinstance(op.command, Get)


# --- known linearizable -------------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    result = check([])
    assert result.ok is True and result.operations == 0 and result.keys == 0


def test_sequential_history_is_linearizable() -> None:
    ops = H(
        (1, "get x", 0, 1, None),
        (1, "put x a", 2, 3, None),
        (2, "get x", 4, 5, "a"),
        (2, "append x b", 6, 7, None),
        (1, "get x", 8, 9, "ab"),
        (1, "cas x ab c", 10, 11, True),
        (2, "cas x ab d", 12, 13, False),
        (2, "delete x", 14, 15, True),
        (1, "delete x", 16, 17, False),
        (1, "get x", 18, 19, None),
    )
    assert linearizable(ops) is True


@pytest.mark.parametrize("seen", ["a", "b"])
def test_concurrent_writes_then_a_read_of_either_value(seen: str) -> None:
    ops = H(
        (1, "put x a", 0, 10, None),
        (2, "put x b", 1, 9, None),
        (3, "get x", 11, 12, seen),
        (3, "get x", 13, 14, seen),
    )
    assert linearizable(ops) is True


def test_read_concurrent_with_a_write_may_see_old_or_new() -> None:
    for seen in (None, "a"):
        ops = H((1, "put x a", 0, 10, None), (2, "get x", 2, 3, seen))
        assert linearizable(ops) is True


def test_cas_race_exactly_one_wins() -> None:
    ops = H(
        (1, "cas x - a", 0, 10, True),
        (2, "cas x - b", 1, 9, False),
        (3, "get x", 11, 12, "a"),
    )
    assert linearizable(ops) is True


def test_concurrent_appends_in_either_order() -> None:
    for seen in ("ab", "ba"):
        ops = H((1, "append x a", 0, 10, None), (2, "append x b", 1, 9, None))
        ops += H((3, "get x", 11, 12, seen))
        assert linearizable(ops) is True


def test_delete_reports_whether_the_key_existed() -> None:
    ops = H(
        (1, "delete x", 0, 1, False),
        (1, "put x a", 2, 3, None),
        (2, "delete x", 4, 5, True),
        (2, "get x", 6, 7, None),
        (1, "append x b", 8, 9, None),
        (1, "get x", 10, 11, "b"),
    )
    assert linearizable(ops) is True


def test_intervals_touching_at_one_instant_are_concurrent() -> None:
    # The write completes at 1 and the read is invoked at 1: either order.
    assert linearizable(H((1, "put x a", 0, 1, None), (2, "get x", 1, 2, None))) is True
    assert linearizable(H((1, "put x a", 0, 1, None), (2, "get x", 1.5, 2, None))) is False


# --- known non-linearizable ---------------------------------------------------------------


def test_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    assert linearizable(H((1, "put x a", 0, 1, None), (2, "get x", 2, 3, None))) is False


def test_lost_write_is_not_linearizable() -> None:
    ops = H(
        (1, "put x a", 0, 1, None),
        (1, "put x b", 2, 3, None),
        (2, "get x", 4, 5, "a"),
    )
    assert linearizable(ops) is False


def test_read_of_a_never_written_value_is_not_linearizable() -> None:
    assert linearizable(H((1, "put x a", 0, 1, None), (2, "get x", 2, 3, "z"))) is False


def test_reads_going_back_in_time_across_clients_are_not_linearizable() -> None:
    ops = H(
        (1, "put x a", 0, 1, None),
        (2, "put x b", 2, 20, None),
        (3, "get x", 3, 4, "b"),
        (4, "get x", 5, 6, "a"),
    )
    assert linearizable(ops) is False


def test_two_cas_from_the_same_value_cannot_both_succeed() -> None:
    ops = H((1, "cas x - a", 0, 10, True), (2, "cas x - b", 1, 9, True))
    assert linearizable(ops) is False


def test_append_order_contradicting_real_time_is_not_linearizable() -> None:
    ops = H(
        (1, "append x a", 0, 1, None),
        (2, "append x b", 2, 3, None),
        (3, "get x", 4, 5, "ba"),
    )
    assert linearizable(ops) is False


def test_delete_of_an_absent_key_answering_true_is_not_linearizable() -> None:
    assert linearizable(H((1, "delete x", 0, 1, True))) is False


# --- pending ("info") and failed operations -----------------------------------------------


def test_pending_write_observed_later_is_linearizable() -> None:
    ops = H(
        (1, "put x a", 0, None, None, INFO),
        (2, "get x", 5, 6, None),
        (2, "get x", 7, 8, "a"),
        (2, "get x", 9, 10, "a"),
    )
    assert linearizable(ops) is True


def test_pending_write_never_observed_is_linearizable() -> None:
    ops = H((1, "put x a", 0, None, None, INFO), (2, "get x", 5, 6, None))
    assert linearizable(ops) is True


def test_pending_write_cannot_take_effect_before_its_invocation() -> None:
    ops = H((2, "get x", 0, 1, "a"), (1, "put x a", 2, None, None, INFO))
    assert linearizable(ops) is False


def test_pending_write_takes_effect_at_most_once() -> None:
    ops = H(
        (1, "put x a", 0, None, None, INFO),
        (2, "get x", 1, 2, "a"),
        (2, "put x b", 3, 4, None),
        (2, "get x", 5, 6, "b"),
        (2, "get x", 7, 8, "a"),
    )
    assert linearizable(ops) is False


def test_pending_get_constrains_nothing() -> None:
    ops = H((1, "put x a", 0, 1, None), (2, "get x", 2, None, "bogus", INFO))
    result = check(ops)
    assert result.ok is True and result.operations == 2


def test_failed_operations_did_not_happen() -> None:
    # A failed write is ignored; reading its value is a violation.
    ops = H((1, "put x a", 0, 1, None, FAIL), (2, "get x", 2, 3, None))
    assert check(ops).ok is True and check(ops).operations == 1
    ops = H((1, "put x a", 0, 1, None, FAIL), (2, "get x", 2, 3, "a"))
    assert linearizable(ops) is False


# --- results, witnesses and rendering -----------------------------------------------------


def test_keys_are_checked_independently() -> None:
    ops = H(
        (1, "put x a", 0, 1, None),
        (1, "put y a", 0, 1, None),
        (2, "get x", 2, 3, "a"),
        (2, "get y", 2, 3, None),
    )
    result = check(History(ops))
    assert (result.ok, result.operations, result.keys) == (False, 4, 2)
    assert [v.key for v in result.violations] == ["y"]
    assert {op.key() for op in result.violations[0].operations} == {"y"}


def test_check_key_rejects_operations_on_several_keys() -> None:
    with pytest.raises(ValueError):
        check_key(H((1, "get x", 0, 1, None), (1, "get y", 0, 1, None)))
    assert check_key(H((1, "get x", 0, 1, None))).ok is True


def test_witness_of_a_stale_read_buried_in_200_operations_is_small() -> None:
    # 200 sequential ops: put v0..v99, each read back; then v3 is read again.
    rows = []
    for i in range(100):
        rows.append((1, f"put x v{i}", 4 * i, 4 * i + 1, None))
        rows.append((2, "get x", 4 * i + 2, 4 * i + 3, f"v{i}"))
    rows.append((3, "get x", 1000, 1001, "v3"))
    result = check(H(*rows))
    assert result.ok is False
    (violation,) = result.violations
    witness = [describe_operation(op).split("  ", 2)[2] for op in violation.operations]
    assert len(witness) <= 4
    assert witness[0] == "put x=v3 -> ok" and witness[-1] == "get x -> v3"
    assert check_key(violation.operations).ok is False


def test_witness_of_a_lost_cas_keeps_the_conflicting_pair() -> None:
    noise = [(9, "get y", i, i + 1, None) for i in range(50)]
    ops = H(*noise, (1, "cas x - a", 0, 10, True), (2, "cas x - b", 1, 9, True))
    (violation,) = check(ops).violations
    assert sorted(op.command.new for op in violation.operations) == ["a", "b"]


def test_describe_renders_one_line_per_operation() -> None:
    ops = H(
        (1, "put x a", 0, 1, None),
        (2, "get x", 2, 3.5, None),
        (3, "cas x b c", 0, None, None, INFO),
    )
    (violation,) = check(ops).violations
    lines = violation.describe().splitlines()
    assert lines[0].startswith("key 'x' is not linearizable: ")
    assert "  client 1  [0, 1]  put x=a -> ok" in lines
    assert "  client 2  [2, 3.5]  get x -> None" in lines
    assert describe_operation(ops[2]) == "client 3  [0, ?]  cas x b->c -> info (unknown)"


def test_a_history_that_runs_out_of_time_is_unknown() -> None:
    # The deadline has passed before the first limit check (after 4096 steps).
    history = generate_linearizable_history(
        random.Random(7), ops=3000, keys=1, clients=4, pending_fraction=0.0
    )
    result = check(history, timeout=0.0)
    assert result.ok is None and result.unknown_keys == ["k0"] and not result.violations


# --- against the oracle, and on generated histories ---------------------------------------

_small_op = st.tuples(
    st.integers(1, 3),  # client
    st.sampled_from(
        ["get x", "put x a", "put x b", "append x a", "cas x a b", "cas x - a"] + ["delete x"]
    ),  # fmt: skip
    st.integers(0, 8),  # invoke
    st.integers(0, 4),  # duration
    st.sampled_from([None, "a", "b", "ab", "aa", True, False]),
    st.sampled_from([OK, OK, OK, OK, INFO, FAIL]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_small_op, max_size=7))
def test_verdict_agrees_with_brute_force(rows: list[tuple[Any, ...]]) -> None:
    ops = H(*[(c, text, t, t + d, result, status) for c, text, t, d, result, status in rows])
    result = check(ops)
    assert result.ok is brute_force(ops)
    for violation in result.violations:
        # A witness is a sub-history that fails on its own.
        assert all(any(op is o for o in ops) for op in violation.operations)
        assert brute_force(violation.operations) is False


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    keys=st.integers(1, 3),
    clients=st.integers(1, 6),
    pending=st.sampled_from([0.0, 0.03]),
)
def test_generated_histories_are_linearizable(
    seed: int, keys: int, clients: int, pending: float
) -> None:
    rng = random.Random(seed)
    history = generate_linearizable_history(
        rng, ops=150, keys=keys, clients=clients, pending_fraction=pending, fail_fraction=0.02
    )
    result = check(history)
    assert result.ok is True, f"seed={seed}: {result.violations[0].describe()}"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), keys=st.integers(2, 4), clients=st.integers(2, 4))
def test_an_injected_stale_read_is_caught_and_named(seed: int, keys: int, clients: int) -> None:
    rng = random.Random(seed)
    history = generate_linearizable_history(
        rng, ops=150, keys=keys, clients=clients, pending_fraction=0.02
    )
    try:
        bad = corrupt(history, rng)
    except ValueError:
        return  # no read follows two ordered writes: nothing to corrupt
    (stale,) = [b for a, b in zip(history, bad) if a.result != b.result]
    result = check(bad)
    assert result.ok is False, f"seed={seed}"
    (violation,) = result.violations
    # The witness is about the corrupted read, not a read whose write it dropped.
    assert any(op is stale for op in violation.operations), violation.describe()
    assert check_key(violation.operations).ok is False


def test_a_10000_operation_history_over_10_keys_is_linearizable() -> None:
    history = generate_linearizable_history(
        random.Random(2024), ops=10_000, keys=10, clients=20, pending_fraction=0.01
    )
    result = check(history)
    assert (result.ok, result.keys) == (True, 10)
    assert result.operations == sum(op.status != FAIL for op in history)
