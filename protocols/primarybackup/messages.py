"""Primary-backup's messages and durable records.

Theory of operation
-------------------
Three conversations, each a request and its answer:

* replication, primary -> every other node: ``Replicate`` carries log
  entries from ``first`` on (none: a heartbeat), the epoch of the entry just
  before them (the log-matching check), the primary's commit index and its
  ``View``.  A follower answers ``Ack`` (it holds the primary's log up to
  ``last``) or ``Nack`` (its log does not match before ``first``: resend from
  ``hint``).  A fenced follower that knows a newer view answers ``Refuse``
  with that view instead: the sender is a deposed primary.
* confirmed reads, primary -> its backups: ``ConfirmRead`` asks "am I still
  your primary?"; ``ReadConfirmed`` says yes for round ``round``.
* failure detection, monitor -> every node: ``Ping`` carries the monitor's
  current ``View`` (the way a new view is announced); ``Pong`` reports the
  node's log position and, from a primary, the last view it acknowledged
  (every backup of that view holds its log).

``View`` and ``Entry`` are values, not messages.  Durable records: ``Stored``
(one log entry), ``Truncated`` (the log was cut after an index: a resync
with a new primary) and ``ViewChanged`` (a view this node adopted; on the
monitor's node, a view it installed).

Messages are plain frozen values with no logic and no wire format (see the
codec); the sender's node id comes with every message from the transport.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "Ack",
    "ConfirmRead",
    "Entry",
    "Nack",
    "Ping",
    "Pong",
    "ReadConfirmed",
    "Refuse",
    "Replicate",
    "Stored",
    "Truncated",
    "View",
    "ViewChanged",
]


@attrs.frozen(kw_only=True)
class View:
    """Who is primary in ``epoch``, and which nodes are its backups.

    Only the monitor creates views, one epoch at a time; every node adopts
    the highest epoch it hears of.  Nodes in neither role are standbys: the
    primary replicates to them too, but does not wait for them.
    """

    epoch: int
    primary: int
    backups: tuple[int, ...]


@attrs.frozen(kw_only=True)
class Entry:
    """One log entry: the epoch of the primary that created it, and the payload."""

    epoch: int
    payload: Any


@attrs.frozen(kw_only=True)
class Replicate:
    """Primary -> follower: entries ``first .. first+len-1`` (none: a heartbeat).

    ``prev_epoch`` is the epoch of entry ``first - 1`` (0 when ``first`` is 1);
    ``commit`` the primary's commit index; ``last`` its log's length (a
    follower drops what it holds beyond, once it matches up to there);
    ``view`` the primary's view.
    """

    view: View
    first: int
    prev_epoch: int
    entries: tuple[Entry, ...]
    commit: int
    last: int


@attrs.frozen(kw_only=True)
class Ack:
    """Follower -> primary: my log matches yours up to ``last`` (I am in ``epoch``)."""

    epoch: int
    last: int


@attrs.frozen(kw_only=True)
class Nack:
    """Follower -> primary: my log does not match yours before the entries you
    sent; send again from ``hint``."""

    epoch: int
    hint: int


@attrs.frozen(kw_only=True)
class Refuse:
    """Fenced follower -> a primary of an older epoch: ``view`` is newer than yours."""

    view: View


@attrs.frozen(kw_only=True)
class ConfirmRead:
    """Primary -> backup: do you still follow me in ``view``?  (Read round ``round``.)"""

    view: View
    round: int


@attrs.frozen(kw_only=True)
class ReadConfirmed:
    """Backup -> primary: yes, in ``epoch``, for read round ``round``."""

    epoch: int
    round: int


@attrs.frozen(kw_only=True)
class Ping:
    """Monitor -> node: are you alive?  ``view`` is the monitor's current view."""

    view: View


@attrs.frozen(kw_only=True)
class Pong:
    """Node -> monitor: alive in ``epoch``, last log entry (``last_epoch``,
    ``last_index``); ``acknowledged``: as primary, the latest epoch whose
    backups all hold its log (0: none, or not the primary)."""

    epoch: int
    last_epoch: int
    last_index: int
    acknowledged: int


@attrs.frozen(kw_only=True)
class Stored:
    """Durable record: the entry at ``index``."""

    index: int
    epoch: int
    payload: Any


@attrs.frozen(kw_only=True)
class Truncated:
    """Durable record: every entry after ``after`` was removed."""

    after: int


@attrs.frozen(kw_only=True)
class ViewChanged:
    """Durable record: this node adopted (or, as the monitor, installed) ``view``."""

    view: View
