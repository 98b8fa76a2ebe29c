------------------------------- MODULE MCRaft -------------------------------
(***************************************************************************)
(* A small, finite model of Raft.tla for TLC.  The bounds are state        *)
(* constraints: TLC does not explore past a state that violates them, so   *)
(* every behaviour within the bounds is checked and none outside is.       *)
(* Crashes are bounded by a counter, the only variable added here.         *)
(***************************************************************************)
EXTENDS Raft, TLC

CONSTANTS
    MaxTerm,        \* no server goes past this term
    MaxLogLen,      \* no log grows past this length
    MaxMessages,    \* at most this many messages in flight (incl. outboxes)
    MaxRestarts     \* at most this many crash/restarts in a behaviour

VARIABLE restarts   \* number of Restart steps taken so far

MCInit == Init /\ restarts = 0

MCNext ==
    \/ NextExceptRestart /\ UNCHANGED restarts
    \/ /\ restarts < MaxRestarts
       /\ \E i \in Server : Restart(i)
       /\ restarts' = restarts + 1

MCSpec == MCInit /\ [][MCNext]_<<vars, restarts>>

\* Messages in flight or waiting in an outbox for Persist.
InFlight == network \cup UNION {outbox[i] : i \in Server}

StateBound ==
    /\ \A i \in Server : currentTerm[i] <= MaxTerm
    /\ \A i \in Server : Len(log[i]) <= MaxLogLen
    /\ Cardinality(InFlight) <= MaxMessages

\* Servers are interchangeable (symmetry reduction).
Symmetry == Permutations(Server)
=============================================================================
