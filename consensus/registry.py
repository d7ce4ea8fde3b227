"""Protocol plugins, registered by name through package entry points.

A plugin package exposes one ``ProtocolSpec`` and names it in its
``pyproject.toml``::

    [project.entry-points."consensus.protocols"]
    raft = "protocols.raft:PROTOCOL"

``get_protocol("raft")`` loads it.  Tests and notebooks may also
``register(spec)`` a plugin at run time without packaging it.

A spec also says what its protocol cannot do: ``lacks`` maps a capability
(one of ``CAPABILITIES``) to the reason, and the conformance kit
(``consensus.testing``) skips, with that reason, the rules that need it.

Two capabilities separate consensus from the baselines it is compared with:
``log`` (every node applies one sequence of entries) and
``linearizability`` (every history is linearizable, whatever the faults).  A
plugin that lacks ``linearizability`` is *unsafe* (``ProtocolSpec.safe`` is
False): a baseline such as primary-backup or NWR quorums, here to show what
goes wrong without consensus.  The benchmark tables mark it, and the kit does
not hold it to the rules it is meant to break.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable, Mapping

import attrs

from consensus.replica import ReplicaFactory
from consensus.schema import structure

__all__ = [
    "CAPABILITIES",
    "ENTRY_POINT_GROUP",
    "NoOptions",
    "ProtocolSpec",
    "UnknownProtocolError",
    "available_protocols",
    "get_protocol",
    "register",
]

ENTRY_POINT_GROUP = "consensus.protocols"

#: What a protocol may lack (``ProtocolSpec.lacks``), and what having it means.
CAPABILITIES: dict[str, str] = {
    "failover": (
        "the cluster survives the crash or isolation of its leader"
        " (trivially, for a protocol without leaders)"
    ),
    "quorum": (
        "a majority is enough: commits go on while a minority of nodes (never the"
        " leader, for a protocol without failover) is down or cut off"
    ),
    "log": (
        "one replicated log: every node applies the same entries in the same order,"
        " every acknowledged request reaches every node, and a retried request takes"
        " effect once (the state machine's sessions)"
    ),
    "linearizability": (
        "every client history is linearizable under any faults (crashes, partitions,"
        " loss, slow links): no stale read, no lost acknowledged write"
    ),
}


def _as_dict(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


def _known_capabilities(inst: Any, attribute: attrs.Attribute, value: dict[str, str]) -> None:
    unknown = sorted(set(value) - set(CAPABILITIES))
    if unknown:
        raise ValueError(
            f"lacks: unknown capability {unknown[0]!r}; capabilities: {', '.join(CAPABILITIES)}"
        )


@attrs.frozen(kw_only=True)
class NoOptions:
    """Options for a protocol that takes none."""


@attrs.frozen(kw_only=True)
class ProtocolSpec:
    """Everything the framework needs to know about a protocol plugin.

    ``messages`` and ``records`` list the plugin's wire and durable types for
    the codec; their order fixes their wire tags, so only ever append.
    ``options`` is an attrs class whose defaults are usable as they stand;
    config files set its fields by name.  ``membership``: the plugin handles
    ``ChangeMembership`` requests and may run with spare nodes outside its
    initial configuration (``ClusterConfig.members``).  ``lacks``: capability
    -> why, for each of ``CAPABILITIES`` the protocol does not have, e.g.
    ``{"failover": "fixed leader, no election"}``.  Declare what the protocol
    lacks with its default options; a reason may name the options that
    change it.  ``hazards``: for an unsafe baseline, ``hazards(options)``
    names what that configuration loses under faults (stale reads, lost
    writes...), empty for a configuration with nothing known to lose.
    """

    name: str
    create: ReplicaFactory
    summary: str
    options: type = NoOptions
    messages: tuple[type, ...] = ()
    records: tuple[type, ...] = ()
    membership: bool = False
    lacks: dict[str, str] = attrs.field(
        factory=dict, converter=_as_dict, validator=_known_capabilities, hash=False
    )
    hazards: Callable[[Any], tuple[str, ...]] | None = attrs.field(
        default=None, eq=False, hash=False
    )

    @property
    def safe(self) -> bool:
        """False for an unsafe baseline: one that lacks ``linearizability``
        (its reason, ``lacks["linearizability"]``, says what it loses)."""
        return "linearizability" not in self.lacks

    def make_options(self, values: dict[str, Any] | None = None) -> Any:
        """Build this protocol's options from a mapping, rejecting unknown keys."""
        return structure(self.options, dict(values or {}), path=f"protocol_options.{self.name}")


class UnknownProtocolError(LookupError):
    """No plugin is registered under the requested name."""


_registered: dict[str, ProtocolSpec] = {}


def register(spec: ProtocolSpec) -> ProtocolSpec:
    """Register ``spec`` under ``spec.name`` for this process (overrides entry points)."""
    _registered[spec.name] = spec
    return spec


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_protocols() -> list[str]:
    """Names of every protocol that can be chosen in config, sorted."""
    return sorted(set(_entry_points()) | set(_registered))


def get_protocol(name: str) -> ProtocolSpec:
    """The plugin registered as ``name``; a clear error lists the choices."""
    if name in _registered:
        return _registered[name]
    eps = _entry_points()
    if name not in eps:
        choices = ", ".join(available_protocols()) or "(none installed)"
        raise UnknownProtocolError(f"unknown protocol {name!r}; available: {choices}")
    spec = eps[name].load()
    if not isinstance(spec, ProtocolSpec):
        raise TypeError(f"entry point {name!r} is {type(spec).__name__}, not a ProtocolSpec")
    _registered[name] = spec
    return spec
