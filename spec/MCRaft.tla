------------------------------- MODULE MCRaft -------------------------------
(***************************************************************************)
(* A small, finite model of Raft.tla for TLC.  The bounds are state        *)
(* constraints: TLC does not explore past a state that violates them, so   *)
(* every behaviour within the bounds is checked and none outside is.       *)
(***************************************************************************)
EXTENDS Raft, TLC

CONSTANTS
    MaxTerm,        \* no server goes past this term
    MaxLogLen,      \* no log grows past this length
    MaxMessages     \* at most this many messages in flight (incl. outboxes)

\* Messages in flight or waiting in an outbox for Persist.
InFlight == network \cup UNION {outbox[i] : i \in Server}

StateBound ==
    /\ \A i \in Server : currentTerm[i] <= MaxTerm
    /\ \A i \in Server : Len(log[i]) <= MaxLogLen
    /\ Cardinality(InFlight) <= MaxMessages

\* Servers are interchangeable (symmetry reduction).
Symmetry == Permutations(Server)
=============================================================================
