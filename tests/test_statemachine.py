"""KVStore: command semantics, exactly-once client sessions, batches, snapshots."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from consensus.commands import (
    Append,
    Batch,
    CompareAndSet,
    Delete,
    Get,
    Noop,
    Put,
    Request,
)
from consensus.statemachine import SESSION_EXPIRED, STALE, KVStore, pack, unpack


class Feeder:
    """Applies payloads to a store at consecutive indexes."""

    def __init__(self, store: KVStore | None = None) -> None:
        self.store = store or KVStore()

    def apply(self, payload: Any) -> list[tuple[Request, Any]]:
        return self.store.apply(self.store.applied_index + 1, payload)

    def run(self, client_id: int, seq: int, command: Any) -> Any:
        request = Request(client_id=client_id, seq=seq, command=command)
        [(echoed, result)] = self.apply(request)
        assert echoed is request
        return result


# -- command semantics ------------------------------------------------------------


def test_get_of_absent_key_is_none() -> None:
    f = Feeder()
    assert f.run(1, 1, Get(key="k")) is None


def test_put_returns_none_and_get_reads_it() -> None:
    f = Feeder()
    assert f.run(1, 1, Put(key="k", value="v")) is None
    assert f.run(1, 2, Get(key="k")) == "v"
    assert f.run(1, 3, Put(key="k", value="w")) is None
    assert f.store.data == {"k": "w"}


def test_append_to_absent_key_starts_from_empty_string() -> None:
    f = Feeder()
    assert f.run(1, 1, Append(key="k", value="ab")) is None
    assert f.store.data["k"] == "ab"
    assert f.run(1, 2, Append(key="k", value="cd")) is None
    assert f.run(1, 3, Get(key="k")) == "abcd"


def test_compare_and_set_swaps_only_on_match() -> None:
    f = Feeder()
    f.run(1, 1, Put(key="k", value="a"))
    assert f.run(1, 2, CompareAndSet(key="k", expected="x", new="b")) is False
    assert f.store.data["k"] == "a"
    assert f.run(1, 3, CompareAndSet(key="k", expected="a", new="b")) is True
    assert f.store.data["k"] == "b"


def test_compare_and_set_expected_none_means_absent() -> None:
    f = Feeder()
    assert f.run(1, 1, CompareAndSet(key="k", expected=None, new="first")) is True
    assert f.store.data["k"] == "first"
    # Now present: expected None no longer matches.
    assert f.run(1, 2, CompareAndSet(key="k", expected=None, new="second")) is False
    assert f.store.data["k"] == "first"


def test_compare_and_set_expected_empty_string_does_not_match_absent() -> None:
    f = Feeder()
    assert f.run(1, 1, CompareAndSet(key="k", expected="", new="v")) is False
    assert "k" not in f.store.data


def test_delete_reports_whether_the_key_existed() -> None:
    f = Feeder()
    f.run(1, 1, Put(key="k", value="v"))
    assert f.run(1, 2, Delete(key="k")) is True
    assert "k" not in f.store.data
    assert f.run(1, 3, Delete(key="k")) is False
    assert f.run(1, 4, Get(key="k")) is None


def test_delete_of_key_holding_empty_string_is_true() -> None:
    f = Feeder()
    f.run(1, 1, Put(key="k", value=""))
    assert f.run(1, 2, Delete(key="k")) is True


def test_query_answers_get_without_advancing_applied_index() -> None:
    f = Feeder()
    f.run(1, 1, Put(key="k", value="v"))
    assert f.store.query(Get(key="k")) == "v"
    assert f.store.query(Get(key="nope")) is None
    assert f.store.applied_index == 1
    with pytest.raises(TypeError):
        f.store.query(Put(key="k", value="x"))


def test_execute_rejects_non_commands() -> None:
    with pytest.raises(TypeError):
        KVStore().execute("not a command")


# -- exactly-once sessions ---------------------------------------------------------


def test_retry_with_same_seq_is_not_applied_again_and_returns_earlier_result() -> None:
    f = Feeder()
    f.run(1, 1, Put(key="k", value="a"))
    assert f.run(1, 2, Append(key="k", value="b")) is None
    # The same request committed again (a client retry reached a second leader).
    assert f.run(1, 2, Append(key="k", value="b")) is None
    assert f.store.data["k"] == "ab"  # not "abb"
    assert f.store.applied_index == 3  # the retry's slot still counts


def test_retry_returns_the_cached_result_not_a_fresh_one() -> None:
    f = Feeder()
    assert f.run(1, 1, CompareAndSet(key="k", expected=None, new="v")) is True
    # Re-executing would now return False; the session returns the earlier True.
    assert f.run(1, 1, CompareAndSet(key="k", expected=None, new="v")) is True
    f.run(2, 1, Put(key="g", value="old"))
    assert f.run(1, 2, Get(key="g")) == "old"
    f.run(2, 2, Put(key="g", value="new"))
    assert f.run(1, 2, Get(key="g")) == "old"


def test_lower_seq_is_stale_and_changes_nothing() -> None:
    f = Feeder()
    f.run(1, 1, Put(key="k", value="a"))
    f.run(1, 2, Put(key="k", value="b"))
    before = (dict(f.store.data), dict(f.store.sessions))
    assert f.run(1, 1, Put(key="k", value="a")) is STALE
    assert (f.store.data, f.store.sessions) == before
    assert f.store.applied_index == 3
    assert repr(STALE) == "STALE"


def test_sessions_are_per_client() -> None:
    f = Feeder()
    f.run(1, 5, Append(key="k", value="x"))
    # Client 2's seq 1 is new for client 2, even though client 1 is at seq 5.
    f.run(2, 1, Append(key="k", value="y"))
    assert f.store.data["k"] == "xy"
    assert f.store.sessions == {1: (5, None), 2: (1, None)}


def test_batch_applies_each_request_in_order_with_sessions() -> None:
    f = Feeder()
    requests = (
        Request(client_id=1, seq=1, command=Put(key="k", value="a")),
        Request(client_id=2, seq=1, command=Append(key="k", value="b")),
        Request(client_id=3, seq=1, command=Get(key="k")),
        Request(client_id=2, seq=1, command=Append(key="k", value="b")),  # retry in batch
        Request(client_id=1, seq=2, command=Delete(key="k")),
        Request(client_id=1, seq=1, command=Put(key="k", value="a")),  # stale
    )
    results = f.apply(Batch(requests=requests))
    assert [r for r, _ in results] == list(requests)
    assert [res for _, res in results] == [None, None, "ab", None, True, STALE]
    assert f.store.data == {}
    assert f.store.applied_index == 1  # one slot, however many requests


def test_empty_batch_and_noop_only_advance_applied_index() -> None:
    f = Feeder()
    f.run(1, 1, Put(key="k", value="v"))
    before = (dict(f.store.data), dict(f.store.sessions))
    assert f.apply(Noop()) == []
    assert f.apply(Batch(requests=())) == []
    assert f.apply("a protocol's own configuration entry") == []
    assert f.store.applied_index == 4
    assert (f.store.data, f.store.sessions) == before


@pytest.mark.parametrize("index", [0, 1, 3, 5])  # before the start, a repeat, gaps
def test_apply_out_of_order_raises_and_changes_nothing(index: int) -> None:
    store = KVStore()
    store.apply(1, Noop())
    request = Request(client_id=1, seq=1, command=Put(key="k", value="v"))
    with pytest.raises(ValueError, match="out of order"):
        store.apply(index, request)
    assert store.applied_index == 1
    assert store.data == {} and store.sessions == {}


# -- snapshots ------------------------------------------------------------------


def populated() -> Feeder:
    f = Feeder()
    f.run(1, 1, Put(key="a", value="1"))
    f.run(2, 1, Append(key="b", value="x"))
    f.run(3, 7, CompareAndSet(key="c", expected=None, new="z"))
    f.run(4, 2, Get(key="a"))
    f.run(5, 1, Delete(key="nope"))
    f.apply(Noop())
    return f


def test_snapshot_restore_round_trip_preserves_data_sessions_and_index() -> None:
    f = populated()
    blob = f.store.snapshot()
    assert isinstance(blob, bytes)
    other = KVStore()
    other.restore(f.store.applied_index, blob)
    assert other.data == f.store.data == {"a": "1", "b": "x", "c": "z"}
    assert other.sessions == f.store.sessions
    assert other.sessions == {1: (1, None), 2: (1, None), 3: (7, True), 4: (2, "1"), 5: (1, False)}
    assert other.applied_index == 6


def test_retry_after_restore_returns_cached_result() -> None:
    f = populated()
    g = Feeder(KVStore())
    g.store.restore(6, f.store.snapshot())
    # Append would double if re-applied.
    assert g.run(2, 1, Append(key="b", value="x")) is None
    assert g.store.data["b"] == "x"
    # Cached results of every type survive: bool, str.
    assert g.run(3, 7, CompareAndSet(key="c", expected=None, new="z")) is True
    assert g.run(4, 2, Get(key="a")) == "1"
    assert g.run(5, 1, Delete(key="nope")) is False
    assert g.run(1, 0, Put(key="a", value="0")) is STALE
    # And the restored store continues at the next index.
    assert g.store.applied_index == 11


def test_restore_replaces_existing_state() -> None:
    f = populated()
    store = KVStore()
    store.apply(1, Request(client_id=9, seq=1, command=Put(key="stray", value="s")))
    store.restore(6, f.store.snapshot())
    assert "stray" not in store.data
    assert 9 not in store.sessions


def test_snapshot_is_independent_of_later_changes() -> None:
    f = populated()
    blob = f.store.snapshot()
    f.run(1, 2, Put(key="a", value="changed"))
    other = KVStore()
    other.restore(6, blob)
    assert other.data["a"] == "1"


def test_restore_with_mismatched_index_raises() -> None:
    blob = populated().store.snapshot()
    store = KVStore()
    with pytest.raises(ValueError, match="covers index 6, restored as 5"):
        store.restore(5, blob)
    assert store.applied_index == 0 and store.data == {}


def test_a_packed_batch_applies_each_request_once_with_its_own_session():
    kv = KVStore()
    first = Request(client_id=1, seq=1, command=Append(key="k", value="a"))
    second = Request(client_id=2, seq=1, command=Append(key="k", value="b"))
    outer = Request(client_id=99, seq=1, command=pack([first, second]))
    assert unpack(outer.command) == (first, second)
    assert kv.apply(1, outer) == [(first, None), (second, None)]
    assert kv.data == {"k": "ab"}
    # The same pack committed again (a protocol's duplicate) changes nothing...
    assert kv.apply(2, outer) == [(first, None), (second, None)]
    # ...and neither does a client's own retry of a request inside it.
    assert kv.apply(3, first) == [(first, None)]
    assert kv.data == {"k": "ab"}
    # The host's pack session is not a client session.
    assert 99 not in kv.sessions and set(kv.sessions) == {1, 2}


def test_a_pack_whose_count_disagrees_is_refused():
    packed = pack([Request(client_id=1, seq=1, command=Put(key="k", value="v"))])
    with pytest.raises(ValueError, match="packed batch of 2"):
        unpack(attrs.evolve(packed, count=2))


def test_a_protocols_batch_of_packs_applies_every_request_inside():
    kv = KVStore()
    a = Request(client_id=1, seq=1, command=Put(key="a", value="1"))
    b = Request(client_id=2, seq=1, command=Put(key="b", value="2"))
    c = Request(client_id=3, seq=1, command=Put(key="c", value="3"))
    packed = Request(client_id=99, seq=1, command=pack([a, b]))
    assert kv.apply(1, Batch(requests=(packed, c))) == [(a, None), (b, None), (c, None)]
    assert kv.data == {"a": "1", "b": "2", "c": "3"}


# -- session expiry -------------------------------------------------------------------


def put(client: int, seq: int, value: str = "v") -> Request:
    return Request(client_id=client, seq=seq, command=Append(key=f"c{client}", value=value))


def test_without_expiry_every_session_is_kept_and_any_seq_opens_one() -> None:
    f = Feeder()
    for client in range(1, 101):
        f.store.apply(f.store.applied_index + 1, put(client, 1))
    assert len(f.store.sessions) == 100
    assert f.run(500, 7, Put(key="k", value="v")) is None  # today's behaviour, unchanged


def test_max_sessions_drops_the_least_recently_used_session() -> None:
    f = Feeder(KVStore(max_sessions=2))
    f.apply(put(1, 1))
    f.apply(put(2, 1))
    f.apply(put(1, 2))  # client 1 used again: client 2 is now the least recent
    f.apply(put(3, 1))
    assert set(f.store.sessions) == {1, 3} and f.store.expired == 1
    # Client 2's next request, or a retry of its last: never executed again.
    assert f.run(2, 2, Append(key="c2", value="x")) is SESSION_EXPIRED
    assert f.run(2, 1, Append(key="c2", value="v")) is None  # seq 1 opens a new session
    assert f.store.data["c2"] == "vv"  # (which is why a retry must come before expiry)


def test_session_ttl_drops_sessions_idle_for_that_many_entries() -> None:
    f = Feeder(KVStore(session_ttl=3))
    f.apply(put(1, 1))  # index 1
    f.apply(put(2, 1))  # index 2
    f.apply(Noop())  # index 3
    assert set(f.store.sessions) == {1, 2}
    f.apply(put(2, 2))  # index 4: client 1's last request is 3 entries old
    assert set(f.store.sessions) == {2}
    [(_, result)] = f.apply(put(1, 1))  # a retry of client 1's request: seq 1...
    assert result is None and f.store.data["c1"] == "vv"
    [(_, result)] = f.apply(put(2, 2))
    assert result is None and f.store.data["c2"] == "vv"  # a retry answered from its session


def test_expiry_is_a_function_of_the_applied_sequence_and_survives_snapshots() -> None:
    import random

    rng = random.Random(4)
    seqs: dict[int, int] = {}
    log: list[Any] = []
    for _ in range(300):
        client = rng.randint(1, 12)
        if rng.random() < 0.2 and client in seqs:
            log.append(put(client, seqs[client]))  # a retry
        else:
            seqs[client] = seqs.get(client, 0) + 1
            log.append(put(client, seqs[client]))
    one, two = KVStore(max_sessions=5, session_ttl=40), KVStore(max_sessions=5, session_ttl=40)
    results_one = [one.apply(i, p) for i, p in enumerate(log, start=1)]
    results_two = [two.apply(i, p) for i, p in enumerate(log[:150], start=1)]
    restored = KVStore(max_sessions=5, session_ttl=40)
    restored.restore(150, two.snapshot())
    results_two += [restored.apply(i, p) for i, p in enumerate(log[150:], start=151)]
    assert results_one == results_two
    assert (one.data, one.sessions) == (restored.data, restored.sessions)
    assert any(r is SESSION_EXPIRED for rs in results_one for _, r in rs)


def test_each_request_of_a_packed_batch_uses_its_own_session() -> None:
    kv = KVStore(max_sessions=2)
    outer = Request(client_id=99, seq=1, command=pack([put(1, 1), put(2, 1)]))
    kv.apply(1, outer)
    assert set(kv.sessions) == {1, 2}
    kv.apply(2, put(3, 1))
    assert set(kv.sessions) == {2, 3}
    assert kv.apply_requests(3, [put(1, 2)]) == [(put(1, 2), SESSION_EXPIRED)]


def test_answered_tells_what_applying_again_would_answer() -> None:
    kv = KVStore(max_sessions=1)
    kv.apply(1, put(1, 1))
    kv.apply(2, put(1, 2))
    assert kv.answered(put(1, 2)) == (True, None)  # an Append's result
    assert kv.answered(put(1, 1)) == (True, STALE)
    assert kv.answered(put(1, 3)) == (False, None)  # not applied yet
    kv.apply(3, put(2, 1))
    assert kv.answered(put(1, 2)) == (True, SESSION_EXPIRED)
