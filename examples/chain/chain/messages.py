"""Messages and durable records of chain replication, named as in the paper."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class Forward:
    """Node -> its successor: the sender's log entries ``first .. first+len-1`` (section 2,
    update processing).  Empty: a probe asking for an ``Ack``."""

    first: int
    payloads: tuple[Any, ...]


@attrs.frozen(kw_only=True)
class Ack:
    """Node -> its predecessor: I store entries ``1 .. stored``, and the tail stores
    ``1 .. committed`` (the acknowledgements of section 3 flowing back up)."""

    stored: int
    committed: int


@attrs.frozen(kw_only=True)
class Stored:
    """Durable record: the entry at ``index``."""

    index: int
    payload: Any
