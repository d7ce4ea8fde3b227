"""What a simulated node did, per interval of virtual time (costs on).

Theory of operation
-------------------
One ``NodeStats`` per node counts, per ``interval`` of virtual time, the
fields of ``STAT_FIELDS``: CPU, fsync and core-waiting seconds (split at
interval boundaries, so a long batch counts in every interval it spans),
batches, inputs, fsyncs and records (in the interval the batch started
in), the queue's area (the integral of its length over time, split exactly
at interval boundaries: divided by the interval, the mean queue length),
the longest queue a batch found, bytes and link seconds sent (in the
interval the message left in).

Intervals are kept in a dict by number; the latest one is cached
(``row_bin``, ``row``), since most batches fall in the same interval as
the one before.  The counts are only ever added to, so reading them while
the simulation goes on (``rows``) works on a copy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["STAT_FIELDS", "NodeStats"]

#: What is counted per node and interval, in this order (queue_max: the largest).
STAT_FIELDS = (
    "cpu_s",
    "fsync_s",
    "batches",
    "inputs",
    "queue_area",
    "fsyncs",
    "records",
    "bytes_sent",
    "link_s",
    "queue_max",
    "core_wait_s",
)
CPU, FSYNC, BATCHES, INPUTS, AREA, FSYNCS, RECORDS, BYTES, LINK, QMAX, WAIT = range(11)


class NodeStats:
    """One node's counts per interval (see the theory of operation)."""

    __slots__ = ("interval", "per", "bins", "row_bin", "row")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.per = 1.0 / interval
        #: interval number -> counts in STAT_FIELDS order
        self.bins: dict[int, list[float]] = {}
        self.row_bin = -1
        self.row: list[float] = []

    def row_at(self, t: float) -> list[float]:
        """The counts of the interval holding time ``t``."""
        b = int(t * self.per)
        return self.row if b == self.row_bin else self.bin(b)

    def bin(self, b: int) -> list[float]:
        """The counts of interval number ``b``."""
        row = self.bins.get(b)
        if row is None:
            row = self.bins[b] = [0.0] * len(STAT_FIELDS)
        if b >= self.row_bin:
            self.row_bin, self.row = b, row
        return row

    def spread(self, field: int, start: float, end: float) -> None:
        """Add the time from ``start`` to ``end`` to ``field``, interval by interval."""
        per, width = self.per, self.interval
        first, last = int(start * per), int(end * per)
        if first == last:
            self.bin(first)[field] += end - start
            return
        self.bin(first)[field] += (first + 1) * width - start
        for b in range(first + 1, last):
            self.bin(b)[field] += width
        self.bin(last)[field] += end - last * width

    def waited(self, arrivals: list[float], now: float) -> None:
        """Each input's wait ``[arrived, now)`` adds to the queue's area."""
        per, width = self.per, self.interval
        last = int(now * per)
        row = self.bin(last)
        for arrived in arrivals:
            first = int(arrived * per)
            if first == last:
                row[AREA] += now - arrived
                continue
            self.bin(first)[AREA] += (first + 1) * width - arrived
            for b in range(first + 1, last):
                self.bin(b)[AREA] += width
            row[AREA] += now - last * width

    def rows(self, node: int, queued: list[float], now: float) -> list[dict[str, Any]]:
        """One row per interval with anything counted; ``queued``: arrival times of
        inputs still waiting, which count in the queue's area up to ``now``."""
        copy = NodeStats(self.interval)
        copy.bins = {b: list(row) for b, row in self.bins.items()}
        if queued:
            copy.waited(queued, now)
        out = []
        for b in sorted(copy.bins):
            counts = copy.bins[b]
            if not any(counts):
                continue
            row: dict[str, Any] = {"node": node, "time": b * self.interval}
            row.update(zip(STAT_FIELDS, counts, strict=True))
            out.append(row)
        return out
