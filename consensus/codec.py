"""The wire format and durable-record format: frozen attrs values to CBOR bytes.

Theory of operation
-------------------
This module is the only place ``cbor2`` is used.  A ``Codec`` knows a fixed
list of frozen attrs classes, each with a small integer *tag*:

* the core types, always present with fixed tags (``CORE_TYPES``, tags 1-12):
  ``Get Put Append CompareAndSet Delete Request Noop Batch Committed
  StateSnapshot ChangeMembership PackedBatch`` (append only: tags are wire
  format);
* a protocol's extra types, tags 64, 65, ... in the order given
  (``ProtocolSpec.messages`` then ``.records``, which is why those may only be
  appended to).

A top-level value is one CBOR array ``[VERSION, tag, fields...]`` with the
fields in attrs order, and values it holds are written *flat*, into that one
array, wherever the schema says what they are: a field typed as a registered
class (or a union of registered classes) is that value's tag followed by its
own fields, and a field typed ``tuple[C, ...]`` or ``list[C]`` of such classes
is the item count followed by each item's tag and fields.  So a ``Request``
carrying a ``Put`` is ``[VERSION, 6, client_id, seq, 2, key, value]``, and a
batch of requests is one array, however many it holds.  (cbor2 pays about a
quarter of a microsecond for every array it writes, more than for the ints
and strings inside: flat values are what make the runtime's hot messages
cheap.)  Elsewhere a registered value is *boxed*, its flat form in an array
of its own, ``[tag, fields...]``: in a union with primitives, a fixed-length
tuple, a frozenset, a dict, or a dynamic value.  Other tuples, lists and
frozensets are arrays, dicts are maps.  Field names never go on the wire: the
class's annotations are the schema.  A field typed ``typing.Any`` or
``object`` carries a self-describing value: primitives as themselves,
registered values boxed as ``[tag >= 0, fields...]`` and containers as
``[code < 0, items...]`` (``-1`` tuple, ``-2`` list, ``-3`` frozenset, ``-4``
dict as ``k1, v1, k2, v2, ...``), so tuples come back as tuples.

At construction the codec resolves every annotation (string annotations too)
and compiles it into a pair of small functions (``_Kind``): one checks and
converts a value to its wire form, the other checks and converts back; a
flat kind has a second pair, ``put`` (append the value to the array being
built) and ``take`` (read it at an offset, return it and the next offset).
Fields of an exact primitive type (``int``, ``str | None``) skip the call and
are checked inline with one ``type(v) in ok`` test.  An annotation the codec
cannot represent, or a union whose members would look alike on the wire, is
a ``TypeError`` at construction, not a surprise at run time.

Decoding is strict: every failure is a ``CodecError`` naming the class and
field, never another exception and never a default.  Types are checked
exactly (``bool`` is not an ``int``, ``int`` is not a ``bool``, ``str`` is not
``bytes``); only a ``float`` field also accepts an ``int``, kept as an int.
The CBOR decoder refuses indefinite lengths, duplicate map keys, nesting
deeper than ``MAX_DEPTH`` and every semantic tag except bignums (2, 3), and
trailing bytes after the one top-level item.

Encoding checks values against the same annotations (``EncodeError``) and
refuses a body larger than ``max_frame``, so it does not produce what decode
would refuse (one exception: values nested deeper than ``MAX_DEPTH``).
``encode_frame``/``FrameDecoder`` add a 4-byte big-endian length prefix for
byte streams (TCP).

Must never: let a cbor2 exception, ``RecursionError`` or a class's own
validator error escape undecorated; return a list where a tuple was encoded.
"""

from __future__ import annotations

import io
import operator
import reprlib
import threading
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType, UnionType
from typing import Any

import attrs
import cbor2

from consensus.builders import builder, slot_setters
from consensus.commands import (
    Append,
    Batch,
    ChangeMembership,
    CompareAndSet,
    Delete,
    Get,
    Noop,
    PackedBatch,
    Put,
    Request,
)
from consensus.replica import Committed, StateSnapshot

if typing.TYPE_CHECKING:
    from consensus.registry import ProtocolSpec

__all__ = [
    "CORE_TYPES",
    "DEFAULT_MAX_FRAME",
    "FrameSplitter",
    "FIRST_EXTRA_TAG",
    "VERSION",
    "Codec",
    "CodecError",
    "EncodeError",
    "FieldError",
    "FrameDecoder",
    "FrameTooLarge",
    "MalformedFrame",
    "UnknownMessageType",
    "UnsupportedVersion",
]

#: Wire-format version, the first element of every top-level array.
VERSION = 2  # 2: registered values are flat where the schema names them (1: nested)
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
#: The core types; the tag of ``CORE_TYPES[i]`` is ``i + 1``.
_COMMANDS = (Get, Put, Append, CompareAndSet, Delete)
CORE_TYPES: tuple[type, ...] = (
    *_COMMANDS,
    Request,
    Noop,
    Batch,
    Committed,
    StateSnapshot,
    ChangeMembership,
    PackedBatch,
)
FIRST_EXTRA_TAG = 64
#: Deepest CBOR nesting accepted; real messages nest about ten deep.
MAX_DEPTH = 100

_TUPLE, _LIST, _FROZENSET, _DICT = -1, -2, -3, -4
_PRIMITIVES = frozenset({type(None), bool, int, float, str, bytes})
_NAMES = {type(None): "None", bool: "bool", int: "int", float: "float", str: "str", bytes: "bytes"}
_WIRE_TYPES = {"array": (list, tuple), "map": (dict,)}
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40


class _Slow(Exception):
    """The generated fast path declines a value; the careful path takes it."""


class CodecError(ValueError):
    """Any failure to encode or decode; the message names class and field."""


class MalformedFrame(CodecError):
    """Not one CBOR item, trailing bytes, not an array, or the wrong shape."""


class UnsupportedVersion(CodecError):
    """The frame's version is not ``VERSION``."""


class UnknownMessageType(CodecError):
    """A tag no registered class has."""


class FieldError(CodecError):
    """A field has the wrong type, or a class the wrong number of fields."""


class FrameTooLarge(CodecError):
    """A frame (or a length prefix) exceeds the codec's ``max_frame``."""


class EncodeError(CodecError):
    """A value is unregistered or does not match its declared type."""


def _got(v: object) -> str:
    # Error-path only; must not fail itself (repr of a huge int raises ValueError).
    if type(v) is int and v.bit_length() > 64:
        return f"int of {v.bit_length()} bits"
    try:
        return f"{type(v).__name__} {_short.repr(v)}"
    except Exception:
        return type(v).__name__


def _prefixed(e: CodecError, where: str) -> CodecError:
    # Same class, message extended outward: "Batch.requests: [2]: Request.seq: ..."
    return type(e)(f"{where}: {e}")


@attrs.frozen
class _Kind:
    """A compiled annotation: ``enc`` value -> wire, ``dec`` wire -> value.

    ``exact`` is set when the wire form is the value itself and the check is
    ``type(v) in exact``.  ``wire`` is the CBOR shape (``"prim"``, ``"array"``,
    ``"map"``, or ``"union"``/``"any"`` for several), ``py`` the Python types
    ``enc`` accepts: both decide how a union dispatches.
    """

    desc: str
    wire: str
    enc: Callable[[Any], Any]
    dec: Callable[[Any], Any]
    py: frozenset[type]
    exact: frozenset[type] | None = None
    classes: tuple[type, ...] = ()  # set for a union of registered classes
    # Set for a tuple/list of ``item``s: (container, item kind); the fast path uses it.
    seq: tuple[type, Any] | None = None
    # Set for a flat kind (see the module docstring): append to an array / read at an offset.
    put: Callable[[Any, list[Any]], None] | None = None
    take: Callable[[Any, int], tuple[Any, int]] | None = None
    # Types ``enc`` and ``dec`` return as they are (a union's or a dynamic value's
    # primitives): the fast path tests for them instead of calling.
    same: frozenset[type] = frozenset()


def _primitive(ok: frozenset[type]) -> _Kind:
    desc = " | ".join(sorted(_NAMES[t] for t in ok))

    def check(v: Any) -> Any:
        if type(v) not in ok:
            raise FieldError(f"expected {desc}, got {_got(v)}")
        return v

    return _Kind(desc, "prim", check, check, ok, exact=ok)


def _array(v: Any, desc: str) -> Any:
    # Decoded arrays are lists, except inside map keys where cbor2 makes tuples.
    if type(v) is not list and type(v) is not tuple:
        raise FieldError(f"expected {desc}, got {_got(v)}")
    return v


def _freeze(v: Any) -> Any:
    # Encoded map keys must be hashable for cbor2: lists become (equal-on-the-wire) tuples.
    return tuple(map(_freeze, v)) if type(v) is list else v


class Codec:
    """Encodes and decodes the core types plus ``types`` (tags 64, 65, ...).

    ``types`` must be attrs classes (frozen, so values are hashable and safe to
    share); their fields may use the annotations listed in the module
    docstring.  Construction raises ``TypeError`` for anything it cannot encode.
    """

    def __init__(
        self,
        types: Sequence[type] = (),
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        fast: bool = True,
    ) -> None:
        if not 0 < max_frame < 2**32:
            raise ValueError(f"max_frame must be in 1..2**32-1, got {max_frame}")
        self.max_frame = max_frame
        #: Use the generated fast paths (``False``: the careful path only, for tests).
        self.fast = fast
        self.extra_types: tuple[type, ...] = tuple(types)
        tags: dict[type, int] = {t: i + 1 for i, t in enumerate(CORE_TYPES)}
        for i, cls in enumerate(self.extra_types):
            if cls in tags:
                raise TypeError(f"{cls.__qualname__} is registered twice")
            tags[cls] = FIRST_EXTRA_TAG + i
        self.tags: Mapping[type, int] = MappingProxyType(tags)
        # Per class: append its tag and flat fields to an array; per tag: read the
        # fields that follow the tag at an offset, giving the value and the next offset.
        self._put: dict[type, Callable[[Any, list[Any]], None]] = {}
        self._take: dict[int, Callable[[Any, int], tuple[Any, int]]] = {}
        # The generated fast paths, which raise on anything unusual (see _fast_paths).
        self._fast_put: dict[type, Callable[[Any, list[Any]], None]] = {}
        self._fast_take: dict[int, Callable[[Any, int], tuple[Any, int]]] = {}
        self._name: dict[int, str] = {}
        # Unions of registered classes fill their tables once every class is compiled.
        self._fixups: list[tuple[dict[Any, Any], dict[Any, Any], Iterable[Any]]] = []
        self._any = self._any_kind()
        for cls, tag in tags.items():
            if not attrs.has(cls):
                raise TypeError(f"{cls!r} is not an attrs class")
            self._put[cls], self._take[tag] = self._class_codec(cls, tag)
            self._name[tag] = cls.__qualname__
        for table, source, keys in self._fixups:
            table.update((k, source[k]) for k in keys)

    @classmethod
    def for_protocol(cls, spec: ProtocolSpec, *, max_frame: int = DEFAULT_MAX_FRAME) -> Codec:
        """The codec for a plugin: its messages, then its durable records."""
        return cls((*spec.messages, *spec.records), max_frame=max_frame)

    # -- public surface -------------------------------------------------------

    def encode(self, obj: Any) -> bytes:
        """``obj`` (a registered value) as ``[VERSION, tag, fields...]`` CBOR bytes."""
        put = self._put.get(type(obj))
        if put is None:
            raise EncodeError(f"cannot encode {type(obj).__qualname__}: not a registered type")
        out = [VERSION]
        try:
            put(obj, out)
            body = cbor2.dumps(out)
        except CodecError as e:
            raise EncodeError(str(e)) from None
        except Exception as e:  # RecursionError on a cyclic list, a class's odd __getattr__, ...
            raise EncodeError(f"{type(obj).__qualname__}: {e!r}") from e
        if len(body) > self.max_frame:
            raise FrameTooLarge(
                f"{type(obj).__qualname__} encodes to {len(body)} bytes, over "
                f"max_frame {self.max_frame}"
            )
        return body

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        """The value ``encode`` made ``data`` from; ``CodecError`` for anything else."""
        if len(data) > self.max_frame:
            raise FrameTooLarge(f"frame of {len(data)} bytes is over max_frame {self.max_frame}")
        v = _loads(data)
        if type(v) is not list:
            raise MalformedFrame(f"expected [version, tag, fields...], got {_got(v)}")
        if len(v) < 2:
            raise MalformedFrame(f"expected [version, tag, fields...], got {len(v)} item(s)")
        version, tag = v[0], v[1]
        if type(version) is not int or version != VERSION:
            raise UnsupportedVersion(f"wire version {_got(version)}, this codec reads {VERSION}")
        if type(tag) is not int:
            raise MalformedFrame(f"expected an int message tag, got {_got(tag)}")
        take = self._take.get(tag)
        if take is None:
            raise UnknownMessageType(f"unknown message tag {tag}")
        try:
            taken = take(v, 2)
        except CodecError:
            raise
        except Exception as e:  # RecursionError, an unhashable set element, ...
            raise FieldError(f"{self._name[tag]}: {e!r}") from e
        return _to_end(taken, v, self._name[tag])

    def size(self, obj: Any) -> int:
        """Encoded length of ``obj`` in bytes (without a frame prefix)."""
        return len(self.encode(obj))

    def encode_frame(self, obj: Any) -> bytes:
        """``encode(obj)`` behind a 4-byte big-endian length, for ``FrameDecoder``."""
        body = self.encode(obj)
        return len(body).to_bytes(4, "big") + body

    # -- compiling annotations ------------------------------------------------

    def _class_codec(
        self, cls: type, tag: int
    ) -> tuple[Callable[[Any, list[Any]], None], Callable[[Any, int], tuple[Any, int]]]:
        # The class's put (append its tag and flat fields) and take (read the fields after
        # its tag): the generated fast path first, the careful one when it declines.
        qual = cls.__qualname__
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as e:
            raise TypeError(f"{qual}: cannot resolve annotations: {e!r}") from e
        fields = attrs.fields(cls)
        names = tuple(a.name for a in fields)
        kinds = []
        for a in fields:
            if not a.init:
                raise TypeError(f"{qual}.{a.name}: init=False fields cannot be decoded")
            hint = hints.get(a.name, a.type)
            if hint is None:
                raise TypeError(f"{qual}.{a.name}: field has no type annotation")
            kinds.append(self._kind(hint, f"{qual}.{a.name}"))
        n = len(names)
        get: Callable[[Any], Any] = (
            operator.attrgetter(*names)
            if n > 1
            else ((lambda o: (getattr(o, names[0]),)) if n else (lambda o: ()))
        )
        # (field name, exact types or None, flat put/take or None, enc, dec, desc)
        plan = tuple(
            (names[i], k.exact, k.put, k.take, k.enc, k.dec, k.desc) for i, k in enumerate(kinds)
        )
        make: Callable[..., Any] = builder(cls)

        def put(obj: Any, out: list[Any]) -> None:
            out.append(tag)
            for value, (name, ok, flat_put, _, enc, _, desc) in zip(get(obj), plan, strict=True):
                if ok is not None:
                    if type(value) not in ok:
                        raise FieldError(f"{qual}.{name}: expected {desc}, got {_got(value)}")
                    out.append(value)
                    continue
                try:
                    if flat_put is not None:
                        flat_put(value, out)
                    else:
                        out.append(enc(value))
                except CodecError as e:
                    raise _prefixed(e, f"{qual}.{name}") from None

        def take(arr: Any, off: int) -> tuple[Any, int]:
            values = []
            for i, (name, ok, _, flat_take, _, dec, desc) in enumerate(plan):
                if off >= len(arr):
                    raise FieldError(f"{qual}: expected {n} field(s), got {i}")
                if ok is not None:
                    value = arr[off]
                    off += 1
                    if type(value) not in ok:
                        raise FieldError(f"{qual}.{name}: expected {desc}, got {_got(value)}")
                    values.append(value)
                    continue
                try:
                    if flat_take is not None:
                        value, off = flat_take(arr, off)
                    else:
                        value = dec(arr[off])
                        off += 1
                except CodecError as e:
                    raise _prefixed(e, f"{qual}.{name}") from None
                values.append(value)
            try:
                return make(*values), off
            except Exception as e:  # the class's own validators or __attrs_post_init__
                raise FieldError(f"{qual}: constructor refused the fields: {e!r}") from e

        fast_put, fast_take = self._fast_paths(cls, tag, names, kinds, make)
        self._fast_put[cls] = fast_put
        self._fast_take[tag] = fast_take
        if not self.fast:
            return put, take

        def checked_put(obj: Any, out: list[Any]) -> None:
            start = len(out)
            try:
                fast_put(obj, out)
            except Exception:  # the careful path says exactly what is wrong (or agrees)
                del out[start:]
                put(obj, out)

        def checked_take(arr: Any, off: int) -> tuple[Any, int]:
            try:
                return fast_take(arr, off)
            except Exception:
                return take(arr, off)

        return checked_put, checked_take

    def _fast_paths(
        self, cls: type, tag: int, names: tuple[str, ...], kinds: list[_Kind], make: Any
    ) -> tuple[Any, Any]:
        """Straight-line put/take functions for ``cls``, generated from its kinds.

        They do the same checks as the careful path (``_class_codec``) with
        no per-field loop, call and try block, and signal any failure by
        raising; the caller then reruns the careful path, which either
        raises the precise ``CodecError`` or, where the fast path was merely
        stricter (a tuple where a list is usual), gives the same value.  So
        they can never accept what the careful path refuses.  Nested flat
        values go through the other classes' fast paths (``FP``, ``FT``).
        """
        ns: dict[str, Any] = {
            "make": make,
            "TAG": tag,
            "FT": self._fast_take,
            "FP": self._fast_put,
            "Slow": _Slow,
            "list": list,
            "tuple": tuple,
            "type": type,
            "len": len,
            "range": range,
        }
        take_lines = ["def fast_take(arr, off):"]
        put_lines = ["def fast_put(o, out):"]
        pending = ["TAG"]  # plain values to append before the next flat one
        at = 0  # the next field is at arr[off + at]
        values = []

        def flush() -> None:
            if len(pending) == 1:
                put_lines.append(f"    out.append({pending[0]})")
            elif pending:
                put_lines.append(f"    out += ({', '.join(pending)},)")
            pending.clear()

        def dispatch(
            i: int, classes: tuple[type, ...], t: str, indent: str
        ) -> tuple[list[str], str]:
            # Check tag ``t`` and say which fast take reads what follows it: one class
            # already compiled is called directly, else through the table by tag.
            tags = [self.tags[c] for c in classes]
            if len(tags) == 1 and tags[0] in self._fast_take:
                ns[f"TAG{i}"], ns[f"TK{i}"] = tags[0], self._fast_take[tags[0]]
                return [f"{indent}if type({t}) is not int or {t} != TAG{i}: raise Slow"], f"TK{i}"
            ns[f"TAGS{i}"] = frozenset(tags)
            return [
                f"{indent}if type({t}) is not int or {t} not in TAGS{i}: raise Slow"
            ], f"FT[{t}]"

        for i, (name, kind) in enumerate(zip(names, kinds, strict=True)):
            a = f"a{i}"
            put_lines.append(f"    {a} = o.{name}")
            values.append(a)
            if kind.classes and kind.take is not None:  # one flat value: tag, fields
                ns[f"CLS{i}"] = frozenset(kind.classes)
                check, take = dispatch(i, kind.classes, "t", "    ")
                take_lines += [
                    f"    t = arr[off + {at}]",
                    *check,
                    f"    {a}, off = {take}(arr, off + {at + 1})",
                ]
                at = 0
                put_lines.append(f"    if type({a}) not in CLS{i}: raise Slow")
                flush()
                put_lines.append(f"    FP[type({a})]({a}, out)")
            elif kind.seq is not None and kind.take is not None:  # count, then flat items
                container, item = kind.seq
                ns[f"C{i}"] = container
                ns[f"CLS{i}"] = frozenset(item.classes)
                check, take = dispatch(i, item.classes, "t", "        ")
                take_lines += [
                    f"    k = arr[off + {at}]",
                    "    if type(k) is not int or k < 0: raise Slow",
                    f"    off += {at + 1}",
                    "    items = []",
                    "    for _ in range(k):",
                    "        t = arr[off]",
                    *check,
                    f"        x, off = {take}(arr, off + 1)",
                    "        items.append(x)",
                    f"    {a} = C{i}(items)",
                ]
                at = 0
                put_lines.append(f"    if type({a}) is not C{i}: raise Slow")
                pending.append(f"len({a})")
                flush()
                # A stray item raises part-way: the caller truncates what was appended.
                put_lines += [
                    f"    for x in {a}:",
                    f"        if type(x) not in CLS{i}: raise Slow",
                    "        FP[type(x)](x, out)",
                ]
            else:
                take_lines.append(f"    {a} = arr[off + {at}]")
                at += 1
                if kind.exact is not None:
                    if len(kind.exact) == 1:
                        ns[f"T{i}"] = next(iter(kind.exact))
                        test = f"type({a}) is not T{i}"
                    else:
                        ns[f"OK{i}"] = kind.exact
                        test = f"type({a}) not in OK{i}"
                    take_lines.append(f"    if {test}: raise Slow")
                    put_lines.append(f"    if {test}: raise Slow")
                else:
                    ns[f"DEC{i}"] = kind.dec
                    ns[f"ENC{i}"] = kind.enc
                    ns[f"SAME{i}"] = kind.same
                    take_lines.append(f"    if type({a}) not in SAME{i}: {a} = DEC{i}({a})")
                    put_lines.append(f"    if type({a}) not in SAME{i}: {a} = ENC{i}({a})")
                pending.append(a)
        flush()
        end = f"off + {at}" if at else "off"
        setters = slot_setters(cls)
        if setters is not None:  # builder's fast path, inlined: one call less per value
            ns["NEW"], ns["CLS"] = object.__new__, cls
            take_lines.append("    o = NEW(CLS)")
            for i, setter in enumerate(setters):
                ns[f"S{i}"] = setter
                take_lines.append(f"    S{i}(o, a{i})")
            take_lines.append(f"    return o, {end}")
        else:
            take_lines.append(f"    return make({', '.join(values)}), {end}")
        source = "\n".join([*take_lines, *put_lines])
        exec(compile(source, f"<codec {cls.__qualname__}>", "exec"), ns)
        return ns["fast_put"], ns["fast_take"]

    def _kind(self, hint: Any, where: str) -> _Kind:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.Union or origin is UnionType or origin is typing.Annotated:
            members = _union_members(hint)
            if len(members) > 1:
                return self._union([self._kind(m, where) for m in members], where)
            hint = members[0]
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is None or hint is type(None):
            return _primitive(frozenset({type(None)}))
        if hint is float:  # PEP 484 numeric tower: an int is a fine float (and stays an int)
            return _primitive(frozenset({int, float}))
        if isinstance(hint, type) and hint in _PRIMITIVES:
            return _primitive(frozenset({hint}))
        if hint is Any or hint is object:
            return self._any
        if isinstance(hint, type) and hint in self.tags:
            return self._classes([hint])
        bare = {tuple: tuple[Any, ...], list: list[Any], frozenset: frozenset[Any]}
        if isinstance(hint, type) and (hint in bare or hint is dict):
            return self._kind(dict[Any, Any] if hint is dict else bare[hint], where)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return self._sequence(tuple, self._kind(args[0], where))
            if args == ((),):  # tuple[()]
                args = ()
            return self._fixed_tuple([self._kind(a, where) for a in args])
        if origin is list or origin is frozenset:
            return self._sequence(origin, self._kind(args[0], where))
        if origin is dict:
            return self._dict(self._kind(args[0], where), self._kind(args[1], where))
        if isinstance(hint, type) and attrs.has(hint):
            raise TypeError(f"{where}: {hint.__qualname__} is not registered with this codec")
        raise TypeError(f"{where}: the codec cannot represent {hint!r}")

    def _classes(self, classes: Sequence[type]) -> _Kind:
        # Flat: the value's tag, then its fields; boxed (enc/dec): the same in an array.
        put_by_type: dict[type, Callable[[Any, list[Any]], None]] = {}
        take_by_tag: dict[int, Callable[[Any, int], tuple[Any, int]]] = {}
        self._fixups.append((put_by_type, self._put, classes))
        self._fixups.append((take_by_tag, self._take, [self.tags[c] for c in classes]))
        desc = " | ".join(c.__qualname__ for c in classes)
        known = self._take

        def put(v: Any, out: list[Any]) -> None:
            f = put_by_type.get(type(v))
            if f is None:
                raise FieldError(f"expected {desc}, got {_got(v)}")
            f(v, out)

        def take(arr: Any, off: int) -> tuple[Any, int]:
            t = arr[off] if off < len(arr) else None
            if type(t) is not int:
                raise FieldError(f"expected {desc} as tag, fields..., got {_got(t)}")
            f = take_by_tag.get(t)
            if f is None:
                err = FieldError if t in known else UnknownMessageType
                raise err(f"expected {desc}, got tag {t}")
            return f(arr, off + 1)

        def enc(v: Any) -> Any:
            out: list[Any] = []
            put(v, out)
            return out

        def dec(v: Any) -> Any:
            return _to_end(take(_array(v, f"{desc} as [tag, fields...]"), 0), v, desc)

        return _Kind(
            desc, "array", enc, dec, frozenset(classes), classes=tuple(classes), put=put, take=take
        )

    def _union(self, members: list[_Kind], where: str) -> _Kind:
        # Primitives merge into one exact set, registered classes into one tag table;
        # what is left must differ in CBOR shape (one array kind, one map kind).
        if any(m is self._any for m in members):
            return self._any
        prims: frozenset[type] = frozenset()
        classes: list[type] = []
        flat: list[_Kind] = []
        for m in members:
            if m.exact is not None:
                prims |= m.exact
            elif m.classes:
                classes.extend(c for c in m.classes if c not in classes)
            else:
                flat.append(m)
        if classes:
            flat.append(self._classes(classes))
        for shape in ("array", "map"):
            if sum(m.wire == shape for m in flat) > 1:
                raise TypeError(f"{where}: ambiguous union, several members are CBOR {shape}s")
        if not flat:
            return _primitive(prims)
        if not prims and len(flat) == 1:
            return flat[0]
        prim_desc = _primitive(prims).desc if prims else ""
        desc = " | ".join(d for d in (prim_desc, *(m.desc for m in flat)) if d)
        by_py = {t: m.enc for m in flat for t in m.py}
        by_wire = {t: m.dec for m in flat for t in _WIRE_TYPES[m.wire]}

        def by_type(table: Mapping[Any, Callable[[Any], Any]]) -> Callable[[Any], Any]:
            # Encoding picks the member by Python type, decoding by CBOR type.
            def convert(v: Any) -> Any:
                t = type(v)
                if t in prims:
                    return v
                f = table.get(t)
                if f is None:
                    raise FieldError(f"expected {desc}, got {_got(v)}")
                return f(v)

            return convert

        return _Kind(
            desc, "union", by_type(by_py), by_type(by_wire), prims | frozenset(by_py), same=prims
        )

    def _sequence(self, container: Any, item: _Kind) -> _Kind:
        name = container.__name__
        desc = f"tuple[{item.desc}, ...]" if container is tuple else f"{name}[{item.desc}]"
        ok, ienc, idec = item.exact, item.enc, item.dec

        def enc(v: Any) -> Any:
            if type(v) is not container:
                raise FieldError(f"expected {desc}, got {_got(v)}")
            if container is frozenset:
                v = _ordered(v)
            if ok is not None:
                for i, x in enumerate(v):
                    if type(x) not in ok:
                        raise FieldError(f"[{i}]: expected {item.desc}, got {_got(x)}")
                return v  # cbor2 writes tuples and lists alike, as arrays
            return _each(ienc, v)

        def dec(v: Any) -> Any:
            _array(v, desc)
            if ok is not None:
                for i, x in enumerate(v):
                    if type(x) not in ok:
                        raise FieldError(f"[{i}]: expected {item.desc}, got {_got(x)}")
                out = container(v)
            else:
                out = container(_each(idec, v))
            if container is frozenset and len(out) != len(v):
                raise FieldError(f"{desc} has duplicate elements")
            return out

        if item.take is None or container is frozenset:
            return _Kind(desc, "array", enc, dec, frozenset({container}), seq=(container, item))
        # Flat: the count, then each item flat (a frozenset stays an array: it is sorted).
        iput, itake = item.put, item.take
        assert iput is not None

        def put(v: Any, out: list[Any]) -> None:
            if type(v) is not container:
                raise FieldError(f"expected {desc}, got {_got(v)}")
            out.append(len(v))
            for i, x in enumerate(v):
                try:
                    iput(x, out)
                except CodecError as e:
                    raise _prefixed(e, f"[{i}]") from None

        def take(arr: Any, off: int) -> tuple[Any, int]:
            count = arr[off] if off < len(arr) else None
            # Each item is at least its tag: a count past the array's end is a lie.
            if type(count) is not int or not 0 <= count < len(arr) - off:
                raise FieldError(f"expected the count of a {desc}, got {_got(count)}")
            off += 1
            items = []
            for i in range(count):
                try:
                    x, off = itake(arr, off)
                except CodecError as e:
                    raise _prefixed(e, f"[{i}]") from None
                items.append(x)
            return container(items), off

        return _Kind(
            desc,
            "array",
            enc,
            dec,
            frozenset({container}),
            seq=(container, item),
            put=put,
            take=take,
        )

    def _fixed_tuple(self, items: list[_Kind]) -> _Kind:
        desc = f"tuple[{', '.join(k.desc for k in items) or '()'}]"
        n = len(items)

        def enc(v: Any) -> Any:
            if type(v) is not tuple or len(v) != n:
                raise FieldError(f"expected {desc}, got {_got(v)}")
            return _zip_each([k.enc for k in items], v)

        def dec(v: Any) -> Any:
            if len(_array(v, desc)) != n:
                raise FieldError(f"expected {desc}, got {len(v)} item(s)")
            return tuple(_zip_each([k.dec for k in items], v))

        return _Kind(desc, "array", enc, dec, frozenset({tuple}))

    def _dict(self, key: _Kind, value: _Kind) -> _Kind:
        desc = f"dict[{key.desc}, {value.desc}]"
        kenc, venc, kdec, vdec = key.enc, value.enc, key.dec, value.dec

        def enc(v: Any) -> Any:
            if type(v) is not dict:
                raise FieldError(f"expected {desc}, got {_got(v)}")
            try:
                return {_freeze(kenc(k)): venc(x) for k, x in v.items()}
            except CodecError as e:
                raise _prefixed(e, "dict item") from None

        def dec(v: Any) -> Any:
            if type(v) is not dict:
                raise FieldError(f"expected {desc}, got {_got(v)}")
            try:
                out = {kdec(k): vdec(x) for k, x in v.items()}
            except CodecError as e:
                raise _prefixed(e, "dict item") from None
            if len(out) != len(v):  # e.g. keys 1 and 1.0 in a dict[float, ...]
                raise FieldError(f"{desc} has keys that decode equal")
            return out

        return _Kind(desc, "map", enc, dec, frozenset({dict}))

    def _any_kind(self) -> _Kind:
        put_by_type, take_by_tag = self._put, self._take

        def enc(v: Any) -> Any:
            t = type(v)
            if t in _PRIMITIVES:
                return v
            f = put_by_type.get(t)
            if f is not None:
                out: list[Any] = []
                f(v, out)  # boxed: [tag, fields...]
                return out
            if t is tuple:
                return [_TUPLE, *map(enc, v)]
            if t is list:
                return [_LIST, *map(enc, v)]
            if t is frozenset:
                return [_FROZENSET, *map(enc, _ordered(v))]
            if t is dict:
                return [_DICT, *(enc(x) for kv in v.items() for x in kv)]
            raise FieldError(f"cannot encode {t.__qualname__}: not a registered or builtin type")

        def dec(v: Any) -> Any:
            t = type(v)
            if t in _PRIMITIVES:
                return v
            if (t is not list and t is not tuple) or not v or type(v[0]) is not int:
                raise FieldError(f"expected a value or [code, items...], got {_got(v)}")
            code = v[0]
            if code >= 0:
                f = take_by_tag.get(code)
                if f is None:
                    raise UnknownMessageType(f"unknown message tag {code}")
                return _to_end(f(v, 1), v, f"tag {code}")
            items = [dec(x) for x in v[1:]]
            if code == _TUPLE:
                return tuple(items)
            if code == _LIST:
                return items
            if code == _FROZENSET:
                out = frozenset(items)  # TypeError for unhashable items, wrapped by decode()
                if len(out) == len(items):
                    return out
                raise FieldError("frozenset has duplicate elements")
            if code == _DICT and len(items) % 2 == 0:
                d = dict(zip(items[::2], items[1::2], strict=True))
                if len(d) == len(items) // 2:
                    return d
                raise FieldError("dict has duplicate keys")
            raise FieldError(f"unknown container code {code} ({len(items)} items)")

        return _Kind("Any", "any", enc, dec, frozenset(), same=_PRIMITIVES)


def _to_end(taken: tuple[Any, int], arr: Any, what: str) -> Any:
    # The value a take read, which must have used up ``arr`` (a frame, a boxed value).
    value, end = taken
    if end != len(arr):
        raise FieldError(f"{what}: {len(arr) - end} item(s) after its fields")
    return value


def _each(f: Callable[[Any], Any], v: Iterable[Any]) -> list[Any]:
    out = []
    for i, x in enumerate(v):
        try:
            out.append(f(x))
        except CodecError as e:
            raise _prefixed(e, f"[{i}]") from None
    return out


def _zip_each(fs: list[Callable[[Any], Any]], v: Sequence[Any]) -> list[Any]:
    out = []
    for i, (f, x) in enumerate(zip(fs, v, strict=True)):
        try:
            out.append(f(x))
        except CodecError as e:
            raise _prefixed(e, f"[{i}]") from None
    return out


def _union_members(hint: Any) -> list[Any]:
    # Union[A, Union[B, Annotated[C, ...]]] -> [A, B, C], without duplicates.
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _union_members(typing.get_args(hint)[0])
    if origin is typing.Union or origin is UnionType:
        out: list[Any] = []
        for a in typing.get_args(hint):
            out.extend(m for m in _union_members(a) if m not in out)
        return out
    return [hint]


def _ordered(s: frozenset[Any]) -> list[Any]:
    # Sorted when the elements allow it, so equal sets encode to equal bytes.
    try:
        return sorted(s)
    except TypeError:
        return list(s)


# -- the CBOR layer -----------------------------------------------------------


def _refuse_tag(value: Any, immutable: bool = False) -> Any:
    raise MalformedFrame("CBOR semantic tags are not part of this format")


def _refuse_unknown_tag(tag: Any, immutable: bool = False) -> Any:
    raise MalformedFrame(f"CBOR semantic tag {tag.tag} is not part of this format")


# Every tag cbor2 6 decodes itself, except bignums (2, 3), which encode big ints.
_CBOR2_TAGS = (0, 1, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004)
_SEMANTIC = {t: _refuse_tag for t in (*_CBOR2_TAGS, 43000, 55799)}
_local = threading.local()


def _new_decoder() -> cbor2.CBORDecoder:
    return cbor2.CBORDecoder(
        io.BytesIO(b""),
        tag_hook=_refuse_unknown_tag,
        semantic_decoders=_SEMANTIC,  # type: ignore[arg-type]
        max_depth=MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )


def _loads(data: bytes | bytearray | memoryview) -> Any:
    # One reusable decoder per thread (half the cost of a fresh one); the decoder
    # seeks its input back to the end of the item, so tell() finds trailing bytes.
    dec = getattr(_local, "decoder", None)
    if dec is None:
        dec = _local.decoder = _new_decoder()
    fp = io.BytesIO(data)
    dec.fp = fp
    try:
        v = dec.decode()
    except Exception as e:
        _local.decoder = None  # never reuse a decoder in an unknown state
        raise MalformedFrame(f"not a CBOR item: {e}") from e
    if fp.tell() != len(data):
        raise MalformedFrame(f"{len(data) - fp.tell()} trailing byte(s) after the CBOR item")
    return v


class FrameSplitter:
    """Splits a byte stream of length-prefixed frames into frame bodies (bytes).

    ``feed`` takes any chunking; it raises ``FrameTooLarge`` as soon as a
    length prefix is over ``max_frame``, before waiting for the body.  After
    ``feed`` raises, the stream is broken (close the connection): later calls
    raise again.  Use it where one stream carries frames for more than one
    codec (a handshake, then protocol messages); ``FrameDecoder`` decodes too.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._broken: CodecError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Append ``data``; return the body of every frame now complete, in order."""
        if self._broken is not None:
            raise _prefixed(self._broken, "stream already failed")
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            size = int.from_bytes(buf[pos : pos + 4], "big")
            if size > self.max_frame:
                self._broken = FrameTooLarge(
                    f"length prefix {size} is over max_frame {self.max_frame}"
                )
                raise self._broken
            if end - pos - 4 < size:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        del buf[:pos]
        return out


class FrameDecoder:
    """Splits a byte stream of ``encode_frame`` output into decoded values.

    ``feed`` takes any chunking; it raises ``FrameTooLarge`` as soon as a
    length prefix is over ``max_frame``, before waiting for the body.  After
    ``feed`` raises, the stream is broken (close the connection): later calls
    raise again.
    """

    def __init__(self, codec: Codec) -> None:
        self._codec = codec
        self._splitter = FrameSplitter(codec.max_frame)
        self._broken: CodecError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return self._splitter.buffered

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Append ``data``; return every value whose frame is now complete, in order."""
        if self._broken is not None:
            raise _prefixed(self._broken, "stream already failed")
        try:
            return [self._codec.decode(body) for body in self._splitter.feed(data)]
        except CodecError as e:
            self._broken = e
            raise
