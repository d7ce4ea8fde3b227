"""System-neutral measurement of a real cluster: unloaded latency, peak throughput.

Theory of operation
-------------------
A *system* is any callable ``run_point(LoadPoint) -> PointResult``: it starts
its cluster, offers the load the ``LoadPoint`` describes, measures, stops
everything and returns one row.  PySyncObj's is
``bench.peers.pysyncobj.run_pysyncobj_point``; ours plugs in the same way.

The load model is shared so both systems see the same load: ``clients``
concurrent submitters per cluster, each a closed loop keeping ``window``
commands outstanding, commands of ``command_size`` characters; or, with
``rate`` set, an open loop of ``rate`` commands/s per cluster.  Each point
warms up for ``warmup`` s and then measures ``duration`` s.

On top of ``run_point``:

* ``unloaded``: one client, window 1: the commit latency of a lone command;
* ``PeakSearch`` / ``find_peak``: raise the load along a ladder (by default
  window 1, 2, 4, ... per client, the client count fixed) until throughput
  stops rising by more than ``min_gain`` three times in a row, p50 latency passes
  ``max_p50_ms`` or errors pass ``max_failed``; bounded in points and in
  seconds.  The peak is the point of highest throughput within those bounds,
  the knee the lightest load that came within ``min_gain`` of it;
* ``compare``: unloaded and peak for each system, the systems' points
  interleaved (A, B, A, B, ...) because this shared machine's speed swings
  by 2x from hour to hour; one row per system and client count.

Percentiles are nearest-rank over latency samples weighted by how many
commands each sample stands for: a node that kept a uniform subsample of
``n`` of its ``ok`` latencies gives each one weight ``ok / n``
(``merge_latencies``).  Timings never appear in test assertions.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any, Callable, Collection, Mapping, Sequence

import attrs
import pandas as pd

__all__ = [
    "DEFAULT_WINDOWS",
    "against_reference",
    "LoadPoint",
    "PeakSearch",
    "PointResult",
    "RunPoint",
    "compare",
    "find_peak",
    "merge_latencies",
    "points_frame",
    "unloaded",
    "weighted_percentiles",
    "rate_ladder",
    "window_ladder",
]

# Outstanding commands per client, doubling.  PySyncObj (batching every 0.1 s,
# 100-250 ms commit latency) needs thousands in flight to saturate: 3 clients
# reach about 30,000 commands/s around window 4,096-8,192 on this machine.
DEFAULT_WINDOWS = tuple(2**i for i in range(15))  # 1 .. 16,384


@attrs.frozen(kw_only=True)
class LoadPoint:
    """One load to offer a cluster: closed loop, or open loop when ``rate`` is set."""

    clients: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    window: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    rate: float | None = None  # commands/s per cluster; None: closed loop
    command_size: int = attrs.field(default=10, validator=attrs.validators.ge(0))
    duration: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    warmup: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))

    @property
    def outstanding(self) -> int:
        """Commands in flight at once in a closed loop."""
        return self.clients * self.window


@attrs.frozen(kw_only=True)
class PointResult:
    """What one system did under one ``LoadPoint``: one tidy row."""

    system: str
    protocol: str
    nodes: int
    command_size: int
    clients: int
    window: int
    offered_rate: float | None  # None: closed loop
    committed: int  # commands answered as committed inside the measured window
    throughput: float  # committed / duration, commands/s
    p50_ms: float
    p90_ms: float
    p99_ms: float
    failed: int  # commands answered with an error inside the window
    wall_s: float  # the whole point: start, warm-up, measure, drain, stop
    duration: float = 0.0  # the measured window, s
    notes: dict[str, Any] = attrs.field(factory=dict)


RunPoint = Callable[[LoadPoint], PointResult]


def weighted_percentiles(
    values: Sequence[float], weights: Sequence[float], qs: Sequence[float]
) -> list[float]:
    """Nearest-rank percentiles (``q`` in 0..1) of weighted values; NaN when empty.

    The ``q`` percentile is the smallest value whose cumulative weight (values
    in ascending order) reaches ``q`` of the total; with equal weights this
    is the classic nearest rank, ``sorted[ceil(q * n) - 1]``.
    """
    if len(values) != len(weights):
        raise ValueError("values and weights differ in length")
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=True) if w > 0)
    total = sum(w for _, w in pairs)
    if not pairs:
        return [math.nan for _ in qs]
    out = []
    for q in qs:
        target = q * total * (1 - 1e-12)  # float sums must not skip the exact rank
        acc = 0.0
        chosen = pairs[-1][0]
        for v, w in pairs:
            acc += w
            if acc >= target:
                chosen = v
                break
        out.append(chosen)
    return out


def merge_latencies(
    parts: Sequence[tuple[int, Sequence[float]]], qs: Sequence[float] = (0.5, 0.9, 0.99)
) -> list[float]:
    """Percentiles over several nodes' ``(count, samples)``.

    ``samples`` is a uniform subsample of that node's ``count`` latencies (all
    of them when not capped); each sample stands for ``count / len(samples)``
    commands, so a busy node's samples weigh more than an idle one's.
    """
    values: list[float] = []
    weights: list[float] = []
    for count, samples in parts:
        if count <= 0 or not samples:
            continue
        w = count / len(samples)
        values.extend(samples)
        weights.extend([w] * len(samples))
    return weighted_percentiles(values, weights, qs)


def unloaded(
    run_point: RunPoint, *, command_size: int = 10, duration: float = 5.0, warmup: float = 1.0
) -> PointResult:
    """Commit latency of sequential commands: one client, one outstanding command."""
    point = LoadPoint(
        clients=1, window=1, command_size=command_size, duration=duration, warmup=warmup
    )
    return run_point(point)


class PeakSearch:
    """The peak-finding loop as a step machine, so several searches can interleave.

    ``next_point()`` gives the load to run (None when done), ``record(result)``
    takes what it did.  Stops after three points in a row (``patience``) that
    did not beat the best throughput so far by more than ``min_gain`` (on a
    shared machine one point in a ladder often comes out low); when a
    point's p50 exceeds ``max_p50_ms`` or more than ``max_failed`` of its
    answers are errors; after ``max_points``; or when the next point would
    likely take the search's own points past ``max_seconds`` of wall time
    (judged by the slowest point so far; the points of searches interleaved
    with it do not count).

    ``best`` is the peak: the highest throughput among acceptable points
    (latency and errors within bounds).  ``knee`` is the lightest load that
    came within ``min_gain`` of it, usually at a much lower latency.
    """

    def __init__(
        self,
        ladder: Sequence[LoadPoint],
        *,
        min_gain: float = 0.05,
        patience: int = 3,
        max_p50_ms: float = 1000.0,
        max_failed: float = 0.01,
        max_points: int = len(DEFAULT_WINDOWS),
        max_seconds: float = 300.0,
    ) -> None:
        if not ladder:
            raise ValueError("find_peak needs at least one load point")
        self._ladder = list(ladder)[:max_points]
        self.min_gain = min_gain
        self.patience = patience
        self.max_p50_ms = max_p50_ms
        self.max_failed = max_failed
        self.max_seconds = max_seconds
        self._spent = 0.0  # wall seconds of this search's own points
        self._slowest = 0.0
        self._flat = 0  # Invariant: 0 <= _flat <= patience
        self._best_tp = -math.inf
        self.points: list[PointResult] = []
        self.stop_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    def next_point(self) -> LoadPoint | None:
        if self.done:
            return None
        if len(self.points) >= len(self._ladder):
            self.stop_reason = "ladder exhausted"
            return None
        if self.points and self._spent + self._slowest > self.max_seconds:
            self.stop_reason = f"time budget ({self.max_seconds:g}s)"
            return None
        return self._ladder[len(self.points)]

    def record(self, result: PointResult) -> None:
        assert not self.done, "record() after the search stopped"
        self.points.append(result)
        self._slowest = max(self._slowest, result.wall_s)
        self._spent += result.wall_s
        tp = result.throughput
        if tp > self._best_tp * (1 + self.min_gain):
            self._flat = 0
        else:
            self._flat += 1
        self._best_tp = max(self._best_tp, tp)
        if not (result.p50_ms <= self.max_p50_ms):  # NaN (nothing committed) stops too
            self.stop_reason = f"p50 {result.p50_ms:.0f} ms > {self.max_p50_ms:g} ms"
        elif not self.acceptable(result):
            self.stop_reason = f"{result.failed} failed commands (> {self.max_failed:.0%})"
        elif self._flat >= self.patience:
            self.stop_reason = f"throughput flat (<{self.min_gain:.0%}) {self.patience}x"

    def acceptable(self, p: PointResult) -> bool:
        """Within the latency bound, and at most ``max_failed`` of its answers errors."""
        answered = p.committed + p.failed
        return p.p50_ms <= self.max_p50_ms and p.failed <= self.max_failed * max(answered, 1)

    @property
    def best(self) -> PointResult:
        """The highest-throughput acceptable point (any point if none is)."""
        if not self.points:
            raise ValueError("no point measured")
        ok = [p for p in self.points if self.acceptable(p)] or self.points
        return max(ok, key=lambda p: p.throughput)

    @property
    def knee(self) -> PointResult:
        """The lightest load that reached ``1 - min_gain`` of the peak's throughput."""
        best = self.best
        ok = [p for p in self.points if self.acceptable(p)] or self.points
        return next(p for p in ok if p.throughput >= (1 - self.min_gain) * best.throughput)


def window_ladder(base: LoadPoint, windows: Sequence[int] = DEFAULT_WINDOWS) -> list[LoadPoint]:
    """``base`` with each window in turn (closed loop, fixed clients)."""
    return [attrs.evolve(base, window=w, rate=None) for w in windows]


def rate_ladder(base: LoadPoint, rates: Sequence[float]) -> list[LoadPoint]:
    """``base`` as an open loop at each rate in turn (commands/s per cluster)."""
    return [attrs.evolve(base, rate=float(r)) for r in rates]


def find_peak(
    run_point: RunPoint,
    *,
    clients: int = 3,
    command_size: int = 10,
    duration: float = 5.0,
    warmup: float = 1.0,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    ladder: Sequence[LoadPoint] | None = None,
    **search: Any,
) -> PeakSearch:
    """Run a ``PeakSearch`` to its end; ``.best`` is the peak, ``.points`` every run.

    The ladder is ``window_ladder`` over ``windows`` unless ``ladder`` is given
    (e.g. open-loop points of rising ``rate``).  ``search`` goes to
    ``PeakSearch`` (``min_gain``, ``patience``, ``max_p50_ms``, ``max_points``,
    ``max_seconds``).
    """
    if ladder is None:
        base = LoadPoint(
            clients=clients, command_size=command_size, duration=duration, warmup=warmup
        )
        ladder = window_ladder(base, windows)
    peak = PeakSearch(ladder, **search)
    while (point := peak.next_point()) is not None:
        peak.record(run_point(point))
    return peak


def _round_robin(
    searches: Mapping[str, PeakSearch],
    systems: Mapping[str, RunPoint],
    progress: Callable[[str, LoadPoint], None] | None,
) -> None:
    # One point of each unfinished search in turn: A, B, A, B, ...
    while not all(s.done for s in searches.values()):
        for name, search in searches.items():
            point = search.next_point()
            if point is None:
                continue
            if progress is not None:
                progress(name, point)
            search.record(systems[name](point))


def provenance() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pso = version("pysyncobj")
    except PackageNotFoundError:
        pso = None
    return {
        "python": sys.version.split()[0],
        "pysyncobj_version": pso,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def compare(
    systems: Mapping[str, RunPoint],
    *,
    command_size: int = 10,
    clients: Sequence[int] = (3,),
    duration: float = 5.0,
    warmup: float = 1.0,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    progress: Callable[[str, LoadPoint], None] | None = None,
    **search: Any,
) -> pd.DataFrame:
    """Unloaded latency and peak throughput of every system, one row per system and clients.

    Order of runs: the unloaded point of every system, then for each client
    count the peak searches of all systems one point at a time in turn.  The
    DataFrame's ``attrs["points"]`` holds every point run (``points_frame``).
    ``search`` goes to ``PeakSearch``.
    """
    if not systems:
        raise ValueError("compare needs at least one system")
    spent = dict.fromkeys(systems, 0.0)
    base: dict[str, PointResult] = {}
    points: list[tuple[str, PointResult]] = []
    for name, run_point in systems.items():
        if progress is not None:
            progress(name, LoadPoint(clients=1, command_size=command_size))
        base[name] = unloaded(
            run_point, command_size=command_size, duration=duration, warmup=warmup
        )
        spent[name] += base[name].wall_s
        points.append(("unloaded", base[name]))
    rows = []
    prov = provenance()
    for n in clients:
        ladder = window_ladder(
            LoadPoint(clients=n, command_size=command_size, duration=duration, warmup=warmup),
            windows,
        )
        searches = {name: PeakSearch(ladder, **search) for name in systems}
        _round_robin(searches, systems, progress)
        for name, s in searches.items():
            spent[name] += sum(p.wall_s for p in s.points)
            points.extend(("peak", p) for p in s.points)
            rows.append(_row(name, n, base[name], s, prov))
    for row in rows:
        row["system_wall_s"] = spent[row["system"]]
    df = pd.DataFrame(rows)
    df.attrs["points"] = points_frame(points)
    return df


def _row(
    name: str, clients: int, un: PointResult, s: PeakSearch, prov: dict[str, Any]
) -> dict[str, Any]:
    best, knee = s.best, s.knee
    return {
        "system": name,
        "protocol": un.protocol,
        "nodes": un.nodes,
        "command_size": un.command_size,
        "clients": clients,
        "unloaded_p50_ms": un.p50_ms,
        "unloaded_p99_ms": un.p99_ms,
        "unloaded_committed": un.committed,
        "peak_throughput": best.throughput,
        "peak_p50_ms": best.p50_ms,
        "peak_p99_ms": best.p99_ms,
        "peak_window": best.window,
        "peak_offered_rate": best.offered_rate,
        "peak_failed": best.failed,
        "peak_points": len(s.points),
        "peak_stop": s.stop_reason,
        "knee_throughput": knee.throughput,
        "knee_p50_ms": knee.p50_ms,
        "knee_p99_ms": knee.p99_ms,
        "knee_window": knee.window,
        "duration": best.duration,
        **prov,
    }


def against_reference(
    summary: pd.DataFrame,
    points: pd.DataFrame,
    *,
    reference: str = "pysyncobj",
    peers: Collection[str] = ("pysyncobj",),
    latency_share: float = 0.1,
    unloaded_target_ms: float = 1.0,
    throughput_factor: float = 2.0,
) -> pd.DataFrame:
    """Each of our systems against the reference's best, from one ``compare`` run.

    The reference is one system (default: PySyncObj in its default, batched
    configuration, the one the speed targets name); ``peers`` are the systems
    that are not ours (the reference and its other configurations), neither
    judged.  The reference's peak is its highest
    throughput over every client count; a system's
    *bounded peak* is its highest throughput among its peak-search points
    whose p50 latency is at most ``latency_share`` of the reference's p50 at
    its peak.  One row per other system: its unloaded p50, bounded peak, the
    ratio to the reference peak, and whether each target is met
    (``unloaded_p50_ms <= unloaded_target_ms``, ratio >= ``throughput_factor``).
    """
    refs = summary[summary["system"] == reference]
    if refs.empty:
        return pd.DataFrame()
    best = refs.loc[refs["peak_throughput"].idxmax()]
    bound = best["peak_p50_ms"] * latency_share
    rows = []
    others = summary[~summary["system"].isin([reference, *peers])]
    for system, group in others.groupby("system", sort=False):
        mine = points[(points["system"] == system) & (points["stage"] == "peak")]
        within = mine[mine["p50_ms"] <= bound]
        top = within.loc[within["throughput"].idxmax()] if len(within) else None
        unloaded_p50 = float(group["unloaded_p50_ms"].iloc[0])
        bounded = float(top["throughput"]) if top is not None else 0.0
        ratio = bounded / best["peak_throughput"] if best["peak_throughput"] else math.nan
        rows.append(
            {
                "system": system,
                "protocol": group["protocol"].iloc[0],
                "unloaded_p50_ms": unloaded_p50,
                "reference": best["system"],
                "reference_peak": float(best["peak_throughput"]),
                "reference_peak_p50_ms": float(best["peak_p50_ms"]),
                "latency_bound_ms": float(bound),
                "bounded_peak": bounded,
                "bounded_peak_p50_ms": float(top["p50_ms"]) if top is not None else math.nan,
                "bounded_peak_clients": int(top["clients"]) if top is not None else 0,
                "bounded_peak_window": int(top["window"]) if top is not None else 0,
                "ratio": ratio,
                "unloaded_target_met": unloaded_p50 <= unloaded_target_ms,
                "throughput_target_met": ratio >= throughput_factor,
            }
        )
    return pd.DataFrame(rows)


def points_frame(points: Sequence[tuple[str, PointResult]]) -> pd.DataFrame:
    """One row per point run, with the stage (``unloaded``/``peak``) it belonged to."""
    rows = []
    for stage, p in points:
        row = attrs.asdict(p, recurse=False)
        notes = row.pop("notes")
        row["stage"] = stage
        row["notes"] = repr(notes) if notes else ""
        rows.append(row)
    return pd.DataFrame(rows)
