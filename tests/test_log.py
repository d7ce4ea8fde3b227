"""The shared replicated log: 1-based indexing, slices, truncation and compaction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.log import CompactedError, Log


def make_log(n: int) -> Log[str]:
    log: Log[str] = Log()
    for i in range(1, n + 1):
        log.append(f"e{i}")
    return log


def test_empty_log_has_sentinel_index_zero() -> None:
    log: Log[str] = Log()
    assert len(log) == 0
    assert log.last_index == 0
    assert log.first_index == 1
    assert log.snapshot_index == 0 and log.snapshot_term == 0
    assert log.last() is None
    assert 0 not in log and 1 not in log
    assert log.entries(1) == []


def test_append_returns_the_new_entrys_index() -> None:
    log: Log[str] = Log()
    assert log.append("a") == 1
    assert log.append("b") == 2
    assert log[1] == "a" and log[2] == "b"
    assert log.last() == "b"
    assert log.last_index == 2 and len(log) == 2


def test_extend_adds_entries_in_order() -> None:
    log = make_log(1)
    log.extend(["e2", "e3"])
    log.extend(iter(["e4"]))
    assert log.entries(1) == ["e1", "e2", "e3", "e4"]
    assert log.last_index == 4


def test_getitem_beyond_last_index_raises_index_error_not_compacted() -> None:
    log = make_log(3)
    with pytest.raises(IndexError) as info:
        log[4]
    assert not isinstance(info.value, CompactedError)


def test_contains_covers_exactly_the_held_entries() -> None:
    log = make_log(5)
    log.compact(2, term=1)
    assert [i for i in range(0, 8) if i in log] == [3, 4, 5]


def test_entries_is_half_open_lo_to_hi() -> None:
    log = make_log(5)
    assert log.entries(2, 4) == ["e2", "e3"]
    assert log.entries(2) == ["e2", "e3", "e4", "e5"]
    assert log.entries(1, 6) == ["e1", "e2", "e3", "e4", "e5"]
    assert log.entries(1, 99) == ["e1", "e2", "e3", "e4", "e5"]  # hi past end is clipped
    assert log.entries(3, 3) == []
    assert log.entries(4, 2) == []  # hi < lo is empty, not a wrap-around slice
    assert log.entries(6) == []  # one past the end


def test_entries_returns_a_copy() -> None:
    log = make_log(3)
    got = log.entries(1)
    got.append("x")
    assert log.last_index == 3


def test_truncate_after_drops_the_conflicting_suffix() -> None:
    log = make_log(5)
    log.truncate_after(3)
    assert log.last_index == 3
    assert log.entries(1) == ["e1", "e2", "e3"]
    assert log.append("new4") == 4
    log.truncate_after(0)
    assert log.last_index == 0 and log.last() is None


def test_truncate_after_beyond_the_end_is_a_no_op() -> None:
    log = make_log(3)
    log.truncate_after(10)
    assert log.entries(1) == ["e1", "e2", "e3"]


def test_compact_keeps_snapshot_index_and_term_and_later_entries() -> None:
    log = make_log(5)
    log.compact(3, term=7)
    assert log.snapshot_index == 3 and log.snapshot_term == 7
    assert log.first_index == 4
    assert log.last_index == 5
    assert len(log) == 2
    assert log[4] == "e4" and log[5] == "e5"
    assert log.entries(4) == ["e4", "e5"]
    assert log.append("e6") == 6
    assert log[6] == "e6"


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_compacted_indexes_raise_compacted_error(index: int) -> None:
    log = make_log(5)
    log.compact(3, term=2)
    with pytest.raises(CompactedError, match="compacted"):
        log[index]
    with pytest.raises(CompactedError):
        log.entries(index)
    with pytest.raises(CompactedError):
        log.entries(index, 5)


def test_compacted_error_is_an_index_error() -> None:
    assert issubclass(CompactedError, IndexError)


def test_truncating_inside_the_snapshot_raises() -> None:
    log = make_log(5)
    log.compact(3, term=1)
    with pytest.raises(CompactedError, match="inside the snapshot"):
        log.truncate_after(2)
    assert log.entries(4) == ["e4", "e5"]  # unchanged
    log.truncate_after(3)  # at the boundary is allowed: drops every held entry
    assert log.last_index == 3 and len(log) == 0


def test_compact_at_or_below_snapshot_index_is_ignored() -> None:
    log = make_log(5)
    log.compact(3, term=4)
    log.compact(2, term=9)
    log.compact(3, term=9)
    assert log.snapshot_index == 3 and log.snapshot_term == 4
    assert log.entries(4) == ["e4", "e5"]


def test_compact_past_the_end_installs_an_empty_log_at_the_snapshot() -> None:
    log = make_log(3)
    log.compact(10, term=5)  # e.g. Raft InstallSnapshot from a leader far ahead
    assert log.snapshot_index == 10 and log.snapshot_term == 5
    assert log.last_index == 10 and len(log) == 0
    assert log.last() is None
    assert log.append("e11") == 11


def test_log_constructed_at_a_snapshot_starts_after_it() -> None:
    log: Log[str] = Log(snapshot_index=4, snapshot_term=2)
    assert log.first_index == 5 and log.last_index == 4
    assert log.append("e5") == 5
    with pytest.raises(CompactedError):
        log[4]


# -- model test against a plain list --------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 999)),
        st.tuples(st.just("extend"), st.lists(st.integers(0, 999), max_size=4)),
        st.tuples(st.just("truncate"), st.integers(0, 30)),
        st.tuples(st.just("compact"), st.integers(0, 30)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops)
def test_log_behaves_like_a_plain_list_with_a_compacted_prefix(ops: list) -> None:
    log: Log[int] = Log()
    model: list[int] = []  # model[i - 1] is entry i, for every index ever written
    snap = 0  # model snapshot index
    snap_term = 0
    for op, arg in ops:
        if op == "append":
            assert log.append(arg) == len(model) + 1
            model.append(arg)
        elif op == "extend":
            log.extend(arg)
            model.extend(arg)
        elif op == "truncate":
            if arg < snap:
                with pytest.raises(CompactedError):
                    log.truncate_after(arg)
            else:
                log.truncate_after(arg)
                del model[arg:]
        else:
            term = arg + 100
            log.compact(arg, term=term)
            if arg > snap:
                if arg > len(model):
                    # Compacting past the end: the held prefix is unknown to the model,
                    # so pad with placeholders that can never be read back.
                    model.extend([-1] * (arg - len(model)))
                snap, snap_term = arg, term
        # Check the whole observable state after every step.
        assert log.snapshot_index == snap and log.snapshot_term == snap_term
        assert log.last_index == len(model)
        assert log.first_index == snap + 1
        assert len(log) == len(model) - snap
        assert log.entries(snap + 1) == model[snap:]
        assert log.last() == (model[-1] if len(model) > snap else None)
        for i in range(0, len(model) + 2):
            if i <= snap:
                with pytest.raises(CompactedError):
                    log[i]
            elif i <= len(model):
                assert log[i] == model[i - 1]
            else:
                with pytest.raises(IndexError):
                    log[i]
        if len(model) > snap:
            lo = snap + 1 + (len(model) - snap) // 3
            hi = lo + 2
            assert log.entries(lo, hi) == model[lo - 1 : hi - 1]
