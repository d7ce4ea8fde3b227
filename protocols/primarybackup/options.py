"""Primary-backup's options: how writes are acknowledged, how failover works, how reads are served.

The defaults are the configuration people usually deploy: synchronous
replication, a monitor that promotes the most up-to-date backup with fencing
epochs, and reads served by the primary from its own state.  It is not
linearizable (a deposed primary that has not heard of its successor answers
reads from its stale state); ``reads = "confirmed"`` makes it so, at one
round trip per read.  ``unsafe(options)`` names what a configuration loses.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["FAILOVERS", "MODES", "PROMOTIONS", "READS", "PrimaryBackupOptions", "unsafe"]

MODES = ("sync", "semi-sync", "async")
FAILOVERS = ("none", "monitor", "monitor-fenced")
PROMOTIONS = ("most-up-to-date", "any")
READS = ("local", "confirmed")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class PrimaryBackupOptions:
    """Options for the ``primary-backup`` plugin.

    ``mode``: when the primary answers a write: ``sync`` once every backup of
    its view holds it, ``semi-sync`` once ``acks`` backups do (all of them if
    the view has fewer), ``async`` once it is on the primary's own disk.
    ``failover``: ``none`` (the first primary forever), ``monitor`` (an
    external monitor on the highest-numbered node promotes a backup when the
    primary stops answering its pings; backups accept replication from any
    node that acts as primary: no fencing, as with a Redis Sentinel
    failover), ``monitor-fenced`` (the same, and every node refuses messages
    of an older epoch: fencing tokens).  ``promotion``: whom the monitor
    promotes: ``most-up-to-date`` (the backup of the current view whose log
    reaches furthest, and only once the primary acknowledged that view, so
    every backup holds its log) or ``any`` (any node it hears from, at once).
    ``reads``: ``local`` (the primary answers from its own state) or
    ``confirmed`` (first every backup of its view confirms it is still their
    primary).  ``heartbeat``: replication heartbeat and ping interval;
    ``failover_timeout``: silence after which the monitor suspects a node.
    """

    mode: str = attrs.field(default="sync", validator=attrs.validators.in_(MODES))
    acks: int = attrs.field(
        default=1, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    failover: str = attrs.field(default="monitor-fenced", validator=attrs.validators.in_(FAILOVERS))
    promotion: str = attrs.field(
        default="most-up-to-date", validator=attrs.validators.in_(PROMOTIONS)
    )
    reads: str = attrs.field(default="local", validator=attrs.validators.in_(READS))
    heartbeat: float = attrs.field(default=0.05, validator=_positive)
    failover_timeout: float = attrs.field(default=0.3, validator=_positive)
    max_batch: int = attrs.field(
        default=64, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )

    def __attrs_post_init__(self) -> None:
        if self.failover_timeout <= self.heartbeat:
            raise ValueError(
                f"failover_timeout ({self.failover_timeout}) must exceed heartbeat"
                f" ({self.heartbeat}), or every node is suspected between two pings"
            )


def unsafe(options: PrimaryBackupOptions) -> tuple[str, ...]:
    """What this configuration may lose under faults (empty: nothing known).

    The analysis the chaos runs confirm (see this package's README): without
    failover nothing is lost but a primary crash stops everything; with it,
    acknowledged writes survive only when every backup must hold them and
    the promoted backup is known to hold them, and reads are fresh only when
    confirmed.
    """
    if options.failover == "none":
        return ()
    found = []
    if options.mode != "sync":
        found.append("acknowledged writes lost on failover (a promoted backup lacks them)")
    if options.failover == "monitor":
        found.append("split brain: backups accept writes from a deposed primary")
    if options.promotion == "any":
        found.append("acknowledged writes lost (the promoted node may not hold them)")
    if options.reads == "local":
        found.append("stale reads from a deposed primary")
    return tuple(found)
