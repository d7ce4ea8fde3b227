"""The cost model's numbers: what a simulated node pays, in time, for its work.

Theory of operation
-------------------
With costs off (every number zero, the default of ``ClusterConfig.costs``)
a simulated node handles each input at the instant it arrives, as the
simulator always did.  With costs on, each node is a server with a queue
(``consensus.sim.servers`` carries it out):

* **CPU.**  A node handles its waiting inputs as one batch, as the real
  runtime's ``NodeRunner`` does, and is busy for the batch's CPU time: a
  ``batch`` overhead (plus ``wakeup`` when the node was idle: a process
  sleeping in its event loop pays to wake up, and its tasks to take turns;
  a busy one does not; a client host pays it too), plus
  per input (a peer message by type, a client
  ``request``, a timer ``tick``) ``base + per_byte x its encoded size +
  per_entry x its entry count`` (``CostRow``), plus ``propose`` per
  proposal the node made for client requests (one per packed entry, or one
  per request when not packed: what a protocol does per log entry it
  proposes, apart from what it does per request), plus per output: each record
  persisted (``records`` rows, or ``record``), each message sent (``sends``
  rows, or ``send`` + ``send_per_byte`` x size), each command applied
  (``apply``; a packed entry of k requests is k commands), each client
  answered (``reply``).  Inputs that arrive while the node is busy wait in
  its queue.
* **Disk.**  A batch that persists anything ends with one fsync of
  ``fsync`` seconds (group commit: every record of the batch, and so
  everything that arrived while the previous fsync ran, goes into one).
  The node waits for it, as the runtime's does, and nothing of the batch is
  sent or answered before it ends: persist-before-send holds.
* **Network.**  Each node sends at ``bandwidth`` bytes per second (0:
  unlimited): a message leaves when the node's link has finished sending
  the ones before it, ``size / bandwidth`` seconds after it started, and
  then travels for the network's delay (a 1 MB snapshot at 1 Gbit/s takes
  8 ms on the wire).
* **Clients.**  ``client`` is the CPU a client's host spends per operation
  (sending the request, handling the answer; 0: clients cost nothing, as
  when they run on machines of their own).  Clients share ``client_hosts``
  hosts in turn (0: each its own, and each request reaches its node
  ``client`` seconds after it was issued).  A shared host handles answers
  in batches, as a client library does a frame of replies: those that
  arrived while it was busy are handled together, and their operations
  complete (their clients' next requests leave) when the batch ends.  This is what a load generator
  process is (``[tcp] processes`` of them over TCP).
* **One machine.**  ``cores`` > 0: every node and client host shares that
  many CPUs, as a cluster on loopback shares one machine's: a batch or a
  client's answer that needs CPU waits for the first core to come free
  (first come, first served; an fsync holds no core).  0 (the default):
  each node and client host has a CPU of its own, as in a deployment.
  ``disks`` > 0: the nodes share that many disks (node i writes to disk
  i mod ``disks``), as a cluster on loopback shares one machine's.  Of an
  fsync's ``fsync`` seconds, the last ``fsync_serial`` (0: all of it) are
  the device's, one fsync at a time: an fsync that finds the device busy
  waits for it, so three nodes syncing at once take ``fsync``,
  ``fsync + fsync_serial`` and ``fsync + 2 fsync_serial`` (first come,
  first served, in the order their batches started).  0 (the default):
  each node has a disk of its own.

Rows are looked up by ``"<protocol>.<Type>"`` first, then ``"<Type>"``;
``inputs`` also takes ``"<protocol>.request"``, ``"<protocol>.propose"``
and ``"<protocol>.tick"`` (the protocol's own cost of a client request, a
proposal or a tick; the plain ``request``, ``propose`` and ``tick`` are the
fallbacks).  ``entries`` names what
``per_entry`` counts: a field (its length, or its value when it is an
integer, as ``Accepted.count``), or ``"requests"``: the client requests the
message or record carries as objects (in its entries, payloads or accepted
values, a ``Batch`` counting its requests), which is what decoding and
encoding pay for; a packed entry (``PackedBatch``, opaque bytes) counts one.

Every number is in seconds (``bandwidth``: bytes per second).  The numbers
are deterministic inputs: a run is still a function of (config, seed).
``python -m bench calibrate`` measures them on a machine and writes a
``[costs]`` table (``bench.calibrate``).
"""

from __future__ import annotations

from typing import Any

import attrs

from consensus.schema import ConfigError, non_negative, structure

__all__ = ["CostConfig", "CostRow"]


@attrs.frozen(kw_only=True)
class CostRow:
    """CPU seconds of one kind of input or record:
    ``base + per_byte * size + per_entry * entries``, where ``entries`` names
    what is counted: a field (its length, or its integer value) or
    ``"requests"`` (see the module's docstring)."""

    base: float = attrs.field(default=0.0, validator=non_negative)
    per_byte: float = attrs.field(default=0.0, validator=non_negative)
    per_entry: float = attrs.field(default=0.0, validator=non_negative)
    entries: str = ""

    def __attrs_post_init__(self) -> None:
        if self.per_entry and not self.entries:
            raise ConfigError("entries: per_entry needs the name of the field it counts")


def _rows(field: str, value: Any) -> dict[str, CostRow]:
    if not isinstance(value, dict):
        raise ConfigError(f"{field}: expected a table of cost rows, got {value!r}")
    rows = {}
    for key, row in value.items():
        where = f'{field}."{key}"'
        if isinstance(row, CostRow):
            rows[key] = row
        elif isinstance(row, dict):
            rows[key] = structure(CostRow, row, path=where)
        elif isinstance(row, (int, float)) and not isinstance(row, bool) and row >= 0:
            rows[key] = CostRow(base=float(row))  # a bare number is a base cost
        else:
            raise ConfigError(
                f"{where}: expected a cost row (a table or a number >= 0), got {row!r}"
            )
    return rows


def _input_rows(value: Any) -> dict[str, CostRow]:
    return _rows("inputs", value)


def _record_rows(value: Any) -> dict[str, CostRow]:
    return _rows("records", value)


def _send_rows(value: Any) -> dict[str, CostRow]:
    return _rows("sends", value)


_NUMBERS = (
    "batch",
    "wakeup",
    "message",
    "message_per_byte",
    "request",
    "propose",
    "tick",
    "send",
    "send_per_byte",
    "reply",
    "apply",
    "record",
    "fsync",
    "fsync_serial",
    "bandwidth",
    "client",
)


@attrs.frozen(kw_only=True)
class CostConfig:
    """The ``[costs]`` table: CPU, disk and link costs of a simulated node
    (see the theory of operation).  All zero (the default): costs off."""

    batch: float = attrs.field(default=0.0, validator=non_negative)
    wakeup: float = attrs.field(default=0.0, validator=non_negative)
    message: float = attrs.field(default=0.0, validator=non_negative)
    message_per_byte: float = attrs.field(default=0.0, validator=non_negative)
    request: float = attrs.field(default=0.0, validator=non_negative)
    propose: float = attrs.field(default=0.0, validator=non_negative)
    tick: float = attrs.field(default=0.0, validator=non_negative)
    send: float = attrs.field(default=0.0, validator=non_negative)
    send_per_byte: float = attrs.field(default=0.0, validator=non_negative)
    reply: float = attrs.field(default=0.0, validator=non_negative)
    apply: float = attrs.field(default=0.0, validator=non_negative)
    record: float = attrs.field(default=0.0, validator=non_negative)
    fsync: float = attrs.field(default=0.0, validator=non_negative)
    fsync_serial: float = attrs.field(default=0.0, validator=non_negative)
    bandwidth: float = attrs.field(default=0.0, validator=non_negative)
    client: float = attrs.field(default=0.0, validator=non_negative)
    client_hosts: int = attrs.field(default=0, validator=non_negative)
    cores: int = attrs.field(default=0, validator=non_negative)
    disks: int = attrs.field(default=0, validator=non_negative)
    inputs: dict[str, CostRow] = attrs.field(factory=dict, converter=_input_rows, hash=False)
    records: dict[str, CostRow] = attrs.field(factory=dict, converter=_record_rows, hash=False)
    sends: dict[str, CostRow] = attrs.field(factory=dict, converter=_send_rows, hash=False)
    #: Where the numbers come from (``bench calibrate`` writes the machine and date).
    note: str = ""

    def __attrs_post_init__(self) -> None:
        if self.fsync_serial > self.fsync:
            raise ConfigError(
                f"costs.fsync_serial: {self.fsync_serial} is more than the whole fsync"
                f" ({self.fsync}); it is the part of an fsync a shared disk serves alone"
            )

    @property
    def enabled(self) -> bool:
        """Whether any cost is set (otherwise nodes handle inputs instantly)."""
        return any(getattr(self, name) for name in _NUMBERS) or any(
            row.base or row.per_byte or row.per_entry
            for row in (*self.inputs.values(), *self.records.values(), *self.sends.values())
        )

    def input_row(self, protocol: str, name: str) -> CostRow | None:
        """The row of input ``name`` (a message type, ``request``, ``propose`` or
        ``tick``), if any."""
        return self.inputs.get(f"{protocol}.{name}", self.inputs.get(name))

    def record_row(self, protocol: str, name: str) -> CostRow | None:
        return self.records.get(f"{protocol}.{name}", self.records.get(name))

    def send_row(self, protocol: str, name: str) -> CostRow | None:
        return self.sends.get(f"{protocol}.{name}", self.sends.get(name))

    def scaled(self, factor: float) -> CostConfig:
        """Every CPU cost times ``factor`` (fsync and bandwidth unchanged):
        a faster or slower machine, or a what-if."""
        cpu = {
            name: getattr(self, name) * factor
            for name in _NUMBERS
            if name not in ("fsync", "fsync_serial", "bandwidth")  # a client's CPU scales too
        }

        def scale(rows: dict[str, CostRow]) -> dict[str, CostRow]:
            return {
                key: attrs.evolve(
                    row,
                    base=row.base * factor,
                    per_byte=row.per_byte * factor,
                    per_entry=row.per_entry * factor,
                )
                for key, row in rows.items()
            }

        return attrs.evolve(
            self,
            inputs=scale(self.inputs),
            records=scale(self.records),
            sends=scale(self.sends),
            **cpu,
        )
