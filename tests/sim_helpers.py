"""Simulator test helpers shared by the protocol suites: the conformance kit's.

The workload, invariant and fault helpers the conformance rules are built
from live in ``consensus.testing`` (a plugin author's suite uses the same);
the protocol suites here import them under their old home.
"""

from consensus.testing.invariants import (
    Agreement,
    applied_index,
    applied_requests,
    assert_prefix_agreement,
    converged,
    log_of,
)
from consensus.testing.workload import acked, closed_loop, finished, random_crashes, retry_late

__all__ = [
    "Agreement",
    "acked",
    "applied_index",
    "applied_requests",
    "assert_prefix_agreement",
    "closed_loop",
    "converged",
    "finished",
    "log_of",
    "random_crashes",
    "retry_late",
]
