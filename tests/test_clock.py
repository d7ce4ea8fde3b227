"""Clock drift: a node's clock runs fast or slow, and the protocol only sees its own clock."""

from __future__ import annotations

import pytest

from consensus.clock import DriftingReplica
from consensus.config import ClusterConfig, ConfigError, Delay, NetworkConfig
from consensus.sim.simulator import Simulator


def test_a_drifting_replica_sees_scaled_times_and_asks_for_scaled_deadlines():
    seen = []

    class Inner:
        counters = {"x": 1}

        def tick(self, now):
            seen.append(now)
            return "out"

        def next_deadline(self):
            return 11.0

    proxy = DriftingReplica(Inner(), 1.1)  # type: ignore[arg-type]
    assert proxy.tick(10.0) == "out" and seen == [pytest.approx(11.0)]
    assert proxy.next_deadline() == pytest.approx(10.0)  # 11 local seconds = 10 real ones
    assert proxy.counters == {"x": 1}  # everything else reads through


def test_a_fast_clock_times_out_sooner_in_real_time():
    """Raft followers with no leader: the node whose clock runs 50% fast
    reaches its election timeout first, so it starts the first election."""
    base = {
        "protocol": "raft",
        "nodes": 3,
        "seed": 3,
        "network": NetworkConfig(delay=Delay.constant(0.001)),
        "options": {"election_timeout_min": 1.0, "election_timeout_max": 1.001},
    }
    fast = Simulator(ClusterConfig(**base, clock_drift=(0.0, 0.5, 0.0)))
    fast.run_until(lambda: bool(fast.leaders()), timeout=5.0)
    assert fast.leaders() == [1]
    assert fast.now < 0.9  # 1.0 local seconds passed in about 0.67 real ones


def test_drift_is_validated():
    with pytest.raises(ConfigError, match="clock_drift: 4 rates for 3 nodes"):
        ClusterConfig(nodes=3, clock_drift=(0, 0, 0, 0))
    with pytest.raises(ConfigError, match="must be > -1"):
        ClusterConfig(nodes=3, clock_drift=(-1.0,))


def test_a_deadline_converted_to_real_time_is_reached_by_the_tick_there():
    """Float rounding: ``(d / rate) * rate`` may fall an ulp short of ``d``; the
    real deadline is rounded up so a tick at it sees the local deadline passed."""

    class Inner:
        deadline = 0.0

        def next_deadline(self):
            return self.deadline

    inner = Inner()
    for rate in (0.2, 0.3, 1.1, 1.7, 0.99):
        proxy = DriftingReplica(inner, rate)  # type: ignore[arg-type]
        for i in range(1, 2000):
            inner.deadline = i * 0.000731
            assert proxy.next_deadline() * rate >= inner.deadline
