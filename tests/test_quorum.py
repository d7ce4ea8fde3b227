"""Quorum systems: majority sizes, phase checks, commit index, joint and flexible quorums."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.quorum import FlexibleQuorum, JointQuorum, Majority, quorum_index

FAST = settings(max_examples=150, deadline=None)


def brute_force_committed(members: frozenset[int], match: dict[int, int], size: int) -> int:
    """Largest index i such that at least ``size`` members have match >= i (0 if none)."""
    best = 0
    for i in set(match.values()) | {0}:
        if sum(1 for m in members if match.get(m, 0) >= i) >= size:
            best = max(best, i)
    return best


# -- Majority -------------------------------------------------------------------


@pytest.mark.parametrize(("n", "size"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_majority_size_is_more_than_half(n: int, size: int) -> None:
    q = Majority(range(n))
    assert q.size == size
    assert q.members == frozenset(range(n))


@pytest.mark.parametrize("n", range(1, 8))
def test_majority_accepts_exactly_the_sets_of_at_least_size(n: int) -> None:
    q = Majority(range(n))
    for k in range(n + 1):
        for acks in combinations(range(n), k):
            expected = k > n // 2
            assert q.is_phase1_quorum(acks) is expected, (n, acks)
            assert q.is_phase2_quorum(acks) is expected, (n, acks)


def test_majority_ignores_non_members() -> None:
    q = Majority({1, 2, 3})
    assert not q.is_phase1_quorum({1, 7, 8, 9})
    assert not q.is_phase2_quorum({3, 10, 11})
    assert q.is_phase1_quorum({1, 2, 99})
    assert q.is_phase2_quorum([2, 3, 2, 3])  # duplicates count once


def test_majority_accepts_any_iterable_including_generators() -> None:
    q = Majority([1, 2, 3])
    assert q.is_phase1_quorum(x for x in (1, 3))


def test_empty_membership_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        Majority([])
    with pytest.raises(ValueError, match="at least one member"):
        FlexibleQuorum([], phase1=1, phase2=1)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({1: 5, 2: 5, 3: 5}, 5),
        ({1: 9, 2: 4, 3: 1}, 4),  # second highest of three
        ({1: 9}, 0),  # absent members count as 0
        ({1: 9, 2: 7}, 7),
        ({1: 0, 2: 0, 3: 0}, 0),
        ({1: 3, 2: 8, 3: 8}, 8),
        ({1: 9, 2: 1, 42: 100, 43: 100}, 1),  # non-members ignored
    ],
)
def test_committed_is_highest_index_a_majority_reached(
    match: dict[int, int], expected: int
) -> None:
    assert Majority({1, 2, 3}).committed(match) == expected


def test_committed_for_five_nodes_is_third_highest() -> None:
    assert Majority(range(5)).committed({0: 10, 1: 9, 2: 8, 3: 2, 4: 1}) == 8
    assert Majority(range(5)).committed({0: 10, 1: 9}) == 0


@FAST
@given(
    n=st.integers(1, 7),
    data=st.data(),
)
def test_majority_committed_matches_brute_force(n: int, data: st.DataObject) -> None:
    members = frozenset(range(n))
    keys = st.integers(0, n + 2)  # some non-members too
    match = data.draw(st.dictionaries(keys, st.integers(0, 20)))
    q = Majority(members)
    assert q.committed(match) == brute_force_committed(members, match, q.size)


def test_quorum_index_rejects_non_positive_size() -> None:
    with pytest.raises(ValueError):
        quorum_index([1, 2, 3], {1: 1}, 0)


def test_quorum_index_larger_than_membership_is_zero() -> None:
    assert quorum_index([1, 2], {1: 5, 2: 5}, 3) == 0


# -- JointQuorum ----------------------------------------------------------------


def test_joint_quorum_requires_majority_of_both_configurations() -> None:
    q = JointQuorum.of(old={1, 2, 3}, new={3, 4, 5})
    assert q.members == frozenset({1, 2, 3, 4, 5})
    # A majority of old but not of new (though a majority of the union).
    assert not q.is_phase1_quorum({1, 2, 4})  # old: 1,2 (yes); new: 4 (no)
    assert not q.is_phase2_quorum({1, 2})
    # A majority of new but not of old.
    assert not q.is_phase2_quorum({4, 5, 1})  # new: 4,5 (yes); old: 1 (no)
    # Majorities of both.
    assert q.is_phase1_quorum({1, 3, 4})
    assert q.is_phase2_quorum({2, 3, 5})


def test_joint_quorum_consumes_a_generator_once_for_both_checks() -> None:
    q = JointQuorum.of(old={1, 2, 3}, new={3, 4, 5})
    assert q.is_phase1_quorum(x for x in (2, 3, 4))


def test_joint_committed_is_the_lower_of_both_majorities() -> None:
    q = JointQuorum.of(old={1, 2, 3}, new={4, 5, 6})
    match = {1: 10, 2: 10, 3: 10, 4: 3, 5: 2, 6: 1}
    assert q.committed(match) == 2
    match = {1: 1, 2: 2, 3: 3, 4: 9, 5: 9, 6: 9}
    assert q.committed(match) == 2


@FAST
@given(
    old=st.frozensets(st.integers(0, 6), min_size=1),
    new=st.frozensets(st.integers(0, 6), min_size=1),
    acks=st.frozensets(st.integers(0, 8)),
    match=st.dictionaries(st.integers(0, 8), st.integers(0, 15)),
)
def test_joint_quorum_matches_definition(
    old: frozenset[int], new: frozenset[int], acks: frozenset[int], match: dict[int, int]
) -> None:
    q = JointQuorum.of(old, new)
    both = len(acks & old) > len(old) // 2 and len(acks & new) > len(new) // 2
    assert q.is_phase1_quorum(acks) is both
    assert q.is_phase2_quorum(acks) is both
    expected = max(
        i
        for i in set(match.values()) | {0}
        if q.is_phase2_quorum({m for m in q.members if match.get(m, 0) >= i})
    )
    assert q.committed(match) == expected


# -- FlexibleQuorum -------------------------------------------------------------


@pytest.mark.parametrize(("n", "q1", "q2"), [(3, 1, 2), (4, 2, 2), (5, 2, 3), (6, 1, 5)])
def test_flexible_quorum_rejects_non_intersecting_sizes(n: int, q1: int, q2: int) -> None:
    with pytest.raises(
        ValueError, match=rf"phase1 \({q1}\) \+ phase2 \({q2}\) must exceed n \({n}\)"
    ):
        FlexibleQuorum(range(n), phase1=q1, phase2=q2)


@pytest.mark.parametrize(("q1", "q2"), [(0, 3), (3, 0), (4, 1), (1, 4), (-1, 3)])
def test_flexible_quorum_rejects_sizes_outside_membership(q1: int, q2: int) -> None:
    with pytest.raises(ValueError, match=r"within 1\.\.3"):
        FlexibleQuorum(range(3), phase1=q1, phase2=q2)


def test_flexible_quorum_checks_each_phase_with_its_own_size() -> None:
    q = FlexibleQuorum(range(5), phase1=4, phase2=2)
    assert q.is_phase2_quorum({0, 1})
    assert not q.is_phase1_quorum({0, 1})
    assert not q.is_phase1_quorum({0, 1, 2})
    assert q.is_phase1_quorum({0, 1, 2, 3})
    assert not q.is_phase2_quorum({0, 7, 8})  # non-members ignored
    assert q.committed({0: 9, 1: 7, 2: 1}) == 7  # phase-2 size decides commit


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_every_flexible_phase1_quorum_meets_every_phase2_quorum(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 7), label="n")
    q1 = data.draw(st.integers(1, n), label="q1")
    q2 = data.draw(st.integers(max(1, n + 1 - q1), n), label="q2")
    q = FlexibleQuorum(range(n), phase1=q1, phase2=q2)
    nodes = list(range(n))
    p1 = [set(c) for k in range(n + 1) for c in combinations(nodes, k) if q.is_phase1_quorum(c)]
    p2 = [set(c) for k in range(n + 1) for c in combinations(nodes, k) if q.is_phase2_quorum(c)]
    assert p1 and p2
    for a in p1:
        for b in p2:
            assert a & b, (n, q1, q2, a, b)
    # Brute force for the commit index, with the phase-2 size.
    match = data.draw(st.dictionaries(st.integers(0, n + 1), st.integers(0, 12)), label="match")
    assert q.committed(match) == brute_force_committed(q.members, match, q2)
