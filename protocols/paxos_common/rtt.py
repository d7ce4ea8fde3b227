"""Round-trip estimates, so that timers scale with the network they run on.

Theory of operation
-------------------
A timer that retries a Paxos phase, or that fills a slot whose proposer went
quiet, must be longer than the round trips it waits for; otherwise it fires
while the answers are still on their way, and the retry (a higher ballot)
preempts the very round it was waiting for: duels, more retries, more
messages.  Fixed defaults tuned for a LAN (0.1 s) are shorter than one WAN
round trip.

``RoundTrips`` keeps the smoothed round-trip time and its variation the way
TCP does (RFC 6298: ``srtt``, ``rttvar``, gains 1/8 and 1/4; the first sample
sets ``srtt = r``, ``rttvar = r / 2``) from samples its owner measures: the
time from sending a request to receiving the reply to it.  Paxos replies
name their ballot, and a ballot is sent once per round, so a reply is never
ambiguous (no Karn's rule needed): a late reply to a round already retried
is still a sample, which is how a timer that starts too short learns.

``rto`` is RFC 6298's retransmission timeout, ``srtt + 4 * rttvar``;
``at_least(configured, factor)`` is the configured delay, or ``factor`` times
the ``rto`` when that is longer: options stay floors, the network raises
them.  Before the first sample the configured values stand.

Pure: no clock (samples arrive as numbers), no randomness.
"""

from __future__ import annotations

__all__ = ["RoundTrips"]


class RoundTrips:
    """Smoothed round-trip time and variation from measured samples (RFC 6298)."""

    __slots__ = ("srtt", "rttvar", "samples")

    def __init__(self) -> None:
        #: Smoothed round trip in seconds (0.0 until the first sample).
        self.srtt = 0.0
        #: Smoothed mean deviation of the round trip.
        self.rttvar = 0.0
        #: Samples taken so far.
        self.samples = 0

    def sample(self, seconds: float) -> None:
        """One measured round trip (negative or zero samples are ignored)."""
        if seconds <= 0.0:
            return
        if not self.samples:
            self.srtt = seconds
            self.rttvar = seconds / 2
        else:
            self.rttvar += (abs(self.srtt - seconds) - self.rttvar) / 4
            self.srtt += (seconds - self.srtt) / 8
        self.samples += 1

    @property
    def rto(self) -> float:
        """``srtt + 4 * rttvar``: a reply later than this is probably lost (0 before samples)."""
        return self.srtt + 4 * self.rttvar

    def at_least(self, configured: float, factor: float) -> float:
        """``configured``, raised to ``factor * rto`` when the network is slower."""
        scaled = factor * (self.srtt + 4 * self.rttvar)
        return scaled if scaled > configured else configured
