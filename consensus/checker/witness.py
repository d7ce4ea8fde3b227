"""Witnesses: shrinking a failing key's history to a small sub-history.

Theory of operation
-------------------
*Witnesses.*  For a failing key, ``Violation.operations`` is a small
sub-history that is itself not linearizable, shrunk so that it still points
at the real conflict (a naive shrinker happily "finds" a read whose write it
removed).  Steps, each keeping the sub-history failing:

1. Suffix cut (exact): drop operations invoked after the latest instant any
   search branch reached; the search never looked at them.
2. Prefix cut (exact): pick an instant ``t0`` (latest first).  If every
   order of the ok operations done before ``t0`` leaves the register in
   one value ``s0`` (a window of them is enumerated from an unknown value;
   operations spanning ``t0`` and pending ones may run before it too, if
   the sub-history can replay them), replace those operations by a short
   chain of writes rebuilding ``s0`` (a ``Put`` or ``Delete``, then appends
   or CAS), run after the blind writes whose values are read later.  Any
   linearization of the history maps to one of the sub-history, so it
   fails iff the history does; keeping the writes of values read later
   keeps the witness self-explanatory.  Pending operations nothing left
   could observe are dropped: never happening is as good as any instant.
3. Greedy removal in halving chunks: read-only operations (exact: removing
   one only relaxes the history), then writes whose value no remaining
   operation reads.  A write is removed only if the failure persists when
   it may instead take effect at any time after its invocation, or never;
   when nothing left can tell (no remaining read could observe it, see
   ``_plain``) plain removal is that same test, and cheaper.

Effort is bounded by a step budget; past it the witness is merely larger.
That happens with one hot key and many concurrent clients: few instants
settle, and pending writes make every failure proof costly.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from consensus.checker.linsearch import (
    _APPEND,
    _CAS,
    _DELETE,
    _GET,
    _ILLEGAL,
    _PUT,
    _UNKNOWN,
    _Op,
    _Outcome,
    _search,
    _step,
)


def _read_only(op: _Op) -> bool:
    # Ops that leave the register unchanged given their result: dropping one
    # only removes constraints, so the rest failing means the whole fails.
    if op.pending:
        return False
    return op.kind == _GET or (op.kind in (_CAS, _DELETE) and op.result is False)


def _reads_token(write: _Op, others: list[_Op]) -> bool:
    """Whether another op shows a value that may contain ``write``'s."""
    if write.kind not in (_PUT, _APPEND, _CAS):
        return False
    return any(o is not write and _shows(write, _seen_value(o)) for o in others)


def _shows(write: _Op, seen: Any) -> bool:
    # A value is a Put's or CAS's value followed by appended values, so only
    # an Append's value can sit past its start.
    if not isinstance(seen, str):
        return False
    token = write.value or ""
    return token in seen if write.kind == _APPEND else seen.startswith(token)


def _seen_value(op: _Op) -> Any:
    # The value an op shows was there: a Get's result, the expectation of a
    # CAS that succeeded or may have (a failed one shows only a difference).
    if op.kind == _GET:
        return op.result
    return op.expected if op.kind == _CAS and op.result is not False else None


def _plain(removed: list[_Op], rest: list[_Op]) -> bool:
    """Whether dropping ``removed`` (writes no op in ``rest`` reads) equals relaxing them.

    Relaxed, such a write can only leave a value nobody reads (or, for a
    Delete, no value).  That helps no remaining op, except one that merely
    needs *some* value present or absent, linearized after the write's
    invocation: a Delete or CAS answered True/False, a Get of None, an
    Append building on emptiness.  With none of those left, the two agree.
    """
    start = min(o.invoke for o in removed)
    deletes = any(o.kind == _DELETE for o in removed)
    for o in rest:
        if o.complete < start or o.pending:
            continue
        if o.kind == _DELETE or (o.kind == _CAS and (o.result is False or deletes)):
            return False
        if deletes and (o.kind == _APPEND or (o.kind == _GET and o.result is None)):
            return False
    return True


def _observable(op: _Op, ops: list[_Op]) -> bool:
    """Whether leaving out the pending ``op`` could matter to the rest of ``ops``.

    If not, "never happened" is as good as any time it could have: dropping
    it changes no verdict (and spares the search its every placement).
    """
    rest = [o for o in ops if o is not op]
    return _reads_token(op, rest) or not _plain([op], rest)


def _cut(ops: list[_Op], frontier: float) -> list[_Op]:
    """Ops invoked by ``frontier``, and the later writes that may run before them.

    No search branch looked past ``frontier``, so whichever later ops stay,
    the verdict is the same.  Keeping the writes invoked before some kept op
    completes keeps every kept op explained (a read of a value whose write
    was cut would make a witness of the wrong failure).
    """
    kept = [o for o in ops if o.invoke <= frontier]
    reach = max((o.complete for o in kept if not o.pending), default=-math.inf)
    later = sorted((o for o in ops if o.invoke > frontier), key=lambda o: o.invoke)
    for w in later:
        if w.invoke > reach:
            break
        if not _read_only(w):
            kept.append(w)
            reach = max(reach, w.complete if not w.pending else -math.inf)
    return kept


def _chain(value: Any, writes: list[_Op], depth: int, reset: bool) -> list[_Op] | None:
    """Ok ops of ``writes`` that, run in this order, leave ``value``.

    From an absent key, or with ``reset`` from any present value: the chain
    then starts with a Put, or a Delete answered True.  Consecutive ops never
    contradict real time (none completes before its predecessor is invoked).
    None when no short chain exists.
    """
    if value is None:
        if not reset:
            return []
        deletes = [w for w in writes if w.kind == _DELETE and w.result is True and not w.pending]
        return deletes[-1:] or None
    if depth == 0:
        return None
    for w in reversed(writes):  # the latest writers first
        if w.pending:
            continue
        before: Any
        if w.kind == _PUT and w.value == value:
            return [w]
        if w.kind == _CAS and w.result is True and w.value == value:
            before = w.expected
        elif w.kind == _APPEND and w.value and value.endswith(w.value):
            before = value[: -len(w.value)] or None
        else:
            continue
        earlier = [o for o in writes if o is not w and o.invoke <= w.complete]
        head = _chain(before, earlier, depth - 1, reset)
        if head is not None and (not head or w.complete >= head[-1].invoke):
            return head + [w]
    return None


def _prefix(
    value: Any, writes: list[_Op], read_later: list[_Op]
) -> tuple[list[_Op] | None, list[_Op]]:
    """(chain, kept): ``kept`` (the ops of ``read_later`` not in the chain), then
    the chain, leave ``value``; chain None if no such prefix exists."""
    chain = _chain(value, writes, depth=8, reset=False)
    if chain is not None:
        kept = [w for w in read_later if all(w is not c for c in chain)]
        if not kept:
            return chain, kept
    # Kept writes run first, so the chain must reset the register; a Delete
    # opening it then finds the value they left.
    chain = _chain(value, writes, depth=8, reset=True)
    if chain is None:
        return None, []
    kept = [w for w in read_later if all(w is not c for c in chain)]
    if not kept and chain and chain[0].kind == _DELETE:
        return None, []
    return chain, kept


def _reachable(start: Any, pending: list[_Op], target: Any) -> bool:
    """Whether applying all of ``pending``, in some order, takes ``start`` to ``target``."""
    for order in itertools.permutations(pending):
        state = start
        for op in order:
            state = _step(op, state)
            if state is _ILLEGAL:
                break
        else:
            if state == target:
                return True
    return False


class _Shrinker:
    """Steps 1-3 of the theory of operation, under a step budget."""

    def __init__(self, budget: int, deadline: float | None, baseline: int) -> None:
        self.budget = budget
        self.deadline = deadline
        self.baseline = baseline  # steps the last failing search took
        self.original: dict[int, _Op] = {}  # id of a relaxed op -> the op it relaxes

    def _cap(self) -> int:
        # Relaxed writes can blow the search up; a trial costing far more than
        # the last failing search is abandoned (its ops are simply kept).
        return min(self.budget, 4 * self.baseline + 20_000)

    def _run(self, ops: list[_Op]) -> _Outcome | None:
        """The outcome if ``ops`` is provably not linearizable, else None."""
        if self.budget <= 0:
            return None
        out = _search(ops, max_steps=self._cap(), deadline=self.deadline)
        self.budget -= out.steps
        if out.linearizable is not False:
            return None
        self.baseline = out.steps
        return out

    def fails(self, ops: list[_Op]) -> float | None:
        """The failing frontier if ``ops`` is provably not linearizable, else None."""
        out = self._run(ops)
        return None if out is None else out.frontier

    def _relax(self, op: _Op) -> _Op:
        if id(op) in self.original:
            return op
        relaxed = op.as_pending()
        self.original[id(relaxed)] = op
        return relaxed

    def shrink(self, ops: list[_Op], frontier: float) -> list[_Op]:
        """A small failing sub-history of ``ops`` (which fail up to ``frontier``)."""
        work = self._prefix_cut(_cut(ops, frontier), frontier)
        while self.budget > 0:  # a pass may free writes only a removed op read
            before = [id(o) for o in work]
            work = self._reduce(work, [o for o in work if _read_only(o)], writes=False)
            writes = [o for o in work if not _read_only(o) and not _reads_token(o, work)]
            work = self._reduce(work, writes, writes=True)
            if [id(o) for o in work] == before:
                break
        return self._finish(work)

    def _finish(self, work: list[_Op]) -> list[_Op]:
        # Relaxed writes were shown irrelevant to the failure.  Report them as
        # their originals (more constrained, so the witness still fails), but
        # only as many as keep it stuck on the same op: a write left out can
        # make an earlier op fail for a reason the history does not have.
        relaxed = [o for o in work if id(o) in self.original]
        if not relaxed:
            return work
        core = [o for o in work if id(o) not in self.original]
        whole = _search(work, max_steps=4 * self.baseline + 20_000)
        if whole.linearizable is not False or whole.blocked < 0:
            return core + [self.original[id(o)] for o in relaxed]
        target = work[whole.blocked].source

        def same_failure(restored: list[_Op]) -> bool:
            trial = core + [self.original[id(o)] for o in restored]
            out = self._run(trial)
            return out is not None and trial[out.blocked].source is target

        restored = relaxed
        chunk = max(1, len(restored) // 2)
        while restored and self.budget > 0:
            i = 0
            while i < len(restored) and self.budget > 0:
                fewer = restored[:i] + restored[i + chunk :]
                if same_failure(fewer):
                    restored = fewer
                else:
                    i += chunk
            if chunk == 1:
                break
            chunk //= 2
        return core + [self.original[id(o)] for o in restored]

    def _prefix_cut(self, work: list[_Op], frontier: float) -> list[_Op]:
        # Step 2 of the theory of operation, trying the latest cut first.
        oks = sorted((o for o in work if not o.pending), key=lambda o: o.invoke)
        pendings = [o for o in work if o.pending]
        # The last completion of an op showing each write's value: the ops a
        # cut at t0 keeps are those completing at or after t0.
        seen = [(o.complete, v) for o in oks for v in (_seen_value(o),) if isinstance(v, str)]
        read_until = {
            id(w): max((t for t, v in seen if _shows(w, v)), default=-math.inf)
            for w in oks
            if w.kind in (_PUT, _APPEND, _CAS)
        }
        for i in range(len(oks) - 1, 0, -1):
            t0 = oks[i].invoke
            if self.budget <= 0:
                break
            if t0 > frontier or oks[i - 1].invoke == t0:
                continue  # cut before every op invoked at t0, once
            done = [o for o in oks[:i] if o.complete < t0]
            spanning = [o for o in oks[:i] if o.complete >= t0]
            early = [p for p in pendings if p.invoke < t0]
            if len(spanning) > 6:
                continue  # too many ways to end: rarely settles, costly to enumerate
            s0 = self._settled(done, spanning, early, t0)
            if s0 is _UNKNOWN:
                continue
            # Writes read at or after t0 stay, or the witness would show a read
            # of a value nobody wrote: true given the cut, but no explanation.
            read_later = [w for w in done if read_until.get(id(w), -math.inf) >= t0]
            chain, kept = _prefix(s0, done, read_later)
            if chain is None or any(
                w.kind not in (_PUT, _APPEND) or any(c.complete < w.invoke for c in chain)
                for w in kept
            ):
                continue
            trial = kept + chain + spanning + oks[i:]
            trial += [p for p in pendings if _observable(p, trial + pendings)]
            cut = self.fails(trial)
            if cut is not None:
                return _cut(trial, cut)
        return work

    def _settled(self, done: list[_Op], spanning: list[_Op], early: list[_Op], t0: float) -> Any:
        """The one value the ops ``done`` by ``t0`` leave, or _UNKNOWN.

        Ops ``spanning`` t0 and pending ops ``early`` may run before t0 too:
        orders that use some must end in a value the witness reaches by
        running those same ones after its chain (it keeps them all).
        """
        # The window: ops done by t0 that may run after every op done before
        # t1, where t1 leaves the spanning ops inside (they may not run
        # earlier); what ran before t1 is an unknown value.
        t1 = min((o.invoke for o in spanning), default=t0)
        t1 = max((o.invoke for o in done if o.invoke <= t1), default=-math.inf)
        older = [o for o in done if o.complete < t1]
        window = [o if o.invoke >= t1 else o.as_optional(t1) for o in done if o.complete >= t1]
        tracked = [o.as_optional(max(o.invoke, t1)) for o in spanning]
        tracked += [p.as_pending(max(p.invoke, t1)) for p in early]
        ops = window + tracked
        finals: set[tuple[Any, int]] = set()
        # An absent key to start from only if nothing can have run before.
        start = _UNKNOWN if older or any(o.optional for o in window) else None
        out = _search(ops, initial=start, finals=finals, max_steps=min(self.budget, 10_000))
        self.budget -= out.steps
        if out.linearizable is not True:
            return _UNKNOWN
        base = len(window)
        ran = {(value, used >> base) for value, used in finals}  # tracked ops only
        bare = {value for value, used in ran if not used}
        if len(bare) != 1:
            return _UNKNOWN
        (s0,) = bare
        pend = sum(1 << k for k, op in enumerate(tracked) if op.pending)
        for value, used in ran:
            if not used or any(
                u != used and u & ~pend == used & ~pend and u & ~used == 0
                for v, u in ran
                if v == value
            ):
                continue  # none, or dominated: the same with fewer pending ops is enough
            extra = [op for k, op in enumerate(tracked) if used >> k & 1]
            if not (len(extra) <= 4 and _reachable(s0, extra, value)):
                return _UNKNOWN
        return s0

    def _reduce(self, work: list[_Op], candidates: list[_Op], *, writes: bool) -> list[_Op]:
        # Greedy in halving chunks (ddmin-like): big bites first while they
        # keep failing, single ops last.
        chunk = max(1, len(candidates) // 2)
        while candidates and self.budget > 0:
            i = 0
            while i < len(candidates) and self.budget > 0:
                part = candidates[i : i + chunk]
                ids = {id(o) for o in part}
                rest = [o for o in work if id(o) not in ids]
                trial = rest
                if writes and not _plain(part, rest):
                    if all(id(o) in self.original for o in part):
                        i += chunk  # relaxed already: nothing more to try
                        continue
                    trial = rest + [self._relax(o) for o in part]
                cut = self.fails(trial)
                if cut is not None:
                    work = _cut(trial, cut)
                    keep = {id(o) for o in work}
                    candidates = [o for o in candidates if id(o) in keep]
                else:
                    i += chunk
            if chunk == 1:
                break
            chunk //= 2
        return work


# --- public API -----------------------------------------------------------------------------
