"""bench.peers: our runtime next to other Raft implementations on real TCP clusters.

``compare(SYSTEMS)`` measures each system's unloaded commit latency and its
peak committed commands/s (and the latency there) under one load model, on
one machine, in one run, and returns one DataFrame row per system;
``comparison_table`` prints it.  A system is a callable
``run_point(LoadPoint) -> PointResult``; PySyncObj's is
``run_pysyncobj_point`` (three processes on 127.0.0.1, extra ``[peers]``).

``main(argv)`` is ``python -m bench.peers``; ``add_arguments`` and
``peers_command`` are the pieces for a ``python -m bench peers`` subcommand.
Importing this package never imports pysyncobj: only the node processes do.
"""

from bench.peers.cli import (
    DEFAULT_SYSTEMS,
    SYSTEMS,
    add_arguments,
    comparison_table,
    main,
    peers_command,
    save,
)
from bench.peers.measure import (
    DEFAULT_WINDOWS,
    LoadPoint,
    PeakSearch,
    PointResult,
    RunPoint,
    compare,
    find_peak,
    merge_latencies,
    points_frame,
    rate_ladder,
    unloaded,
    weighted_percentiles,
    window_ladder,
)
from bench.peers.procs import NodeProcesses, PeerError, free_ports
from bench.peers.pysyncobj import run_pysyncobj_point, split_clients

__all__ = [
    "DEFAULT_SYSTEMS",
    "DEFAULT_WINDOWS",
    "SYSTEMS",
    "LoadPoint",
    "NodeProcesses",
    "PeakSearch",
    "PeerError",
    "PointResult",
    "RunPoint",
    "add_arguments",
    "compare",
    "comparison_table",
    "find_peak",
    "free_ports",
    "main",
    "merge_latencies",
    "peers_command",
    "points_frame",
    "rate_ladder",
    "run_pysyncobj_point",
    "save",
    "split_clients",
    "unloaded",
    "weighted_percentiles",
    "window_ladder",
]
