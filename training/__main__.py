"""``python -m training``: headless training and evaluation.

Commands:

* ``sample-data``: build (and cache) the embedded sample subjects, report
  the generation time of each.

Method training commands (``ssmoe``, ``remix``, ``moediff``) and the
paper-protocol ``evaluate`` command register here as the methods land.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence


def cmd_sample_data(args: argparse.Namespace) -> int:
    from SuperResMoELib import sample_data

    t0 = time.perf_counter()
    for s in range(args.t1_subjects):
        t = time.perf_counter()
        sample_data.t1_subject(s, seed=args.seed)
        print(f"T1 subject {s}: {time.perf_counter() - t:.1f} s")
    for s in range(args.mudi_subjects):
        t = time.perf_counter()
        subj = sample_data.mudi_subject(s, seed=args.seed)
        print(f"MUDI subject {s}: {time.perf_counter() - t:.1f} s  (HR grid {subj.grid.shape}, "
              f"{len(subj.table)} volumes)")
    print(f"total {time.perf_counter() - t0:.1f} s; cache: {sample_data.cache_dir()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("sample-data", help="build and cache the embedded sample subjects")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--t1-subjects", type=int, default=3)
    p.add_argument("--mudi-subjects", type=int, default=5)
    p.set_defaults(func=cmd_sample_data)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
