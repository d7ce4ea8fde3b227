"""Fast positional constructors for attrs value classes (``builder``).

Frozen attrs classes with keyword-only fields cost a call with keywords and
one ``object.__setattr__`` per field to build: about 0.3 us for a two-field
``Put`` and 0.5 us for a six-field ``Reply`` here.  Decoding a frame and
answering a request build several per request, so on a busy node or client
that is a tenth of the CPU.  ``builder(cls)`` gives the same object for the
same fields in about half the time where that is safe (see its docstring);
the codec decodes through it (inlining ``slot_setters``, the test of that
safety and the setters it found), and the runtime's hottest constructions use it.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from types import MemberDescriptorType
from typing import Any, TypeVar

import attrs

__all__ = ["builder", "slot_setters"]

T = TypeVar("T")


def slot_setters(cls: type) -> tuple[Callable[[Any, Any], None], ...] | None:
    """The ``__set__`` of each field's slot descriptor, in attrs order, when
    setting them on ``object.__new__(cls)`` is all that ``cls.__init__`` does:
    slots and nothing else (no ``__dict__``), no validator, converter, alias or
    init hook.  None otherwise."""
    fields = attrs.fields(typing.cast(Any, cls))
    slots: set[str] = set()
    for klass in cls.__mro__[:-1]:
        own = klass.__dict__.get("__slots__")
        if own is None:  # a __dict__ somewhere: leave construction to __init__
            return None
        slots.update([own] if isinstance(own, str) else own)
    slots.discard("__weakref__")
    descriptors: list[Any] = [getattr(cls, a.name, None) for a in fields]
    plain = (
        slots == {a.name for a in fields}
        and all(a.validator is None and a.converter is None and a.alias == a.name for a in fields)
        and all(type(d) is MemberDescriptorType for d in descriptors)
        and not any(hasattr(cls, hook) for hook in ("__attrs_pre_init__", "__attrs_post_init__"))
    )
    return tuple(d.__set__ for d in descriptors) if plain else None


def builder(cls: type[T]) -> Callable[..., T]:
    """A function of ``cls``'s field values, in attrs order and positional, that
    builds a ``cls`` as fast as it safely can.

    ``cls(**fields)`` by default (kw_only classes need keywords: a generated
    positional adapter is about 2x faster than ``cls(**dict(zip(...)))``).  A
    class with ``slot_setters`` is built without its ``__init__``: a new
    object and each slot set through its descriptor, which is what that
    ``__init__`` does, in half the time.

    Typing: the result is ``Callable[..., T]``: its arguments are not checked."""
    fields = attrs.fields(typing.cast(Any, cls))
    params = ", ".join(f"_{i}" for i in range(len(fields)))
    setters = slot_setters(cls)
    if setters is None:
        # Aliases are identifiers, so this is safe to eval.
        kwargs = ", ".join(f"{a.alias}=_{i}" for i, a in enumerate(fields))
        return typing.cast(Callable[..., T], eval(f"lambda {params}: cls({kwargs})", {"cls": cls}))
    ns: dict[str, Any] = {"NEW": object.__new__, "CLS": cls}
    lines = [f"def make({params}):", "    o = NEW(CLS)"]
    for i, setter in enumerate(setters):
        ns[f"S{i}"] = setter
        lines.append(f"    S{i}(o, _{i})")
    lines.append("    return o")
    exec(compile("\n".join(lines), f"<builder {cls.__qualname__}>", "exec"), ns)
    return typing.cast(Callable[..., T], ns["make"])
