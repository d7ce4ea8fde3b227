"""The write-ahead log: format round trip, torn-tail recovery, corruption, compaction, fsync."""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.storage import MemoryStorage, Storage
from consensus.wal import (
    HEADER_SIZE,
    DurableStorage,
    RecordDecodeError,
    WalCorruptionError,
    WriteAheadLog,
    encode_records,
)

# Earlier records, then the one the recovery tests damage.  No 0xA7 (magic) byte anywhere.
EARLIER = [b"first", b"", b"third record " * 3]
LAST = bytes(range(1, 40))


class FakeCodecError(Exception):
    pass


class PickleCodec:
    """Stands in for consensus.codec.Codec; refuses payloads starting with b'bad'."""

    def encode(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise FakeCodecError(str(exc)) from exc

    def decode(self, data: bytes) -> Any:
        if data.startswith(b"bad"):
            raise FakeCodecError("not a record")
        return pickle.loads(data)


@attrs.frozen(kw_only=True)
class HardState:
    term: int
    vote: int | None


def write_log(path: Path, payloads: list[bytes]) -> bytes:
    with WriteAheadLog(path, fsync="never") as wal:
        wal.append(payloads)
    return path.read_bytes()


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


# --- format round trip --------------------------------------------------------------------------


def test_round_trip_of_many_records(tmp_path: Path) -> None:
    payloads = [bytes([i % 256]) * (i % 300) for i in range(2000)]
    path = tmp_path / "log"
    with WriteAheadLog(path) as wal:
        for start in range(0, len(payloads), 7):
            wal.append(payloads[start : start + 7])
        wal.sync()
        assert wal.read_all() == payloads
        assert wal.stats.records_written == len(payloads)
        assert wal.stats.bytes_written == path.stat().st_size
        assert path.stat().st_size == sum(HEADER_SIZE + len(p) for p in payloads)
    with WriteAheadLog(path) as wal:
        assert wal.read_all() == payloads
        assert wal.recovery.records == len(payloads)
        assert wal.recovery.truncated_bytes == 0 and wal.recovery.reason is None


def test_reopen_after_close_appends_after_existing_records(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with WriteAheadLog(path) as wal:
        wal.append([b"a", b"b"])
    with WriteAheadLog(path) as wal:
        wal.append([b"c"])
        wal.sync()
    with WriteAheadLog(path) as wal:
        assert wal.read_all() == [b"a", b"b", b"c"]


def test_opening_a_missing_file_creates_it_and_its_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "node1.wal"
    with WriteAheadLog(path) as wal:
        assert path.exists() and path.stat().st_size == 0
        assert wal.read_all() == []
        assert wal.recovery.records == 0


def test_read_offsets_point_at_record_headers(tmp_path: Path) -> None:
    path = tmp_path / "log"
    data = write_log(path, EARLIER)
    with WriteAheadLog(path) as wal:
        for offset, payload in wal.read_all_with_offsets():
            assert data[offset + HEADER_SIZE : offset + HEADER_SIZE + len(payload)] == payload
            assert data[offset] == 0xA7


def test_append_is_one_write_call_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = os.write

    def counting_write(fd: int, data: Any) -> int:
        writes.append(len(data))
        return real(fd, data)

    with WriteAheadLog(tmp_path / "log", fsync="never") as wal:
        monkeypatch.setattr(os, "write", counting_write)
        wal.append([b"x" * 10] * 50)
        wal.append([])
        assert writes == [50 * (HEADER_SIZE + 10)]


def test_failed_write_is_rolled_back_to_the_last_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log"
    real = os.write
    with WriteAheadLog(path, fsync="never") as wal:
        wal.append([b"kept"])
        size = path.stat().st_size

        def short_then_fail(fd: int, data: Any) -> int:
            if len(data) > 20:
                return real(fd, bytes(data[:20]))  # part of the first record
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", short_then_fail)
        with pytest.raises(OSError):
            wal.append([b"y" * 100, b"z"])
        monkeypatch.setattr(os, "write", real)
        assert path.stat().st_size == size
        wal.append([b"after"])
        assert wal.read_all() == [b"kept", b"after"]
    with WriteAheadLog(path) as wal:
        assert wal.read_all() == [b"kept", b"after"]
        assert wal.recovery.truncated_bytes == 0


def test_closed_log_refuses_operations(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "log")
    wal.close()
    wal.close()  # idempotent
    assert wal.closed
    for call in (lambda: wal.append([b"x"]), wal.sync, wal.read_all, lambda: wal.replace([])):
        with pytest.raises(ValueError, match="closed"):
            call()


# --- torn-tail recovery ---------------------------------------------------------------------------


def assert_recovers_earlier_records(path: Path, good: bytes, damaged_len: int) -> None:
    with WriteAheadLog(path, fsync="never") as wal:
        assert wal.read_all() == EARLIER
        assert wal.recovery.records == len(EARLIER)
        assert wal.recovery.truncated_bytes == damaged_len
        assert (wal.recovery.reason is None) == (damaged_len == 0)
        assert path.read_bytes() == good
        wal.append([b"new"])
    with WriteAheadLog(path, fsync="never") as wal:
        assert wal.read_all() == [*EARLIER, b"new"]
        assert wal.recovery.truncated_bytes == 0


def test_torn_tail_cut_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    path = tmp_path / "log"
    full = write_log(path, [*EARLIER, LAST])
    good_end = len(full) - (HEADER_SIZE + len(LAST))
    assert full[:good_end] == write_log(tmp_path / "good", EARLIER)
    for cut in range(good_end, len(full)):
        path.write_bytes(full[:cut])
        assert_recovers_earlier_records(path, full[:good_end], cut - good_end)


def test_bit_flip_anywhere_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    full = write_log(path, [*EARLIER, LAST])
    good_end = len(full) - (HEADER_SIZE + len(LAST))
    for pos in range(good_end, len(full)):
        for bit in range(8):
            damaged = bytearray(full)
            damaged[pos] ^= 1 << bit
            path.write_bytes(damaged)
            with WriteAheadLog(path, fsync="never") as wal:
                assert wal.read_all() == EARLIER, (pos, bit)
                assert wal.recovery.truncated_bytes == len(full) - good_end
            assert path.read_bytes() == full[:good_end]


def test_zero_filled_tail_after_the_last_record_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "log"
    good = write_log(path, EARLIER)
    for zeros in (1, HEADER_SIZE - 1, HEADER_SIZE, 4096):
        path.write_bytes(good + bytes(zeros))
        with WriteAheadLog(path, fsync="never") as wal:
            assert wal.recovery.reason == "zero-filled tail"
        assert_recovers_earlier_records(path, good, 0)


def test_last_record_zeroed_out_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    full = write_log(path, [*EARLIER, LAST])
    good_end = len(full) - (HEADER_SIZE + len(LAST))
    path.write_bytes(full[:good_end] + bytes(len(full) - good_end))
    assert_recovers_earlier_records(path, full[:good_end], len(full) - good_end)


def test_bad_checksum_followed_only_by_zeros_is_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    full = bytearray(write_log(path, [*EARLIER, LAST]))
    full[-1] ^= 0xFF
    path.write_bytes(bytes(full) + bytes(100))
    good_end = len(full) - (HEADER_SIZE + len(LAST))
    assert_recovers_earlier_records(path, bytes(full[:good_end]), HEADER_SIZE + len(LAST) + 100)


def test_recovery_truncation_is_fsynced(tmp_path: Path, fsyncs: list[int]) -> None:
    path = tmp_path / "log"
    full = write_log(path, [*EARLIER, LAST])
    path.write_bytes(full[:-1])
    fsyncs.clear()
    with WriteAheadLog(path) as wal:
        assert fsyncs == [wal._fd] and wal.stats.syncs == 1


# --- corruption in the middle ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "field_offset"),
    [(0, HEADER_SIZE + 2), (2, HEADER_SIZE + 5), (1, 3), (2, 0), (2, HEADER_SIZE - 1)],
    ids=["payload-0", "payload-2", "length-1", "magic-2", "header-crc-2"],
)
def test_corruption_before_the_last_record_raises_and_leaves_file_untouched(
    tmp_path: Path, record: int, field_offset: int
) -> None:
    path = tmp_path / "log"
    payloads = [*EARLIER, LAST]
    full = write_log(path, payloads)
    offset = sum(HEADER_SIZE + len(p) for p in payloads[:record])
    damaged = bytearray(full)
    damaged[offset + field_offset] ^= 0x10
    path.write_bytes(damaged)
    with pytest.raises(WalCorruptionError) as info:
        WriteAheadLog(path)
    assert info.value.offset == offset
    assert str(path) in str(info.value) and f"offset {offset}" in str(info.value)
    assert path.read_bytes() == bytes(damaged)


def test_unknown_format_version_raises(tmp_path: Path) -> None:
    path = tmp_path / "log"
    good = write_log(path, EARLIER)
    prefix = struct.pack("<BBII", 0xA7, 2, 3, zlib.crc32(b"abc"))
    path.write_bytes(good + prefix + struct.pack("<I", zlib.crc32(prefix)) + b"abc")
    with pytest.raises(WalCorruptionError, match="version 2"):
        WriteAheadLog(path)
    assert path.stat().st_size == len(good) + HEADER_SIZE + 3


# --- compaction ---------------------------------------------------------------------------------


def test_replace_compacts_and_later_appends_follow_the_new_content(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with WriteAheadLog(path) as wal:
        wal.append([b"old"] * 100)
        wal.replace([b"snapshot"])
        assert wal.read_all() == [b"snapshot"]
        wal.append([b"next"])
        wal.sync()
        assert wal.stats.compactions == 1
        assert wal.stats.records_written == 102
    assert path.stat().st_size == 2 * HEADER_SIZE + len(b"snapshot") + len(b"next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]
    with WriteAheadLog(path) as wal:
        assert wal.read_all() == [b"snapshot", b"next"]


def test_replace_that_fails_before_rename_keeps_the_old_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log"
    with WriteAheadLog(path) as wal:
        wal.append([b"a", b"b"])
        wal.sync()
        before = path.read_bytes()

        def crash(src: Any, dst: Any) -> None:
            raise OSError("simulated crash before rename")

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="simulated"):
            wal.replace([b"compacted"])
        monkeypatch.undo()
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]
        assert wal.read_all() == [b"a", b"b"]
        assert wal.stats.compactions == 0
        wal.append([b"c"])
        wal.sync()
    with WriteAheadLog(path) as wal:
        assert wal.read_all() == [b"a", b"b", b"c"]


def test_unfinished_compaction_file_is_discarded_on_open(tmp_path: Path) -> None:
    path = tmp_path / "log"
    write_log(path, EARLIER)
    stray = tmp_path / "log.compact"
    stray.write_bytes(encode_records([b"half"])[:-2])
    with WriteAheadLog(path) as wal:
        assert wal.read_all() == EARLIER
    assert not stray.exists()


# --- fsync policies -----------------------------------------------------------------------------


def test_fsync_always_syncs_every_sync_call_with_unsynced_data(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    with WriteAheadLog(tmp_path / "log", fsync="always") as wal:
        assert len(fsyncs) == 1  # the directory, for the new file's name
        fsyncs.clear()
        wal.sync()
        assert fsyncs == []
        wal.append([b"a"])
        assert fsyncs == []
        wal.sync()
        wal.sync()
        assert fsyncs == [wal._fd]
        wal.append([b"b"])
        wal.append([b"c"])
        wal.sync()
        assert len(fsyncs) == 2 and wal.stats.syncs == 2
        wal.replace([b"x"])  # the compacted file, then the directory
        assert len(fsyncs) == 4 and wal.stats.syncs == 3
        wal.append([b"d"])
    assert len(fsyncs) == 5  # close syncs what sync() was not asked to


def test_fsync_batch_syncs_every_n_records_and_on_close(tmp_path: Path, fsyncs: list[int]) -> None:
    wal = WriteAheadLog(tmp_path / "log", fsync="batch", batch_records=3)
    fsyncs.clear()
    wal.append([b"1"])
    wal.sync()
    wal.append([b"2"])
    wal.sync()
    assert fsyncs == []
    wal.append([b"3"])
    wal.sync()
    assert len(fsyncs) == 1
    wal.append([b"4", b"5", b"6", b"7"])
    wal.sync()
    assert len(fsyncs) == 2
    wal.append([b"8"])
    wal.sync()
    assert len(fsyncs) == 2
    wal.close()
    assert len(fsyncs) == 3 and wal.stats.syncs == 3


def test_fsync_never_never_calls_fsync(tmp_path: Path, fsyncs: list[int]) -> None:
    path = tmp_path / "log"
    with WriteAheadLog(path, fsync="never") as wal:
        wal.append([b"a"] * 100)
        wal.sync()
        wal.replace([b"b"])
        wal.append([b"c"])
    path.write_bytes(path.read_bytes()[:-1])
    with WriteAheadLog(path, fsync="never") as wal:
        assert wal.recovery.truncated_bytes > 0
    assert fsyncs == [] and wal.stats.syncs == 0


def test_invalid_fsync_policy_names_the_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'always', 'batch', 'never'.*'sometimes'"):
        WriteAheadLog(tmp_path / "log", fsync="sometimes")
    with pytest.raises(ValueError, match="batch_records"):
        WriteAheadLog(tmp_path / "log", fsync="batch", batch_records=0)
    assert not (tmp_path / "log").exists()


# --- DurableStorage -----------------------------------------------------------------------------


def test_durable_storage_round_trips_records_through_the_codec(tmp_path: Path) -> None:
    path = tmp_path / "node.wal"
    records = [HardState(term=1, vote=None), HardState(term=2, vote=3), ("entry", 7, b"x")]
    storage: Storage = DurableStorage(path, PickleCodec())
    storage.append(records[:2])
    storage.append(records[2:])
    storage.sync()
    assert storage.load() == records
    storage.close()
    with DurableStorage(path, PickleCodec()) as reopened:
        assert reopened.load() == records
        assert reopened.recovery.records == 3
        reopened.replace([HardState(term=2, vote=3)])
        assert reopened.load() == [HardState(term=2, vote=3)]
        assert reopened.stats.compactions == 1 and reopened.stats.records_written == 1


def test_durable_storage_agrees_with_memory_storage(tmp_path: Path) -> None:
    durable = DurableStorage(tmp_path / "log", PickleCodec(), fsync="never")
    memory = MemoryStorage()
    for storage in (durable, memory):
        storage.append([1, 2])
        storage.sync()
        storage.replace([("snap", 2)])
        storage.append([3])
        storage.sync()
    assert durable.load() == memory.load() == [("snap", 2), 3]
    assert durable.stats.records_written == memory.stats.records_written
    assert durable.stats.compactions == memory.stats.compactions
    durable.close()


def test_record_that_fails_to_decode_raises_naming_its_index_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "log"
    write_log(path, [pickle.dumps("ok"), b"bad record", pickle.dumps("later")])
    with DurableStorage(path, PickleCodec()) as storage:
        with pytest.raises(RecordDecodeError) as info:
            storage.load()
    offset = HEADER_SIZE + len(pickle.dumps("ok"))
    assert info.value.index == 1 and info.value.offset == offset
    assert f"record #1 at byte offset {offset}" in str(info.value)
    assert isinstance(info.value.__cause__, FakeCodecError)


def test_codec_error_on_append_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with DurableStorage(path, PickleCodec()) as storage:
        storage.append([1])
        with pytest.raises(FakeCodecError):
            storage.append([2, lambda: None])
        assert storage.load() == [1]
        assert storage.stats.records_written == 1


# --- model-based property ----------------------------------------------------------------------

payload_lists = st.lists(st.binary(max_size=30), max_size=5)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), payload_lists),
        st.tuples(st.just("replace"), payload_lists),
        st.tuples(st.just("sync")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("crash"), st.integers(min_value=0, max_value=10_000)),
    ),
    max_size=25,
)


def encoded_size(payloads: list[bytes]) -> int:
    return sum(HEADER_SIZE + len(p) for p in payloads)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_log_agrees_with_a_list_model_across_syncs_replaces_reopens_and_crashes(
    ops: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log"
        wal = WriteAheadLog(path, fsync="never")
        model: list[bytes] = []
        durable = 0  # records a crash must not lose: those present at the last sync/replace
        try:
            for op in ops:
                if op[0] == "append":
                    wal.append(op[1])
                    model.extend(op[1])
                elif op[0] == "replace":
                    wal.replace(op[1])
                    model = list(op[1])
                    durable = len(model)
                elif op[0] == "sync":
                    wal.sync()
                    durable = len(model)
                elif op[0] == "reopen":
                    wal.close()
                    wal = WriteAheadLog(path, fsync="never")
                    assert wal.recovery.truncated_bytes == 0
                else:  # crash: the OS kept some unsynced suffix, possibly cut mid-record
                    wal.close()
                    low, high = encoded_size(model[:durable]), encoded_size(model)
                    cut = low + op[1] % (high - low + 1)
                    os.truncate(path, cut)
                    kept = max(n for n in range(len(model) + 1) if encoded_size(model[:n]) <= cut)
                    assert kept >= durable
                    model = model[:kept]
                    durable = kept
                    wal = WriteAheadLog(path, fsync="never")
                    assert wal.recovery.records == kept
                    assert wal.recovery.truncated_bytes == cut - encoded_size(model)
                assert wal.read_all() == model
                assert path.stat().st_size == encoded_size(model)
        finally:
            wal.close()


# --- preallocation -------------------------------------------------------------------------


def test_a_preallocated_log_keeps_its_records_and_gives_back_unused_space(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with WriteAheadLog(path, preallocate=4096) as wal:
        wal.append(EARLIER)
        wal.sync()
        assert os.path.getsize(path) == 4096  # space ahead of the records
        wal.append([LAST] * 200)  # past the first step: the file grows by another
        assert wal.read_all() == EARLIER + [LAST] * 200
    assert path.read_bytes() == encode_records(EARLIER + [LAST] * 200)  # no zeros left
    with WriteAheadLog(path, preallocate=4096) as wal:
        assert wal.recovery.records == len(EARLIER) + 200 and wal.recovery.reason is None


def test_preallocated_space_after_a_crash_is_not_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "log"
    wal = WriteAheadLog(path, preallocate=1 << 16)
    wal.append(EARLIER)
    wal.sync()
    crashed = tmp_path / "crashed"
    crashed.write_bytes(path.read_bytes())  # as a kill -9 leaves it: records, then zeros
    wal.close()
    assert crashed.stat().st_size == 1 << 16
    with WriteAheadLog(crashed, preallocate=1 << 16) as again:
        assert again.read_all() == EARLIER
        assert again.recovery.truncated_bytes == 0 and again.recovery.reason is None
        again.append([LAST])
        assert again.read_all() == EARLIER + [LAST]


def test_a_record_torn_inside_preallocated_space_is_still_cut(tmp_path: Path) -> None:
    path = tmp_path / "log"
    good = encode_records(EARLIER)
    torn = encode_records([LAST])[:-5]  # the last record's payload cut short
    path.write_bytes(bytes(good) + bytes(torn) + bytes(1000))  # then preallocated zeros
    with WriteAheadLog(path, preallocate=4096) as wal:
        assert wal.read_all() == EARLIER
        assert wal.recovery.reason is not None and wal.recovery.truncated_bytes > 0


def test_a_preallocated_log_compacts_and_syncs_with_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasyncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (datasyncs.append(fd), real(fd))[1])
    path = tmp_path / "log"
    with WriteAheadLog(path, preallocate=4096) as wal:
        wal.append(EARLIER)
        wal.sync()
        assert datasyncs
        wal.replace([b"compacted"])
        wal.append([LAST])
        assert wal.read_all() == [b"compacted", LAST]
    with WriteAheadLog(path, preallocate=4096) as wal:
        assert wal.read_all() == [b"compacted", LAST]
