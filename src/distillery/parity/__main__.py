"""`python -m distillery.parity METHOD --reference DIR [--out FILE] [--cases a,b] [--set name=value …]`: run the
authors' code (loaded at run time from DIR, their checkout at the ledger's commit) and ours on the same inputs, and
write the comparison (benchmarks/results/parity_<method>.json by default). Exits 1 when a case fails, 2 on bad
input (named, before any compute)."""
from __future__ import annotations

import argparse
import shlex
import sys

import torch

from distillery.data import DataMissingError
from distillery.parity.run import METHODS, plan_parity, run_parity, write_report
from distillery.parity.table import summary_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distillery.parity", description=__doc__)
    parser.add_argument("method", choices=sorted(METHODS))
    parser.add_argument("--reference", required=True, help="the authors' checkout (docs/parity.md: how to get it)")
    parser.add_argument("--out", help="the report's JSON (default: benchmarks/results/parity_<method>.json)")
    parser.add_argument("--cases", help="comma-separated cases to run (default: all; see docs/parity.md)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change a size (the method's Sizes in distillery/parity/<method>.py), e.g. --set ipc=1")
    parser.add_argument("--data", default="data", help="where Fashion-MNIST's idx files are, as for prepare "
                                                       "(default: data; the Debian package dataset-fashion-mnist "
                                                       "is found without it)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the cases are tiny, and more threads only contend)")
    parser.add_argument("--any-commit", action="store_true", help="run a checkout at another commit than the "
                                                                  "ledger's (the report records which)")
    args = parser.parse_args(argv)
    bad = [s for s in args.set if "=" not in s]
    if bad:
        parser.error(f"--set takes NAME=VALUE, got {', '.join(bad)}")
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", "-m", "distillery.parity", *(sys.argv[1:] if argv is None else argv)])
    try:
        plan = plan_parity(args.method, args.reference, args.cases.split(",") if args.cases else None,
                           dict(s.split("=", 1) for s in args.set), args.any_commit)
    except ValueError as error:
        parser.error(str(error))
    try:
        report = run_parity(plan, args.data, command)
    except DataMissingError as error:  # the first thing a run does: prepare the shared data
        parser.error(str(error))
    out = args.out or f"benchmarks/results/parity_{args.method}.json"
    write_report(report, out)
    print("\n".join(summary_lines([report])))
    print(f"\n{out}: {'all cases passed' if report['passed'] else 'FAILED'} in {report['seconds']:.0f} s")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
