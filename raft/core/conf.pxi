# Configurations (cluster membership, diss. ch. 4): their encoding, and the one
# rule that says which single-server changes may follow which.
#
# A configuration entry (ENTRY_CONF) holds the WHOLE new configuration, not a
# delta: a follower that truncates one, or restarts, finds the configuration in
# force by reading the latest one at or below an index, with nothing to replay.
# Encoding (little-endian): n_voters u32, n_learners u32, the voter ids (u64,
# ascending), the learner ids (u64, ascending), then an opaque `context` the core
# carries and never reads (the runtime puts the members' addresses there, as etcd's
# ConfChange.Context).
#
# Part of the compiled core: `include`d by raft/_core.pyx (the hub), so it shares
# one module and one C namespace; the C enums and class layouts are in raft/_core.pxd.

import struct as _struct

_CONF_HEAD = _struct.Struct("<II")
# Far above any real cluster; it bounds what a malformed entry can make us allocate.
MAX_CONF_MEMBERS = 1024


def encode_conf(voters, learners=(), bytes context=b""):
    """The ENTRY_CONF data (and Snapshot.conf) for this configuration."""
    cdef tuple v = tuple(sorted(set(int(x) for x in voters)))
    cdef tuple l = tuple(sorted(set(int(x) for x in learners)))
    _check_members(v, l, LocalProtocolError)
    return (_CONF_HEAD.pack(len(v), len(l)) + _struct.pack(f"<{len(v) + len(l)}Q", *(v + l))
            + context)


def decode_conf(bytes data):
    """(voters, learners, context) from encode_conf's bytes. Raises
    RemoteProtocolError if they are malformed (they may come from a peer)."""
    if data is None or len(data) < _CONF_HEAD.size:
        raise RemoteProtocolError("configuration entry too short")
    nv, nl = _CONF_HEAD.unpack_from(data, 0)
    if nv + nl > MAX_CONF_MEMBERS:
        raise RemoteProtocolError(f"configuration with {nv + nl} members (at most {MAX_CONF_MEMBERS})")
    end = _CONF_HEAD.size + 8 * (nv + nl)
    if len(data) < end:
        raise RemoteProtocolError("configuration entry truncated")
    ids = _struct.unpack_from(f"<{nv + nl}Q", data, _CONF_HEAD.size)
    voters, learners = tuple(ids[:nv]), tuple(ids[nv:])
    if list(voters) != sorted(set(voters)) or list(learners) != sorted(set(learners)):
        raise RemoteProtocolError("configuration ids not ascending and distinct")
    _check_members(voters, learners, RemoteProtocolError)
    return voters, learners, data[end:]


cdef int _check_members(tuple voters, tuple learners, object error) except -1:
    if 0 in voters or 0 in learners:
        raise error("node id 0 is reserved for 'none'")
    if set(voters) & set(learners):
        raise error(f"nodes {sorted(set(voters) & set(learners))} are both voter and learner")
    if len(voters) + len(learners) > MAX_CONF_MEMBERS:
        raise error(f"at most {MAX_CONF_MEMBERS} members")
    return 0


def conf_after_change(tuple voters, tuple learners, int op, uint64_t node):
    """The configuration after one single-server change (diss. §4.1), as
    (voters, learners); raises ConfChangeRefused if the change is not allowed.

    At most one voter is added or removed, so every majority of the old
    configuration overlaps every majority of the new one: no joint phase is needed.
    Learners do not count in any majority, so adding or removing one never matters
    to safety; promoting a learner adds one voter."""
    if node == 0:
        raise ConfChangeRefused("node id 0 is reserved for 'none'")
    if op == _CONF_ADD_VOTER:
        if node in voters:
            raise ConfChangeRefused(f"node {node} is already a voter")
        return (tuple(sorted(voters + (node,))), tuple(x for x in learners if x != node))
    if op == _CONF_ADD_LEARNER:
        if node in voters:
            raise ConfChangeRefused(f"node {node} is a voter (demotion is not supported: remove it, then add it back as a learner)")
        if node in learners:
            raise ConfChangeRefused(f"node {node} is already a learner")
        return (voters, tuple(sorted(learners + (node,))))
    if op == _CONF_REMOVE:
        if node in learners:
            return (voters, tuple(x for x in learners if x != node))
        if node not in voters:
            raise ConfChangeRefused(f"node {node} is not a member")
        if len(voters) == 1:
            raise ConfChangeRefused("cannot remove the last voter")
        return (tuple(x for x in voters if x != node), learners)
    raise ConfChangeRefused(f"unknown configuration change operation {op}")
