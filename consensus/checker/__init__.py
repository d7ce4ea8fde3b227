"""Safety checking: recorded client histories and their linearizability.

* ``history``: ``History`` and ``Operation``, every client operation with its
  invocation, completion, status and result (a pandas DataFrame on request);
* ``linearizability``: ``check(history)``, the public checker;
* ``linsearch``: the memoized Wing & Gong / Lowe search it runs per key;
* ``witness``: shrinking a violation to a minimal offending sub-history;
* ``lost``: ``lost_writes(history, final states)``, acknowledged writes that no
  node holds and no later write replaced.
"""

from consensus.checker.history import History, Operation
from consensus.checker.linearizability import CheckResult, check
from consensus.checker.lost import lost_writes

__all__ = ["CheckResult", "History", "Operation", "check", "lost_writes"]
