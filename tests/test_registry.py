"""Protocol registry: entry points, lookup errors, run-time registration."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from consensus import registry
from consensus.config import ConfigError
from consensus.registry import (
    NoOptions,
    ProtocolSpec,
    UnknownProtocolError,
    available_protocols,
    get_protocol,
    register,
)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations (and cached entry-point loads) made by a test stay in that test."""
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))


@attrs.frozen(kw_only=True)
class EchoOptions:
    depth: int = 1


def fake_create(ctx: Any, records: Any) -> Any:
    raise AssertionError("not called by the registry")


def make_spec(name: str = "test-echo") -> ProtocolSpec:
    return ProtocolSpec(name=name, create=fake_create, summary="a test spec", options=EchoOptions)


def test_sequencer_is_available_through_its_entry_point() -> None:
    names = available_protocols()
    assert "sequencer" in names
    assert names == sorted(names)


def test_entry_points_declared_in_pyproject_are_listed() -> None:
    assert {"sequencer", "raft", "multipaxos", "paxos"} <= set(available_protocols())


def test_get_protocol_loads_sequencer_spec() -> None:
    from protocols.sequencer import PROTOCOL, Sequencer, SequencerOptions

    spec = get_protocol("sequencer")
    assert isinstance(spec, ProtocolSpec)
    assert spec is PROTOCOL
    assert spec.name == "sequencer"
    assert spec.create is Sequencer
    assert spec.options is SequencerOptions
    assert get_protocol("sequencer") is spec  # cached


def test_unknown_protocol_error_lists_choices() -> None:
    with pytest.raises(UnknownProtocolError) as info:
        get_protocol("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in available_protocols():
        assert name in message
    assert isinstance(info.value, LookupError)


def test_register_makes_a_spec_available() -> None:
    spec = make_spec()
    assert "test-echo" not in available_protocols()
    assert register(spec) is spec
    assert "test-echo" in available_protocols()
    assert get_protocol("test-echo") is spec


def test_registered_spec_takes_precedence_over_entry_point() -> None:
    spec = make_spec("sequencer")
    register(spec)
    assert get_protocol("sequencer") is spec
    assert available_protocols().count("sequencer") == 1


def test_registration_is_isolated_between_tests() -> None:
    # The fixture restored the table: the previous test's override is gone.
    assert get_protocol("sequencer").summary != "a test spec"
    assert "test-echo" not in available_protocols()


def test_entry_point_that_is_not_a_spec_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeEntryPoint:
        name = "bogus"

        def load(self) -> Any:
            return object()

    monkeypatch.setattr(registry, "_entry_points", lambda: {"bogus": FakeEntryPoint()})
    with pytest.raises(TypeError, match="'bogus' is object, not a ProtocolSpec"):
        get_protocol("bogus")


def test_make_options_builds_from_mapping_and_rejects_unknown_keys() -> None:
    spec = make_spec()
    assert spec.make_options() == EchoOptions()
    assert spec.make_options({"depth": 3}) == EchoOptions(depth=3)
    with pytest.raises(ConfigError, match=r"protocol_options\.test-echo\.width: unknown key"):
        spec.make_options({"width": 2})


def test_default_options_class_takes_no_options() -> None:
    spec = ProtocolSpec(name="plain", create=fake_create, summary="s")
    assert spec.options is NoOptions
    assert spec.make_options() == NoOptions()
    with pytest.raises(ConfigError):
        spec.make_options({"anything": 1})


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("sequencer", "max_batch"),
        ("raft", "max_entries_per_message"),
        ("multipaxos", "max_batch"),
        ("paxos", "max_batch"),
        ("primary-backup", "max_batch"),
        ("nwr", "timeout"),
    ],
)
def test_every_plugin_reads_its_options_through_the_context(name: str, option: str) -> None:
    import random

    from consensus.replica import ReplicaContext

    spec = get_protocol(name)
    default = attrs.fields_dict(spec.options)[option].default

    def build(options: Any) -> Any:
        ctx = ReplicaContext(node_id=0, members=(0, 1, 2), options=options, rng=random.Random(0))
        return spec.create(ctx, [])

    assert build(None).options == spec.options()
    custom = attrs.evolve(spec.options(), **{option: default * 3})
    assert build(custom).options is custom
    # A dict is validated like a config table, never silently replaced by defaults.
    assert build({option: default * 3}).options == custom
    with pytest.raises(ConfigError, match="options.no_such_option"):
        build({"no_such_option": 1})
    with pytest.raises(TypeError, match=spec.options.__name__):
        build(42)
