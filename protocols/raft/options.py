"""Raft's tunables, validated at construction.

Times are in seconds of the node's own clock (virtual in the simulator; a
node with clock drift, ``ClusterConfig.clock_drift``, counts them at its own
rate).  The defaults follow the paper's suggestion (section 9.3): a
heartbeat well below the election timeout, and a randomized election
timeout spread over a range about as wide as its minimum.

Read options shared with Multi-Paxos
------------------------------------
Two names mean the same in every leader-based plugin, so that a config can
ask for a kind of read without knowing the protocol:

* ``read_mode``: how the leader serves a linearizable ``Get``.
  ``"log"``: through the log, like a write (an entry, a round trip and a
  disk write per read batch).  ``"read_index"``: at the commit index, once a
  quorum has answered a heartbeat sent after the read arrived (thesis 6.4;
  one round trip, no disk write).  ``"lease"``: at once, at the commit
  index, while the leader's lease holds (thesis 6.4.1; no round trip); a
  read outside the lease falls back to a ReadIndex round.
* ``max_clock_drift``: the bound on every node's clock rate the lease
  assumes, as a fraction (0.01: a clock gains or loses at most 1% against
  real time).  The lease is only as safe as this bound: with a real drift
  beyond it a deposed leader can serve stale reads.

The lease (``lease_duration``): a follower that heard from its leader
within ``election_timeout_min`` of its own clock grants no vote to anyone
else (CheckQuorum's leader stickiness; required, so ``read_mode = "lease"``
without ``check_quorum`` is a config error).  A leader that a quorum
answered for a heartbeat round it *sent* at local time ``t`` therefore
holds a lease until ``t + election_timeout_min * (1 - d) / (1 + d)``, ``d``
= ``max_clock_drift``: the followers' windows last at least
``election_timeout_min / (1 + d)`` real seconds (a clock at most ``d``
fast), and the leader's clock may run ``d`` slow.  A node that restarts
refuses votes for ``election_timeout_min`` (it forgot when it last heard
from a leader), and a leader that sent ``TimeoutNow`` (leadership
transfer) serves no lease reads for the rest of its term.

Raft-only: ``follower_reads`` lets a follower (or learner) serve a ``Get``
after asking the leader for a read index (ReadIndex forwarding); the leader
confirms it with ``read_mode``'s method (a round, or its lease).  It needs a
``read_mode`` other than ``"log"``.

``read_index`` is the deprecated spelling of ``read_mode`` (true:
``"read_index"``, false: ``"log"``); setting both to different modes is a
config error.
"""

from __future__ import annotations

import warnings
from typing import Any

import attrs

from consensus.schema import ConfigError, in_range, one_of

__all__ = ["READ_MODES", "RaftOptions"]

#: The ways a leader serves linearizable reads (``RaftOptions.read_mode``).
READ_MODES = ("log", "read_index", "lease")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _default_read_mode(options: RaftOptions) -> str:
    # ``read_index`` is declared before ``read_mode``: its value, if given, decides.
    return "log" if options.read_index is False else "read_index"


@attrs.frozen(kw_only=True)
class RaftOptions:
    """Options for the ``raft`` protocol plugin.

    ``election_timeout_min``/``_max``: a follower that hears from no leader
    for a timeout drawn uniformly from ``[min, max)`` starts an election
    (``min == max``: always that timeout, no randomness, as in the Raft
    paper's 150-150 ms line of figure 16).
    ``heartbeat_interval``: how often a leader sends (empty) AppendEntries.
    ``max_entries_per_message``: batching limit of one AppendEntries.
    ``max_inflight``: unacknowledged AppendEntries per follower (pipelining).
    ``prevote``: run a PreVote round before each election (thesis 9.6).
    ``check_quorum``: a leader that has not heard from a quorum for
    ``election_timeout_max`` steps down, and a node that heard from a leader
    within ``election_timeout_min`` refuses (pre-)votes (thesis 6.2, 4.2.3).
    ``read_mode``, ``max_clock_drift``, ``follower_reads``: linearizable
    reads (see the module docstring); ``read_index``: deprecated alias.
    ``learner_phase``: a server a ``ChangeMembership`` adds joins as a
    non-voting learner first and becomes a voter once its log is within
    ``promote_lag`` entries of the leader's (off: it votes at once).
    ``single_server_changes``: a change that adds or removes one voter
    skips the joint configuration (thesis 4.1); off: every change is joint.
    ``auto_leave_joint``: the leader leaves a joint configuration as soon as
    it commits; off: it stays joint until a client asks again for the new
    members (explicit leave; the first request is answered once the joint
    configuration commits).
    """

    election_timeout_min: float = attrs.field(default=0.15, validator=_positive)
    election_timeout_max: float = attrs.field(default=0.30, validator=_positive)
    heartbeat_interval: float = attrs.field(default=0.05, validator=_positive)
    max_entries_per_message: int = attrs.field(
        default=64, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    max_inflight: int = attrs.field(
        default=8, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    prevote: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    check_quorum: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    #: Deprecated: use ``read_mode``.  None: not given.
    read_index: bool | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(bool))
    )
    read_mode: str = attrs.field(
        default=attrs.Factory(_default_read_mode, takes_self=True), validator=one_of(*READ_MODES)
    )
    max_clock_drift: float = attrs.field(default=0.01, validator=in_range(0, 1))
    follower_reads: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    learner_phase: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    promote_lag: int = attrs.field(
        default=8, validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)]
    )
    single_server_changes: bool = attrs.field(
        default=True, validator=attrs.validators.instance_of(bool)
    )
    auto_leave_joint: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if self.election_timeout_max < self.election_timeout_min:
            raise ValueError(
                f"election_timeout_max ({self.election_timeout_max}) must be at least"
                f" election_timeout_min ({self.election_timeout_min})"
            )
        if self.heartbeat_interval >= self.election_timeout_min:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be below"
                f" election_timeout_min ({self.election_timeout_min})"
            )
        if self.read_index is not None:
            alias = "read_index" if self.read_index else "log"
            if self.read_mode != alias:
                raise ConfigError(
                    f"read_index: the deprecated read_index = {str(self.read_index).lower()}"
                    f" means read_mode = {alias!r}, but read_mode = {self.read_mode!r};"
                    " set read_mode only"
                )
            warnings.warn(
                f"the Raft option read_index is deprecated: use read_mode = {alias!r}",
                DeprecationWarning,
                stacklevel=2,
            )
        if self.read_mode == "lease" and not self.check_quorum:
            raise ConfigError(
                "read_mode: 'lease' needs check_quorum = true (followers that heard from"
                " the leader must refuse votes for the lease to hold)"
            )
        if self.follower_reads and self.read_mode == "log":
            raise ConfigError(
                "follower_reads: a follower asks the leader for a read index, which"
                " read_mode = 'log' has none of; use 'read_index' or 'lease'"
            )
        if self.max_clock_drift >= 1:
            raise ConfigError(f"max_clock_drift: must be below 1, got {self.max_clock_drift}")

    @property
    def lease_duration(self) -> float:
        """How long, on the leader's clock, a confirmed heartbeat round's lease
        lasts from the moment the round was sent (see the module docstring)."""
        drift = self.max_clock_drift
        return self.election_timeout_min * (1 - drift) / (1 + drift)

    @property
    def transfer_timeout(self) -> float:
        """How long a leadership transfer may take before the leader aborts it
        and takes proposals again: one (minimum) election timeout, as etcd."""
        return self.election_timeout_min
