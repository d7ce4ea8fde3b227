"""Client retry policy, shared by the simulator and the Trio runtime.

Theory of operation
-------------------
A client has one request outstanding.  It sends it to a node; the node either
answers with the result, or rejects it (not the leader, entry overwritten),
or stays silent (crashed, partitioned, slow).  ``RetryPolicy`` is the pure
decision of what to do next:

* rejected with a ``leader_hint``: go there at once (a redirect), unless the
  client has been bounced around more than ``len(nodes)`` times in a row,
  which means the hints are stale: then back off first;
* rejected without a hint (an election is under way): back off, then try the
  next node in rotation;
* no answer within ``timeout``: try the next node in rotation.

Every retry reuses the request's ``(client_id, seq)``, so the state machine's
session table applies it at most once however many copies reach the log.
After ``max_attempts`` the outcome is unknown (``info`` in the history).
"""

from __future__ import annotations

import attrs

from consensus.checker.history import Operation
from consensus.config import ClientConfig

__all__ = ["Attempt", "RetryPolicy"]


@attrs.define(slots=True, eq=False)
class Attempt:
    """The outstanding state of one operation: where it was sent, how often."""

    op: Operation
    node: int
    attempts: int = 1
    redirects: int = 0
    #: Bumped on every retry; replies and timeouts of older tries are ignored.
    generation: int = 0


@attrs.frozen
class RetryPolicy:
    nodes: tuple[int, ...]
    config: ClientConfig

    def next_node(self, current: int) -> int:
        i = self.nodes.index(current) if current in self.nodes else -1
        return self.nodes[(i + 1) % len(self.nodes)]

    def after_rejection(
        self, attempt: Attempt, leader_hint: int | None
    ) -> tuple[int, float] | None:
        """(node, delay) of the next try after a rejection, or None to give up."""
        if attempt.attempts >= self.config.max_attempts:
            return None
        if leader_hint is not None and leader_hint != attempt.node and leader_hint in self.nodes:
            if attempt.redirects < len(self.nodes):
                return leader_hint, 0.0
            return leader_hint, self.config.backoff
        return self.next_node(attempt.node), self.config.backoff

    def after_timeout(self, attempt: Attempt) -> int | None:
        """The node for the next try after a timeout, or None to give up."""
        if attempt.attempts >= self.config.max_attempts:
            return None
        return self.next_node(attempt.node)
