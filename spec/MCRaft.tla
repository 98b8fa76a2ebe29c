------------------------------- MODULE MCRaft -------------------------------
(***************************************************************************)
(* A small, finite model of Raft.tla for TLC (spec/README.md).             *)
(*                                                                         *)
(* The bounds are a state constraint: TLC does not explore past a state    *)
(* that violates StateBound, so every behaviour that stays within the      *)
(* bounds is checked and none outside.                                     *)
(***************************************************************************)
EXTENDS Raft, TLC

CONSTANTS
    MaxTerm,        \* no server goes past this term
    MaxLogLen,      \* no log grows past this length
    MaxMessages,    \* at most this many distinct messages in flight,
                    \* counting the outboxes (messages waiting for Persist)
    MaxCopies,      \* at most this many copies of one message in flight
    Crashes,        \* BOOLEAN: whether servers may crash and restart
    StepDowns,      \* BOOLEAN: whether leaders may step down (CheckQuorum)
    MaxConfigChanges, \* at most this many configuration entries in a log
                    \* (0: no membership change, the fixed InitVoters)
    ConfigRoles,    \* the roles a change may give a server: a subset of
                    \* MemberRoles ({"voter", "none"}: voters only, no
                    \* learners)
    ElectionAsOne,  \* BOOLEAN: all messages of one election (the
                    \* RequestVotes and their replies) count as one
                    \* towards MaxMessages (see InFlight)
    SplitVotes,     \* BOOLEAN: FALSE bounds the model to one candidate
                    \* per term (OneCandidatePerTerm)
    SerialReadies   \* BOOLEAN: at most one server at a time has a Ready
                    \* pending (OneReadyPending)

ASSUME Crashes \in BOOLEAN /\ StepDowns \in BOOLEAN
ASSUME MaxConfigChanges \in Nat /\ ConfigRoles \subseteq MemberRoles
ASSUME ElectionAsOne \in BOOLEAN /\ SplitVotes \in BOOLEAN
ASSUME SerialReadies \in BOOLEAN

\* Crashes are modelled while server i has a Ready pending (in-memory state
\* not yet durable, or messages waiting for Persist): that is when a crash
\* loses something.  A crash of a server whose state is all on disk only
\* resets its role and volatile state; we leave it out to keep the model
\* small.  There is no bound on the number of crashes.
CrashLosesSomething(i) ==
    ~(IsDurable(i) /\ DurableHint(i) = durableCommit[i] /\ outbox[i] = {})

CrashRestart(i) == Crashes /\ CrashLosesSomething(i) /\ Restart(i)

\* CheckQuorum step-downs (StepDowns = TRUE) are modelled in every term but
\* the last (MaxTerm), with no bound on their number.  A step-down in term
\* MaxTerm adds nothing: no other server can lead that term
\* (ElectionSafety) nor a later one (the bound), so the former leader, now
\* a follower, can take only steps its leader self could take too, or time
\* out into a term beyond the bound; and a follower state satisfies every
\* invariant its leader state does.
MCStepDown(i) == StepDowns /\ currentTerm[i] < MaxTerm /\ StepDown(i)

\* Membership changes (ProposeConfigChange): a leader appends a
\* configuration entry while its log holds fewer than MaxConfigChanges of
\* them; with MaxConfigChanges = 0 never, and the model is the one of a
\* fixed configuration.
MCProposeConfigChange(i, j, r) ==
    /\ Cardinality(ConfigIndexes(log[i])) < MaxConfigChanges
    /\ r \in ConfigRoles
    /\ ProposeConfigChange(i, j, r)

MCNext ==
    \/ CoreNext
    \/ \E i \in Server : MCStepDown(i)
    \/ \E i \in Server : CrashRestart(i)
    \/ \E i, j \in Server, r \in ConfigRoles : MCProposeConfigChange(i, j, r)

MCSpec == Init /\ [][MCNext]_vars

\* Distinct messages in flight or waiting in an outbox for Persist.  The
\* RequestVotes of one election (Timeout queues one per other server) count
\* as one message, the broadcast: each is mapped to a representative with
\* dst = src.  Otherwise MaxMessages = 1 would allow no election at all,
\* and MaxMessages = 2 is far too large a state space (README.md).
Broadcast(m) == IF m.type = RequestVoteMsg THEN [m EXCEPT !.dst = m.src] ELSE m
\* With ElectionAsOne, an election's replies count as one message with the
\* RequestVotes they answer (the representative is the candidate and the
\* term): a candidate needs two other votes in a configuration of four
\* voters, and with MaxMessages = 1 and replies counted apart, a reply
\* could be sent only once the other RequestVotes were gone, so no
\* election of four voters could ever succeed.  One reply at a time is in
\* flight (OneVoteReply): the order in which the voters answer is free,
\* but their replies do not interleave (a factor of the number of voters'
\* orders fewer states; a reply is handled the same whatever is in flight).
ElectionMsg(m) == m.type \in {RequestVoteMsg, RequestVoteRespMsg}
Representative(m) ==
    IF ElectionAsOne /\ ElectionMsg(m)
    THEN <<"election", IF m.type = RequestVoteMsg THEN m.src ELSE m.dst, m.term>>
    ELSE <<"message", Broadcast(m)>>
AllInFlight == DOMAIN network \cup UNION {outbox[i] : i \in Server}
InFlight == {Representative(m) : m \in AllInFlight}
OneVoteReply ==
    ElectionAsOne =>
        Cardinality({m \in AllInFlight : m.type = RequestVoteRespMsg}) <= 1

\* With SplitVotes = FALSE, no two servers have voted for themselves in the
\* same term: there are no competing candidates (split votes are checked
\* by the three-server models; the membership models leave them out).
OneCandidatePerTerm ==
    SplitVotes \/
        \A i, j \in Server :
            (i # j /\ votedFor[i] = i /\ votedFor[j] = j) =>
                currentTerm[i] # currentTerm[j]

\* With SerialReadies, at most one server has a Ready pending (state not
\* yet durable, or messages waiting for Persist): another server's step
\* that would leave a second one pending waits for the first Persist.
\* Persist(i) changes only i's disk and adds messages to the network, so
\* doing it earlier disables no protocol step of another server; left out
\* are the interleavings of several servers' disk writes (and the states
\* with two Readies pending).  Only for the models without crashes (a
\* crash loses a pending Ready, so there the interleavings matter).
OneReadyPending ==
    SerialReadies =>
        \A i, j \in Server :
            (CrashLosesSomething(i) /\ CrashLosesSomething(j)) => i = j

StateBound ==
    /\ \A i \in Server : currentTerm[i] <= MaxTerm
    /\ \A i \in Server : Len(log[i]) <= MaxLogLen
    /\ Cardinality(InFlight) <= MaxMessages
    /\ OneVoteReply
    /\ OneCandidatePerTerm
    /\ OneReadyPending
    /\ \A m \in DOMAIN network : network[m] <= MaxCopies

\* The servers of the initial configuration are interchangeable (symmetry
\* reduction); a server outside it (MCRaftMembership.cfg) is not
\* interchangeable with them.
Symmetry == Permutations(InitVoters)
=============================================================================
