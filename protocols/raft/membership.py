"""Membership changes by joint consensus (Raft paper section 6; thesis chapter 4).

Theory of operation
-------------------
The configuration in force on a server is the *latest* configuration entry in
its log, committed or not (or, when the log holds none, the one recorded with
its snapshot, or the initial ``ctx.members``).  Two payloads are
configuration entries:

* a joint ``Configuration(new, old, request)``, C_old,new: elections and
  commitment need a majority of ``old`` *and* a majority of ``new``
  (``JointQuorum``);
* a client ``Request`` whose command is ``ChangeMembership(members)``: C_new,
  a plain ``Majority(members)``.  Applying it answers the client.

``_configs`` lists every configuration entry the log holds, oldest first,
above a base (the snapshot's configuration, at the snapshot index); its last
element is in force.  Appending an entry may push one, truncating a
conflicting suffix pops and so reverts, a snapshot resets the base.

A change, at the leader (thesis 4.3)::

    client --ChangeMembership(m)--> L   (busy if a change is in progress, or L
        has not yet committed an entry of its term; same set: an ordinary entry)
    L appends C_old,new = Configuration(new=m, old=current) and uses it at once;
      progress for every server of old | new; new servers catch up
    C_old,new commits (majorities of both) --> L appends the client's Request:
      C_new, in force at once (a leader outside m keeps leading without
      counting itself, thesis 4.2.2)
    C_new commits --> the client is answered when it is applied;
      a leader outside m sends its last commit index and steps down

A new leader that finds a committed C_old,new as its latest configuration
appends its C_new (``request``) once its own Noop commits.  A server outside
its configuration (a spare, or removed) never campaigns but accepts the
leader's entries and snapshots, and grants votes (thesis 4.2.1); a leader
keeps sending to a removed server until it holds C_new, so that server learns
it is out.  With CheckQuorum, a server that heard from its leader recently
ignores vote requests, so a removed server cannot disrupt (thesis 4.2.3).

Invariants: ``_configs`` is non-empty and strictly increasing in index; its
first index is ``<= commit_index`` (so truncation never pops it); at most one
configuration entry is uncommitted, and never a second joint one while one is
in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consensus.commands import ChangeMembership, Request
from consensus.quorum import JointQuorum, Majority
from consensus.replica import Outputs, Rejection
from protocols.raft.messages import Configuration, Entry
from protocols.raft.progress import Progress
from protocols.raft.records import LogAppend
from protocols.raft.roles import Role
from protocols.raft.snapshots import Snapshots

__all__ = ["Membership", "config_of"]


def config_of(payload: Any) -> Configuration | None:
    """The configuration a log payload installs, or None if it is not a config entry."""
    if type(payload) is Configuration:
        return payload
    if type(payload) is Request and type(payload.command) is ChangeMembership:
        return Configuration(new=tuple(sorted(set(payload.command.members))))
    return None


class Membership(Snapshots):
    """The configuration-tracking part of ``RaftReplica``."""

    voted_for: int | None
    _term_start: int
    #: (index, configuration) of every configuration entry held, plus the base.
    _configs: list[tuple[int, Configuration]]
    #: The configuration in force (``_configs[-1]``) and its index.
    _config: Configuration
    _config_index: int
    #: This server is a member of ``_config`` (old or new): it may campaign.
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
            config = config_of(payload)
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
        members = set(config.new)
        if config.old:
            members.update(config.old)
            self.quorum = JointQuorum.of(config.old, config.new)
        else:
            self.quorum = Majority(config.new)
        self._voter = self.node_id in members
        members.discard(self.node_id)
        self.peers = tuple(sorted(members))
        if self.role is Role.LEADER:
            for peer in self.peers:
                if peer not in self._progress:
                    # New servers start probing from our end; like etcd, count them
                    # active for the first CheckQuorum round so adding them cannot
                    # depose us before they could answer.
                    progress = Progress(self.log.last_index + 1, self.options.max_inflight)
                    progress.recent_active = True
                    self._progress[peer] = progress

    def _prune_progress(self) -> None:
        """Leader: forget removed servers once they hold the configuration removing them."""
        members = set(self.peers)
        for peer in [p for p in self._progress if p not in members]:
            if self._progress[peer].match >= self._config_index:
                del self._progress[peer]

    def _removed(self, node: int) -> bool:
        """``node`` is outside our configuration, and that configuration is committed."""
        return node not in self.quorum.members and self.commit_index >= self._config_index

    def config_status(self) -> dict[str, Any]:
        config = self._config
        return {
            "members": list(config.new),
            "members_old": list(config.old),
            "config_index": self._config_index,
        }

    # ------------------------------------------------------------------ leader

    def _propose_change(self, request: Request, out: Outputs) -> None:
        """A ``ChangeMembership`` request at the leader (thesis 4.3)."""
        assert self.role is Role.LEADER
        command = request.command
        assert isinstance(command, ChangeMembership)
        target = tuple(sorted(set(command.members)))
        if not target:
            out.rejected.append(self._rejection(request, "invalid"))
            return
        config = self._config
        if config.old or self._config_index > self.commit_index:
            underway = self._change_underway()
            if underway is not None and (underway.client_id, underway.seq) == (
                request.client_id,
                request.seq,
            ):
                # A retry of the change in progress: applying its C_new answers it.
                self.counters["duplicate_proposals"] += 1
                return
            self.counters["membership_busy"] += 1
            out.rejected.append(self._rejection(request, "busy"))
            return
        if self.commit_index < self._term_start:
            # First commit an entry of our term: Ongaro's fix (raft-dev, 2015) for the
            # single-server change bug in thesis 4.1, which joint changes share.
            self.counters["membership_busy"] += 1
            out.rejected.append(self._rejection(request, "busy"))
            return
        if target == config.new:
            index = self._append_config(request, config, out)
        else:
            joint = Configuration(new=target, old=config.new, request=request)
            index = self._append_config(joint, joint, out)
        self._pending[index] = (self.term, request)
        self._pending_ids[(request.client_id, request.seq)] = index

    def _change_underway(self) -> Request | None:
        """The client request of the configuration change in progress, if known."""
        config = self._config
        if config.old:
            return config.request
        index = self._config_index
        if index > self.log.snapshot_index:
            payload = self.log[index].payload
            if isinstance(payload, Request):
                return payload
        return None

    def _append_config(self, payload: Any, config: Configuration, out: Outputs) -> int:
        """Leader: append a configuration entry; it is in force from this moment."""
        assert self.role is Role.LEADER
        entry = Entry(term=self.term, payload=payload)
        index = self.log.append(entry)
        out.persist.append(LogAppend(index=index, entries=(entry,)))
        self._configs.append((index, config))
        self._apply_config()
        self._flush_at = self._now
        self._maybe_commit()  # commits at once when we alone are a quorum
        return index

    def _settle_config(self, out: Outputs) -> None:
        """Once the configuration in force commits: the leader moves a joint
        configuration on to C_new, and a leader outside C_new steps down."""
        if self.commit_index < self._config_index:
            return  # not committed yet: called again by a later input
        config = self._config
        if self.role is Role.LEADER:
            if config.old:
                if self.commit_index < self._term_start:
                    return  # a new leader completes the change once its Noop commits
                self._append_new_config(config, out)
                return
            if self.node_id not in config.new:
                # Thesis 4.2.2: C_new committed without us.  Tell the others the
                # commit index now rather than a timeout later, then step down.
                for peer, progress in self._progress.items():
                    self._send_heartbeat(peer, progress, out)
                self.counters["removed_step_downs"] += 1
                self._become_follower(self.term, None, out)
        self._config_settled = True

    def _append_new_config(self, joint: Configuration, out: Outputs) -> None:
        request = joint.request
        target = Configuration(new=joint.new)
        if request is None:
            self._append_config(target, target, out)
        else:
            index = self._append_config(request, target, out)
            key = (request.client_id, request.seq)
            if key not in self._pending_ids:
                self._pending[index] = (self.term, request)
                self._pending_ids[key] = index
        self.counters["membership_changes"] += 1
        self._finish(out)  # C_new may have committed at once; settles it too
