"""Planted bugs: classic Raft mistakes, each a one-place change to raft/_core.pyx.

Each entry is (name, what it breaks, old text, new text). `make_patches.py`
turns them into the unified diffs beside this file (NAME.patch), which
tests/test_mutants.py applies to a copy of the source, builds, and runs the
simulator with trace checking on: every mutant must be caught.
"""

MUTANTS = [
    ("commit_earlier_term",
     "Figure 8 (§5.4.2): commit an earlier term's entry by counting replicas",
     "        if self.log.term_at(n) != self.term and not self.unsafe_commit_any_term:\n",
     "        if False:\n"),
    ("vote_without_up_to_date_check",
     "§5.4.1: grant votes to candidates whose log is behind ours",
     "        if can_vote and up_to_date:\n",
     "        if can_vote:\n"),
    ("keep_conflicting_entries",
     "§5.3: do not truncate a conflicting suffix (treat any entry present as matching)",
     "                if log._terms[e.index - log.offset] == e.term:\n",
     "                if True:\n"),
    ("accept_stale_term_append",
     "§5.1: handle AppendEntries from a leader of an older term",
     "        elif m.term < self.term:\n",
     "        elif m.term < self.term and m.type != _MSG_APP:\n"),
    ("forget_to_persist_vote",
     "Figure 2: votedFor not written to stable storage",
     "            rd.hard_state = HardState(self.term, self.vote, log.committed)\n"
     "            self._prev_hard_state = rd.hard_state\n",
     "            rd.hard_state = HardState(self.term, 0, log.committed)\n"
     "            self._prev_hard_state = HardState(self.term, self.vote, log.committed)\n"),
    ("follower_commit_beyond_last_new",
     "Figure 2: follower sets commitIndex = min(leaderCommit, its last index), "
     "not the last NEW entry",
     "            log.committed = min(m.commit, last_new)\n",
     "            log.committed = min(m.commit, log.last())\n"),
    ("ack_before_persist",
     "Figure 2: acknowledge AppendEntries before the entries are durable",
     "        r.index = last_new\n        self._send_after_persist(r)\n",
     "        r.index = last_new\n        self._send(r)\n"),
    ("read_without_quorum",
     "diss. §6.4: answer a ReadIndex read without confirming leadership with a majority",
     "            if not self._is_quorum(acks):\n",
     "            if False:\n"),
    ("install_ignores_snapshot_term",
     "Figure 13 step 6: keep the log (and commit through the snapshot's index) when it "
     "merely reaches the snapshot's last index, whatever the term there",
     "        if m.index <= log.committed or log.match_term(m.index, m.log_term):\n",
     "        if m.index <= log.last():\n"),
    ("snapshot_chunk_offset_ignored",
     "§7: append every snapshot chunk as it arrives, without checking its offset "
     "(lost, duplicated or reordered chunks corrupt the snapshot)",
     "        if not same or m.commit != <uint64_t>have:\n",
     "        if not same:\n"),
    ("count_stale_vote_grant",
     "§5.1: a candidate counts a RequestVote grant from an earlier term of its own "
     "(only a grant delayed across the candidate's next election exposes it)",
     "        elif m.term < self.term:\n",
     "        elif m.term < self.term and m.type != _MSG_VOTE_RESP:\n"),
    ("inflight_truncation_not_rewritten",
     "§5.3 + Figure 2 persistence: truncating a conflicting suffix rewinds what is "
     "still to be written only if the suffix was already durable, so entries that "
     "replace a write in flight are never written (only a truncation that lands "
     "between a Ready and its advance exposes it)",
     "        if self.stable >= index:\n"
     "            self.stable = index - 1\n"
     "        if self.unstable_from > index:\n"
     "            self.unstable_from = index\n",
     "        if self.stable >= index:\n"
     "            self.stable = index - 1\n"
     "            self.unstable_from = index\n"),
    ("conf_change_without_noop_rule",
     "diss. §4.1 errata (Ongaro, raft-dev 2015): a new leader appends a configuration "
     "entry before committing an entry of its own term (needs membership draws: "
     "raft sim --membership)",
     "        if not self._reads_can_start():\n"
     "            raise ConfChangeNotYet",
     "        if False:\n"
     "            raise ConfChangeNotYet"),
    ("conf_change_while_uncommitted",
     "diss. §4.1: a second configuration change before the first is committed (two "
     "single-server changes in a row need not have overlapping majorities; needs "
     "membership draws)",
     "        if self.conf_index > self.log.committed:\n"
     "            raise ConfChangeNotYet",
     "        if False:\n"
     "            raise ConfChangeNotYet"),
    ("leader_counts_itself_after_removal",
     "diss. §4.2.2: a leader that removed itself still counts its own log toward "
     "commitment (a majority of the new voters is not asked for; needs membership draws)",
     "        # The voters only (a leader being removed does not count itself, diss. §4.2.2).\n",
     "        if not self._is_voter(self.id):\n"
     "            matches.append(self.log.stable)\n"),
]

# Mutants only the membership draws reach: tests/test_mutants.py and hunt.py run the
# simulator with SimConfig(membership=True) for these.
MEMBERSHIP_MUTANTS = {"conf_change_without_noop_rule", "conf_change_while_uncommitted",
                      "leader_counts_itself_after_removal"}
