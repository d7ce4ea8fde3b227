"""Fast positional constructors for attrs value classes (``builder``).

Frozen attrs classes with keyword-only fields cost a call with keywords and
one ``object.__setattr__`` per field to build: about 0.3 us for a two-field
``Put`` and 0.5 us for a six-field ``Reply`` here.  Decoding a frame and
answering a request build several per request, so on a busy node or client
that is a tenth of the CPU.  ``builder(cls)`` gives the same object for the
same fields in about half the time where that is safe (see its docstring);
the codec decodes through it, and the runtime's hottest constructions use it.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

__all__ = ["builder"]

T = TypeVar("T")


def builder(cls: type[T]) -> Callable[..., T]:
    """A function of ``cls``'s field values, in attrs order and positional, that
    builds a ``cls`` as fast as it safely can.

    ``cls(**fields)`` by default (kw_only classes need keywords: a generated
    positional adapter is about 2x faster than ``cls(**dict(zip(...)))``).  A
    class whose ``__init__`` only stores its fields (slots and nothing else,
    no validator, converter or init hook) is built without it: a new object
    and each slot set through its descriptor, which is what that
    ``__init__`` does, in half the time (decoding builds several objects per
    request).  Such a builder has ``direct`` set.

    Typing: the result is ``Callable[..., T]``: its arguments are not checked."""
    fields = attrs.fields(typing.cast(Any, cls))
    params = ", ".join(f"_{i}" for i in range(len(fields)))
    slots: set[str] = set()
    for klass in cls.__mro__[:-1]:
        own = klass.__dict__.get("__slots__")
        if own is None:  # a __dict__ somewhere: leave construction to __init__
            slots = set()
            break
        slots.update([own] if isinstance(own, str) else own)
    slots.discard("__weakref__")
    plain = (
        slots == {a.name for a in fields}
        and all(
            a.validator is None
            and a.converter is None
            and a.alias == a.name
            and type(getattr(cls, a.name, None)).__name__ == "member_descriptor"
            for a in fields
        )
        and not any(hasattr(cls, hook) for hook in ("__attrs_pre_init__", "__attrs_post_init__"))
    )
    if not plain:
        # Aliases are identifiers, so this is safe to eval.
        kwargs = ", ".join(f"{a.alias}=_{i}" for i, a in enumerate(fields))
        return typing.cast(Callable[..., T], eval(f"lambda {params}: cls({kwargs})", {"cls": cls}))
    ns: dict[str, Any] = {"NEW": object.__new__, "CLS": cls}
    lines = [f"def make({params}):", "    o = NEW(CLS)"]
    for i, a in enumerate(fields):
        ns[f"S{i}"] = getattr(cls, a.name).__set__
        lines.append(f"    S{i}(o, _{i})")
    lines.append("    return o")
    exec(compile("\n".join(lines), f"<builder {cls.__qualname__}>", "exec"), ns)
    make = ns["make"]
    make.direct = True
    return typing.cast(Callable[..., T], make)
