"""The codec: round trips, strict rejection, and stream framing."""

from __future__ import annotations

import datetime
from typing import Any

import attrs
import cbor2
import pytest
from codec_helpers import roundtrip_table_check
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.builders import builder, slot_setters
from consensus.codec import (
    CORE_TYPES,
    FIRST_EXTRA_TAG,
    VERSION,
    Codec,
    CodecError,
    EncodeError,
    FieldError,
    FrameDecoder,
    FrameTooLarge,
    MalformedFrame,
    UnknownMessageType,
    UnsupportedVersion,
)
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
from consensus.registry import ProtocolSpec
from consensus.replica import Committed, StateSnapshot

# -- test-only classes, one per family of annotations -------------------------


@attrs.frozen(kw_only=True)
class Prims:
    nothing: None
    flag: bool
    number: int
    ratio: float
    text: str
    raw: bytes


@attrs.frozen(kw_only=True)
class Unions:
    maybe_int: int | None
    maybe_put: Put | None
    int_or_str: int | str
    mixed: Get | Put | bytes | None
    maybe_ints: tuple[int, ...] | None


@attrs.frozen(kw_only=True)
class Containers:
    ints: tuple[int, ...]
    pair: tuple[str, Request]
    empty: tuple[()]
    names: list[str]
    members: frozenset[int]
    table: dict[int, str]
    by_key: dict[tuple[int, str], Put]
    nested: list[tuple[Get | None, ...]]


@attrs.frozen(kw_only=True)
class Dynamic:
    anything: Any
    obj: object


@attrs.frozen(kw_only=True)
class Tree:
    value: int
    children: tuple[Tree, ...]


@attrs.frozen(kw_only=True)
class Validated:
    count: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.frozen(kw_only=True)
class Unregistered:
    x: int


EXTRA = (Prims, Unions, Containers, Dynamic, Tree, Validated)
CODEC = Codec(EXTRA)
REQ = Request(client_id=1, seq=2, command=Put(key="k", value="v"))
BATCH = Batch(requests=(REQ, Request(client_id=3, seq=4, command=Delete(key="x"))))
CONTAINERS = Containers(
    ints=(1, 2, 3),
    pair=("p", REQ),
    empty=(),
    names=["a", "b"],
    members=frozenset({3, 1, 2}),
    table={1: "one", 2: "two"},
    by_key={(1, "a"): Put(key="x", value="y"), (2, "b"): Put(key="z", value="w")},
    nested=[(Get(key="a"), None), ()],
)

TABLE = [
    Get(key="k"),
    Put(key="k", value=""),
    Append(key="", value="tail"),
    CompareAndSet(key="k", expected=None, new="n"),
    CompareAndSet(key="k", expected="old", new="n"),
    Delete(key="k"),
    REQ,
    Request(client_id=-(2**70), seq=2**70, command=Get(key="big ints use bignums")),
    Noop(),
    Batch(requests=()),
    BATCH,
    Committed(index=7, payload=REQ),
    Committed(index=8, payload=Noop()),
    Committed(index=9, payload=Batch(requests=(REQ,))),
    StateSnapshot(index=3, data=b"\x00\xff snapshot"),
    ChangeMembership(members=(0, 1, 3)),
    Request(client_id=1, seq=3, command=ChangeMembership(members=())),
    PackedBatch(data=b"\x81\x01", count=1),
    Request(client_id=9, seq=1, command=PackedBatch(data=b"", count=0)),
    Prims(nothing=None, flag=True, number=-5, ratio=0.25, text="héllo", raw=b"\x00"),
    Prims(nothing=None, flag=False, number=0, ratio=3, text="", raw=b""),
    Unions(maybe_int=None, maybe_put=None, int_or_str="s", mixed=None, maybe_ints=None),
    Unions(maybe_int=4, maybe_put=Put(key="a", value="b"), int_or_str=5, mixed=b"x", maybe_ints=()),
    Unions(maybe_int=0, maybe_put=None, int_or_str=0, mixed=Get(key="g"), maybe_ints=(1, 2)),
    CONTAINERS,
    Dynamic(anything=None, obj=True),
    Dynamic(anything=REQ, obj=Committed(index=1, payload=Noop())),
    Dynamic(
        anything=(1, [2, (3,)], {"k": (4, 5), (6, 7): [b"8"]}, frozenset({1, 2}), 1.5, "s"),
        obj=[(), [], {}, frozenset(), Tree(value=1, children=())],
    ),
    Tree(value=1, children=(Tree(value=2, children=()), Tree(value=3, children=()))),
    Validated(count=3),
]


def wire(*items: Any) -> bytes:
    """Hand-built CBOR for rejection tests."""
    return cbor2.dumps(list(items))


# -- round trips and tags -----------------------------------------------------


def test_round_trip_table_covers_every_core_and_test_type() -> None:
    assert {type(v) for v in TABLE} >= set(CORE_TYPES)
    roundtrip_table_check(CODEC, TABLE)


def test_roundtrip_table_check_fails_when_a_registered_type_has_no_row() -> None:
    with pytest.raises(AssertionError, match="Validated"):
        roundtrip_table_check(CODEC, [v for v in TABLE if type(v) is not Validated])


def test_core_tags_are_fixed_and_extra_tags_follow_registration_order() -> None:
    assert [CODEC.tags[t] for t in CORE_TYPES] == list(range(1, 13))
    assert CODEC.tags[PackedBatch] == 12  # tags are wire format: append only
    assert [CODEC.tags[t] for t in EXTRA] == list(range(FIRST_EXTRA_TAG, FIRST_EXTRA_TAG + 6))
    assert CODEC.extra_types == EXTRA


def test_wire_format_is_the_documented_versioned_array() -> None:
    # [VERSION, tag(Request)=6, client_id, seq, tag(Put)=2, key, value]: the command flat
    assert CODEC.encode(REQ) == cbor2.dumps([VERSION, 6, 1, 2, 2, "k", "v"])
    assert CODEC.encode(REQ).hex() == "870206010202616b6176"
    assert CODEC.size(REQ) == 10


def test_values_the_schema_names_are_flat_and_the_others_boxed() -> None:
    batch = Batch(requests=(REQ, Request(client_id=3, seq=4, command=Get(key="g"))))
    # [VERSION, tag(Batch)=8, count, Request..., Request...]: one array, however many.
    assert cbor2.loads(CODEC.encode(batch)) == [
        VERSION,
        8,
        2,
        6,
        1,
        2,
        2,
        "k",
        "v",
        6,
        3,
        4,
        1,
        "g",
    ]
    # A dynamic field cannot name the class: the value is boxed, [tag, flat fields...].
    boxed = cbor2.loads(CODEC.encode(Dynamic(anything=REQ, obj=None)))
    assert boxed == [VERSION, CODEC.tags[Dynamic], [6, 1, 2, 2, "k", "v"], None]
    # A union with a primitive is boxed too (None and a tag would look alike flat).
    put = Put(key="p", value="q")
    value = Unions(maybe_int=None, maybe_put=put, int_or_str=1, mixed=None, maybe_ints=None)
    assert cbor2.loads(CODEC.encode(value))[3] == [2, "p", "q"]


def test_for_protocol_registers_messages_then_records() -> None:
    spec = ProtocolSpec(
        name="t",
        create=lambda ctx, records: None,
        summary="",
        messages=(Tree, Prims),
        records=(Validated,),
    )
    codec = Codec.for_protocol(spec, max_frame=1000)
    assert [codec.tags[t] for t in (Tree, Prims, Validated)] == [64, 65, 66]
    assert codec.max_frame == 1000


def test_decoded_tuples_stay_tuples_and_lists_stay_lists() -> None:
    v = Dynamic(anything=(1, (2,)), obj=[1, [2]])
    back = CODEC.decode(CODEC.encode(v))
    assert type(back.anything) is tuple and type(back.anything[1]) is tuple
    assert type(back.obj) is list and type(back.obj[1]) is list
    assert type(CODEC.decode(CODEC.encode(BATCH)).requests) is tuple


def test_float_field_accepts_an_int_and_keeps_it_an_int() -> None:
    v = Prims(nothing=None, flag=True, number=1, ratio=2, text="", raw=b"")
    assert type(CODEC.decode(CODEC.encode(v)).ratio) is int


def test_equal_frozensets_encode_to_equal_bytes() -> None:
    a = Dynamic(anything=frozenset(range(50)), obj=None)
    b = Dynamic(anything=frozenset(reversed(range(50))), obj=None)
    assert CODEC.encode(a) == CODEC.encode(b)


# -- strict decoding ----------------------------------------------------------


def test_unknown_top_level_tag_is_rejected() -> None:
    with pytest.raises(UnknownMessageType, match="63"):
        CODEC.decode(wire(VERSION, 63))


def test_unknown_nested_tag_is_rejected_and_named() -> None:
    with pytest.raises(UnknownMessageType, match=r"Request\.command"):
        CODEC.decode(wire(VERSION, 6, 1, 2, 99, "k"))


def test_registered_class_in_the_wrong_field_is_a_field_error() -> None:
    with pytest.raises(FieldError, match=r"Request\.command: expected Get \| Put"):
        CODEC.decode(wire(VERSION, 6, 1, 2, 7))  # Noop is not a command


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ([1, 2], "Request: expected 3 field"),
        ([], "Request: expected 3 field"),
        ([1, 2, 1], r"Request\.command: Get: expected 1 field"),
        ([1, 2, 1, "k", "extra"], r"Request: 1 item\(s\) after its fields"),
    ],
)
def test_wrong_field_count_is_rejected(fields: list[Any], error: str) -> None:
    with pytest.raises(FieldError, match=error):
        CODEC.decode(wire(VERSION, 6, *fields))


def test_bool_never_passes_as_int() -> None:
    with pytest.raises(FieldError, match=r"Request\.client_id: expected int, got bool"):
        CODEC.decode(wire(VERSION, 6, True, 2, 1, "k"))


def test_int_never_passes_as_bool() -> None:
    with pytest.raises(FieldError, match=r"Prims\.flag: expected bool, got int"):
        CODEC.decode(wire(VERSION, CODEC.tags[Prims], None, 1, 1, 1.0, "", b""))


def test_str_and_bytes_are_distinct() -> None:
    with pytest.raises(FieldError, match=r"StateSnapshot\.data: expected bytes, got str"):
        CODEC.decode(wire(VERSION, 10, 1, "not bytes"))
    with pytest.raises(FieldError, match=r"Get\.key: expected str, got bytes"):
        CODEC.decode(wire(VERSION, 1, b"k"))


def test_field_errors_name_the_path_through_nested_values() -> None:
    with pytest.raises(FieldError, match=r"Batch\.requests: \[1\]: Request\.seq: expected int"):
        CODEC.decode(wire(VERSION, 8, 2, 6, 1, 2, 1, "k", 6, 1, "two", 1, "k"))


@pytest.mark.parametrize("count", [-1, 3, 99, True, "2", [6]])
def test_a_flat_sequence_with_a_wrong_count_is_refused(count: Any) -> None:
    # [VERSION, Batch, count, items...] with two Get requests: only 2 is right.
    items = [6, 1, 2, 1, "k", 6, 1, 3, 1, "k"]
    assert CODEC.decode(wire(VERSION, 8, 2, *items)) == Batch(
        requests=(
            Request(client_id=1, seq=2, command=Get(key="k")),
            Request(client_id=1, seq=3, command=Get(key="k")),
        )
    )
    with pytest.raises(FieldError, match="Batch"):
        CODEC.decode(wire(VERSION, 8, count, *items))


def test_the_old_nested_form_of_a_flat_field_is_refused() -> None:
    # Version 1 nested a registered value in an array of its own.
    with pytest.raises(FieldError, match=r"Request\.command"):
        CODEC.decode(wire(VERSION, 6, 1, 2, [1, "k"]))


@pytest.mark.parametrize("version", [0, VERSION - 1, VERSION + 1, True, str(VERSION), None])
def test_other_versions_are_rejected(version: Any) -> None:
    with pytest.raises(UnsupportedVersion):
        CODEC.decode(wire(version, 1, "k"))


def test_oversize_frames_are_rejected_both_ways() -> None:
    small = Codec(max_frame=20)
    with pytest.raises(FrameTooLarge):
        small.decode(CODEC.encode(StateSnapshot(index=0, data=bytes(30))))
    with pytest.raises(FrameTooLarge):
        small.encode(StateSnapshot(index=0, data=bytes(30)))
    assert small.decode(small.encode(Get(key="fits"))) == Get(key="fits")


def test_trailing_garbage_is_rejected() -> None:
    with pytest.raises(MalformedFrame, match="trailing"):
        CODEC.decode(CODEC.encode(REQ) + b"\x00")


@pytest.mark.parametrize(
    "data",
    [cbor2.dumps({"v": 1}), cbor2.dumps(5), cbor2.dumps("x"), cbor2.dumps([]), cbor2.dumps([1])],
)
def test_anything_but_a_version_tag_array_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedFrame):
        CODEC.decode(data)


@pytest.mark.parametrize("data", [b"", b"\xff", b"\x85\x01\x06", b"\x61\xff", b"\x1c"])
def test_bytes_that_are_not_one_cbor_item_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedFrame):
        CODEC.decode(data)


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        cbor2.CBORTag(258, [1, 2]),  # a CBOR set
        cbor2.CBORTag(28, [1]),  # value sharing
        cbor2.CBORTag(9999, 1),  # unknown tag
    ],
)
def test_cbor_semantic_tags_are_refused(value: Any) -> None:
    with pytest.raises(MalformedFrame, match="tag"):
        CODEC.decode(wire(VERSION, CODEC.tags[Dynamic], value, None))


def test_indefinite_lengths_duplicate_keys_and_deep_nesting_are_malformed() -> None:
    tag = CODEC.tags[Dynamic]
    indefinite = bytes([0x84, VERSION, 0x18, tag, 0x9F, 0xFF, 0xF6])
    with pytest.raises(MalformedFrame):
        CODEC.decode(indefinite)
    duplicate = bytes([0x84, VERSION, 0x18, tag, 0xA2, 0x01, 0x02, 0x01, 0x03, 0xF6])
    with pytest.raises(MalformedFrame):
        CODEC.decode(duplicate)
    deep = bytes([0x84, VERSION, 0x18, tag]) + b"\x81" * 5000 + b"\x00\xf6"
    with pytest.raises(MalformedFrame):
        CODEC.decode(deep)


@pytest.mark.parametrize(
    "anything",
    [
        [],  # an array with no code
        [-9, 1],  # no such container code
        [-4, 1],  # a dict with a key and no value
        [-4, 1, 2, 1, 3],  # duplicate dict keys
        [-3, 1, 1],  # duplicate set elements
        {"k": 1},  # a CBOR map is not a dynamic value
        ["x"],  # the code must be an int
    ],
)
def test_malformed_dynamic_values_are_field_errors(anything: Any) -> None:
    with pytest.raises(FieldError, match=r"Dynamic\.anything"):
        CODEC.decode(wire(VERSION, CODEC.tags[Dynamic], anything, None))


def test_unhashable_decoded_set_element_is_a_codec_error() -> None:
    with pytest.raises(FieldError):
        CODEC.decode(wire(VERSION, CODEC.tags[Dynamic], [-3, [-2]], None))


def test_duplicate_elements_in_a_typed_frozenset_are_rejected() -> None:
    good = CODEC.encode(CONTAINERS)
    fields = cbor2.loads(good)
    fields[6] = [1, 1]
    with pytest.raises(FieldError, match=r"Containers\.members"):
        CODEC.decode(cbor2.dumps(fields))


def test_a_class_validator_refusal_is_a_field_error() -> None:
    with pytest.raises(FieldError, match="Validated"):
        CODEC.decode(wire(VERSION, CODEC.tags[Validated], -1))


def test_a_failed_decode_does_not_disturb_the_next() -> None:
    for bad in (b"\x85\x01", CODEC.encode(REQ) + b"junk", b"\xff"):
        with pytest.raises(MalformedFrame):
            CODEC.decode(bad)
        assert CODEC.decode(CODEC.encode(REQ)) == REQ


# -- encoding refuses what it cannot represent --------------------------------


@pytest.mark.parametrize("value", [Unregistered(x=1), 5, "s", [REQ], {"a": 1}])
def test_unregistered_types_cannot_be_encoded(value: Any) -> None:
    with pytest.raises(EncodeError, match="not a registered type"):
        CODEC.encode(value)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (Put(key=1, value="v"), r"Put\.key: expected str, got int"),
        (Request(client_id=True, seq=1, command=Get(key="k")), r"Request\.client_id"),
        (Request(client_id=1, seq=1, command=Noop()), r"Request\.command"),
        (Batch(requests=[REQ]), r"Batch\.requests: expected tuple"),
        (Batch(requests=(REQ, Get(key="k"))), r"Batch\.requests: \[1\]"),
        (Committed(index=1, payload={1, 2}), r"Committed\.payload: cannot encode set"),
        (Committed(index=1, payload=Unregistered(x=1)), r"Committed\.payload"),
        (StateSnapshot(index=1, data=bytearray(b"x")), r"StateSnapshot\.data"),
        (
            Unions(maybe_int=None, maybe_put=None, int_or_str=1.5, mixed=None, maybe_ints=None),
            "int_or_str",
        ),
    ],
)
def test_values_that_do_not_match_their_annotation_cannot_be_encoded(
    value: Any, where: str
) -> None:
    with pytest.raises(EncodeError, match=where):
        CODEC.encode(value)


def test_a_cyclic_dynamic_value_is_an_encode_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(EncodeError):
        CODEC.encode(Committed(index=1, payload=cycle))


# -- construction refuses schemas it cannot represent -------------------------


@attrs.frozen(kw_only=True)
class NeedsUnregistered:
    inner: Unregistered


@attrs.frozen(kw_only=True)
class Ambiguous:
    either: tuple[int, ...] | list[int]


@attrs.frozen(kw_only=True)
class HasSet:
    items: set[int]


@pytest.mark.parametrize(
    ("types", "message"),
    [
        ([NeedsUnregistered], "NeedsUnregistered.inner: Unregistered is not registered"),
        ([Ambiguous], "Ambiguous.either: ambiguous union"),
        ([HasSet], "HasSet.items: the codec cannot represent"),
        ([int], "not an attrs class"),
        ([Tree, Tree], "registered twice"),
        ([Request], "registered twice"),
    ],
)
def test_unrepresentable_schemas_fail_at_construction(types: list[type], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Codec(types)


# -- properties ---------------------------------------------------------------

keys = st.text(max_size=6)
commands = st.one_of(
    st.builds(Get, key=keys),
    st.builds(Put, key=keys, value=keys),
    st.builds(Append, key=keys, value=keys),
    st.builds(CompareAndSet, key=keys, expected=st.none() | keys, new=keys),
    st.builds(Delete, key=keys),
)
requests = st.builds(Request, client_id=st.integers(), seq=st.integers(), command=commands)
batches = st.builds(Batch, requests=st.lists(requests, max_size=4).map(tuple))
payloads = st.one_of(requests, batches, st.just(Noop()))
dynamic = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | keys | st.binary(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.frozensets(st.integers() | keys, max_size=3),
        st.dictionaries(st.integers() | keys, inner, max_size=3),
        payloads,
    ),
    max_leaves=8,
)
values = st.one_of(
    commands,
    requests,
    batches,
    st.builds(Committed, index=st.integers(min_value=0), payload=payloads),
    st.builds(StateSnapshot, index=st.integers(min_value=0), data=st.binary(max_size=32)),
    st.builds(Dynamic, anything=dynamic, obj=dynamic),
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_generated_values_round_trip(value: Any) -> None:
    roundtrip_table_check(CODEC, [value], cover_extra_types=False)


def decodes_or_refuses(data: bytes) -> None:
    """The one acceptable outcome: a value that re-encodes, or a CodecError."""
    try:
        value = CODEC.decode(data)
    except CodecError:
        return
    CODEC.encode(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    decodes_or_refuses(data)


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_mutated_frames_decode_or_raise_codec_error(value: Any, data: st.DataObject) -> None:
    frame = bytearray(CODEC.encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(frame)))
        edit = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if edit == "flip" and at < len(frame):
            frame[at] ^= data.draw(st.integers(1, 255))
        elif edit == "insert":
            frame[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif edit == "delete":
            del frame[at : at + 1]
        elif edit == "truncate":
            del frame[at:]
    decodes_or_refuses(bytes(frame))


any_tag = st.sampled_from([*sorted(CODEC.tags.values()), -4, -3, -2, -1, 0, 99])
cbor_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=4)
    | st.binary(max_size=4)
)
cbor_tree = st.recursive(
    cbor_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.builds(lambda tag, items: [tag, *items], any_tag, st.lists(inner, max_size=4)),
        st.dictionaries(st.integers(-3, 3) | st.text(max_size=2), inner, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_tag, st.lists(cbor_tree, max_size=9))
def test_well_formed_cbor_of_any_shape_decodes_or_raises_codec_error(
    tag: int, fields: list[Any]
) -> None:
    # Reaches the field validators, which random bytes rarely get past.
    decodes_or_refuses(cbor2.dumps([VERSION, tag, *fields]))


# -- stream framing -----------------------------------------------------------

STREAM_VALUES = [REQ, Noop(), CONTAINERS, StateSnapshot(index=1, data=b"x" * 40), Get(key="")]
STREAM = b"".join(CODEC.encode_frame(v) for v in STREAM_VALUES)


def test_frame_is_a_big_endian_length_then_the_body() -> None:
    assert CODEC.encode_frame(REQ) == (10).to_bytes(4, "big") + CODEC.encode(REQ)


def test_frame_decoder_handles_every_split_point() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder(CODEC)
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == STREAM_VALUES
        assert decoder.buffered == 0


def test_frame_decoder_handles_one_byte_at_a_time() -> None:
    decoder = FrameDecoder(CODEC)
    out = [v for i in range(len(STREAM)) for v in decoder.feed(STREAM[i : i + 1])]
    assert out == STREAM_VALUES


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=8))
def test_frame_decoder_handles_arbitrary_chunking(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    decoder = FrameDecoder(CODEC)
    out = [v for a, b in zip(bounds, bounds[1:], strict=False) for v in decoder.feed(STREAM[a:b])]
    assert out == STREAM_VALUES


def test_frame_decoder_keeps_a_partial_frame() -> None:
    decoder = FrameDecoder(CODEC)
    assert decoder.feed(STREAM[:6]) == []
    assert decoder.buffered == 6


def test_frame_decoder_rejects_an_oversize_prefix_before_the_body_arrives() -> None:
    decoder = FrameDecoder(Codec(max_frame=100))
    assert decoder.feed(CODEC.encode_frame(REQ)) == [REQ]
    with pytest.raises(FrameTooLarge, match="101"):
        decoder.feed((101).to_bytes(4, "big"))
    with pytest.raises(FrameTooLarge, match="stream already failed"):
        decoder.feed(CODEC.encode_frame(REQ))


def test_a_bad_frame_body_breaks_the_stream() -> None:
    decoder = FrameDecoder(CODEC)
    with pytest.raises(MalformedFrame):
        decoder.feed(b"\x00\x00\x00\x01\xff" + CODEC.encode_frame(REQ))
    with pytest.raises(MalformedFrame, match="stream already failed"):
        decoder.feed(CODEC.encode_frame(REQ))


# -- the generated fast path agrees with the careful one -------------------------------------


def test_a_bool_where_a_tag_belongs_is_refused_even_though_true_equals_one():
    # [VERSION, Request, client_id, seq, True, "k"]: True == 1 == Get's tag.
    data = cbor2.dumps([VERSION, 6, 1, 2, True, "k"])
    with pytest.raises(FieldError, match="Request.command"):
        CODEC.decode(data)
    data = cbor2.dumps([VERSION, 8, 1, True, 1, 2, 2, "k", "v"])  # Batch of a bool-tagged item
    with pytest.raises(FieldError):
        CODEC.decode(data)
    data = cbor2.dumps([VERSION, 8, True, 6, 1, 2, 2, "k", "v"])  # a bool for the count
    with pytest.raises(FieldError):
        CODEC.decode(data)


CAREFUL = Codec(EXTRA, fast=False)


@pytest.mark.parametrize("value", TABLE, ids=lambda v: type(v).__name__)
def test_fast_and_careful_paths_give_the_same_bytes_and_the_same_value(value):
    data = CODEC.encode(value)
    assert data == CAREFUL.encode(value)
    assert CODEC.decode(data) == CAREFUL.decode(data) == value
    assert type(CODEC.decode(data)) is type(value)


def test_the_careful_path_alone_still_refuses_what_the_fast_path_refuses():
    data = cbor2.dumps([VERSION, 6, 1, 2, True, "k"])
    with pytest.raises(FieldError, match="Request.command"):
        CAREFUL.decode(data)


@attrs.frozen(kw_only=True)
class Hooked:
    count: int

    def __attrs_post_init__(self) -> None:
        if self.count > 10:
            raise ValueError("count above 10")


@attrs.frozen(kw_only=True)
class Base:
    a: int


@attrs.frozen(kw_only=True)
class Child(Base):
    b: str


@attrs.define(kw_only=True, slots=False)
class Unslotted:
    a: int


def test_decoding_builds_the_same_objects_as_their_constructors_and_runs_their_hooks() -> None:
    # Plain slotted classes are built without their __init__ (builder's fast path):
    # the objects must equal, hash and behave as constructed ones; a class with
    # an init hook, a base class or a __dict__ still gets exactly its own rules.
    codec = Codec([Hooked, Base, Child, Unslotted])
    for value in (
        Put(key="k", value="v"),
        Request(client_id=3, seq=4, command=Put(key="k", value="v")),
        Hooked(count=2),
        Child(a=1, b="x"),
        Unslotted(a=5),
    ):
        back = codec.decode(codec.encode(value))
        assert type(back) is type(value) and back == value
        assert attrs.asdict(back) == attrs.asdict(value)
        if type(value) is not Unslotted:
            assert hash(back) == hash(value)
            with pytest.raises(attrs.exceptions.FrozenInstanceError):
                back.a = 0  # type: ignore[union-attr]
    with pytest.raises(FieldError, match="Hooked"):
        codec.decode(cbor2.dumps([VERSION, codec.tags[Hooked], 11]))
    assert builder(Child)(1, "x") == Child(a=1, b="x")
    assert slot_setters(Child) is not None and slot_setters(Put) is not None
    assert slot_setters(Hooked) is None and slot_setters(Unslotted) is None
    assert slot_setters(Validated) is None
    with pytest.raises(ValueError, match="count above 10"):
        builder(Hooked)(11)
    with pytest.raises(FieldError, match="Validated"):
        Codec([Validated]).decode(cbor2.dumps([VERSION, FIRST_EXTRA_TAG, -1]))
