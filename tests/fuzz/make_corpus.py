"""Regenerate the seed corpora in tests/fuzz/corpus/ (small, valid-looking inputs the
mutator starts from). Run: PYTHONPATH=$PWD python tests/fuzz/make_corpus.py"""
from __future__ import annotations

import hashlib
import os

from raft import (ENTRY_NOOP, ENTRY_NORMAL, MSG_APP, MSG_APP_RESP, MSG_SNAP, MSG_SNAP_RESP,
                  MSG_VOTE, MSG_VOTE_RESP, Entry, Message, kv)
from raft.net import codec

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def _put(target: str, data: bytes) -> None:
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest()[:12]), "wb") as f:
        f.write(data)


def codec_seeds() -> None:
    ents = [Entry(11, 3, ENTRY_NORMAL, b"a" * 20), Entry(12, 3, ENTRY_NOOP, b"")]
    batches = [
        [Message(MSG_APP, 1, 2, term=4, log_term=3, index=10, commit=9, entries=ents, msg_id=7)],
        [Message(MSG_APP, 1, 3, term=4, log_term=3, index=10, commit=9)],
        [Message(MSG_APP_RESP, 2, 1, term=4, index=10, log_term=2, reject=True, reject_hint=5)],
        [Message(MSG_VOTE, 3, 1, term=5, index=13, log_term=4),
         Message(MSG_VOTE_RESP, 1, 3, term=5, reject=True)],
        [Message(MSG_SNAP, 1, 2, term=5, index=13, log_term=4, commit=0, reject_hint=9,
                 data=b"snapshot!")],
        [Message(MSG_SNAP_RESP, 2, 1, term=5, index=13, reject_hint=9)],
        [],
    ]
    for i, b in enumerate(batches):
        _put("codec", bytes([i * 4]) + codec.encode(b))
    _put("codec", bytes([1]) + codec.encode(batches[0])[:7])
    for i in range(6):   # described batches (fuzz_codec.py, bit 7 of byte 0)
        _put("codec", bytes([0x80 | i]) + bytes((i * 37 + k * 11) & 0xFF for k in range(120)))


def resp_seeds() -> None:
    for ctl, stream in [
        (0, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        (0x10, b"PING hello\r\n*1\r\n$4\r\nPING\r\n"),
        (0x21, b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*1\r\n$4\r\nPING\r\n"),
        (0x03, b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
        (0x42, b"*0\r\n*-1\r\n*1\r\n$0\r\n\r\n"),
        (0x04, b"*1\r\n$" + b"9" * 20 + b"\r\n"),
        (0x08, b"*2\r\n$1\r\na\r\n$-1\r\n"),
        (0x50, b"set k \"quoted v\"\r\nget k\n"),
    ]:
        _put("resp", bytes([ctl, 0x5A]) + stream)
    for ctl, desc in [(0x40, b"SET\xfekey\xfevalue\xffGET\xfekey"), (0x41, b"PING\xffECHO\xfe" + b"e" * 20),
                      (0x72, b"AUTH\xfepw\xffSET\xfek\xfev"), (0x43, b"MSET\xfea\xfe1\xfeb\xfe2")]:
        _put("resp", bytes([ctl, 0x33]) + desc)


def kv_seeds() -> None:
    for argv in ([b"SET", b"k", b"v"], [b"GET", b"k"], [b"XADD", b"s", b"*", b"f", b"v"],
                 [b"PING"], [b""]):
        _put("kv", kv.encode_command(7, 3, argv, time_ms=1_700_000_000_000))
    _put("kv", b"\x01\x00\x00\x00\x05")


def wal_seeds() -> None:
    # byte 0: mode (see fuzz_wal.py), byte 1: segment; then the mode's bytes.
    for seed in (b"\x00\x00\x10\x00\x00", b"\x00\x01\x40\x00\x07\x00",
                 b"\x01\x00\x00\x30", b"\x01\x01\x00\x90", b"\x02\x00\x00\x00",
                 b"\x03\x00\x00\x10\x00\xff", b"\x04\x00RWAL"):
        _put("wal", seed)


if __name__ == "__main__":
    codec_seeds()
    resp_seeds()
    kv_seeds()
    wal_seeds()
