-------------------------------- MODULE Raft --------------------------------
(***************************************************************************)
(* The Raft protocol exactly as our core implements it (docs/protocol.md). *)
(*                                                                         *)
(* Written from the Raft paper (Ongaro & Ousterhout, "In Search of an      *)
(* Understandable Consensus Algorithm", 2014; cited as "paper §x") and     *)
(* the dissertation (Ongaro, "Consensus: Bridging Theory and Practice",    *)
(* 2014; cited as "diss. §x"), and from docs/protocol.md, which refines    *)
(* Figure 2 of the paper.                                                  *)
(*                                                                         *)
(* What is modelled, beyond the usual Raft specification:                  *)
(*                                                                         *)
(*  - Durable versus volatile state.  Every server has its in-memory       *)
(*    currentTerm / votedFor / log and, separately, the durable copies     *)
(*    the runtime has written (durableTerm / durableVote / durableLog and  *)
(*    the commitIndex hint durableCommit).  Persist(i) writes the          *)
(*    in-memory state to disk; Restart(i) throws away everything that is  *)
(*    not durable.                                                         *)
(*                                                                         *)
(*  - The persistence contract (Ready / advance).  Messages that promise   *)
(*    durability -- RequestVoteResp, AppendEntriesResp ("messages after    *)
(*    persist") -- are not put on the network by the handler but into the  *)
(*    server's outbox; Persist(i) writes the state and only then releases  *)
(*    the outbox to the network.  A crash loses the outbox.  RequestVote   *)
(*    is one too: Timeout queues one for every other server, and Persist   *)
(*    releases them once the new term, the self-vote and the log are       *)
(*    durable.  AppendEntries from a leader goes out at once (diss.        *)
(*    §10.2.1): the leader counts only its own durable log (StableIndex)   *)
(*    towards a commit quorum.                                             *)
(*                                                                         *)
(*  - A network that loses, duplicates and reorders.  The network is a     *)
(*    bag (multiset) of messages, a function from message to number of     *)
(*    copies; any copy may be received next (reordering), a handler        *)
(*    consumes the copy it receives, DuplicateMessage adds a copy and      *)
(*    DropMessage removes one (loss).                                      *)
(*                                                                         *)
(*  - Batched AppendEntries: a leader may send ANY prevLogIndex it holds   *)
(*    with ANY number k >= 0 of the following entries.  This one action    *)
(*    covers heartbeats (k = 0), probes, retries and pipelined batches, so *)
(*    the leader needs no nextIndex (nor flow-control state) here: every   *)
(*    choice the implementation's Progress tracker can make is one of      *)
(*    these.  Only matchIndex is kept, because commitment depends on it.   *)
(*                                                                         *)
(*  - Membership changes, one server at a time (diss. §4.1, with the       *)
(*    no-op rule of its errata).  A configuration entry (value             *)
(*    [voters |-> V, learners |-> L]) changes the role of ONE server       *)
(*    (voter, learner, or none).  A server's configuration is the latest   *)
(*    configuration entry in its own log, committed or not (InitVoters     *)
(*    before any); a truncation that removes it reverts the server to the  *)
(*    previous one.  Every quorum (election, commit) is a majority of the  *)
(*    voters of the counting server's configuration (IsQuorum).            *)
(*                                                                         *)
(* History variables (elections, committed) record what has happened so    *)
(* that the safety properties can be stated over the whole execution.      *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets

CONSTANTS
    Server,         \* the set of server ids (not all of them need be members)
    InitVoters,     \* the voters of the initial configuration (the
                    \* configuration of a log that holds no configuration
                    \* entry); no learners initially
    Value,          \* the values clients may propose
    Nil,            \* "no vote" (votedFor = 0 in the implementation)
    Noop,           \* the value of the no-op entry a new leader appends
    CommitHint,     \* TRUE: HardState carries the commitIndex hint (as in
                    \* the implementation).  FALSE: the hint is never
                    \* written, a restart begins at commitIndex 0 (a
                    \* smaller state space; safe either way).
    CommitAnyTerm,  \* MUST be FALSE.  TRUE plants the Figure 8 bug
                    \* (paper §5.4.2): the leader commits an entry as soon
                    \* as a majority stores it, whatever its term.
    ConfigNoopRule  \* MUST be TRUE.  FALSE plants the single-server
                    \* membership bug (diss. §4.1 errata, Ongaro 2015): a
                    \* leader appends a configuration entry before it has
                    \* committed an entry of its own term.

ASSUME CommitHint \in BOOLEAN /\ CommitAnyTerm \in BOOLEAN
ASSUME ConfigNoopRule \in BOOLEAN
ASSUME Nil \notin Server /\ Noop \notin Value
ASSUME InitVoters \subseteq Server /\ InitVoters # {}

\* Roles (volatile).
Follower  == "Follower"
Candidate == "Candidate"
Leader    == "Leader"

\* Message types: one message schema, as raft._core.Message.
RequestVoteMsg       == "RequestVote"        \* MSG_VOTE
RequestVoteRespMsg   == "RequestVoteResp"    \* MSG_VOTE_RESP
AppendEntriesMsg     == "AppendEntries"      \* MSG_APP
AppendEntriesRespMsg == "AppendEntriesResp"  \* MSG_APP_RESP

-----------------------------------------------------------------------------
(***************************************************************************)
(* Variables                                                               *)
(***************************************************************************)

\* In-memory copies of the state the protocol requires to be durable (paper
\* Figure 2, "Persistent state on all servers").
VARIABLES
    currentTerm,    \* currentTerm[i]: latest term server i has seen
    votedFor,       \* votedFor[i]: candidate i voted for in currentTerm[i], or Nil
    log             \* log[i]: sequence of entries [term |-> t, value |-> v]
memoryVars == <<currentTerm, votedFor, log>>

\* What the runtime has actually written to stable storage: HardState
\* (term, vote, commit hint) and the log.  Only Persist changes these.
VARIABLES
    durableTerm,    \* durableTerm[i]
    durableVote,    \* durableVote[i]
    durableLog,     \* durableLog[i]
    durableCommit   \* durableCommit[i]: the commitIndex hint in HardState
durableVars == <<durableTerm, durableVote, durableLog, durableCommit>>

\* Volatile state, lost on a crash (paper Figure 2, "Volatile state").
VARIABLES
    state,          \* state[i] \in {Follower, Candidate, Leader}
    commitIndex,    \* commitIndex[i]: highest index known committed
    votesGranted,   \* votesGranted[i]: servers that granted i a vote (candidate)
    matchIndex,     \* matchIndex[i][j]: on leader i, highest index known
                    \* durably replicated on j (0 when i is not leader)
    outbox          \* outbox[i]: messages_after_persist of server i, sent by
                    \* the next Persist(i), lost by Restart(i)
volatileVars == <<state, commitIndex, votesGranted, matchIndex, outbox>>

\* The network: the bag of messages in flight, network[m] = number of copies
\* of m (see header).
VARIABLE network

\* History variables, never read by the protocol, only by the invariants.
VARIABLES
    elections,      \* set of <<term, leader>>: every BecomeLeader ever taken
    committed       \* set of [index, entry, term]: every entry any server ever
                    \* marked committed, with the term in which that happened
                    \* first (one record per distinct <<index, entry>>)
historyVars == <<elections, committed>>

vars == <<memoryVars, durableVars, volatileVars, network, historyVars>>

-----------------------------------------------------------------------------
(***************************************************************************)
(* Helpers                                                                 *)
(***************************************************************************)

Min(a, b) == IF a <= b THEN a ELSE b
Max(a, b) == IF a >= b THEN a ELSE b
SetMax(S) == CHOOSE x \in S : \A y \in S : y <= x
SetMin(S) == CHOOSE x \in S : \A y \in S : x <= y

\* Term of entry n of lg, with the usual convention term(0) = 0.
TermAt(lg, n) == IF n = 0 THEN 0 ELSE lg[n].term
LastTerm(lg)  == TermAt(lg, Len(lg))

\* Configurations (diss. §4.1).  The value of a configuration entry is a
\* record [voters |-> V, learners |-> L]; client values and the no-op are
\* not records, so an entry is a configuration entry iff its value is
\* neither (the trace module's values are strings: this test never
\* compares a string with a record).
ConfigValue(V, L) == [voters |-> V, learners |-> L]
InitConfig == ConfigValue(InitVoters, {})
IsConfigEntry(e) == e.value \notin Value \cup {Noop}

\* The indexes of lg's configuration entries; the last one (0: none).
ConfigIndexes(lg) == {n \in 1..Len(lg) : IsConfigEntry(lg[n])}
LastConfigIndex(lg) ==
    LET ns == ConfigIndexes(lg) IN IF ns = {} THEN 0 ELSE SetMax(ns)

\* The configuration of a server whose log is lg: the latest configuration
\* entry in it, committed or not (diss. §4.1: "a server always uses the
\* latest configuration in its log"); InitConfig if there is none.  So a
\* truncation that removes an entry reverts to the previous configuration.
Config(lg) ==
    IF LastConfigIndex(lg) = 0 THEN InitConfig ELSE lg[LastConfigIndex(lg)].value
Voters(i)   == Config(log[i]).voters
Learners(i) == Config(log[i]).learners

\* A quorum is a strict majority of the voters V of one configuration
\* (paper §5.2, diss. §4.1); members of S outside V (learners, servers
\* removed or not yet added, a leader that removed itself) do not count.
\* The only quorum definition: elections, commit and the invariants use it.
IsQuorum(S, V) == 2 * Cardinality(S \cap V) > Cardinality(V)

\* lg holds the committed entry c (a record of the history `committed`).
HasEntry(lg, c) == c.index <= Len(lg) /\ lg[c.index] = c.entry

\* A candidate presenting log cand would get the vote of a server with log
\* voter, as far as logs go (paper §5.4.1).
AtLeastAsUpToDate(cand, voter) ==
    \/ LastTerm(cand) > LastTerm(voter)
    \/ LastTerm(cand) = LastTerm(voter) /\ Len(cand) >= Len(voter)

IsPrefix(s, t) == Len(s) <= Len(t) /\ s = SubSeq(t, 1, Len(s))

\* stableIndex: the last index of i's in-memory log known to be durable,
\* i.e. the length of the common prefix of log[i] and durableLog[i].
StableIndex(i) ==
    SetMax({n \in 0..Min(Len(log[i]), Len(durableLog[i])) :
                SubSeq(log[i], 1, n) = SubSeq(durableLog[i], 1, n)})

\* Everything i holds in memory is on disk (the Ready is fully persisted).
IsDurable(i) ==
    /\ durableTerm[i] = currentTerm[i]
    /\ durableVote[i] = votedFor[i]
    /\ durableLog[i]  = log[i]

\* The single message schema (docs/protocol.md, "Messages"): fields that a
\* message type does not use are 0 / <<>> / FALSE.
Message(type, src, dst, term, index, logTerm, hint, entries, commit, reject) ==
    [type |-> type, src |-> src, dst |-> dst, term |-> term,
     index |-> index, logTerm |-> logTerm, hint |-> hint,
     entries |-> entries, commit |-> commit, reject |-> reject]

\* Bags of messages, as functions from message to number of copies (> 0).
EmptyBag == [m \in {} |-> 0]
BagAdd(b, m) ==
    [x \in DOMAIN b \cup {m} |-> IF x # m THEN b[x]
                                 ELSE IF m \in DOMAIN b THEN b[m] + 1 ELSE 1]
BagRemove(b, m) ==
    IF b[m] = 1 THEN [x \in DOMAIN b \ {m} |-> b[x]]
                ELSE [b EXCEPT ![m] = @ - 1]
BagAddSet(b, S) ==  \* one more copy of each message of the set S
    [x \in DOMAIN b \cup S |-> (IF x \in DOMAIN b THEN b[x] ELSE 0)
                              + (IF x \in S THEN 1 ELSE 0)]

\* Put m on the network at once.
Send(m) == network' = BagAdd(network, m)
\* A receive step consumes one copy of m.
Discard(m) == network' = BagRemove(network, m)
\* Queue m as a message-after-persist of server i (sent by Persist(i)).
SendAfterPersist(i, m) == outbox' = [outbox EXCEPT ![i] = @ \cup {m}]

\* Record that server i now considers entries 1..newCommit of lg committed
\* (history only).  The term recorded is the term in which an entry was
\* first seen committed.
RecordCommit(i, lg, newCommit) ==
    committed' = committed \cup
        {[index |-> n, entry |-> lg[n], term |-> currentTerm[i]] :
            n \in {k \in (commitIndex[i] + 1)..newCommit :
                      ~\E c \in committed : c.index = k /\ c.entry = lg[k]}}

\* matchIndex of a server that is not (or newly) leader.
ZeroMatch == [j \in Server |-> 0]

-----------------------------------------------------------------------------
(***************************************************************************)
(* Initial state                                                           *)
(***************************************************************************)

Init ==
    /\ currentTerm   = [i \in Server |-> 0]
    /\ votedFor      = [i \in Server |-> Nil]
    /\ log           = [i \in Server |-> <<>>]
    /\ durableTerm   = [i \in Server |-> 0]
    /\ durableVote   = [i \in Server |-> Nil]
    /\ durableLog    = [i \in Server |-> <<>>]
    /\ durableCommit = [i \in Server |-> 0]
    /\ state         = [i \in Server |-> Follower]
    /\ commitIndex   = [i \in Server |-> 0]
    /\ votesGranted  = [i \in Server |-> {}]
    /\ matchIndex    = [i \in Server |-> ZeroMatch]
    /\ outbox        = [i \in Server |-> {}]
    /\ network       = EmptyBag
    /\ elections     = {}
    /\ committed     = {}

-----------------------------------------------------------------------------
(***************************************************************************)
(* Crash, restart and persistence                                          *)
(***************************************************************************)

\* The commit hint Persist(i) writes into HardState.
DurableHint(i) == IF CommitHint THEN commitIndex[i] ELSE 0

\* The runtime writes the current Ready: HardState (term, vote, commit
\* hint) and the log, then sends the messages that had to wait for it
\* (docs/protocol.md, "Persistence contract"; paper Figure 2: "updated on
\* stable storage before responding to RPCs").  The hint is the current
\* commitIndex or the one already on disk: the core lets a new commit index
\* ride the next write that happens anyway, or a tick later (RawNode.ready).
\* A smaller hint is safe: a restart only starts lower (CommitHint = FALSE
\* writes none at all).
PersistHint(i, hint) ==
    /\ hint \in {durableCommit[i], DurableHint(i)}
    /\ ~(IsDurable(i) /\ hint = durableCommit[i] /\ outbox[i] = {})
    /\ durableTerm'   = [durableTerm   EXCEPT ![i] = currentTerm[i]]
    /\ durableVote'   = [durableVote   EXCEPT ![i] = votedFor[i]]
    /\ durableLog'    = [durableLog    EXCEPT ![i] = log[i]]
    /\ durableCommit' = [durableCommit EXCEPT ![i] = hint]
    /\ network'       = BagAddSet(network, outbox[i])
    /\ outbox'        = [outbox EXCEPT ![i] = {}]
    /\ UNCHANGED <<memoryVars, state, commitIndex, votesGranted, matchIndex,
                   historyVars>>

Persist(i) == \E hint \in {durableCommit[i], DurableHint(i)} : PersistHint(i, hint)

\* Server i crashes and restarts: in-memory state is reloaded from disk,
\* volatile state is reset (role follower, commitIndex from the durable
\* hint, no votes, no progress) and unsent messages are lost.
Restart(i) ==
    /\ currentTerm'  = [currentTerm  EXCEPT ![i] = durableTerm[i]]
    /\ votedFor'     = [votedFor     EXCEPT ![i] = durableVote[i]]
    /\ log'          = [log          EXCEPT ![i] = durableLog[i]]
    /\ state'        = [state        EXCEPT ![i] = Follower]
    /\ commitIndex'  = [commitIndex  EXCEPT ![i] = durableCommit[i]]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
    /\ matchIndex'   = [matchIndex   EXCEPT ![i] = ZeroMatch]
    /\ outbox'       = [outbox       EXCEPT ![i] = {}]
    /\ UNCHANGED <<durableVars, network, historyVars>>

-----------------------------------------------------------------------------
(***************************************************************************)
(* Terms (paper §5.1)                                                      *)
(***************************************************************************)

\* Any message m to i with a higher term: adopt the term, clear the vote,
\* become follower (paper §5.1).  The message is then handled by its
\* handler in a later step (it stays in the network).
UpdateTerm(i, m) ==
    /\ m \in DOMAIN network
    /\ m.dst = i
    /\ m.term > currentTerm[i]
    /\ currentTerm'  = [currentTerm  EXCEPT ![i] = m.term]
    /\ votedFor'     = [votedFor     EXCEPT ![i] = Nil]
    /\ state'        = [state        EXCEPT ![i] = Follower]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
    /\ matchIndex'   = [matchIndex   EXCEPT ![i] = ZeroMatch]
    /\ UNCHANGED <<log, durableVars, commitIndex, outbox, network,
                   historyVars>>

-----------------------------------------------------------------------------
(***************************************************************************)
(* Leader election (paper §5.2, §5.4.1)                                    *)
(***************************************************************************)

\* The RequestVotes a server starting an election in term currentTerm[i] + 1
\* sends: one to every other voter of its configuration, advertising its
\* last log index and term (only their votes count, BecomeLeader).
RequestVotes(i) ==
    {Message(RequestVoteMsg, i, j, currentTerm[i] + 1, Len(log[i]),
             LastTerm(log[i]), 0, <<>>, 0, FALSE) : j \in Voters(i) \ {i}}

\* The election timer of a follower or candidate fires: start an election
\* in the next term and vote for oneself (paper §5.2).  The RequestVotes go
\* into the outbox: they are messages-after-persist, released by Persist(i)
\* only once the new term, the self-vote and the log they advertise are
\* durable (a candidate that could forget its own vote could vote twice in
\* a term).  This is what the core does: it queues them in the Ready's
\* messages_after_persist when the timer fires.  Only a voter of its own
\* configuration has an election timer: learners and servers outside the
\* configuration (not yet added, or removed, diss. §4.2.1, §4.2.2) never
\* start an election.
Timeout(i) ==
    /\ state[i] \in {Follower, Candidate}
    /\ i \in Voters(i)
    /\ state'        = [state        EXCEPT ![i] = Candidate]
    /\ currentTerm'  = [currentTerm  EXCEPT ![i] = @ + 1]
    /\ votedFor'     = [votedFor     EXCEPT ![i] = i]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {i}]
    /\ outbox'       = [outbox       EXCEPT ![i] = @ \cup RequestVotes(i)]
    /\ UNCHANGED <<log, durableVars, commitIndex, matchIndex, network,
                   historyVars>>

\* The candidate's log is at least as up-to-date as i's (paper §5.4.1).
CandidateUpToDate(i, m) ==
    \/ m.logTerm > LastTerm(log[i])
    \/ /\ m.logTerm = LastTerm(log[i])
       /\ m.index >= Len(log[i])

\* Server i grants m (a RequestVote) its vote: same term, no vote for
\* another candidate in this term (one vote per term, paper §5.2) and the
\* candidate is up to date (§5.4.1).
GrantVote(i, m) ==
    /\ m.term = currentTerm[i]
    /\ votedFor[i] \in {Nil, m.src}
    /\ CandidateUpToDate(i, m)

\* i's reply to the RequestVote m (in the state before i handles it).
RequestVoteReply(i, m) ==
    Message(RequestVoteRespMsg, i, m.src, currentTerm[i], 0, 0, 0, <<>>, 0,
            ~GrantVote(i, m))

\* Server i handles a RequestVote whose term is not higher than its own
\* (UpdateTerm runs first otherwise).  Grant iff GrantVote; a stale request
\* (lower term) is rejected with our term.  The reply waits for Persist, so
\* a grant is sent only once the vote is durable.
HandleRequestVote(i, m) ==
    /\ m \in DOMAIN network
    /\ m.type = RequestVoteMsg
    /\ m.dst = i
    /\ m.term <= currentTerm[i]
    /\ votedFor' = IF GrantVote(i, m) THEN [votedFor EXCEPT ![i] = m.src]
                                      ELSE votedFor
    /\ SendAfterPersist(i, RequestVoteReply(i, m))
    /\ Discard(m)
    /\ UNCHANGED <<currentTerm, log, durableVars, state, commitIndex,
                   votesGranted, matchIndex, historyVars>>

\* Server i receives a RequestVoteResp whose term is not higher than its
\* own.  A candidate counts a vote granted in its current term; a
\* rejection, a stale response (lower term) or one arriving after the
\* election is over is dropped.
HandleRequestVoteResponse(i, m) ==
    /\ m \in DOMAIN network
    /\ m.type = RequestVoteRespMsg
    /\ m.dst = i
    /\ m.term <= currentTerm[i]
    /\ votesGranted' =
           IF m.term = currentTerm[i] /\ state[i] = Candidate /\ ~m.reject
           THEN [votesGranted EXCEPT ![i] = @ \cup {m.src}]
           ELSE votesGranted
    /\ Discard(m)
    /\ UNCHANGED <<memoryVars, durableVars, state, commitIndex, matchIndex,
                   outbox, historyVars>>

\* A candidate with votes from a majority of the voters of its
\* configuration (counting itself) becomes leader (paper §5.2, diss. §4.1)
\* and appends a no-op entry of its term (diss. §6.4, paper §8), which lets
\* it commit entries of earlier terms indirectly.  (A candidate's log, hence
\* its configuration, does not change while it is a candidate.)
BecomeLeader(i) ==
    /\ state[i] = Candidate
    /\ IsQuorum(votesGranted[i], Voters(i))
    /\ state'        = [state        EXCEPT ![i] = Leader]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]  \* no longer needed
    /\ matchIndex'   = [matchIndex   EXCEPT ![i] = ZeroMatch]
    /\ log'        = [log        EXCEPT ![i] =
                         Append(@, [term |-> currentTerm[i], value |-> Noop])]
    /\ elections'  = elections \cup {<<currentTerm[i], i>>}
    /\ UNCHANGED <<currentTerm, votedFor, durableVars, commitIndex,
                   outbox, network, committed>>

\* CheckQuorum (diss. §6.2): a leader that has not heard from a majority of
\* the voters (itself included) within an election timeout steps down to
\* follower.  It keeps its term, its vote and its log: only the role
\* changes.  Timers are not modelled, so any leader may step down at any
\* time.  votesGranted (already {} for a leader) and matchIndex are reset
\* as for every server that is not leader (cf. UpdateTerm); responses that
\* arrive later are stale (HandleAppendEntriesResponse needs a leader).
StepDown(i) ==
    /\ state[i] = Leader
    /\ state'        = [state        EXCEPT ![i] = Follower]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
    /\ matchIndex'   = [matchIndex   EXCEPT ![i] = ZeroMatch]
    /\ UNCHANGED <<memoryVars, durableVars, commitIndex, outbox, network,
                   historyVars>>

-----------------------------------------------------------------------------
(***************************************************************************)
(* Log replication (paper §5.3)                                            *)
(***************************************************************************)

\* A client proposes v to leader i, which appends it to its log (§5.3).
ClientRequest(i, v) ==
    /\ state[i] = Leader
    /\ log' = [log EXCEPT ![i] = Append(@, [term |-> currentTerm[i], value |-> v])]
    /\ UNCHANGED <<currentTerm, votedFor, durableVars, volatileVars, network,
                   historyVars>>

\* Leader i sends j an AppendEntries with prevLogIndex = prev and the k
\* entries that follow it, leaderCommit = commitIndex[i].  Any prev <= last
\* index and any k >= 0: heartbeats (k = 0), probes, retries and batches.
\* Sent at once, not after persist (diss. §10.2.1).  Only to the members
\* of i's configuration, voters and learners (diss. §4.2.1); a server
\* outside it is sent nothing (a removed one is not told, diss. §4.2.2).
AppendEntries(i, j, prev, k) ==
    /\ state[i] = Leader
    /\ j # i
    /\ j \in Voters(i) \cup Learners(i)
    /\ prev \in 0..Len(log[i])
    /\ k \in 0..(Len(log[i]) - prev)
    /\ Send(Message(AppendEntriesMsg, i, j, currentTerm[i], prev,
                    TermAt(log[i], prev), 0, SubSeq(log[i], prev + 1, prev + k),
                    commitIndex[i], FALSE))
    /\ UNCHANGED <<memoryVars, durableVars, volatileVars, historyVars>>

\* The follower's log holds an entry at prevLogIndex with prevLogTerm.
LogOk(lg, m) ==
    IF m.index = 0 THEN TRUE
    ELSE m.index <= Len(lg) /\ lg[m.index].term = m.logTerm

\* The reject hint of docs/protocol.md (etcd's findConflictByTerm):
\* start at min(prevLogIndex, lastIndex) and walk down while the term there
\* is greater than prevLogTerm; i.e. the largest such index whose term is
\* <= prevLogTerm (index 0, term 0, always qualifies).
HintIndex(lg, m) ==
    SetMax({n \in 0..Min(m.index, Len(lg)) : TermAt(lg, n) <= m.logTerm})

\* lg after accepting the entries of m (LogOk holds): find the first entry
\* that is missing or has a different term; delete the conflicting suffix
\* from there and append the rest (paper §5.3, Figure 2 steps 3-4).  Entries
\* already present are left alone, so re-delivery is idempotent.
AcceptEntries(lg, m) ==
    LET last == m.index + Len(m.entries)
        diff == {n \in (m.index + 1)..last :
                    n > Len(lg) \/ lg[n].term # m.entries[n - m.index].term}
    IN  IF diff = {} THEN lg
        ELSE LET c == SetMin(diff)
             IN  SubSeq(lg, 1, c - 1) \o SubSeq(m.entries, c - m.index, Len(m.entries))

\* i's reply to the AppendEntries m (in the state before i handles it):
\* stale (lower term): reject carrying our term, so the sender steps down;
\* log inconsistent at prevLogIndex: reject with the hint; else success,
\* index = the index of the last entry of m.
AppendEntriesReply(i, m) ==
    IF m.term < currentTerm[i]
    THEN Message(AppendEntriesRespMsg, i, m.src, currentTerm[i], m.index, 0,
                 0, <<>>, 0, TRUE)
    ELSE IF ~LogOk(log[i], m)
    THEN LET h == HintIndex(log[i], m)
         IN  Message(AppendEntriesRespMsg, i, m.src, currentTerm[i], m.index,
                     TermAt(log[i], h), h, <<>>, 0, TRUE)
    ELSE Message(AppendEntriesRespMsg, i, m.src, currentTerm[i],
                 m.index + Len(m.entries), 0, 0, <<>>, 0, FALSE)

\* Server i handles an AppendEntries whose term is not higher than its own.
\*  - stale (lower term): reject (AppendEntriesReply);
\*  - same term: a candidate becomes follower (§5.2); then the consistency
\*    check (§5.3): reject with the hint, or accept the entries and advance
\*    commitIndex to min(leaderCommit, index of last new entry).
\* Every reply waits for Persist ("after those entries are durable").
HandleAppendEntries(i, m) ==
    /\ m \in DOMAIN network
    /\ m.type = AppendEntriesMsg
    /\ m.dst = i
    /\ m.term <= currentTerm[i]
    /\ SendAfterPersist(i, AppendEntriesReply(i, m))
    /\ \/ /\ m.term < currentTerm[i]
          /\ UNCHANGED <<log, state, commitIndex, votesGranted, committed>>
       \/ /\ m.term = currentTerm[i]
          /\ state[i] # Leader     \* at most one leader per term (§5.2)
          /\ state'        = [state        EXCEPT ![i] = Follower]
          /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
          /\ \/ /\ ~LogOk(log[i], m)
                /\ UNCHANGED <<log, commitIndex, committed>>
             \/ /\ LogOk(log[i], m)
                /\ LET newLog    == AcceptEntries(log[i], m)
                       last      == m.index + Len(m.entries)
                       newCommit == Max(commitIndex[i], Min(m.commit, last))
                   IN  /\ log'         = [log EXCEPT ![i] = newLog]
                       /\ commitIndex' = [commitIndex EXCEPT ![i] = newCommit]
                       /\ RecordCommit(i, newLog, newCommit)
    /\ Discard(m)
    /\ UNCHANGED <<currentTerm, votedFor, durableVars, matchIndex, elections>>

\* Server i receives an AppendEntriesResp whose term is not higher than its
\* own.  On a success, leader i learns that j durably stores its log up to
\* m.index: matchIndex = max(matchIndex, m.index).  Rejections carry a hint
\* for nextIndex; the spec has no nextIndex (the leader may send any
\* prevLogIndex), so they change nothing here.  Stale responses (lower
\* term, or no longer leader) are dropped.
HandleAppendEntriesResponse(i, m) ==
    /\ m \in DOMAIN network
    /\ m.type = AppendEntriesRespMsg
    /\ m.dst = i
    /\ m.term <= currentTerm[i]
    /\ matchIndex' =
           IF m.term = currentTerm[i] /\ state[i] = Leader /\ ~m.reject
           THEN [matchIndex EXCEPT ![i][m.src] = Max(@, m.index)]
           ELSE matchIndex
    /\ Discard(m)
    /\ UNCHANGED <<memoryVars, durableVars, state, commitIndex, votesGranted,
                   outbox, historyVars>>

\* The servers known to store i's log up to index n: i itself if its own
\* log is durable up to n, and the followers whose matchIndex is >= n.
Agree(i, n) ==
    (IF StableIndex(i) >= n THEN {i} ELSE {})
        \cup {j \in Server \ {i} : matchIndex[i][j] >= n}

\* The commit rule (paper §5.3, §5.4.2): an index N stored by a majority
\* of the voters of the leader's configuration (its latest configuration
\* entry, committed or not, diss. §4.1; the leader itself only if it is one
\* of them) with term(N) = currentTerm.  Entries of earlier terms are
\* committed only indirectly, through an entry of the current term (Figure
\* 8).  With CommitAnyTerm the term condition is dropped: the Figure 8 bug.
CommitCandidates(i) ==
    {n \in (commitIndex[i] + 1)..Len(log[i]) :
        /\ IsQuorum(Agree(i, n), Voters(i))
        /\ CommitAnyTerm \/ log[i][n].term = currentTerm[i]}

\* A leader that is not a voter of its configuration (it removed itself, or
\* made itself a learner) steps down once that configuration entry is
\* committed (diss. §4.2.2); until then it keeps replicating.
RemovedOnCommit(i, newCommit) ==
    i \notin Voters(i) /\ LastConfigIndex(log[i]) <= newCommit

\* The leader advances commitIndex to ANY of these indexes, not only the
\* largest: committing a smaller one is as safe, and the core may see a
\* smaller quorum than the spec does at that point (it counts its own log
\* only once the write has completed, the spec from Persist on).  If that
\* commits its own removal, it becomes follower in the same step (term,
\* vote and log kept, as StepDown).
AdvanceCommitIndex(i) ==
    /\ state[i] = Leader
    /\ \E newCommit \in CommitCandidates(i) :
           /\ commitIndex' = [commitIndex EXCEPT ![i] = newCommit]
           /\ RecordCommit(i, log[i], newCommit)
           /\ IF RemovedOnCommit(i, newCommit)
              THEN /\ state'      = [state      EXCEPT ![i] = Follower]
                   /\ matchIndex' = [matchIndex EXCEPT ![i] = ZeroMatch]
              ELSE UNCHANGED <<state, matchIndex>>
    /\ UNCHANGED <<memoryVars, durableVars, votesGranted, outbox, network,
                   elections>>

-----------------------------------------------------------------------------
(***************************************************************************)
(* Membership changes, one server at a time (diss. §4.1-§4.2)              *)
(***************************************************************************)

\* The role of server j in configuration cfg, and cfg with j given role r.
VoterRole   == "voter"
LearnerRole == "learner"
NoRole      == "none"
MemberRoles == {VoterRole, LearnerRole, NoRole}
RoleIn(cfg, j) ==
    IF j \in cfg.voters THEN VoterRole
    ELSE IF j \in cfg.learners THEN LearnerRole ELSE NoRole
WithRole(cfg, j, r) ==
    ConfigValue((cfg.voters \ {j}) \cup (IF r = VoterRole THEN {j} ELSE {}),
                (cfg.learners \ {j}) \cup (IF r = LearnerRole THEN {j} ELSE {}))

\* Leader i may append a configuration entry (diss. §4.1):
\*  (a) one change at a time: the latest configuration entry in its log
\*      (if any) is committed;
\*  (b) the no-op rule (diss. §4.1 errata, Ongaro's raft-dev post of
\*      2015): it has committed an entry of its current term (its no-op).
\*      Without (b), a leader may replace an uncommitted configuration
\*      entry of an earlier term that it does not hold with its own
\*      change, and the two changes need not share a voter in their
\*      quorums: two leaders in one term, or a committed entry lost.
\* The log's terms never decrease, so (b) is "the entry at commitIndex is
\* of the current term".
MayChangeConfig(i) ==
    /\ state[i] = Leader
    /\ LastConfigIndex(log[i]) <= commitIndex[i]
    /\ ConfigNoopRule => TermAt(log[i], commitIndex[i]) = currentTerm[i]

\* Leader i changes the role of ONE server j to r (voter, learner, none):
\* add or remove a voter (a quorum change), add, remove, promote or demote
\* a learner.  A replacement is several such steps (add learner, promote,
\* remove the old voter).  The entry takes effect on i at once, before it
\* is committed (on every server: as soon as it is in its log).  The
\* configuration always keeps a voter.
ProposeConfigChange(i, j, r) ==
    LET cfg == Config(log[i])
        new == WithRole(cfg, j, r)
    IN  /\ MayChangeConfig(i)
        /\ r # RoleIn(cfg, j)
        /\ new.voters # {}
        /\ log' = [log EXCEPT ![i] =
                      Append(@, [term |-> currentTerm[i], value |-> new])]
        /\ UNCHANGED <<currentTerm, votedFor, durableVars, volatileVars,
                       network, historyVars>>

-----------------------------------------------------------------------------
(***************************************************************************)
(* The network                                                             *)
(***************************************************************************)

\* A copy of m is lost.
DropMessage(m) ==
    /\ m \in DOMAIN network
    /\ Discard(m)
    /\ UNCHANGED <<memoryVars, durableVars, volatileVars, historyVars>>

\* The network delivers m twice: one more copy of m is in flight.
DuplicateMessage(m) ==
    /\ m \in DOMAIN network
    /\ Send(m)
    /\ UNCHANGED <<memoryVars, durableVars, volatileVars, historyVars>>

-----------------------------------------------------------------------------
(***************************************************************************)
(* The specification                                                       *)
(***************************************************************************)

\* Every step except crashes, CheckQuorum step-downs and configuration
\* changes, the three that the bounded models of MCRaft.tla restrict.
CoreNext ==
    \/ \E i \in Server : Timeout(i)
    \/ \E i \in Server : BecomeLeader(i)
    \/ \E i \in Server, v \in Value : ClientRequest(i, v)
    \/ \E i, j \in Server : \E prev \in 0..Len(log[i]) :
           \E k \in 0..(Len(log[i]) - prev) : AppendEntries(i, j, prev, k)
    \/ \E i \in Server : AdvanceCommitIndex(i)
    \/ \E i \in Server : Persist(i)
    \/ \E i \in Server, m \in DOMAIN network : UpdateTerm(i, m)
    \/ \E i \in Server, m \in DOMAIN network : HandleRequestVote(i, m)
    \/ \E i \in Server, m \in DOMAIN network : HandleRequestVoteResponse(i, m)
    \/ \E i \in Server, m \in DOMAIN network : HandleAppendEntries(i, m)
    \/ \E i \in Server, m \in DOMAIN network : HandleAppendEntriesResponse(i, m)
    \/ \E m \in DOMAIN network : DropMessage(m)
    \/ \E m \in DOMAIN network : DuplicateMessage(m)

\* Every step except crashes.
NextExceptRestart ==
    \/ CoreNext
    \/ \E i \in Server : StepDown(i)
    \/ \E i, j \in Server, r \in MemberRoles : ProposeConfigChange(i, j, r)

Next == NextExceptRestart \/ \E i \in Server : Restart(i)

Spec == Init /\ [][Next]_vars

-----------------------------------------------------------------------------
(***************************************************************************)
(* Properties                                                              *)
(***************************************************************************)

ConfigValues == [voters : SUBSET Server, learners : SUBSET Server]
\* (ConfigValues last: a string value is never compared with a record.)
Entries == [term : Nat, value : Value \cup {Noop} \cup ConfigValues]
Messages == [type : {RequestVoteMsg, RequestVoteRespMsg, AppendEntriesMsg,
                     AppendEntriesRespMsg},
             src : Server, dst : Server, term : Nat, index : Nat,
             logTerm : Nat, hint : Nat, entries : Seq(Entries),
             commit : Nat, reject : BOOLEAN]

TypeOK ==
    /\ currentTerm   \in [Server -> Nat]
    /\ votedFor      \in [Server -> Server \cup {Nil}]
    /\ log           \in [Server -> Seq(Entries)]
    /\ durableTerm   \in [Server -> Nat]
    /\ durableVote   \in [Server -> Server \cup {Nil}]
    /\ durableLog    \in [Server -> Seq(Entries)]
    /\ durableCommit \in [Server -> Nat]
    /\ state         \in [Server -> {Follower, Candidate, Leader}]
    /\ commitIndex   \in [Server -> Nat]
    /\ votesGranted  \in [Server -> SUBSET Server]
    /\ matchIndex    \in [Server -> [Server -> Nat]]
    /\ \A i \in Server : outbox[i] \subseteq Messages
    /\ DOMAIN network \subseteq Messages
    /\ \A m \in DOMAIN network : network[m] \in Nat \ {0}

\* Election Safety (paper §5.2, Figure 3): at most one leader can be
\* elected in a given term -- over the whole history, not just at once.
ElectionSafety ==
    \A e1, e2 \in elections : e1[1] = e2[1] => e1[2] = e2[2]

\* Leader Append-Only (paper §5.3, Figure 3): a leader never overwrites or
\* deletes entries in its log; it only appends.  An action property.
LeaderAppendOnlyStep ==
    \A i \in Server :
        (state[i] = Leader /\ state'[i] = Leader
           /\ currentTerm'[i] = currentTerm[i])
        => IsPrefix(log[i], log'[i])
LeaderAppendOnly == [][LeaderAppendOnlyStep]_vars

\* Log Matching (paper §5.3, Figure 3): if two logs contain an entry with
\* the same index and term, the logs are identical up to that index.
\* Checked over every in-memory and every durable log.
AllLogs == {log[i] : i \in Server} \cup {durableLog[i] : i \in Server}
LogMatching ==
    \A l1, l2 \in AllLogs :
        \A n \in 1..Min(Len(l1), Len(l2)) :
            l1[n].term = l2[n].term => SubSeq(l1, 1, n) = SubSeq(l2, 1, n)

\* Leader Completeness (paper §5.4, §5.4.3, Figure 3): an entry committed
\* in term T is present in the log of every leader of a term > T.
LeaderCompleteness ==
    \A c \in committed : \A i \in Server :
        (state[i] = Leader /\ currentTerm[i] > c.term)
            => HasEntry(log[i], c)

\* State Machine Safety (paper §5.4.3, Figure 3): no two servers ever
\* commit (hence apply) different entries at the same index.
StateMachineSafety ==
    \A c1, c2 \in committed : c1.index = c2.index => c1.entry = c2.entry

\* The prefix of every log up to its commitIndex is committed history: a
\* server never truncates (docs/protocol.md: "never at or below
\* commitIndex") or loses a committed entry, and commitIndex never points
\* past its log, also after a restart from the durable commit hint.
CommittedPrefixStable ==
    \A i \in Server :
        /\ commitIndex[i] <= Len(log[i])
        /\ \A n \in 1..commitIndex[i] :
              \E c \in committed : c.index = n /\ c.entry = log[i][n]

\* A log that lacks a committed entry can never win an election: the
\* servers that would vote for a candidate presenting such a log (their
\* in-memory or, after a crash, durable log is not more up-to-date,
\* §5.4.1) are a minority.  This is the heart of the Leader Completeness
\* proof (paper §5.4.3: "the voter ... contained the committed entry"),
\* stated as a state invariant, so it catches an unsafe commit (Figure 8,
\* §5.4.2) when it happens rather than when a later leader overwrites it.
\* The voters counted are those of lg's own configuration, the one a
\* candidate presenting lg counts in (BecomeLeader).
CommittedBlocksElection ==
    \A c \in committed : \A s \in Server : \A lg \in {log[s], durableLog[s]} :
        ~HasEntry(lg, c) =>
            ~IsQuorum({s} \cup {v \in Server :
                                   \/ AtLeastAsUpToDate(lg, log[v])
                                   \/ AtLeastAsUpToDate(lg, durableLog[v])},
                      Config(lg).voters)

\* Committed entries are durable on a majority (paper §5.3 with Figure 2's
\* "updated on stable storage before responding"; diss. §3.8, §10.2.1):
\* a committed entry survives the crash of any minority.  Stated for a
\* fixed configuration (InitVoters): with membership changes a later
\* configuration's majority need not hold an entry until a later commit,
\* so the membership models do not check it.
CommittedEntriesDurable ==
    \A c \in committed :
        IsQuorum({s \in Server : /\ c.index <= Len(durableLog[s])
                                 /\ durableLog[s][c.index] = c.entry},
                 InitVoters)

\* One configuration change at a time (diss. §4.1): no log holds more than
\* one configuration entry that is not committed history.
OneUncommittedConfig ==
    \A lg \in AllLogs :
        \A n1, n2 \in ConfigIndexes(lg) :
            (/\ ~\E c \in committed : c.index = n1 /\ c.entry = lg[n1]
             /\ ~\E c \in committed : c.index = n2 /\ c.entry = lg[n2])
                => n1 = n2

\* A leader that is not a voter of its configuration has not yet committed
\* that configuration (it steps down when it does, diss. §4.2.2).
RemovedLeaderStepsDown ==
    \A i \in Server :
        (state[i] = Leader /\ i \notin Voters(i))
            => LastConfigIndex(log[i]) > commitIndex[i]

=============================================================================
