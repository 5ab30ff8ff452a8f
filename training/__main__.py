"""``python -m training``: headless training and evaluation.

Commands:

* ``sample-data``: build (and cache) the embedded sample subjects, report
  the generation time of each.

* ``ssmoe``: train SS-MoE for one task (baseline SR U-Net, pseudo labels,
  gater, experts, and the Hard-MoE baseline), export the checkpoints.
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


def cmd_ssmoe(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from SuperResMoELib.progress_report import make_reporter

    from .ssmoe.train import SSMoETrainer, export, load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    if args.data != "sample":
        raise SystemExit(f"--data {args.data!r}: only the embedded 'sample' data is supported by this command yet")
    cfg = load_config(args.config)
    if args.width:
        cfg["width"] = args.width
    workdir = Path(args.workdir or f"runs/ssmoe_{args.task}_{Path(args.config).stem}")
    export_dir = Path(args.export or workdir / "checkpoints")
    reporter = make_reporter(args.progress)
    t0 = time.perf_counter()
    trainer = SSMoETrainer(args.task, cfg, workdir, reporter)
    timings: dict[str, float] = {}
    data = {"data": "embedded MUDI-like sample subjects", "subjects": cfg["library"]["subjects"],
            "config": cfg.get("description", args.config)}

    def tick(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        return now

    t = time.perf_counter()
    base = trainer.baseline()
    t = tick("baseline", t)
    export(base, "srunet", args.task, cfg, 1, export_dir / f"ssmoe_{args.task}_srunet", {"training_data": data})
    for k in args.k:
        for labeler in args.labeler:
            lab = trainer.labels(base, k, labeler)
            moe = trainer.gater(base, k, labeler, lab["labels"])
            t = tick(f"gater_k{k}_{labeler}", t)
            moe, _ = trainer.experts(moe, k, labeler)
            t = tick(f"experts_k{k}_{labeler}", t)
            name = f"ssmoe_{args.task}" if (k == cfg["n_experts"] and labeler == cfg["labeler"]) \
                else f"ssmoe_{args.task}_k{k}_{labeler}"
            export(moe, "ssmoe", args.task, cfg, k, export_dir / name,
                   {"training_data": data, "extra": {"labeler": labeler, "thresholds": lab["thresholds"].tolist()}})
    if not args.no_hardmoe:
        hm = trainer.hardmoe(int(cfg["n_experts"]))
        t = tick("hardmoe", t)
        export(hm, "hardmoe", args.task, cfg, int(cfg["n_experts"]), export_dir / f"ssmoe_{args.task}_hardmoe",
               {"training_data": data})
    reporter.close()
    print(f"SS-MoE {args.task}: done in {time.perf_counter() - t0:.0f} s; phases: {timings}; checkpoints in {export_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("sample-data", help="build and cache the embedded sample subjects")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--t1-subjects", type=int, default=3)
    p.add_argument("--mudi-subjects", type=int, default=5)
    p.set_defaults(func=cmd_sample_data)
    p = sub.add_parser("ssmoe", help="train SS-MoE (all phases) and its baselines for one task")
    p.add_argument("--task", choices=("aniso", "iso"), required=True)
    p.add_argument("--data", default="sample", help="'sample' (embedded MUDI-like subjects)")
    p.add_argument("--config", default="compact", help="compact (CPU), full (GPU) or a JSON file")
    p.add_argument("--width", type=int, help="override the config's network width")
    p.add_argument("--k", type=int, nargs="+", default=[4], help="numbers of experts (default 4)")
    p.add_argument("--labeler", nargs="+", default=["mqs"], choices=("mqs", "quantile", "empirical", "kmeans"))
    p.add_argument("--no-hardmoe", action="store_true", help="skip the Hard-MoE baseline")
    p.add_argument("--workdir", help="run folder (resumable; default runs/ssmoe_<task>_<config>)")
    p.add_argument("--export", help="checkpoint folder (default <workdir>/checkpoints)")
    p.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto")
    p.set_defaults(func=cmd_ssmoe)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
