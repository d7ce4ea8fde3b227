"""The four roles a Raft server moves between (see ``core`` for the transitions)."""

from __future__ import annotations

import enum

__all__ = ["Role"]


class Role(enum.Enum):
    FOLLOWER = "follower"
    #: PreVote (thesis 9.6): polling peers before starting a real election.
    PRECANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
