"""``sequencer``: a fixed-leader primary-backup log, the no-failover baseline."""

from consensus.registry import ProtocolSpec
from protocols.sequencer.core import Sequencer, SequencerOptions
from protocols.sequencer.messages import Ack, Replicate, Stored

__all__ = ["PROTOCOL", "Sequencer", "SequencerOptions"]

PROTOCOL = ProtocolSpec(
    name="sequencer",
    create=Sequencer,
    summary="fixed leader, majority acknowledgement, no failover (a baseline, not consensus)",
    options=SequencerOptions,
    messages=(Replicate, Ack),
    records=(Stored,),
    lacks={"failover": "fixed leader, no election: cannot survive a leader crash"},
)
