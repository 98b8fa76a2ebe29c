"""The ``raft`` command line: one tool, subcommands.

    raft sim --seed S --nodes N --steps K      one simulation, one JSON line
    raft sim --seeds A-B [--jobs J]            a range of seeds, one line each + a total
    raft sim --seed S --trace-out FILE          also write the run's trace (NDJSON)
    raft check TRACE [TRACE ...]                validate trace(s) against spec/Raft.tla
    raft storage check|repair DIR               inspect / repair a node's data directory
    raft lincheck HISTORY                       check a client history for linearizability
    raft torture [--seed S] [--nemesis K,...]   clients + faults on a local cluster, checked
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
    from raft.testing.sim import SimConfig, Simulation

    seed, kw = job
    trace_out = kw.pop("trace_out", None)
    sim = Simulation(SimConfig(seed=seed, **kw))
    res = sim.run()
    history = list(res.history)
    violation = getattr(sim, "trace_violation", None)
    if violation is not None:
        history += ["--- trace checker:"] + violation.render().splitlines()
    if trace_out and sim.trace is not None:
        from raft.trace import write_ndjson

        with open(trace_out, "w") as fp:
            write_ndjson(sim.trace, fp, voters=sim.initial_ids)
    snaps = {"taken": res.snapshots_taken, "installed": res.snapshots_installed}
    return (res.seed, res.ok, res.summary(), history, dict(res.faults), snaps, res.trace_events,
            dict(res.coverage), dict(res.membership))


def _cmd_sim(args: argparse.Namespace) -> int:
    seeds = args.seeds if args.seeds is not None else range(args.seed, args.seed + 1)
    kw = dict(nodes=args.nodes, steps=args.steps, check_trace=not args.no_check,
              unsafe_commit_any_term=args.unsafe_commit_any_term, membership=args.membership)
    if args.trace_out and len(seeds) > 1:
        print("raft sim: --trace-out takes a single --seed", file=sys.stderr)
        return 2
    jobs = [(s, dict(kw, trace_out=args.trace_out)) for s in seeds]
    failed: list[int] = []
    totals: dict[str, int] = {}
    runs_with: dict[str, int] = {}
    n_jobs = max(1, min(args.jobs or os.cpu_count() or 1, len(jobs)))
    if n_jobs == 1:
        results = map(_sim_one, jobs)
    else:
        pool = get_context("fork").Pool(n_jobs)
        results = pool.imap(_sim_one, jobs, chunksize=4)
    trace_events = 0
    snap_totals = {"taken": 0, "installed": 0, "runs_with_install": 0}
    coverage: dict[str, int] = {}
    runs_reaching: dict[str, int] = {}
    membership: dict[str, int] = {}
    runs_with_change = 0
    for seed, ok, summary, history, faults, snaps, n_events, cov, mem in results:
        trace_events += n_events
        for k, v in mem.items():
            membership[k] = membership.get(k, 0) + v
        runs_with_change += 1 if mem.get("committed") else 0
        for k, v in cov.items():
            coverage[k] = coverage.get(k, 0) + v
            runs_reaching[k] = runs_reaching.get(k, 0) + (1 if v else 0)
        snap_totals["taken"] += snaps["taken"]
        snap_totals["installed"] += snaps["installed"]
        snap_totals["runs_with_install"] += 1 if snaps["installed"] else 0
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
                  + (" --unsafe-commit-any-term" if args.unsafe_commit_any_term else "")
                  + (" --membership" if args.membership else ""),
                  file=sys.stderr)
            print("--- last events before the violation:", file=sys.stderr)
            for line in history:
                print("    " + line, file=sys.stderr)
            if args.fail_fast:
                break
    if n_jobs > 1:
        pool.terminate() if failed and args.fail_fast else pool.close()
        pool.join()
    if len(jobs) > 1:
        print(json.dumps({"seeds": f"{seeds[0]}-{seeds[-1]}", "runs": len(jobs),
                          "failed": len(failed), "failed_seeds": failed[:20],
                          "fault_totals": totals, "runs_with_fault": runs_with,
                          "snapshots": snap_totals,
                          "coverage_totals": coverage, "runs_with_coverage": runs_reaching,
                          "trace_events_checked": trace_events}
                         | ({"membership_totals": membership,
                             "runs_with_committed_change": runs_with_change} if args.membership else {}),
                         sort_keys=True))
    return 1 if failed else 0


def _cmd_check(args: argparse.Namespace) -> int:
    import time

    from raft.trace_checker import Checker, TraceViolation, merge_by_causality, read_ndjson_file

    streams, voters = [], set()
    for path in args.traces:
        try:
            events, file_voters = read_ndjson_file(path)
        except (OSError, ValueError) as e:
            print(f"raft check: {path}: {e}", file=sys.stderr)
            return 2
        streams.append(events)
        voters.update(file_voters)
    if args.voters:
        voters = set(args.voters)
    if not voters:
        print("raft check: the traces name no voters; pass --voters 1 2 3", file=sys.stderr)
        return 2
    try:
        events = streams[0] if len(streams) == 1 else merge_by_causality(streams)
    except ValueError as e:
        print(f"raft check: {e}", file=sys.stderr)
        return 1
    checker = Checker(sorted(voters))
    t0 = time.perf_counter()
    try:
        n = checker.check(events)
    except TraceViolation as v:
        print(f"VIOLATION after {checker.events} valid events", file=sys.stderr)
        print(v.render(), file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    print(json.dumps({"verdict": "ok", "events": n, "seconds": round(dt, 3),
                      "events_per_second": int(n / dt) if dt > 0 else None,
                      "servers": sorted(voters)}))
    return 0


def _cmd_storage(args: argparse.Namespace) -> int:
    from raft.storage.check import storage_main

    return storage_main([args.action, args.dir] + (["--dry-run"] if args.dry_run else []))


def _cmd_bench(args: argparse.Namespace) -> int:
    """``raft bench``, ``raft bench --compare`` or ``raft bench --embedded``."""
    if args.embedded:
        from raft.embed.bench import main as embedded_main

        return embedded_main(["--quick"] if args.quick else [])
    if args.compare:
        from raft.cli.compare import main as compare_main

        return compare_main(["--out-dir", args.out_dir] + (["--quick"] if args.quick else []))
    from raft.cli.bench import bench_main

    return bench_main(args)


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
    s.add_argument("--fail-fast", action="store_true", help="stop at the first failing seed")
    s.add_argument("--unsafe-commit-any-term", action="store_true",
                   help="TEST ONLY: plant the Figure 8 bug (commit earlier-term entries by counting)")
    s.add_argument("--trace-out", metavar="FILE", help="write the run's trace as NDJSON")
    s.add_argument("--membership", action="store_true",
                   help="also draw membership changes from the seed: learners added and promoted, "
                        "voters added and removed, the leader removed, crashed nodes replaced, "
                        "leadership transferred (off: every seed runs as before)")
    s.add_argument("--no-check", action="store_true",
                   help="skip validating the trace against the spec (faster)")
    s.set_defaults(func=_cmd_sim)

    c = sub.add_parser("check", help="validate traces (NDJSON) against spec/Raft.tla")
    c.add_argument("traces", nargs="+", metavar="TRACE",
                   help="one trace, or one per node (merged in causal order)")
    c.add_argument("--voters", type=int, nargs="+", help="server ids (default: from the traces)")
    c.set_defaults(func=_cmd_check)

    st = sub.add_parser("storage", help="inspect or repair a node's data directory")
    st.add_argument("action", choices=("check", "repair"))
    st.add_argument("dir")
    st.add_argument("--dry-run", action="store_true", help="repair: say what would be done")
    st.set_defaults(func=_cmd_storage)
    from raft.cli.serve import add_subcommands  # serve, cluster, status
    add_subcommands(sub)
    from raft.cli.members import add_subcommands as add_members  # members
    add_members(sub)
    from raft.cli.bench import add_bench_subcommand  # bench
    add_bench_subcommand(sub).set_defaults(func=_cmd_bench)
    from raft.testing.lincheck import add_lincheck_subcommand  # lincheck
    add_lincheck_subcommand(sub)
    from raft.testing.torture import add_torture_subcommand  # torture
    add_torture_subcommand(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
