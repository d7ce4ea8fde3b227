"""``primary-backup``: primary-backup replication with a failover monitor, an unsafe baseline.

See ``README.md`` in this folder for the message flow, the options and what
each configuration loses, and ``core`` for the theory of operation.
"""

from __future__ import annotations

from consensus.registry import ProtocolSpec
from protocols.primarybackup.core import PrimaryBackup
from protocols.primarybackup.messages import (
    Ack,
    ConfirmRead,
    Entry,
    Nack,
    Ping,
    Pong,
    ReadConfirmed,
    Refuse,
    Replicate,
    Stored,
    Truncated,
    View,
    ViewChanged,
)
from protocols.primarybackup.monitor import Monitor
from protocols.primarybackup.options import PrimaryBackupOptions, unsafe

__all__ = ["PROTOCOL", "Monitor", "PrimaryBackup", "PrimaryBackupOptions", "View", "unsafe"]

PROTOCOL = ProtocolSpec(
    name="primary-backup",
    create=PrimaryBackup,
    summary=(
        "primary-backup replication (sync, semi-sync, async) with a failover monitor,"
        " fenced or not: a baseline, not consensus"
    ),
    options=PrimaryBackupOptions,
    # Order fixes wire tags: only ever append.
    messages=(View, Entry, Replicate, Ack, Nack, Refuse, ConfirmRead, ReadConfirmed, Ping, Pong),
    records=(Stored, Truncated, ViewChanged),
    hazards=unsafe,
    lacks={
        "quorum": (
            "sync waits for every backup of the view, and without failover nothing"
            " commits while the primary is down"
        ),
        "linearizability": (
            "a failover by timeout can promote a backup while the old primary still"
            " serves: stale reads with the default local reads, lost acknowledged writes"
            " with async or semi-sync replication, unfenced failover or promotion = any"
            " (only sync, fenced, most-up-to-date, confirmed reads, or no failover at all,"
            " keeps every history linearizable)"
        ),
    },
)
