"""A reusable round-trip table check for protocol test suites.

Usage, in a protocol's tests::

    from codec_helpers import roundtrip_table_check

    def test_every_message_round_trips():
        roundtrip_table_check(Codec.for_protocol(PROTOCOL), [Prepare(...), Promise(...), ...])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from consensus.codec import Codec

__all__ = ["roundtrip_table_check"]


def roundtrip_table_check(
    codec: Codec, values: Iterable[Any], *, cover_extra_types: bool = True
) -> None:
    """Assert every value survives encode/decode, and the table covers every extra type.

    For each value: ``decode(encode(v)) == v``, the same class, and the same
    Python types all the way down (a tuple stays a tuple, ``True`` never comes
    back as ``1``).  Then: every class in ``codec.extra_types`` (the protocol's
    messages and records) is the class of at least one value, so a new message
    cannot be added without a row in the table.
    """
    values = list(values)
    for v in values:
        back = codec.decode(codec.encode(v))
        assert type(back) is type(v), f"{v!r} decoded as {type(back).__qualname__}"
        assert back == v, f"{v!r} decoded as {back!r}"
        mismatch = _type_mismatch(v, back)
        assert mismatch is None, f"{v!r} decoded with different types at {mismatch}"
    if not cover_extra_types:
        return
    covered = {type(v) for v in values}
    missing = [t.__qualname__ for t in codec.extra_types if t not in covered]
    assert not missing, f"the round-trip table has no value of: {', '.join(missing)}"


def _type_mismatch(a: Any, b: Any, path: str = "") -> str | None:
    # The first place where two equal values differ in Python type, or None.
    if type(a) is not type(b):
        return f"{path or '<top>'}: {type(a).__qualname__} vs {type(b).__qualname__}"
    if attrs.has(type(a)):
        for f in attrs.fields(type(a)):
            found = _type_mismatch(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
            if found:
                return found
    elif isinstance(a, (tuple, list)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _type_mismatch(x, y, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(a, dict):
        for k in a:
            found = _type_mismatch(a[k], b[k], f"{path}[{k!r}]")
            if found:
                return found
    return None
