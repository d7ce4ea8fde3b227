"""The failover monitor: an external failure detector that installs new views.

Theory of operation
-------------------
The monitor stands for an external service such as Redis Sentinel or the
view service of Budhiraja et al.'s primary-backup: it is not part of the
replication protocol, it only watches it.  Here it runs on one node (the
highest-numbered member) next to that node's replica, so it can crash and be
cut off like any node; while it is down nobody fails over.

Every ``heartbeat`` the node pings every other node with the current view;
a ``Pong`` says the node is alive and how far its log reaches.  ``decide``
then makes at most one change, always to ``epoch + 1``:

* **failover**: the primary has not answered for ``failover_timeout``: promote
  a candidate and drop the old primary from the view (it may come back
  later as a backup).  ``most-up-to-date``: the backup of the current view
  with the furthest log (last entry's epoch, then index; ties: lowest id),
  among those heard from, and only once the primary acknowledged the
  current view (every backup held its log), so that in sync mode the
  promoted backup holds every acknowledged write.  ``any``: a node picked
  at random among all the nodes heard from, at once, whatever its log
  ("unclean" promotion).
* **rejoin**: a node outside the view (a former primary, back) has been
  heard from: add it as a backup.  With ``most-up-to-date``, only once the
  current view is acknowledged, as above.

The monitor suspects by timeout only, so it is wrong whenever a primary is
slow, or cut off from the monitor but not from its clients: it then installs
a second primary while the first still serves.  What happens next is the
protocol's business (fencing, or not: ``PrimaryBackupOptions.failover``).

This class holds the monitor's volatile knowledge and decides; the replica
(``core``) sends the pings, persists and announces the views it returns.
Invariant: a view returned has ``epoch == current.epoch + 1``.
"""

from __future__ import annotations

import random

import attrs

from protocols.primarybackup.messages import Pong, View

__all__ = ["Monitor"]


@attrs.define
class Monitor:
    """What the monitor knows of every node, and its one decision."""

    members: tuple[int, ...]
    promotion: str
    timeout: float
    rng: random.Random
    #: node -> virtual time of its last Pong (all "now" at start: a grace period).
    heard: dict[int, float] = attrs.Factory(dict)
    #: node -> its last Pong.
    reports: dict[int, Pong] = attrs.Factory(dict)

    def start(self, now: float) -> None:
        self.heard = {n: now for n in self.members}

    def pong(self, now: float, node: int, report: Pong) -> None:
        self.heard[node] = now
        self.reports[node] = report

    def alive(self, now: float) -> list[int]:
        """Nodes heard from within the timeout, in id order."""
        return [n for n in self.members if now - self.heard.get(n, -1e9) <= self.timeout]

    def _acknowledged(self, view: View) -> bool:
        if view.epoch == 1:
            return True  # the first view starts with every log empty: nothing to hold
        report = self.reports.get(view.primary)
        return report is not None and report.acknowledged == view.epoch

    def _position(self, node: int) -> tuple[int, int, int]:
        report = self.reports.get(node)
        if report is None:
            return (0, 0, -node)
        return (report.last_epoch, report.last_index, -node)

    def decide(self, now: float, view: View) -> View | None:
        """The next view, or None to keep ``view`` (see the theory of operation)."""
        alive = self.alive(now)
        careful = self.promotion == "most-up-to-date"
        if careful and not self._acknowledged(view):
            return None  # wait: a backup of this view may still lack the primary's log
        if view.primary not in alive:
            if careful:
                candidates = [b for b in view.backups if b in alive]
                if not candidates:
                    return None
                chosen = max(candidates, key=self._position)
            else:
                candidates = [n for n in alive if n != view.primary]
                if not candidates:
                    return None
                chosen = self.rng.choice(candidates)
            backups = tuple(b for b in view.backups if b != chosen)
            return View(epoch=view.epoch + 1, primary=chosen, backups=backups)
        outside = [n for n in alive if n != view.primary and n not in view.backups]
        if outside:
            backups = tuple(sorted(view.backups + tuple(outside)))
            return View(epoch=view.epoch + 1, primary=view.primary, backups=backups)
        return None
