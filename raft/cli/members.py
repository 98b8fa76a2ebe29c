"""``raft members``: list and change a running cluster's membership.

    raft members list     --node HOST:PORT
    raft members add      --node HOST:PORT ID --raft H:P --client H:P [--learner]
    raft members promote  --node HOST:PORT ID
    raft members remove   --node HOST:PORT ID
    raft members transfer --node HOST:PORT ID

``--node`` is any member's client (RESP) address: a follower's ``-MOVED`` leads to the
leader, and ``-TRYAGAIN`` (a change or a transfer still in progress, a new leader
not ready) is retried for up to ``--timeout`` seconds. The commands are the RESP
admin commands RAFT.MEMBERS / ADDNODE / PROMOTE / REMOVENODE / TRANSFER
(docs/operations.md, "Membership").
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from raft.config import ConfigError, parse_host_port
from raft.resp.probe import RespClientError, resp_command

RETRY_PAUSE = 0.2     # seconds between -TRYAGAIN retries
MAX_REDIRECTS = 5


def _call(node: tuple[str, int], args: list[str], password: str | None,
          timeout: float) -> Any:
    """Send one admin command, following -MOVED and retrying -TRYAGAIN until
    ``timeout``; raises RespClientError with the last error."""
    deadline = time.monotonic() + timeout
    host, port = node
    redirects = 0
    while True:
        try:
            return resp_command(host, port, *args, password=password,
                                timeout=max(1.0, deadline - time.monotonic()))
        except RespClientError as e:
            text = str(e)
            if "MOVED" in text and redirects < MAX_REDIRECTS:
                host, port = parse_host_port(text.split()[-1], "-MOVED address")
                redirects += 1
                continue
            if ("TRYAGAIN" in text or "CLUSTERDOWN" in text) and time.monotonic() < deadline:
                time.sleep(RETRY_PAUSE)
                continue
            raise


def _print_members(rows: list) -> None:
    print(f"{'id':>6} {'role':8} {'leader':6} {'raft':22} {'client':22} {'match':>10} {'lag':>8}")
    for row in rows:
        m = {row[k].decode() if isinstance(row[k], bytes) else row[k]: row[k + 1]
             for k in range(0, len(row), 2)}
        text = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in m.items()}
        print(f"{text['id']:>6} {text['role']:8} {'yes' if text['leader'] else '':6} "
              f"{text['raft']:22} {text['client']:22} {text.get('match', ''):>10} "
              f"{text.get('lag', ''):>8}")


def members_main(args: argparse.Namespace) -> int:
    try:
        node = parse_host_port(args.node, "--node")
        if args.action == "list":
            cmd = ["RAFT.MEMBERS"]
        elif args.id is None:
            raise ValueError(f"raft members {args.action} needs the node ID")
        elif args.action == "add":
            if not args.raft or not args.client:
                raise ValueError("raft members add needs --raft HOST:PORT and --client HOST:PORT")
            cmd = ["RAFT.ADDNODE", str(args.id), args.raft, args.client,
                   "LEARNER" if args.learner else "VOTER"]
        else:
            cmd = [{"promote": "RAFT.PROMOTE", "remove": "RAFT.REMOVENODE",
                    "transfer": "RAFT.TRANSFER"}[args.action], str(args.id)]
    except (ValueError, ConfigError) as e:
        print(f"raft members: {e}", file=sys.stderr)
        return 2
    try:
        reply = _call(node, cmd, args.password, args.timeout)
    except RespClientError as e:
        print(f"raft members {args.action}: {e}", file=sys.stderr)
        return 1
    if args.action == "list":
        _print_members(reply)
    else:
        print("OK")
    return 0


def add_subcommands(subparsers: Any) -> None:
    m = subparsers.add_parser("members", help="list or change the cluster's membership")
    m.add_argument("action", choices=("list", "add", "promote", "remove", "transfer"))
    m.add_argument("id", nargs="?", type=int, help="the node id to add/promote/remove/transfer to")
    m.add_argument("--node", required=True, metavar="HOST:PORT",
                   help="any member's client (RESP) address; redirects are followed")
    m.add_argument("--raft", default=None, metavar="HOST:PORT", help="add: the new node's peer address")
    m.add_argument("--client", default=None, metavar="HOST:PORT",
                   help="add: the new node's client address")
    m.add_argument("--learner", action="store_true",
                   help="add: as a learner (gets the log, does not vote; promote it once caught up)")
    m.add_argument("--password", default=None, help="client password (AUTH)")
    m.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to keep retrying -TRYAGAIN (default 30)")
    m.set_defaults(func=members_main)
