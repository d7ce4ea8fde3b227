"""Durable write-ahead log: checksummed records in one append-only file.

Theory of operation
-------------------
``WriteAheadLog`` owns one file of byte records; ``DurableStorage`` puts a
codec on top of it and is the on-disk ``consensus.storage.Storage``.

File format: records back to back, no file header, integers little-endian::

    offset  size  field
    0       1     magic 0xA7 (never zero, so a zero-filled tail is never a header)
    1       1     format version, 1
    2       4     payload length n, u32
    6       4     crc32 of the payload
    10      4     crc32 of bytes 0..9 (so a damaged length cannot go unnoticed)
    14      n     payload

``append`` encodes a whole batch into one buffer and hands it to the OS with
one ``write`` on an ``O_APPEND`` descriptor; or, with ``preallocate`` (bytes),
the file is extended with zeros that far ahead of the records
(``posix_fallocate``), records are written in place and a sync is an
``fdatasync``: the file's size rarely changes, so a sync has no metadata to
commit (cheaper, most of all when other processes fsync on the same disk).
The zeros after the last record are space, not a torn tail: recovery cuts
them silently, and ``close`` gives back what was not used.  ``sync`` fsyncs per the policy:
``always`` whenever records were written since the last fsync, ``batch`` once
``batch_records`` or more are waiting (and on close), ``never`` not at all
(not even for compaction or recovery: the OS decides; only for benchmarks and
tests).  A write that fails part-way is truncated back to the last record
boundary, so a later append never lands behind a partial record.

Compaction (``replace``) writes the new content to ``<log>.compact`` in the same
directory, fsyncs it, ``os.replace``-s it over the log and fsyncs the
directory.  A crash at any point leaves either the old or the new file whole;
a stray ``.compact`` file is an unfinished compaction and is deleted on open.

Recovery on open scans every record.  A *torn tail* is cut off and reported in
``recovery``; everything before it is kept.  A torn tail is any of:

* zero bytes only after the last good record (space allocated, never written);
* fewer bytes than a header left (header cut);
* a valid header whose payload runs past the end of the file (payload cut);
* a valid header whose payload checksum fails, with nothing but zeros after it;
* a damaged header with no valid header anywhere after it.

Anything else is corruption in the middle: a failed payload checksum with
non-zero data after the record, a damaged header followed later by a valid
one, or an unknown format version.  Dropping it could lose acknowledged
records, so opening raises ``WalCorruptionError`` (file and byte offset) and
leaves the file untouched.  This is deliberately strict: if a crash tears a
multi-record unsynced write in the middle, the operator decides.

Must never: truncate anything but a torn tail; leave a partial record in front
of later ones; rename a compacted file into place before it is on disk.
Not thread-safe, and two open logs on one path corrupt each other (no lock).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from consensus.storage import StorageStats

__all__ = [
    "FSYNC_POLICIES",
    "HEADER_SIZE",
    "DurableStorage",
    "RecordCodec",
    "RecordDecodeError",
    "Recovery",
    "WalCorruptionError",
    "WalError",
    "WriteAheadLog",
    "encode_records",
]

MAGIC = 0xA7
VERSION = 1
_PREFIX = struct.Struct("<BBII")  # magic, version, payload length, payload crc
_HEADER_CRC = struct.Struct("<I")
HEADER_SIZE = _PREFIX.size + _HEADER_CRC.size
_HEADER = struct.Struct("<BBIII")  # the whole header, for scanning
_MAX_PAYLOAD = 0xFFFF_FFFF
FSYNC_POLICIES = ("always", "batch", "never")
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)

# Why a torn tail was cut off (Recovery.reason).
ZERO_TAIL = "zero-filled tail"
HEADER_CUT = "header cut short"
PAYLOAD_CUT = "payload cut short"
BAD_TAIL_CHECKSUM = "checksum mismatch in the last record"
BAD_TAIL_HEADER = "damaged header in the last record"


class WalError(Exception):
    """Base class of the errors this module raises about a log's content."""


class WalCorruptionError(WalError):
    """The log is damaged somewhere other than a torn tail."""

    def __init__(self, path: os.PathLike[str] | str, offset: int, detail: str) -> None:
        super().__init__(f"{path}: corrupt write-ahead log at byte offset {offset}: {detail}")
        self.path = path
        self.offset = offset
        self.detail = detail


class RecordDecodeError(WalError):
    """A record passed its checksum but the codec could not decode it."""

    def __init__(self, path: os.PathLike[str] | str, index: int, offset: int, cause: Exception):
        super().__init__(
            f"{path}: record #{index} at byte offset {offset} does not decode: "
            f"{type(cause).__name__}: {cause}"
        )
        self.path = path
        self.index = index
        self.offset = offset


@attrs.frozen(kw_only=True)
class Recovery:
    """What opening the log found: how many records, and what was cut off."""

    records: int
    truncated_bytes: int = 0
    reason: str | None = None  # Invariant: None iff truncated_bytes == 0


def encode_records(payloads: Sequence[bytes]) -> bytearray:
    """The on-disk bytes of ``payloads``, header before each."""
    out = bytearray()
    crc32 = zlib.crc32
    for payload in payloads:
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError(f"record payload of {len(payload)} bytes exceeds {_MAX_PAYLOAD}")
        prefix = _PREFIX.pack(MAGIC, VERSION, len(payload), crc32(payload))
        out += prefix
        out += _HEADER_CRC.pack(crc32(prefix))
        out += payload
    return out


@attrs.frozen
class _Scan:
    records: list[tuple[int, bytes]]  # (offset of header, payload)
    end: int  # end of the last good record; bytes after it are a torn tail
    reason: str | None  # Invariant: None iff end == len(data)


def _header_ok(data: bytes, off: int) -> bool:
    # Caller guarantees off + HEADER_SIZE <= len(data).
    if data[off] != MAGIC:
        return False
    (stored,) = _HEADER_CRC.unpack_from(data, off + _PREFIX.size)
    return zlib.crc32(data[off : off + _PREFIX.size]) == stored


def _all_zero(data: bytes, start: int) -> bool:
    return data.count(0, start) == len(data) - start


def _next_header(data: bytes, start: int) -> int | None:
    pos = data.find(MAGIC, start)
    while 0 <= pos <= len(data) - HEADER_SIZE:
        if _header_ok(data, pos):
            return pos
        pos = data.find(MAGIC, pos + 1)
    return None


def _scan(data: bytes, path: os.PathLike[str] | str) -> _Scan:
    records: list[tuple[int, bytes]] = []
    size = len(data)
    off = 0
    crc32 = zlib.crc32
    while off < size:
        if size - off >= HEADER_SIZE:
            magic, version, length, crc, header_crc = _HEADER.unpack_from(data, off)
            header_ok = magic == MAGIC and crc32(data[off : off + _PREFIX.size]) == header_crc
        else:
            header_ok = False
        if header_ok:
            if version != VERSION:
                raise WalCorruptionError(path, off, f"unsupported record format version {version}")
            end = off + HEADER_SIZE + length
            if end > size:
                return _Scan(records, off, PAYLOAD_CUT)
            payload = data[off + HEADER_SIZE : end]
            if crc32(payload) != crc:
                if _all_zero(data, end):
                    return _Scan(records, off, BAD_TAIL_CHECKSUM)
                raise WalCorruptionError(
                    path, off, "payload checksum mismatch with further data after the record"
                )
            records.append((off, payload))
            off = end
            continue
        # No valid header here, so the length is unknown: look at what follows.
        if _all_zero(data, off):
            return _Scan(records, off, ZERO_TAIL)
        if size - off < HEADER_SIZE:
            return _Scan(records, off, HEADER_CUT)
        later = _next_header(data, off + 1)
        if later is None:
            return _Scan(records, off, BAD_TAIL_HEADER)
        raise WalCorruptionError(
            path, off, f"damaged record header, with a valid record header at offset {later}"
        )
    return _Scan(records, off, None)


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks = []
    pos = 0
    while pos < size:
        chunk = os.pread(fd, size - pos, pos)
        if not chunk:
            break  # the file shrank under us; scan what we have
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, buf: bytes | bytearray) -> None:
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view) :]


def _remove_if_exists(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class WriteAheadLog:
    """An append-only file of checksummed byte records; see the module docstring."""

    def __init__(
        self,
        path: os.PathLike[str] | str,
        *,
        fsync: str = "always",
        batch_records: int = 64,
        preallocate: int = 0,
    ) -> None:
        if preallocate < 0:
            raise ValueError(f"preallocate must be >= 0 bytes, got {preallocate}")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(
                f"fsync policy must be one of {', '.join(map(repr, FSYNC_POLICIES))}; got {fsync!r}"
            )
        if batch_records < 1:
            raise ValueError(f"batch_records must be at least 1, got {batch_records}")
        self.path = Path(path)
        self.fsync_policy = fsync
        self.batch_records = batch_records
        # Preallocation: the file is extended ahead of the records in steps of this
        # many bytes (zeros), records are written in place, and a sync is a
        # fdatasync: with the size unchanged there is no metadata to journal, which
        # on a disk shared with other fsyncing processes is what an fsync waits for.
        self.preallocate = preallocate
        self._allocated = 0  # the file's size on disk; >= _size
        # stats.syncs counts fsyncs of log data (the log or a compacted file), not of directories.
        self.stats = StorageStats()
        self._durable = fsync != "never"
        self._fd = -1  # Invariant: -1 iff closed
        self._size = 0  # Invariant: the file's size, always at a record boundary
        self._unsynced = 0  # records written since the last fsync of the log
        self.recovery = self._open()

    @property
    def _tmp_path(self) -> Path:
        return self.path.with_name(self.path.name + ".compact")

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _open(self) -> Recovery:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_if_exists(self._tmp_path)  # an unfinished compaction: the old log is whole
        created = not self.path.exists()
        flags = _OPEN_FLAGS & ~os.O_APPEND if self.preallocate else _OPEN_FLAGS
        fd = os.open(self.path, flags, 0o644)
        try:
            data = _read_fd(fd)
            scan = _scan(data, self.path)
            truncated = len(data) - scan.end
            if truncated:
                os.ftruncate(fd, scan.end)
                self._fsync(fd)
            if created:
                self._fsync_dir()
        except BaseException:
            os.close(fd)
            raise
        assert (scan.reason is None) == (truncated == 0)
        self._fd = fd
        self._size = self._allocated = scan.end
        if self.preallocate and scan.reason == ZERO_TAIL:
            # Space preallocated and never written: no tail was torn.
            return Recovery(records=len(scan.records))
        return Recovery(records=len(scan.records), truncated_bytes=truncated, reason=scan.reason)

    def _fsync(self, fd: int) -> None:
        if self._durable:
            # Preallocated: the data (and any growth of the file) with fdatasync.
            (os.fdatasync if self.preallocate else os.fsync)(fd)
            self.stats.syncs += 1

    def _fsync_dir(self) -> None:
        if self._durable:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"write-ahead log {self.path} is closed")

    def append(self, payloads: Sequence[bytes]) -> None:
        """Append records with one ``write``; durable after a ``sync`` (per the policy)."""
        self._check_open()
        if not payloads:
            return
        buf = encode_records(payloads)
        try:
            if self.preallocate:
                self._write_in_place(buf)
            else:
                _write_all(self._fd, buf)
        except BaseException:
            # Never leave a partial record that later appends would follow.
            try:
                os.ftruncate(self._fd, self._size)
                self._allocated = self._size
            except OSError:
                # Cannot repair in place: stop using the file; reopening cuts the torn tail.
                os.close(self._fd)
                self._fd = -1
            raise
        self._size += len(buf)
        self._unsynced += len(payloads)
        self.stats.records_written += len(payloads)
        self.stats.bytes_written += len(buf)

    def _write_in_place(self, buf: bytes | bytearray) -> None:
        end = self._size + len(buf)
        if end > self._allocated:
            grow = max(self.preallocate, end - self._allocated)
            os.posix_fallocate(self._fd, self._allocated, grow)
            self._allocated += grow
        view, pos = memoryview(buf), self._size
        while view:
            n = os.pwrite(self._fd, view, pos)
            view, pos = view[n:], pos + n

    def sync(self) -> None:
        """Fsync the records written so far, as the fsync policy says."""
        self._check_open()
        if self._unsynced == 0:
            return
        if self.fsync_policy == "always" or (
            self.fsync_policy == "batch" and self._unsynced >= self.batch_records
        ):
            self._fsync(self._fd)
            self._unsynced = 0

    def read_all_with_offsets(self) -> list[tuple[int, bytes]]:
        """Every record as (byte offset of its header, payload), oldest first."""
        self._check_open()
        data = _read_fd(self._fd)
        scan = _scan(data[: self._size] if self.preallocate else data, self.path)
        if scan.reason is not None:
            # Only recovery may cut a tail; in an open log this means outside interference.
            raise WalCorruptionError(self.path, scan.end, f"{scan.reason} in an open log")
        return scan.records

    def read_all(self) -> list[bytes]:
        """Every record's payload, oldest first."""
        return [payload for _, payload in self.read_all_with_offsets()]

    def replace(self, payloads: Sequence[bytes]) -> None:
        """Atomically replace the whole log with ``payloads`` (compaction)."""
        self._check_open()
        buf = encode_records(payloads)
        tmp = self._tmp_path
        flags = _OPEN_FLAGS & ~os.O_APPEND if self.preallocate else _OPEN_FLAGS
        fd = os.open(tmp, flags | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, buf)
            self._fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            _remove_if_exists(tmp)
            raise
        # The compacted file is the log now; the old descriptor points at an unlinked file.
        os.close(self._fd)
        self._fd = fd
        self._size = self._allocated = len(buf)
        self._unsynced = 0
        self._fsync_dir()
        self.stats.records_written += len(payloads)
        self.stats.bytes_written += len(buf)
        self.stats.compactions += 1

    def close(self) -> None:
        """Fsync what is waiting (unless the policy is ``never``) and close. Idempotent."""
        if self._fd < 0:
            return
        try:
            if self.preallocate and self._allocated > self._size:
                os.ftruncate(self._fd, self._size)  # leave no unused space behind
                self._unsynced += 1
            if self._unsynced:
                self._fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1
            self._unsynced = 0

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RecordCodec(Protocol):
    """What ``DurableStorage`` needs of a codec (``consensus.codec.Codec`` fits)."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class DurableStorage:
    """``consensus.storage.Storage`` on a ``WriteAheadLog``: one codec-encoded record each."""

    def __init__(
        self,
        path: os.PathLike[str] | str,
        codec: RecordCodec,
        *,
        fsync: str = "always",
        batch_records: int = 64,
        preallocate: int = 0,
    ) -> None:
        self.codec = codec
        self.wal = WriteAheadLog(
            path, fsync=fsync, batch_records=batch_records, preallocate=preallocate
        )
        self.stats: StorageStats = self.wal.stats

    @property
    def recovery(self) -> Recovery:
        return self.wal.recovery

    def load(self) -> list[Any]:
        """Every durable record, decoded, oldest first; a record that fails to decode raises."""
        records = []
        for index, (offset, payload) in enumerate(self.wal.read_all_with_offsets()):
            try:
                records.append(self.codec.decode(payload))
            except Exception as exc:
                raise RecordDecodeError(self.wal.path, index, offset, exc) from exc
        return records

    def append(self, records: Sequence[Any]) -> None:
        # Encode everything first so a codec error writes nothing.
        self.wal.append([self.codec.encode(record) for record in records])

    def replace(self, records: Sequence[Any]) -> None:
        self.wal.replace([self.codec.encode(record) for record in records])

    def sync(self) -> None:
        self.wal.sync()

    def close(self) -> None:
        self.wal.close()

    def __enter__(self) -> DurableStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
