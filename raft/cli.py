"""The ``raft`` command line: one tool, subcommands.

    raft sim --seed S --nodes N --steps K      one simulation, one JSON line
    raft sim --seeds A-B [--jobs J]            a range of seeds, one line each + a total
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from multiprocessing import get_context


def _parse_seeds(text: str) -> range:
    try:
        if "-" in text:
            a, b = text.split("-", 1)
            lo, hi = int(a), int(b)
        else:
            lo = hi = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 5 or 0-999, not {text!r}") from None
    if lo < 0 or hi < lo:
        raise argparse.ArgumentTypeError(f"bad seed range {text!r}")
    return range(lo, hi + 1)


def _sim_one(job: tuple) -> tuple:
    from raft.sim import run

    seed, kw = job
    res = run(seed, **kw)
    return res.seed, res.ok, res.summary(), res.history, dict(res.faults)


def _cmd_sim(args: argparse.Namespace) -> int:
    seeds = args.seeds if args.seeds is not None else range(args.seed, args.seed + 1)
    kw = dict(nodes=args.nodes, steps=args.steps,
              unsafe_commit_any_term=args.unsafe_commit_any_term)
    jobs = [(s, kw) for s in seeds]
    failed: list[int] = []
    totals: dict[str, int] = {}
    runs_with: dict[str, int] = {}
    n_jobs = max(1, min(args.jobs or os.cpu_count() or 1, len(jobs)))
    if n_jobs == 1:
        results = map(_sim_one, jobs)
    else:
        pool = get_context("fork").Pool(n_jobs)
        results = pool.imap(_sim_one, jobs, chunksize=4)
    for seed, ok, summary, history, faults in results:
        for k, v in faults.items():
            totals[k] = totals.get(k, 0) + v
            runs_with[k] = runs_with.get(k, 0) + (1 if v else 0)
        if not ok:
            failed.append(seed)
        if not args.quiet or not ok:
            print(summary, flush=True)
        if not ok:
            print(f"--- seed {seed} FAILED; reproduce with: raft sim --seed {seed} "
                  f"--nodes {args.nodes} --steps {args.steps}"
                  + (" --unsafe-commit-any-term" if args.unsafe_commit_any_term else ""),
                  file=sys.stderr)
            print("--- last events before the violation:", file=sys.stderr)
            for line in history:
                print("    " + line, file=sys.stderr)
    if n_jobs > 1:
        pool.close()
        pool.join()
    if len(jobs) > 1:
        print(json.dumps({"seeds": f"{seeds[0]}-{seeds[-1]}", "runs": len(jobs),
                          "failed": len(failed), "failed_seeds": failed[:20],
                          "fault_totals": totals, "runs_with_fault": runs_with},
                         sort_keys=True))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raft", description="A fast, spec-checked Raft for Python.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sim", help="run the deterministic simulator with fault injection")
    s.add_argument("--seed", type=int, default=0, help="the seed of a single run (default 0)")
    s.add_argument("--seeds", type=_parse_seeds, default=None, metavar="A-B",
                   help="run every seed in A..B (inclusive)")
    s.add_argument("--nodes", type=int, default=3, choices=range(1, 10), metavar="N",
                   help="cluster size (1-9, default 3)")
    s.add_argument("--steps", type=int, default=600,
                   help="ticks of the safety phase (default 600)")
    s.add_argument("--jobs", type=int, default=0, help="parallel processes (default: all cores)")
    s.add_argument("--quiet", action="store_true", help="print only failures and the total")
    s.add_argument("--unsafe-commit-any-term", action="store_true",
                   help="TEST ONLY: plant the Figure 8 bug (commit earlier-term entries by counting)")
    s.set_defaults(func=_cmd_sim)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
