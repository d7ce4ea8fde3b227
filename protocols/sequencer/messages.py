"""Messages of the sequencer baseline."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class Replicate:
    """Leader -> follower: entries ``first .. first+len-1`` and the commit index."""

    first: int
    payloads: tuple[Any, ...]
    commit: int


@attrs.frozen(kw_only=True)
class Ack:
    """Follower -> leader: I hold every entry up to ``last``."""

    last: int


@attrs.frozen(kw_only=True)
class Stored:
    """Durable record: the entry at ``index``."""

    index: int
    payload: Any
