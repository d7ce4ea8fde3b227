"""Membership changes: learners, single-server changes and joint consensus
(Raft paper section 6; thesis chapter 4; etcd's learners and ConfChangeV2).

Theory of operation
-------------------
The configuration in force on a server is the *latest* configuration entry in
its log, committed or not (or, when the log holds none, the one recorded with
its snapshot, or the initial ``ctx.members``).  A configuration names the
voters (``new``, and ``old`` while joint) and the *learners*: servers that
receive the log but never vote, never campaign and never count in a quorum.
Two payloads are configuration entries:

* a ``Configuration``: joint (``old`` set, C_old,new: elections and
  commitment need a majority of ``old`` *and* of ``new``), a learner phase
  (``request`` set, ``old`` empty), or plain (learners changed);
* a client ``Request`` whose command is ``ChangeMembership(members)``: C_new,
  voters ``members``; the learners of the configuration before it stay,
  minus those now voters (``config_of``).  Applying it answers the client.

``_configs`` lists every configuration entry the log holds, oldest first,
above a base (the snapshot's configuration, at the snapshot index); its last
element is in force.  Appending an entry may push one, truncating a
conflicting suffix pops and so reverts, a snapshot resets the base.

A ``ChangeMembership(members)`` at the leader (thesis 4.3; ``busy`` if a
change is in progress, or no entry of the leader's term is committed yet,
except that a committed learner phase may be replaced by another change;
the same voters: an ordinary entry)::

    servers it adds that are not caught-up learners (learner_phase):
      L appends Configuration(new=voters, learners=+added, request): they are
      replicated to at once (their progress starts at L's last index);
      once it committed and each holds it and is within promote_lag entries
      of L's log:
    one voter added or removed (single_server_changes):
      L appends the client's Request: C_new, in force at once
    otherwise:
      L appends C_old,new = Configuration(new=members, old=voters, request);
      once it commits (auto_leave_joint), the client's Request as C_new
    C_new commits --> the client is answered when it is applied; a leader
      outside C_new sends its last commit index and steps down (thesis 4.2.2)

With ``auto_leave_joint`` off the leader stays joint once C_old,new commits
and answers the client then (``Outputs.answer``); a later
``ChangeMembership`` naming the joint's new voters leaves it (C_new).  The
admin request ``ChangeLearners(learners)`` (stepped into a node, forwarded
to the leader) makes ``learners`` the learners: a plain entry when no voter
is among them; demoting voters shrinks the voters by a single-server or a
joint change whose new configuration keeps them as learners.  A new leader
that finds a committed joint configuration or learner phase in force
carries it on once its own Noop commits.

Servers outside the voters (spares, learners, removed servers) never
campaign but accept the leader's entries and snapshots, and grant votes
(thesis 4.2.1); a leader keeps sending to a removed server until it holds
the configuration removing it.  With CheckQuorum, a server that heard from
its leader recently ignores vote requests, so a removed server cannot
disrupt (thesis 4.2.3).

Invariants: ``_configs`` is non-empty and strictly increasing in index; its
first index is ``<= commit_index`` (so truncation never pops it); at most one
configuration entry is uncommitted, and a new one is appended only once the
one in force committed; a configuration's learners never include one of its
``new`` voters; consecutive voter sets differ by one server, or are bridged
by a joint configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consensus.commands import ChangeMembership, Request
from consensus.quorum import JointQuorum, Majority
from consensus.replica import NodeId, Outputs, Rejection
from protocols.raft.messages import ChangeLearners, Configuration, Entry
from protocols.raft.progress import Progress
from protocols.raft.records import LogAppend
from protocols.raft.roles import Role
from protocols.raft.snapshots import Snapshots

__all__ = ["Membership", "config_of"]


def config_of(payload: Any, previous: Configuration | None = None) -> Configuration | None:
    """The configuration a log payload installs after ``previous``, or None if
    it is not a configuration entry."""
    if type(payload) is Configuration:
        return payload
    if type(payload) is Request and type(payload.command) is ChangeMembership:
        members = tuple(sorted(set(payload.command.members)))
        kept = () if previous is None else previous.learners
        return Configuration(new=members, learners=tuple(n for n in kept if n not in members))
    return None


def _sorted(nodes: Any) -> tuple[int, ...]:
    return tuple(sorted(set(nodes)))


class Membership(Snapshots):
    """The configuration-tracking part of ``RaftReplica``."""

    voted_for: int | None
    _term_start: int
    #: (index, configuration) of every configuration entry held, plus the base.
    _configs: list[tuple[int, Configuration]]
    #: The configuration in force (``_configs[-1]``) and its index.
    _config: Configuration
    _config_index: int
    #: This server is a voter of ``_config`` (old or new): it may campaign.
    _voter: bool
    #: Nothing is left to do for the configuration in force (see ``_settle_config``).
    _config_settled: bool

    def _rejection(self, request: Request, reason: str) -> Rejection:
        raise NotImplementedError

    def _finish(self, out: Outputs) -> Outputs:
        raise NotImplementedError

    # ------------------------------------------------------------ bookkeeping

    def _reset_configs(self, index: int, base: Configuration | None) -> None:
        """Rebuild ``_configs`` from a base at ``index`` and the log entries after it."""
        if base is None:
            base = self._initial_config()
        self._configs = [(index, base)]
        first = max(index + 1, self.log.first_index)
        if first <= self.log.last_index:
            self._push_configs(first, self.log.entries(first))
        self._apply_config()

    def _note_configs(self, first: int, entries: Sequence[Entry]) -> None:
        """Entries were appended from ``first`` on: any configuration entry takes effect."""
        if self._push_configs(first, entries):
            self._apply_config()

    def _push_configs(self, first: int, entries: Sequence[Entry]) -> bool:
        found = False
        for offset, entry in enumerate(entries):
            payload = entry.payload
            kind = type(payload)
            if kind is Request:
                if type(payload.command) is not ChangeMembership:
                    continue
            elif kind is not Configuration:
                continue
            config = config_of(payload, self._configs[-1][1])
            assert config is not None
            self._configs.append((first + offset, config))
            found = True
        return found

    def _truncate_configs(self, after: int) -> None:
        """Entries after ``after`` were dropped: so are their configurations."""
        configs = self._configs
        if configs[-1][0] <= after:
            return
        while configs[-1][0] > after:
            configs.pop()
            assert configs, "the base configuration is committed, never truncated"
        self.counters["config_reverts"] += 1
        self._apply_config()

    def _config_at(self, index: int) -> Configuration:
        """The configuration in force once the log up to ``index`` is applied."""
        for at, config in reversed(self._configs):
            if at <= index:
                return config
        raise AssertionError(f"no configuration at or below {index}")

    def _compact_configs(self, index: int) -> Configuration | None:
        """The log up to ``index`` is compacted: its configuration becomes the base.

        Returns it for the snapshot record, or None for the initial configuration
        (what recovery assumes when a snapshot names none).
        """
        base = self._config_at(index)
        self._configs = [(index, base)] + [c for c in self._configs if c[0] > index]
        self._config_index = self._configs[-1][0]
        return None if base == self._initial_config() else base

    def _initial_config(self) -> Configuration:
        return Configuration(new=tuple(sorted(self.ctx.members)))

    def _apply_config(self) -> None:
        """Put the latest configuration in force: quorums, peers, leader progress."""
        index, config = self._configs[-1]
        self._config_index = index
        self._config = config
        self._config_settled = False
        voters = set(config.new)
        if config.old:
            voters.update(config.old)
            self.quorum = JointQuorum.of(config.old, config.new)
        else:
            self.quorum = Majority(config.new)
        self._voter = self.node_id in voters
        voters.discard(self.node_id)
        self.peers = tuple(sorted(voters))
        self._replicas = tuple(sorted(voters.union(config.learners) - {self.node_id}))
        if self.role is Role.LEADER:
            # Rounds sent under the previous configuration no longer renew a lease.
            self._drop_lease()
            for peer in self._replicas:
                if peer not in self._progress:
                    # Replicated to at once: the flush the new entry asks for sends
                    # it a probe at our last entry (a new server rejects it and says
                    # where to start).  Like etcd, count it active for the first
                    # CheckQuorum round so adding it cannot depose us.
                    progress = Progress(max(self.log.last_index, 1), self.options.max_inflight)
                    progress.recent_active = True
                    self._progress[peer] = progress

    def _prune_progress(self) -> None:
        """Leader: forget removed servers once they hold the configuration removing them."""
        tracked = set(self._replicas)
        for peer in [p for p in self._progress if p not in tracked]:
            if self._progress[peer].match >= self._config_index:
                del self._progress[peer]

    def _removed(self, node: int) -> bool:
        """``node`` is no voter of our configuration, and that configuration is committed."""
        return node not in self.quorum.members and self.commit_index >= self._config_index

    def config_status(self) -> dict[str, Any]:
        config = self._config
        return {
            "members": list(config.new),
            "members_old": list(config.old),
            "learners": list(config.learners),
            "config_index": self._config_index,
        }

    # ------------------------------------------------------------------ leader

    def _change_busy(self) -> bool:
        """A configuration change is under way (or cannot start yet)."""
        config = self._config
        if config.old or config.request is not None or self._config_index > self.commit_index:
            return True
        # Ongaro's fix (raft-dev, 2015) for the single-server change bug in thesis
        # 4.1, which joint changes share: first commit an entry of our term.
        return self.commit_index < self._term_start

    def _propose_change(self, request: Request, out: Outputs) -> None:
        """A ``ChangeMembership`` request at the leader (thesis 4.3)."""
        assert self.role is Role.LEADER
        command = request.command
        assert isinstance(command, ChangeMembership)
        target = _sorted(command.members)
        if not target:
            out.rejected.append(self._rejection(request, "invalid"))
            return
        config = self._config
        if self._change_busy():
            joint_done = (
                config.old
                and not self.options.auto_leave_joint
                and self.commit_index >= max(self._config_index, self._term_start)
            )
            underway = self._change_underway()
            if underway is not None and (underway.client_id, underway.seq) == (
                request.client_id,
                request.seq,
            ):
                # A retry of the change in progress: applying its C_new answers it (or,
                # staying joint, we answer it now).
                self.counters["duplicate_proposals"] += 1
                if joint_done:
                    out.answer(request, config.new)
                return
            if joint_done and target == config.new:
                self._leave_joint(request, out)  # explicit leave
                return
            phase_done = (
                config.request is not None
                and not config.old
                and self.commit_index >= max(self._config_index, self._term_start)
            )
            if not phase_done:
                self.counters["membership_busy"] += 1
                out.rejected.append(self._rejection(request, "busy"))
                return
            # A committed learner phase has not touched the voters: a new change
            # may replace it (its learners stay learners), so that a learner that
            # never catches up (a dead server) cannot block every later change.
            self.counters["learner_phases_superseded"] += 1
        voters = config.new
        added = [n for n in target if n not in voters]
        waiting = [n for n in added if not self._caught_up(n, learner_only=True)]
        if target == voters:
            index = self._append_config(request, out)  # an ordinary entry
        elif self.options.learner_phase and waiting:
            learners = _sorted([*config.learners, *added])
            phase = Configuration(new=voters, learners=learners, request=request)
            index = self._append_config(phase, out)
            self.counters["learner_phases"] += 1
        else:
            index = self._change_voters(request, target, out)
        self._pending[index] = (self.term, request)
        self._pending_ids[(request.client_id, request.seq)] = index

    def _change_voters(
        self,
        payload: Request | None,
        target: tuple[int, ...],
        out: Outputs,
        learners: tuple[int, ...] | None = None,
    ) -> int:
        """Append the change of voters to ``target``: a single-server change
        (C_new at once) or a joint configuration.  ``payload``: the client's
        request (it becomes C_new), or None for a learners change, which names
        the ``learners`` (demoted voters among them)."""
        config = self._config
        if learners is None:
            learners = _sorted(n for n in config.learners if n not in target)
        single = len(set(config.new).symmetric_difference(target)) == 1
        if single and self.options.single_server_changes:
            self.counters["single_server_changes"] += 1
            if payload is None:
                return self._append_config(Configuration(new=target, learners=learners), out)
            return self._append_config(payload, out)
        joint = Configuration(new=target, old=config.new, request=payload, learners=learners)
        return self._append_config(joint, out)

    def _caught_up(self, node: NodeId, learner_only: bool = False) -> bool:
        """``node`` (a learner, if ``learner_only``) holds the configuration in
        force and is within ``promote_lag`` entries of our log."""
        if learner_only and node not in self._config.learners:
            return False
        progress = self._progress.get(node)
        floor = max(self.log.last_index - self.options.promote_lag, self._config_index)
        return progress is not None and progress.match >= floor

    def _change_underway(self) -> Request | None:
        """The client request of the configuration change in progress, if known."""
        config = self._config
        if config.old or config.request is not None:
            return config.request
        index = self._config_index
        if index > self.log.snapshot_index:
            payload = self.log[index].payload
            if isinstance(payload, Request):
                return payload
        return None

    def _on_change_learners(self, src: NodeId, m: ChangeLearners, out: Outputs) -> None:
        """Admin request: make ``m.learners`` the learners (see the module docstring)."""
        if self.role is not Role.LEADER:
            if src == self.node_id and self.leader_id not in (None, self.node_id):
                assert self.leader_id is not None
                out.send(self.leader_id, m)  # forwarded once, as TransferLeadership
            else:
                self.counters["learner_changes_ignored"] += 1
            return
        config = self._config
        wanted = _sorted(m.learners)
        voters = tuple(n for n in config.new if n not in wanted)
        if self._change_busy() or self._transfer_target is not None:
            self.counters["membership_busy"] += 1
            return
        if not voters or wanted == config.learners:
            self.counters["learner_changes_ignored"] += 1
            return
        self.counters["learner_changes"] += 1
        if voters == config.new:
            self._append_config(Configuration(new=voters, learners=wanted), out)
            return
        self._change_voters(None, voters, out, learners=wanted)

    def _append_config(self, payload: Any, out: Outputs) -> int:
        """Leader: append a configuration entry; it is in force from this moment."""
        assert self.role is Role.LEADER
        config = config_of(payload, self._config)
        assert config is not None
        entry = Entry(term=self.term, payload=payload)
        index = self.log.append(entry)
        out.persist.append(LogAppend(index=index, entries=(entry,)))
        self._configs.append((index, config))
        self._apply_config()
        self._flush_at = self._now
        self._maybe_commit()  # commits at once when we alone are a quorum
        return index

    def _settle_config(self, out: Outputs) -> None:
        """Once the configuration in force commits: the leader carries a change
        on (promotes caught-up learners, leaves a joint configuration), and a
        leader outside the voters steps down."""
        if self.commit_index < self._config_index:
            return  # not committed yet: called again by a later input
        config = self._config
        if self.role is Role.LEADER:
            if (config.old or config.request is not None) and self.commit_index < self._term_start:
                return  # a new leader carries the change on once its Noop commits
            if config.old:
                if self.options.auto_leave_joint:
                    self._leave_joint(config.request, out)
                    return
                if config.request is not None:
                    out.answer(config.request, config.new)  # staying joint: done for now
            elif config.request is not None:
                request = config.request
                assert isinstance(request.command, ChangeMembership)
                target = _sorted(request.command.members)
                if not all(self._caught_up(n) for n in target if n not in config.new):
                    return  # asked again after every input, until they caught up
                self.counters["learners_promoted"] += 1
                index = self._change_voters(request, target, out)
                self._pending[index] = (self.term, request)
                self._pending_ids[(request.client_id, request.seq)] = index
                self._finish(out)  # C_new may have committed at once; settles it too
                return
            elif self.node_id not in config.new:
                # Thesis 4.2.2: C_new committed without us.  Tell the others the
                # commit index now rather than a timeout later, then step down.
                for peer, progress in self._progress.items():
                    self._send_heartbeat(peer, progress, out)
                self.counters["removed_step_downs"] += 1
                self._become_follower(self.term, None, out)
        self._config_settled = True

    def _leave_joint(self, request: Request | None, out: Outputs) -> None:
        """Append C_new after a committed joint configuration: the client's
        ``request`` (answered when applied), or a plain configuration."""
        joint = self._config
        assert joint.old
        if request is None:
            self._append_config(Configuration(new=joint.new, learners=joint.learners), out)
        else:
            index = self._append_config(request, out)
            key = (request.client_id, request.seq)
            if key not in self._pending_ids:
                self._pending[index] = (self.term, request)
                self._pending_ids[key] = index
        self.counters["membership_changes"] += 1
        self._finish(out)  # C_new may have committed at once; settles it too
