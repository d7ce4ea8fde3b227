"""``chain``: chain replication on a fixed chain, a consensus-compare plugin.

The example plugin of docs/writing-a-plugin.md; see README.md beside this
package for the message flow and what it follows of the paper.
"""

from chain.core import ChainOptions, ChainReplica
from chain.messages import Ack, Forward, Stored
from consensus import ProtocolSpec

__all__ = ["PROTOCOL", "ChainOptions", "ChainReplica"]

PROTOCOL = ProtocolSpec(
    name="chain",
    create=ChainReplica,
    summary="chain replication (van Renesse & Schneider 2004) on a fixed chain",
    options=ChainOptions,
    messages=(Forward, Ack),  # wire tags follow this order: only ever append
    records=(Stored,),
    lacks={
        "failover": "a fixed chain, no master to splice out a crashed head",
        "quorum": "every node of the fixed chain must be up and connected for a write to commit",
    },
)
