"""NWR's options: replication factor, quorums, conflict resolution, repair.

The defaults are Dynamo's usual configuration: ``N = 3``, ``W = 2``,
``R = 2`` (so ``W + R > N``: every read quorum overlaps every write quorum),
last-writer-wins by the coordinator's clock (which drifts by up to
``clock_skew``), no read repair, strict quorums.  It is not linearizable, and
``unsafe(options)`` names why.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["CLOCKS", "READ_REPAIRS", "NwrOptions", "unsafe"]

CLOCKS = ("timestamp", "version")
READ_REPAIRS = ("off", "async", "blocking")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _count(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class NwrOptions:
    """Options for the ``nwr`` plugin.

    ``n``: replicas per key (the first ``n`` nodes of the key's preference
    list on the ring of node ids; at most the cluster size).  ``w``/``r``:
    acknowledgements a write / replies a read waits for.  ``clock``: how a
    write's version is chosen: ``timestamp`` (the coordinator's clock, off
    by a constant drawn from ``[-clock_skew, clock_skew]`` per node) or
    ``version`` (read ``r`` replicas first, then one above the highest
    version seen, as in the ABD algorithm).  ``read_repair``: ``off``,
    ``async`` (after answering, send the newest version to the replicas that
    replied with an older one) or ``blocking`` (before answering, make sure
    ``w`` replicas hold the newest version: ABD's write-back phase).
    ``sloppy``: a replica that does not answer within ``resend`` is replaced
    by the next node on the ring, which keeps the write as a hint and hands
    it off later (Dynamo's sloppy quorum and hinted handoff).
    ``timeout``: a coordinator that has no quorum by then rejects the request
    (the client retries elsewhere); ``resend``: silent replicas are asked
    again this often; ``handoff_interval``: how often hints are offered.
    """

    n: int = attrs.field(default=3, validator=_count)
    w: int = attrs.field(default=2, validator=_count)
    r: int = attrs.field(default=2, validator=_count)
    clock: str = attrs.field(default="timestamp", validator=attrs.validators.in_(CLOCKS))
    clock_skew: float = attrs.field(default=0.01, validator=attrs.validators.ge(0))
    read_repair: str = attrs.field(default="off", validator=attrs.validators.in_(READ_REPAIRS))
    sloppy: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    timeout: float = attrs.field(default=0.2, validator=_positive)
    resend: float = attrs.field(default=0.03, validator=_positive)
    handoff_interval: float = attrs.field(default=0.1, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.w > self.n or self.r > self.n:
            raise ValueError(f"w ({self.w}) and r ({self.r}) must not exceed n ({self.n})")


def unsafe(options: NwrOptions) -> tuple[str, ...]:
    """Why this configuration is not linearizable (every one has a reason).

    Even the best one, ``W + R > N`` with blocking read repair, version
    clocks and strict quorums (the ABD register), is linearizable only for
    reads and writes: a compare-and-set or an append is a read followed by a
    separate write, and two of them can both succeed (that needs consensus).
    """
    found = []
    if options.w + options.r <= options.n:
        found.append("stale reads: a read quorum may miss the last write's quorum (W + R <= N)")
    if options.read_repair != "blocking":
        found.append(
            "new-then-old reads: a read may see a write in progress that a later read misses"
        )
    if options.clock == "timestamp" and options.clock_skew > 0:
        found.append("lost writes: a later write with an older clock loses (last writer wins)")
    if options.sloppy:
        found.append("stale reads: sloppy quorums write to fallback nodes reads do not ask")
    found.append("read-modify-writes (compare-and-set, append) are not atomic")
    return tuple(found)
