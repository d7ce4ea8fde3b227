"""Formatting for the command line's tables (``bench.cli``, ``bench.peers.cli``)."""

from __future__ import annotations

import math

__all__ = ["cell"]


def cell(fmt: str, value: object) -> str:
    """``value`` formatted for a table: ``-`` when it is missing (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)
