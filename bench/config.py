"""What a benchmark run compares: ``RunConfig`` and how it is loaded.

A ``RunConfig`` is a baseline cluster (size, network, storage, seed), a
workload, a fault schedule and a list of protocols with per-protocol options.
Every key is validated when it is loaded (``load_run_config``), so a mistake
names its dotted key before anything runs.  ``bench.runner`` runs one,
``bench.metrics`` turns its runs into DataFrames; both stand above this
module.

Costs: a benchmark's simulated nodes pay CPU, fsync and link time
(``consensus.costs``) from the measured table shipped in
``bench/configs/costs-default.toml`` unless the config says otherwise.  A
``[costs]`` table (top level, or ``[cluster.costs]``) may name a
``preset``, ``"default"`` (that table), ``"off"`` (all zero: nodes handle
inputs instantly) or the path of a TOML file with a ``[costs]`` table (as
``python -m bench calibrate`` writes), and override any of its keys::

    [costs]
    preset = "default"
    fsync = 0.002          # a slower disk than the one measured
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import attrs

from bench.faults import ADMIN_ACTIONS, Fault
from bench.workload import WorkloadConfig
from consensus.config import ClusterConfig
from consensus.costs import CostConfig
from consensus.registry import available_protocols
from consensus.schema import ConfigError, in_range, load_toml, one_of, structure

__all__ = [
    "COST_PRESETS",
    "DEFAULT_CLIENTS",
    "DEFAULT_PROTOCOLS",
    "TCP_FAULTS",
    "RunConfig",
    "TcpSettings",
    "cost_preset",
    "load_run_config",
]

DEFAULT_PROTOCOLS = ("raft", "multipaxos", "paxos")

#: Closed-loop clients of the built-in comparison (``RunConfig()``).
DEFAULT_CLIENTS = 256

#: Named cost tables: ``default`` (measured, shipped) and ``off`` (all zero).
COST_PRESETS = ("default", "off")


def cost_preset(name: str = "default") -> dict[str, Any]:
    """The ``[costs]`` table of preset ``name`` or of the TOML file at path ``name``."""
    if name == "off":
        return {}
    if name == "default":
        text = (files("bench") / "configs" / "costs-default.toml").read_text()
        import tomllib

        data = tomllib.loads(text)
    else:
        data = load_toml(name)
    table = data.get("costs")
    if not isinstance(table, dict):
        raise ConfigError(f"costs.preset: {name!r} has no [costs] table")
    return dict(table)


def _resolve_costs(table: Any) -> Any:
    # A [costs] table with its preset merged in (the preset first, then the keys given).
    if not isinstance(table, dict):
        return table
    table = dict(table)
    preset = table.pop("preset", "default")
    if not isinstance(preset, str):
        raise ConfigError(f"costs.preset: expected a preset name or a path, got {preset!r}")
    try:
        merged = cost_preset(preset)
    except ConfigError as exc:
        raise ConfigError(f"costs.preset: {exc}") from None
    for key in ("inputs", "records"):
        if key in table and key in merged:
            table[key] = {**merged[key], **table[key]}
    merged.update(table)
    return merged


def _default_cluster() -> ClusterConfig:
    costs = structure(CostConfig, cost_preset("default"), path="costs")
    return ClusterConfig(wire="bytes", costs=costs)


def _default_protocols() -> tuple[str, ...]:
    installed = set(available_protocols())
    chosen = tuple(p for p in DEFAULT_PROTOCOLS if p in installed)
    return chosen or ("sequencer",)


@attrs.frozen(kw_only=True)
class TcpSettings:
    """How a run with ``network.kind = "tcp"`` runs its real cluster.

    ``processes``: load-generator processes (the workload's clients are
    split over them).  ``window``: operations each closed-loop client keeps
    outstanding (pipelining; 1 as in simulation).  ``fsync``: the nodes'
    policy (``batch``: group commit; see ``consensus.runtime.clusterfile``).
    ``pack_proposals``: most client requests per log entry.
    ``client_timeout``: seconds before a client retries elsewhere.
    ``keep``: a folder to keep the cluster file, data and node logs in.
    """

    processes: int = attrs.field(default=2, validator=in_range(1, 64))
    window: int = attrs.field(default=1, validator=in_range(1))
    fsync: str = attrs.field(default="batch", validator=one_of("batch", "always", "never"))
    pack_proposals: int = attrs.field(default=256, validator=in_range(0))
    client_timeout: float = attrs.field(default=1.0, validator=in_range(0, open_lo=True))
    keep: str = ""


#: Faults a real cluster supports (SIGKILL and restart).
TCP_FAULTS = ("crash", "restart")


@attrs.frozen(kw_only=True)
class RunConfig:
    """What to compare.  ``options`` maps a protocol name to its options table.

    Unlike a bare ``ClusterConfig``, a run's cluster defaults to
    ``wire = "bytes"``: every message goes through the codec, so the results
    count bytes per message type.  Set ``wire = "objects"`` for raw speed.

    ``drain``: virtual seconds after the workload stops for outstanding
    operations to finish; ``interval``: width of the throughput, queue and
    utilisation time bins.  ``trace = true``: record every message, client
    operation and role change (``Results.trace``, ``consensus.sim.trace``;
    simulated runs only, off by default: a busy run's trace is large).

    Unlike a bare ``ClusterConfig``, a run's cluster pays the measured costs
    of ``bench/configs/costs-default.toml`` unless its ``[costs]`` table says
    otherwise (see the module's docstring).  The built-in comparison
    (``load_run_config(None)``, ``python -m bench run`` without a file)
    offers ``DEFAULT_CLIENTS`` closed-loop clients, more than a leader can
    serve, so each protocol shows its peak and its busiest node; otherwise
    the workload starts from ``WorkloadConfig``'s defaults (8 clients).

    With ``[cluster.network] kind = "tcp"`` (or a top-level ``[network]``
    table, or ``python -m bench run --tcp``) each protocol runs as real node
    processes on loopback with load-generator processes (``[tcp]``:
    ``TcpSettings``), and times are wall-clock seconds.
    """

    protocols: tuple[str, ...] = attrs.Factory(_default_protocols)
    cluster: ClusterConfig = attrs.Factory(_default_cluster)
    options: dict[str, Any] = attrs.Factory(dict)
    workload: WorkloadConfig = attrs.Factory(WorkloadConfig)
    faults: tuple[Fault, ...] = ()
    drain: float = 2.0
    interval: float = 0.1
    name: str = "run"
    tcp: TcpSettings = attrs.Factory(TcpSettings)
    trace: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.protocols:
            raise ConfigError("protocols: list at least one protocol")
        installed = available_protocols()
        for name in self.protocols:
            if name not in installed:
                raise ConfigError(
                    f"protocols: unknown protocol {name!r}; available: {', '.join(installed)}"
                )
        for name in self.options:
            if name not in self.protocols:
                raise ConfigError(
                    f"options.{name}: not one of the protocols being run"
                    f" ({', '.join(self.protocols)})"
                )
        for name in self.protocols:
            self.cluster_for(name).protocol_options(path=f"options.{name}")
        if self.drain < 0:
            raise ConfigError(f"drain: must be >= 0, got {self.drain}")
        if self.interval <= 0:
            raise ConfigError(f"interval: must be > 0, got {self.interval}")
        if self.real and self.trace:
            raise ConfigError("trace: only simulated runs record a message trace, not tcp ones")
        if self.real:
            for i, fault in enumerate(self.faults):
                if fault.action not in TCP_FAULTS:
                    raise ConfigError(
                        f"faults[{i}].action: {fault.action!r} needs the simulated network;"
                        f" over tcp a fault is one of {', '.join(TCP_FAULTS)}"
                    )
        for i, fault in enumerate(self.faults):
            admin = ADMIN_ACTIONS.get(fault.action)
            for name in self.protocols if admin else ():
                if admin not in {
                    m.__name__ for m in self.cluster_for(name).protocol_spec().messages
                }:
                    raise ConfigError(
                        f"faults[{i}].action: protocol {name!r} has no {admin} request;"
                        " run it without this fault"
                    )
            if fault.action != "membership":
                continue
            for name in self.protocols:
                if not self.cluster_for(name).protocol_spec().membership:
                    raise ConfigError(
                        f"faults[{i}].action: protocol {name!r} does not support membership"
                        " changes; run it without this fault"
                    )
            outside = [m for m in fault.members if not 0 <= m < self.cluster.nodes]
            if outside:
                raise ConfigError(f"faults[{i}].members: {outside[0]} is not a node id")

    @property
    def real(self) -> bool:
        """True when the run starts real node processes (``network.kind = "tcp"``)."""
        return self.cluster.network.kind == "tcp"

    def cluster_for(self, protocol: str) -> ClusterConfig:
        """The baseline cluster with ``protocol`` and its options."""
        options = self.options.get(protocol, {})
        try:
            return attrs.evolve(self.cluster, protocol=protocol, options=options)
        except ConfigError as exc:
            raise ConfigError(f"options.{protocol}.{exc}") from None

    def with_overrides(
        self,
        *,
        protocols: Any = None,
        seed: int | None = None,
        tcp: bool = False,
        trace: bool = False,
    ) -> RunConfig:
        changes: dict[str, Any] = {}
        if trace:
            changes["trace"] = True
        if tcp:
            network = attrs.evolve(self.cluster.network, kind="tcp")
            changes["cluster"] = attrs.evolve(self.cluster, network=network)
        if protocols:
            changes["protocols"] = tuple(protocols)
            changes["options"] = {k: v for k, v in self.options.items() if k in protocols}
        if seed is not None:
            changes["cluster"] = attrs.evolve(changes.get("cluster", self.cluster), seed=seed)
        return attrs.evolve(self, **changes)


def load_run_config(source: str | Path | dict[str, Any] | RunConfig | None = None) -> RunConfig:
    """A ``RunConfig`` from a TOML path, a mapping, an object, or the defaults."""
    if source is None:
        # The built-in comparison offers more than a 3-node leader can serve, so
        # each protocol runs at its peak.
        return RunConfig(workload=WorkloadConfig(clients=DEFAULT_CLIENTS))
    if isinstance(source, RunConfig):
        return source
    data = dict(source) if isinstance(source, dict) else load_toml(source)
    if "protocol" in data and "protocols" not in data:
        data["protocols"] = [data.pop("protocol")]
    # Benchmarks encode every message by default, so bytes per type are measured.
    cluster = dict(data.get("cluster", {}))
    if "network" in data:  # a top-level [network] table is the cluster's network
        if "network" in cluster:
            raise ConfigError("network: give [network] or [cluster.network], not both")
        cluster["network"] = data.pop("network")
    if "costs" in data:  # so is a top-level [costs] table
        if "costs" in cluster:
            raise ConfigError("costs: give [costs] or [cluster.costs], not both")
        cluster["costs"] = data.pop("costs")
    if isinstance(cluster.get("costs"), str):  # costs = "off", a preset or a path
        cluster["costs"] = {"preset": cluster["costs"]}
    cluster["costs"] = _resolve_costs(cluster.get("costs", {}))
    cluster.setdefault("wire", "bytes")
    data["cluster"] = cluster
    return structure(RunConfig, data)
