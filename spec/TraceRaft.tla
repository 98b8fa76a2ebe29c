------------------------------ MODULE TraceRaft ------------------------------
(***************************************************************************)
(* Trace validation: is a trace of the core a behaviour of Raft.tla?      *)
(*                                                                         *)
(* The traces are the event lists the core writes (spec/README.md, "Traces: *)
(* the event schema"), written by spec/tla_trace.py as TLA+ sequences of    *)
(* records into the generated module TraceData (operator Traces, a         *)
(* sequence of traces; TraceServer, TraceInitVoters, TraceValue,           *)
(* TraceNoop, TraceConfFrom).  One TLC run                                 *)
(* checks all of them: the variable t (which trace) is chosen in the       *)
(* initial state and never changes.                                        *)
(*                                                                         *)
(* The variable l is the position in trace t: every step of TraceNext is   *)
(* one of Raft.tla's actions (or a stuttering step) conjoined with "the    *)
(* event at position l is what this action does", and moves l on by one.  *)
(* A few events need more than one spec step; the steps before the last    *)
(* leave l where it is ("hidden" steps, each enabled only at the point of  *)
(* the trace that needs it, so TLC explores one path):                    *)
(*   - recv of a message with a higher term: UpdateTerm first (§5.1);      *)
(*   - recv: DuplicateMessage first, so that the network keeps a copy --   *)
(*     the trace may receive the same message again (the network           *)
(*     duplicates), and an extra copy never disables a spec action;       *)
(*   - propose of k entries: k ClientRequest steps (counter `sub`).        *)
(* Every step, hidden or not, must keep every invariant of Raft.tla        *)
(* (TraceInvariants, evaluated on the new state) and LeaderAppendOnlyStep. *)
(*                                                                         *)
(* Event -> spec action (the mapping of spec/README.md, as spec/checker.py  *)
(* replays it):                                                            *)
(*   restart n ...     first event of n: none (Init); then Restart(n); the *)
(*                     state n restarts from must be the spec's            *)
(*   timeout n term    Timeout(n), new term = term                         *)
(*   leader n term     BecomeLeader(n) in term                             *)
(*   stepdown n term   StepDown(n) of the leader of term (CheckQuorum,     *)
(*                     diss. §6.2): term, vote and log unchanged           *)
(*   propose n es      ClientRequest(n, v) for each entry, at its index    *)
(*   recv n m          [DuplicateMessage(m)] [UpdateTerm(n, m)] then       *)
(*                     HandleRequestVote / HandleRequestVoteResponse /     *)
(*                     HandleAppendEntries / HandleAppendEntriesResponse   *)
(*   send n m          AppendEntries(n, m.dst, m.index, Len(m.entries)),   *)
(*     (not after      the message sent must be m                          *)
(*      persist)                                                           *)
(*   send n m          none: m must be one of the replies the spec's       *)
(*     (after persist) actions put in n's outbox and n has not yet         *)
(*                     reported (the bag `pending`)                        *)
(*   commit n c        AdvanceCommitIndex(n) to c                          *)
(*   ready n hint      PersistHint(n, hint) if the trace has n's `advance` *)
(*                     before n's next ready or restart (the write         *)
(*                     completed), else none (lost in a crash); a Ready    *)
(*                     with nothing to write is a stuttering step          *)
(*   advance n         none                                                *)
(*   state n ...       none: n's term, vote, role, commit, last index and  *)
(*                     last term equal the spec's, and n has reported      *)
(*                     every reply the spec's actions produced             *)
(* Snapshots (spec/README.md, "Snapshots and compaction in the mapping"):  *)
(*   send n chunk      AppendEntries(n, dst, 0, index): the AppendEntries  *)
(*                     from prevLogIndex 0 carrying the leader's log       *)
(*                     1..index, which must be at or below its commitIndex *)
(*                     (snapMsg remembers which abstract message the chunk *)
(*                     stands for)                                         *)
(*   recv n chunk      [DuplicateMessage] [UpdateTerm(n, am)], then none   *)
(*                     if n reports `install` before its next `state`,     *)
(*                     else DropMessage(am) (a partial transfer changes no *)
(*                     spec state)                                         *)
(*   install n chunk   HandleAppendEntries(n, am) of the chunk just        *)
(*                     received, in n's current term                       *)
(*   compact n i t     none: (i, t) is in n's log at or below commitIndex  *)
(*   send/recv n ack   none (InstallSnapshotResp: chunk acknowledgements,  *)
(*                     on the network, never of a higher term)             *)
(* PreVote (diss. §9.6; message types 7, 8 of the core):                   *)
(*   send/recv n PreVote, PreVoteResp                                      *)
(*                     none: a pre-vote round changes no spec variable     *)
(*                     (no term adopted, even a higher one; no vote; role  *)
(*                     unchanged); sent at once (never after persist),     *)
(*                     received unchanged, by its destination, only once   *)
(*                     sent; a granted round is followed by `timeout`      *)
(*                     (Timeout(n), as without PreVote)                    *)
(*   restart           also: a snapshot restarted from (first - 1) is at   *)
(*                     or below the restored commitIndex                   *)
(* Membership (diss. ch. 4; spec/README.md, "Membership changes in the     *)
(* trace").  Configuration entries are Raft.tla's values [voters |-> V,    *)
(* learners |-> L] (client values and the no-op are records [val |-> s]);  *)
(* TraceServer is every server of the traces, InitVoters the initial       *)
(* voters; a server outside them joins with the empty configuration:       *)
(*   propose n [conf]  ProposeConfigChange(n, j, r) for the one j, r with  *)
(*                     WithRole(Config(log[n]), j, r) = the entry's value  *)
(*   conf n i V L      none: n's next `state` compares (V, L) with         *)
(*                     Config(log[n]) (the empty configuration for a       *)
(*                     joiner without configuration entry: UsedConfig)     *)
(*                     and i with LastConfigIndex(log[n])                  *)
(*   commit n c        AdvanceCommitIndex(n) as before; if it commits n's  *)
(*                     own removal (the spec makes n a follower), n is     *)
(*                     Removing until its `stepdown`: it reports role      *)
(*                     Leader, may send AppendEntries as the leader it     *)
(*                     was (RemovingAppendEntries) and TimeoutNow, and     *)
(*                     must report `stepdown` (no step) before its next    *)
(*                     ready                                               *)
(*   send n TimeoutNow none: n leads m.term (or is Removing in it), the    *)
(*                     target is a voter of n's configuration; never       *)
(*                     after persist                                       *)
(*   recv n TimeoutNow none: sent, for n, not of a higher term than n's;   *)
(*                     the target's campaign is its `timeout` event        *)
(* CommittedEntriesDurable (stated for InitVoters) is not checked once a   *)
(* configuration entry was proposed (TraceConfFrom), as in the checker.    *)
(*   send n chunk      also: it carries no entry, or one configuration     *)
(*                     entry at (index, logTerm) holding the configuration *)
(*                     of n's log up to index (ConfigUpTo)                 *)
(*   install n c TRUE  also: a joiner's configuration without              *)
(*                     configuration entry is now InitConfig (`learned`,   *)
(*                     persisted by the next written Ready, restored by    *)
(*                     restart), and the reported index is reset           *)
(*                                                                         *)
(* The verdict: trace t is a behaviour of the spec iff TLC reaches a state *)
(* with t and l = Len(Traces[t]) + 1.  TraceReport (a state constraint     *)
(* that is always TRUE) prints <<"trace", t, l>> for every state TLC       *)
(* finds; spec/tla_trace.py reads the largest l of each trace: the event   *)
(* at that position is the first that no behaviour of the spec explains.  *)
(***************************************************************************)
EXTENDS Raft, TraceData, TLC

VARIABLES
    t,          \* which trace (index into Traces); never changes
    l,          \* position in trace t: the event the next step must match
    sub,        \* entries of the propose event at l already appended
    pending,    \* pending[i]: bag of replies the spec's actions queued in
                \* i's outbox that i has not reported by a `send` yet
    started,    \* servers whose first event (restart = Init) was seen
    snapMsg,    \* snapMsg[c]: the AppendEntries (from prevLogIndex 0) that
                \* the InstallSnapshot chunk c (a trace record, with its id)
                \* stands for, fixed when c was sent
    noStepSent, \* the records of the no-step messages sent
                \* (InstallSnapshotResp, PreVote, PreVoteResp)
    chunk,      \* chunk[i]: <<c>> for the chunk i received last in the
                \* current API call (until its `state` event), else <<>>
    reported,   \* reported[i]: the configuration i last reported (`conf`
                \* event), [voters, learners, index]; compared at its `state`
    removing,   \* removing[i]: the term in which leader i committed its own
                \* removal and has not yet reported `stepdown` (0: none)
    learned,    \* servers outside InitVoters that installed a snapshot: their
                \* configuration before any configuration entry is then the
                \* snapshot's, InitConfig (the core's, as the spec's)
    durableLearned  \* ... as persisted with the snapshot (restored on restart)

traceVars == <<t, l, sub, pending, started, snapMsg, noStepSent, chunk,
               reported, removing, learned, durableLearned>>
\* What the events of the unsnapshotted mapping leave alone.
snapVars == <<snapMsg, noStepSent, chunk>>
\* What the events of the mapping without membership changes leave alone.
memberVars == <<reported, removing, learned, durableLearned>>
learnedVars == <<learned, durableLearned>>

Trace == Traces[t]
Ev == Trace[l]

Roles == <<"Follower", "Candidate", "Leader">>

\* Trace entries are [index, term, value]; the spec's are [term, value].
SpecEntries(es) == [k \in 1..Len(es) |-> [term |-> es[k].term, value |-> es[k].value]]
\* The entries es carry the indexes first, first + 1, ...
IndexedFrom(es, first) == \A k \in 1..Len(es) : es[k].index = first + k - 1

\* A trace message as a message of the spec (no id; entries without index).
SpecMsg(tm) == Message(tm.type, tm.src, tm.dst, tm.term, tm.index, tm.logTerm,
                       tm.hint, SpecEntries(tm.entries), tm.commit, tm.reject)

\* Every invariant of Raft.tla.
TraceInvariants ==
    /\ TypeOK
    /\ ElectionSafety
    /\ LogMatching
    /\ LeaderCompleteness
    /\ StateMachineSafety
    /\ CommittedPrefixStable
    \* stated for InitVoters: not checked once a configuration entry was
    \* proposed (as raft/trace_checker.py)
    /\ l > TraceConfFrom[t] \/ CommittedEntriesDurable
    /\ CommittedBlocksElection

\* Every step: the new state satisfies the invariants, and a leader only
\* appends (the action property LeaderAppendOnly).
Checked == TraceInvariants' /\ LeaderAppendOnlyStep

\* A step that consumes the event at l.
Consume == l' = l + 1 /\ sub' = 0

\* InstallSnapshot chunks and their acknowledgements (message types 5, 6 of
\* the core) and PreVote requests and responses (types 7, 8): not messages
\* of Raft.tla.  Their trace records carry the message id (renumbered by
\* tla_trace.py), so a record names one send.  All but the chunk are no
\* step of the spec (spec/checker.py's NO_STEP_MSGS).
SnapChunk   == "InstallSnapshot"
SnapAck     == "InstallSnapshotResp"
PreVoteReq  == "PreVote"
PreVoteResp == "PreVoteResp"
TimeoutNow  == "TimeoutNow"
NoStepTypes == {SnapAck, PreVoteReq, PreVoteResp, TimeoutNow}
IsChunk(tm)  == tm.type = SnapChunk
IsNoStep(tm) == tm.type \in NoStepTypes
NotSpecMsg(tm) == IsChunk(tm) \/ IsNoStep(tm)    \* not a Raft.tla message

\* The AppendEntries a chunk of leader i to j for the snapshot at index k
\* stands for: prevLogIndex 0, i's entries 1..k, leaderCommit commitIndex[i]
\* (what AppendEntries(i, j, 0, k) sends).
SnapAppend(i, j, k) ==
    Message(AppendEntriesMsg, i, j, currentTerm[i], 0, 0, 0,
            SubSeq(log[i], 1, k), commitIndex[i], FALSE)

\* Membership (spec/README.md, "Membership changes in the trace").
\* A configuration entry's value is a record with a field voters; client
\* values and the no-op are records [val |-> ...].
IsConfValue(v) == "voters" \in DOMAIN v
NoConfig == [voters |-> {}, learners |-> {}]
\* The configuration the core starts n with: the initial voters for one of
\* them; the empty one for a server that joins later (RawNode(id, [])).
StartConfig(n) ==
    IF n \in InitVoters THEN [voters |-> InitVoters, learners |-> {}, index |-> 0]
                       ELSE [voters |-> {}, learners |-> {}, index |-> 0]
\* The configuration n must use: Config(log[n]), except that a server
\* outside InitVoters with no configuration entry in its log has the empty
\* one (the spec gives it InitConfig: the two agree on everything the spec
\* asks of it, it is a voter of neither).
UsedConfig(n) ==
    IF LastConfigIndex(log[n]) = 0 /\ n \notin InitVoters \cup learned THEN NoConfig
    ELSE Config(log[n])
\* The configuration of leader n's log up to index k (what its snapshot at k
\* carries), as UsedConfig.
ConfigUpTo(n, k) ==
    LET lg == SubSeq(log[n], 1, k) IN
    IF LastConfigIndex(lg) = 0 /\ n \notin InitVoters \cup learned THEN NoConfig
    ELSE Config(lg)
\* Leader n committed its own removal (RemovedOnCommit: the spec made it a
\* follower in that AdvanceCommitIndex step) and has not yet reported
\* `stepdown`: the core does that step in two and, in between, still sends
\* as the leader (the AppendEntries with the new commit index, TimeoutNow
\* to a voter); it takes no proposal, commits nothing, and steps down
\* before its next Ready.
Removing(n) == removing[n] # 0 /\ removing[n] = currentTerm[n]

\* The AppendEntries of a removing leader: AppendEntries(i, j, prev, k) as
\* if i were still leader (state[i] = Leader dropped).
RemovingAppendEntries(i, j, prev, k) ==
    /\ Removing(i)
    /\ j # i
    /\ j \in Voters(i) \cup Learners(i)
    /\ prev \in 0..Len(log[i])
    /\ k \in 0..(Len(log[i]) - prev)
    /\ Send(Message(AppendEntriesMsg, i, j, currentTerm[i], prev,
                    TermAt(log[i], prev), 0, SubSeq(log[i], prev + 1, prev + k),
                    commitIndex[i], FALSE))
    /\ UNCHANGED <<memoryVars, durableVars, volatileVars, historyVars>>

-----------------------------------------------------------------------------
(* One operator per event kind.  n is the event's server.                 *)

RestartEvent(ev) ==
    LET n == ev.n IN
    /\ n \in Server
    /\ \/ /\ n \notin started                  \* Init: nothing to do
          /\ started' = started \cup {n}
          /\ UNCHANGED <<vars, pending>>
          /\ <<currentTerm[n], votedFor[n], commitIndex[n], Len(log[n])>>
                 = <<ev.term, ev.vote, ev.commit, ev.last>>
       \/ /\ n \in started
          /\ Restart(n)
          /\ pending' = [pending EXCEPT ![n] = EmptyBag]
          /\ UNCHANGED started
          /\ <<currentTerm'[n], votedFor'[n], commitIndex'[n], Len(log'[n]),
               LastTerm(log'[n])>>
                 = <<ev.term, ev.vote, ev.commit, ev.last, ev.lastTerm>>
          \* a snapshot holds only committed entries (the log keeps them)
          /\ ev.first - 1 <= commitIndex'[n]
    /\ chunk' = [chunk EXCEPT ![n] = <<>>]
    \* the core starts from its constructor's configuration (a `conf` follows
    \* if its log holds another); a removal in progress is forgotten
    /\ reported' = [reported EXCEPT ![n] = StartConfig(n)]
    /\ removing' = [removing EXCEPT ![n] = 0]
    /\ learned' = IF n \in durableLearned THEN learned \cup {n} ELSE learned \ {n}
    /\ UNCHANGED <<snapMsg, noStepSent, durableLearned>>

TimeoutEvent(ev) ==
    /\ Timeout(ev.n)
    /\ currentTerm'[ev.n] = ev.term
    /\ pending' = [pending EXCEPT ![ev.n] = BagAddSet(@, RequestVotes(ev.n))]
    /\ UNCHANGED <<started, snapVars, memberVars>>

LeaderEvent(ev) ==
    /\ currentTerm[ev.n] = ev.term
    /\ BecomeLeader(ev.n)
    /\ UNCHANGED <<pending, started, snapVars, memberVars>>

\* CheckQuorum (diss. §6.2): the leader of ev.term steps down, keeping its
\* term (StepDown leaves currentTerm unchanged; the next state event
\* compares it).
\* Or a leader that committed its own removal (Removing) reports the
\* role change the spec made in that AdvanceCommitIndex: no spec step.
StepDownEvent(ev) ==
    /\ currentTerm[ev.n] = ev.term
    /\ IF Removing(ev.n)
       THEN /\ removing' = [removing EXCEPT ![ev.n] = 0]
            /\ UNCHANGED <<vars, reported, learnedVars>>
       ELSE /\ StepDown(ev.n)
            /\ UNCHANGED memberVars
    /\ UNCHANGED <<pending, started, snapVars>>

\* One ClientRequest for entry sub + 1 of the event; the last one consumes it.
ProposeEvent(ev) ==
    IF ev.entries = <<>>
    THEN state[ev.n] = Leader /\ UNCHANGED <<vars, pending, started, snapVars, memberVars>> /\ Consume
    ELSE LET e == ev.entries[sub + 1] IN
         /\ e.index = Len(log[ev.n]) + 1
         /\ e.term = currentTerm[ev.n]
         /\ IF IsConfValue(e.value)
            THEN \E j \in Server, r \in MemberRoles :
                    /\ WithRole(Config(log[ev.n]), j, r) = e.value
                    /\ ProposeConfigChange(ev.n, j, r)
            ELSE ClientRequest(ev.n, e.value)
         /\ IF sub + 1 = Len(ev.entries) THEN Consume
                                         ELSE sub' = sub + 1 /\ l' = l
         /\ UNCHANGED <<pending, started, snapVars, memberVars>>

\* The steps before the handler: the network duplicates m (so a copy stays
\* in flight), then n adopts m's term if it is higher.
RecvHidden(ev) ==
    LET n == ev.n
        m == SpecMsg(ev.m)
    IN  /\ ~NotSpecMsg(ev.m)
        /\ IndexedFrom(ev.m.entries, ev.m.index + 1)
        /\ \/ /\ m \in DOMAIN network
              /\ network[m] = 1
              /\ DuplicateMessage(m)
           \/ /\ m \in DOMAIN network
              /\ network[m] > 1
              /\ UpdateTerm(n, m)
        /\ UNCHANGED <<l, sub, pending, started, snapVars, memberVars>>

RecvEvent(ev) ==
    LET n == ev.n
        m == SpecMsg(ev.m)
    IN  /\ IndexedFrom(ev.m.entries, ev.m.index + 1)
        /\ m \in DOMAIN network
        /\ network[m] > 1
        /\ \/ /\ HandleRequestVote(n, m)
              /\ pending' = [pending EXCEPT ![n] = BagAdd(@, RequestVoteReply(n, m))]
           \/ /\ HandleRequestVoteResponse(n, m)
              /\ UNCHANGED pending
           \/ /\ HandleAppendEntries(n, m)
              /\ pending' = [pending EXCEPT ![n] = BagAdd(@, AppendEntriesReply(n, m))]
           \/ /\ HandleAppendEntriesResponse(n, m)
              /\ UNCHANGED pending
        /\ UNCHANGED <<started, snapVars, memberVars>>

SendEvent(ev) ==
    LET n == ev.n
        m == SpecMsg(ev.m)
    IN  /\ ev.m.src = n
        /\ ~NotSpecMsg(ev.m)
        /\ IF ev.afterPersist
           THEN /\ m \in DOMAIN pending[n]
                /\ pending' = [pending EXCEPT ![n] = BagRemove(@, m)]
                /\ UNCHANGED vars
           ELSE /\ ev.m.type = AppendEntriesMsg
                /\ IndexedFrom(ev.m.entries, ev.m.index + 1)
                /\ \/ AppendEntries(n, ev.m.dst, ev.m.index, Len(ev.m.entries))
                   \/ RemovingAppendEntries(n, ev.m.dst, ev.m.index, Len(ev.m.entries))
                /\ network' = BagAdd(network, m)   \* the spec sent exactly m
                /\ UNCHANGED pending
        /\ UNCHANGED <<started, snapVars, memberVars>>

\* A chunk of leader n's snapshot at (index, logTerm): AppendEntries(n, dst,
\* 0, index), the committed prefix 1..index.  It promises nothing durable
\* (never after persist).
SnapSendEvent(ev) ==
    LET n == ev.n
        c == ev.m
    IN  /\ c.src = n
        /\ ~ev.afterPersist
        /\ state[n] = Leader
        /\ c.term = currentTerm[n]
        /\ c.index <= commitIndex[n]
        /\ c.logTerm = TermAt(log[n], c.index)
        \* a chunk carries nothing, or (the first) the configuration of the
        \* snapshot's prefix as one configuration entry at (index, logTerm)
        /\ c.entries \in {<<>>, <<[index |-> c.index, term |-> c.logTerm,
                                    value |-> ConfigUpTo(n, c.index)]>>}
        /\ AppendEntries(n, c.dst, 0, c.index)
        /\ snapMsg' = snapMsg @@ (c :> SnapAppend(n, c.dst, c.index))
        /\ UNCHANGED <<pending, started, chunk, noStepSent, memberVars>>

\* A chunk acknowledgement, a PreVote or a PreVoteResp: no step; it goes
\* out at once (never after persist: it promises nothing durable).
NoStepSendEvent(ev) ==
    LET n == ev.n
        c == ev.m
    IN  /\ c.src = n
        /\ ~ev.afterPersist
        \* TimeoutNow (leader transfer, diss. §3.10, or a removed leader
        \* handing over, §4.2.2): from the leader of its term to a voter
        /\ c.type = TimeoutNow =>
               /\ state[n] = Leader \/ Removing(n)
               /\ c.term = currentTerm[n]
               /\ c.dst \in Voters(n)
        /\ noStepSent' = noStepSent \cup {c}
        /\ UNCHANGED <<vars, pending, started, snapMsg, chunk, memberVars>>

\* n reports `install` before its next `state` event: the chunk received
\* at l completed the snapshot (or is covered by n's log).
InstallFollows(n) ==
    \E k \in (l + 1)..Len(Trace) :
        /\ Trace[k].e = "install"
        /\ Trace[k].n = n
        /\ \A j \in (l + 1)..(k - 1) : ~(Trace[j].n = n /\ Trace[j].e = "state")

\* The hidden steps before a chunk is received, as RecvHidden for the
\* AppendEntries am it stands for.
SnapRecvHidden(ev) ==
    LET n == ev.n
        c == ev.m
        am == snapMsg[c]
    IN  /\ c.type = SnapChunk
        /\ c \in DOMAIN snapMsg
        /\ \/ /\ am \in DOMAIN network
              /\ network[am] = 1
              /\ DuplicateMessage(am)
           \/ /\ am \in DOMAIN network
              /\ network[am] > 1
              /\ UpdateTerm(n, am)
        /\ UNCHANGED <<l, sub, pending, started, snapVars, memberVars>>

\* A chunk: on the network unchanged, for n, its term adopted; DropMessage
\* unless n installs it (then InstallEvent handles it).
SnapRecvEvent(ev) ==
    LET n == ev.n
        c == ev.m
        am == snapMsg[c]
    IN  /\ c.dst = n
        /\ c \in DOMAIN snapMsg
        /\ am \in DOMAIN network
        /\ network[am] > 1
        /\ am.term <= currentTerm[n]
        /\ IF InstallFollows(n) THEN UNCHANGED vars
                                 ELSE DropMessage(am)
        /\ chunk' = [chunk EXCEPT ![n] = <<c>>]
        /\ UNCHANGED <<pending, started, snapMsg, noStepSent, memberVars>>

\* An acknowledgement, a PreVote or a PreVoteResp: sent (unchanged: the
\* record, id included, is one that was sent), for n; no step.  Its term is
\* never adopted: an acknowledgement never carries a higher term; a PreVote
\* carries the prospective term (sender's + 1), a granted PreVoteResp the
\* request's, both usually higher than n's (diss. §9.6).
NoStepRecvEvent(ev) ==
    LET n == ev.n
        c == ev.m
    IN  /\ c.dst = n
        /\ c \in noStepSent
        /\ c.type \in {SnapAck, TimeoutNow} => c.term <= currentTerm[n]
        /\ UNCHANGED <<vars, pending, started, snapVars, memberVars>>

\* n installs (or finds in its log) the snapshot of the chunk it has just
\* received: HandleAppendEntries of the AppendEntries the chunk stands for,
\* in n's current term.
InstallEvent(ev) ==
    LET n == ev.n
        c == ev.m
        am == snapMsg[c]
    IN  /\ chunk[n] = <<c>>
        /\ c.term = currentTerm[n]
        /\ HandleAppendEntries(n, am)
        /\ pending' = [pending EXCEPT ![n] = BagAdd(@, AppendEntriesReply(n, am))]
        /\ chunk' = [chunk EXCEPT ![n] = <<>>]
        \* installed: the core's configuration is now the snapshot's (a
        \* `conf` follows); a joiner's initial one is now InitConfig
        /\ IF ev.installed
           THEN /\ learned' = IF n \in InitVoters THEN learned ELSE learned \cup {n}
                /\ reported' = [reported EXCEPT ![n].index = 0]
           ELSE UNCHANGED <<learned, reported>>
        /\ UNCHANGED <<started, snapMsg, noStepSent, removing, durableLearned>>

\* n's application snapshotted its state at (index, term): no spec step (the
\* spec's log keeps the entries); they must be committed.
CompactEvent(ev) ==
    LET n == ev.n IN
    /\ ev.index <= commitIndex[n]
    /\ ev.index <= Len(log[n])
    /\ TermAt(log[n], ev.index) = ev.term
    /\ UNCHANGED <<vars, pending, started, snapVars, memberVars>>

\* If it commits n's own removal (RemovedOnCommit), n is Removing until
\* its `stepdown`.
CommitEvent(ev) ==
    /\ AdvanceCommitIndex(ev.n)
    /\ commitIndex'[ev.n] = ev.commit
    /\ removing' = IF state'[ev.n] = Leader THEN removing
                   ELSE [removing EXCEPT ![ev.n] = currentTerm[ev.n]]
    /\ UNCHANGED <<pending, started, snapVars, reported, learnedVars>>

\* The Ready at l was written: n's next ready/advance/restart event is its
\* advance (spec/README.md: why Persist maps to `ready`).
Written(n) ==
    \E k \in (l + 1)..Len(Trace) :
        /\ Trace[k].e = "advance"
        /\ Trace[k].n = n
        /\ \A j \in (l + 1)..(k - 1) :
              ~(Trace[j].n = n /\ Trace[j].e \in {"ready", "advance", "restart"})

\* The commit hint the Ready writes: its `hint` field (traces before it had
\* one wrote the current commitIndex at every Ready).
ReadyHint(ev) == IF "hint" \in DOMAIN ev THEN ev.hint ELSE DurableHint(ev.n)

NothingToPersist(n, hint) ==
    IsDurable(n) /\ hint = durableCommit[n] /\ outbox[n] = {}

ReadyEvent(ev) ==
    /\ ~Removing(ev.n)      \* a removing leader steps down before its next Ready
    /\ IF Written(ev.n) /\ ~NothingToPersist(ev.n, ReadyHint(ev))
       THEN PersistHint(ev.n, ReadyHint(ev))
       ELSE UNCHANGED vars
    \* the snapshot (and the configuration it carries) is written too
    /\ durableLearned' = IF ~Written(ev.n) THEN durableLearned
                         ELSE IF ev.n \in learned THEN durableLearned \cup {ev.n}
                         ELSE durableLearned \ {ev.n}
    /\ UNCHANGED <<pending, started, snapVars, reported, removing, learned>>

StateEvent(ev) ==
    LET n == ev.n IN
    /\ pending[n] = EmptyBag
    /\ <<currentTerm[n], votedFor[n], IF Removing(n) THEN Leader ELSE state[n],
         commitIndex[n], Len(log[n]), LastTerm(log[n])>>
         = <<ev.term, ev.vote, Roles[ev.role + 1], ev.commit, ev.last, ev.lastTerm>>
    \* the configuration n uses is the spec's, and its latest entry
    /\ [voters |-> reported[n].voters, learners |-> reported[n].learners] = UsedConfig(n)
    /\ reported[n].index # 0 => reported[n].index = LastConfigIndex(log[n])
    /\ chunk' = [chunk EXCEPT ![n] = <<>>]   \* the API call is over
    /\ UNCHANGED <<vars, pending, started, snapMsg, noStepSent, memberVars>>

\* n reports the configuration it now uses: no step (compared at its next
\* `state`: the core reports it from inside an action).
ConfEvent(ev) ==
    /\ reported' = [reported EXCEPT ![ev.n] =
                       [voters |-> ev.voters, learners |-> ev.learners, index |-> ev.index]]
    /\ UNCHANGED <<vars, pending, started, snapVars, removing, learnedVars>>

-----------------------------------------------------------------------------

TraceInit ==
    /\ Init
    /\ t \in 1..Len(Traces)
    /\ l = 1
    /\ sub = 0
    /\ pending = [i \in Server |-> EmptyBag]
    /\ started = {}
    /\ snapMsg = [c \in {} |-> 0]
    /\ noStepSent = {}
    /\ chunk = [i \in Server |-> <<>>]
    /\ reported = [i \in Server |-> StartConfig(i)]
    /\ removing = [i \in Server |-> 0]
    /\ learned = {}
    /\ durableLearned = {}

TraceNext ==
    /\ l <= Len(Trace)
    /\ LET ev == Ev IN
       /\ ev.e = "restart" \/ ev.n \in started
       /\ \/ /\ ev.e = "recv"
             /\ RecvHidden(ev)
          \/ /\ ev.e = "recv"
             /\ SnapRecvHidden(ev)
          \/ /\ ev.e = "propose"
             /\ ProposeEvent(ev)
          \/ /\ ev.e # "propose"
             /\ Consume
             /\ CASE ev.e = "restart" -> RestartEvent(ev)
                  [] ev.e = "timeout" -> TimeoutEvent(ev)
                  [] ev.e = "leader"  -> LeaderEvent(ev)
                  [] ev.e = "stepdown" -> StepDownEvent(ev)
                  [] ev.e = "recv"    -> IF IsNoStep(ev.m) THEN NoStepRecvEvent(ev)
                                         ELSE IF IsChunk(ev.m) THEN SnapRecvEvent(ev)
                                         ELSE RecvEvent(ev)
                  [] ev.e = "send"    -> IF IsNoStep(ev.m) THEN NoStepSendEvent(ev)
                                         ELSE IF IsChunk(ev.m) THEN SnapSendEvent(ev)
                                         ELSE SendEvent(ev)
                  [] ev.e = "commit"  -> CommitEvent(ev)
                  [] ev.e = "ready"   -> ReadyEvent(ev)
                  [] ev.e = "advance" -> UNCHANGED <<vars, pending, started, snapVars, memberVars>>
                  [] ev.e = "state"   -> StateEvent(ev)
                  [] ev.e = "install" -> InstallEvent(ev)
                  [] ev.e = "compact" -> CompactEvent(ev)
                  [] ev.e = "conf"    -> ConfEvent(ev)
                  [] OTHER            -> FALSE
    /\ UNCHANGED t
    /\ Checked

TraceSpec == TraceInit /\ [][TraceNext]_<<vars, traceVars>>

\* Always TRUE; prints every state's <<t, l>> for spec/tla_trace.py.
TraceReport == PrintT(<<"trace", t, l>>)

\* The trace is consumed (used by hand: an invariant that fails exactly
\* when TLC reaches the end of trace t, with the behaviour as its trace).
NotAccepted == l <= Len(Trace)
=============================================================================
