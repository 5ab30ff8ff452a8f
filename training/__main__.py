"""python -m training: headless training and evaluation.

Commands: sample-data, ssmoe, remix, moediff, moediff-table1, remix-figure, evaluate (see below; each
has its own --help).  Configs and data paths are checked before any work;
errors are one line on stderr and the exit status tells what went wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any, Sequence

from SuperResMoELib.core.errors import ConfigError, ExitCode, InputError, SuperResMoEError

from .precision import AMP_MODES


def _start_run(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(distributed context, device, progress reporter)`` of a training command:
    under ``torchrun`` this rank joins the process group (:mod:`training.distributed`)
    and only rank 0 logs at INFO and shows progress."""
    import logging

    from SuperResMoELib.app.progress_report import make_reporter

    from . import distributed

    ctx, device = distributed.setup(args.device)
    logging.basicConfig(level=logging.INFO if ctx.is_main else logging.WARNING,
                        format="%(asctime)s %(levelname)s: %(message)s")
    if ctx.active and ctx.is_main:
        logging.getLogger("superresmoe.training").info(
            "distributed training: %d ranks, backend %s, this rank on %s", ctx.world, ctx.backend, device)
    return ctx, device, make_reporter(args.progress if ctx.is_main else "none")


def _finish_run(ctx: Any, summary: str) -> None:
    """Rank 0 prints the summary; every rank leaves the process group."""
    from . import distributed

    if ctx.is_main:
        print(summary + (f" ({ctx.world} ranks)" if ctx.active else ""))
    distributed.shutdown()


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
    from pathlib import Path

    from .ssmoe.config import load_config
    from .ssmoe.sources import open_source
    from .domain import ssmoe_domain
    from .ssmoe.train import SSMoETrainer, load_trained
    from .ssmoe.train import export as export_network

    cfg = load_config(args.config)
    if args.width:
        cfg = dataclasses.replace(cfg, width=args.width)
    source = open_source(args.data, cfg.data_seed, cfg.library.variation if args.data == "sample" else "standard")
    workdir = Path(args.workdir or f"runs/ssmoe_{args.task}_{Path(args.config).stem}")
    export_dir = Path(args.export or workdir / "checkpoints")
    names = {(k, lab): f"ssmoe_{args.task}" if (k == cfg.n_experts and lab == cfg.labeler)
             else f"ssmoe_{args.task}_k{k}_{lab}" for k in args.k for lab in args.labeler}
    ctx, device, reporter = _start_run(args)
    start: dict[str, tuple[Any, dict]] = {}
    if args.start_from:  # every checkpoint read and matched to this run before any work
        wanted = [f"ssmoe_{args.task}_srunet", *names.values()] + ([] if args.no_hardmoe else
                                                                    [f"ssmoe_{args.task}_hardmoe"])
        start = {n: load_trained(Path(args.start_from), n, cfg, args.task, source.description) for n in wanted}
    t0 = time.perf_counter()
    trainer = SSMoETrainer(args.task, cfg, workdir, reporter, data=args.data, device=device, amp=args.amp)
    timings: dict[str, float] = {}
    data = {"data": trainer.source.description, "task": args.task,
            "config": cfg.description or args.config}
    domain = ssmoe_domain(trainer.source, args.task, trainer.subjects)

    def tick(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        return now

    def export(*a: Any, **kw: Any) -> None:  # rank 0 writes the checkpoints
        if ctx.is_main:
            export_network(*a, **kw)

    t = time.perf_counter()
    name = f"ssmoe_{args.task}_srunet"
    base = start[name][0] if start else trainer.baseline()
    t = tick("baseline", t)
    export(base, "srunet", args.task, cfg, 1, export_dir / name, {"training_data": data, "domain": domain})
    for k in args.k:
        for labeler in args.labeler:
            name = names[(k, labeler)]
            if start:
                moe, extra = start[name]
                extra = {key: extra[key] for key in ("labeler", "thresholds") if key in extra}
            else:
                lab = trainer.labels(base, k, labeler)
                moe = trainer.gater(base, k, labeler, lab["labels"])
                t = tick(f"gater_k{k}_{labeler}", t)
                moe, _ = trainer.experts(moe, k, labeler)
                t = tick(f"experts_k{k}_{labeler}", t)
                extra = {"labeler": labeler, "thresholds": lab["thresholds"].tolist()}
            if cfg.joint is not None:
                moe = trainer.joint(moe, k, labeler)
                t = tick(f"joint_k{k}_{labeler}", t)
            export(moe, "ssmoe", args.task, cfg, k, export_dir / name,
                   {"training_data": data, "domain": domain, "extra": extra})
    if not args.no_hardmoe:
        name = f"ssmoe_{args.task}_hardmoe"
        hm = start[name][0] if start else trainer.hardmoe(cfg.n_experts, base)
        t = tick("hardmoe", t)
        export(hm, "hardmoe", args.task, cfg, cfg.n_experts, export_dir / f"ssmoe_{args.task}_hardmoe",
               {"training_data": data, "domain": domain})
    reporter.close()
    _finish_run(ctx, f"SS-MoE {args.task}: done in {time.perf_counter() - t0:.0f} s; phases: {timings}; "
                     f"checkpoints in {export_dir}")
    return 0


def _hr_library(args: argparse.Namespace, cfg):
    """``cfg`` with the library overrides of ``--subjects``, ``--split`` and
    ``--validation-subjects``, checked against ``--data`` before any work.

    Raises:
        InputError: a bad folder, subjects beyond it.
        ConfigError: an invalid split (see :func:`training.config.check_validation_subjects`).
    """
    from .hr_source import hr_scans, parse_subjects

    n = None if args.data == "sample" else len(hr_scans(args.data))  # a bad folder fails before any work
    lib = cfg.library
    changes = {}
    if args.subjects:
        changes["subjects"] = parse_subjects(args.subjects, n)
    if args.split:
        changes["split"] = args.split
    if args.validation_subjects:
        changes["validation_subjects"] = parse_subjects(args.validation_subjects, n)
    if changes:
        lib = dataclasses.replace(lib, **changes)  # the library node checks itself again
        cfg = dataclasses.replace(cfg, library=lib)
    if n is not None and max(lib.subjects) >= n:
        raise InputError(f"the config trains on subjects {list(lib.subjects)} but {args.data} holds {n} subject(s); "
                         "give --subjects (e.g. all) or a config whose library.subjects index them")
    return cfg


def _data_description(args: argparse.Namespace, cfg) -> str:
    """The manifests' ``training_data.data``: which subjects of which data."""
    from .hr_source import describe as describe_source

    subjects = list(cfg.library.subjects)
    return f"embedded T1 sample subjects {subjects}" if args.data == "sample" \
        else f"subjects {subjects} of {describe_source(args.data)}"


def _training_data(args: argparse.Namespace, cfg, trainer) -> dict:
    """The manifests' ``training_data``: the data, config, degradation,
    skipped subjects and the split statement (:func:`training.hr_source.split_statement`)."""
    from .config import to_dict
    from .hr_source import split_statement

    subjects = list(cfg.library.subjects)
    return {"data": _data_description(args, cfg), "config": cfg.description or args.config,
            "degradation": to_dict(cfg.degradation),
            "skipped_subjects": trainer.skipped, "split": split_statement(args.data, subjects, trainer.split)}


def cmd_remix(args: argparse.Namespace) -> int:
    from pathlib import Path

    from SuperResMoELib.methods.remix import EXPERTS

    from .remix.config import load_config
    from .remix.train import ISOTROPIC_PHASE, REMIxTrainer, export, load_started

    cfg = load_config(args.config)
    if args.width:
        cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, width=args.width))
    cfg = _hr_library(args, cfg)
    if args.no_single and cfg.experts.init == "single":
        raise ConfigError('--no-single: experts.init "single" fine-tunes the experts from the 1 network')
    workdir = Path(args.workdir or f"runs/remix_{Path(args.config).stem}")
    export_dir = Path(args.export or workdir / "checkpoints")
    # expert 1 and the 1 network of a finished run, read and matched before any work
    started = load_started(Path(args.start_from), cfg, _data_description(args, cfg)) if args.start_from else {}
    ctx, device, reporter = _start_run(args)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    trainer = REMIxTrainer(cfg, workdir, reporter, device=device, amp=args.amp, data=args.data)
    timings["library"] = round(time.perf_counter() - t0, 1)
    for name, (net, val) in started.items():
        trainer.nets[name] = net.to(trainer.device)
        trainer.validation[name] = val
    # experts.init "single": expert 1, then the 1 network, then experts 2..7 fine-tuned from it;
    # router "anisotropy": the isotropic expert after the volume experts
    phases = ([f"expert{v}" for v in EXPERTS] + ([ISOTROPIC_PHASE] if cfg.router == "anisotropy" else [])
              + ([] if args.no_single else ["single"]))
    if cfg.experts.init == "single":
        phases.insert(1, phases.pop())
    for name in (n for n in phases if n not in started):
        t = time.perf_counter()
        if name == "single":
            trainer.single()
        elif name == ISOTROPIC_PHASE:
            trainer.isotropic_expert()
        else:
            trainer.expert(int(name[len("expert"):]))
        timings[name] = round(time.perf_counter() - t, 1)
    data = _training_data(args, cfg, trainer)
    written = export(trainer, export_dir / "remix_t1", None if args.no_single else export_dir / "remix_t1_single",
                     data) if ctx.is_main else []
    reporter.close()
    _finish_run(ctx, f"REMIx: done in {time.perf_counter() - t0:.0f} s; phases: {timings}; checkpoints: "
                     f"{', '.join(str(w) for w in written)}")
    return 0


def cmd_remix_figure(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .remix.config import load_config
    from .remix.evaluate import degradation_figure

    deg = load_config(args.config).degradation
    out = Path(args.out)
    degradation_figure(out, deg, deg.bins, args.per_bin)
    print(f"wrote {out}")
    return 0


def cmd_evaluate_remix(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from SuperResMoELib.app.progress_report import make_reporter

    from .remix.config import load_config
    from .remix.evaluate import evaluate_cases, write_report

    deg = load_config(args.config).degradation
    ck = _checkpoint_folder(args.checkpoints)
    checkpoints = {kind: str(ck / f"{name}.safetensors") for kind, name in
                   (("single", "remix_t1_single"), ("experts", "remix_t1")) if (ck / f"{name}.json").exists()}
    if not checkpoints:
        raise InputError(f"no remix_t1 / remix_t1_single checkpoint in {ck}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    bins = [b for b in deg.bins if not args.bins or b in args.bins]
    reporter = make_reporter(args.progress)
    t0 = time.perf_counter()
    if "table1" in args.tables:
        rows = evaluate_cases(checkpoints, bins, args.cases, deg, device=args.device,
                              options={"overlap": args.overlap}, progress=reporter)
        extra = {"checkpoints": checkpoints, "cases_per_bin": args.cases, "overlap": args.overlap,
                 "seconds": round(time.perf_counter() - t0, 1)}
        print(write_report(Path(args.out), rows, extra))
    if "outgen" in args.tables:
        from .outgen.evaluate import t1_report
        from .remix.evaluate import remix_models, versus

        models = remix_models(checkpoints)
        print(t1_report(Path(args.out), "remix_outgen", "REMIx on the out-of-generator T1 head", models,
                        checkpoints, versus(models), args.device, {"overlap": args.overlap}, args.outgen_block,
                        progress=reporter))
    reporter.close()
    return 0


def _moediff_outgen(args: argparse.Namespace, checkpoints: dict[str, str], out) -> None:
    """MoEDiff-SR (and its single-expert baseline, and REMIx's automatic choice
    when given) on the out-of-generator T1 head's scans: ``moediff_outgen.md``."""
    from pathlib import Path

    from SuperResMoELib.methods.moediff.method import DEFAULT_STEPS

    from .moediff.evaluate import GLOBAL, REMIX, SINGLE
    from .outgen.evaluate import t1_report

    steps = args.steps or DEFAULT_STEPS
    print(t1_report(Path(out), "moediff_outgen", "MoEDiff-SR on the out-of-generator T1 head",
                    ((SINGLE, "moediff", "single"), (GLOBAL, "moediff", "moediff"), (REMIX, "remix", "remix")),
                    checkpoints, (GLOBAL, SINGLE), args.device, {"overlap": args.overlap, "extra": {"steps": steps}},
                    args.outgen_block, {"steps": steps}))


def cmd_evaluate_moediff(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from .moediff.evaluate import (
        evaluate_cases,
        expert_figure,
        network_costs,
        steps_curve,
        steps_figure,
        write_report,
    )
    from SuperResMoELib.io.tables import write_csv

    ck = _checkpoint_folder(args.checkpoints)
    checkpoints = {kind: str(ck / f"{name}.safetensors") for kind, name in
                   (("moediff", "moediff_t1"), ("single", "moediff_t1_single"), ("spatial", "moediff_t1_spatial"))
                   if (ck / f"{name}.json").exists()}
    if "moediff" not in checkpoints:
        raise InputError(f"no moediff_t1 checkpoint in {ck}")
    if args.remix_checkpoints:
        remix = _checkpoint_folder(args.remix_checkpoints) / "remix_t1.json"
        if not remix.exists():
            raise InputError(f"no remix_t1 checkpoint in {args.remix_checkpoints}")
        checkpoints["remix"] = str(remix.with_suffix(".safetensors"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "outgen" in args.tables:
        _moediff_outgen(args, checkpoints, out)
    if "table1" not in args.tables:
        return 0
    t0 = time.perf_counter()
    extra: dict = {"checkpoints": checkpoints, "slices": args.slices, "cases_per_subject": args.cases,
                   "steps": args.steps}
    if args.curve:
        curve = steps_curve(checkpoints["moediff"], steps=args.curve_steps, device=args.device)
        write_csv(curve, out / "moediff_steps.csv")
        steps_figure(curve, out / "moediff_steps.png")
        extra["steps_curve"] = curve
    extra["expert_figure_psnr"] = expert_figure(checkpoints["moediff"], out / "moediff_experts.png", steps=args.steps)
    extra["costs"] = {k: network_costs(v, steps=args.steps) for k, v in checkpoints.items() if k != "remix"}
    rows = evaluate_cases(checkpoints, cases=args.cases, slices=args.slices, steps=args.steps, device=args.device)
    extra["seconds"] = round(time.perf_counter() - t0, 1)
    print(write_report(out, rows, extra))
    return 0


def cmd_moediff_table1(args: argparse.Namespace) -> int:
    """The Table I b/g ablation of MoEDiff-SR from its four run folders."""
    import logging
    from pathlib import Path

    from .moediff.ablation import evaluate_cells, write_table1

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        raise InputError(f"run folder(s) {missing} do not exist")
    rows, logs = evaluate_cells(runs, config=args.config, steps=args.steps, crops=args.crops, slices=args.slices)
    print(write_table1(Path(args.out), rows, logs))
    return 0


def _checkpoint_folder(path: str):
    """``path`` as a folder that exists.

    Raises:
        InputError: it does not.
    """
    from pathlib import Path

    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"checkpoint folder {folder} not found")
    return folder


def _n_weights(path) -> int:
    """Weights of a checkpoint as the reference counts them (BN statistics included)."""
    from SuperResMoELib.checkpoints.store import load_checkpoint

    tensors = load_checkpoint(path).tensors
    return int(sum(t.numel() for k, t in tensors.items() if not k.endswith("num_batches_tracked")))


def cmd_evaluate(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    import numpy as np

    from SuperResMoELib.app.progress_report import make_reporter

    from .ssmoe.evaluate import per_volume_mse, write_report

    from .ssmoe.sources import open_source

    if args.method == "remix":
        return cmd_evaluate_remix(args)
    if args.method == "moediff":
        return cmd_evaluate_moediff(args)
    if args.task is None:
        raise ConfigError("evaluate ssmoe needs --task aniso|iso")
    ck = _checkpoint_folder(args.checkpoints)
    n_rows = len(open_source(args.data).table())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    out = Path(args.out)
    reporter = make_reporter(args.progress)
    task = args.task
    rows = np.arange(0, n_rows, args.rows_step)
    main: dict[str, tuple[str, str | None]] = {"cubic": ("cubic", None)}
    for label, name, file in (("SR U-Net", "srunet", f"ssmoe_{task}_srunet"),
                              ("Hard MoE", "hardmoe", f"ssmoe_{task}_hardmoe"),
                              ("SS-MoE", "ssmoe", f"ssmoe_{task}")):
        if (ck / f"{file}.json").exists():
            main[label] = (name, str(ck / f"{file}.safetensors"))
    report = []
    held_out = None
    if "table1" in args.tables:
        r, scores, secs = per_volume_mse(task, main, rows, device=args.device, progress=reporter, data=args.data)
        held_out = scores
        extra = {label: {"checkpoint": p, "weights": _n_weights(p)} for label, (_, p) in main.items() if p}
        report.append(write_report(out, f"ssmoe_{task}_table1", f"Table 1 ({task}): per-volume MSE", scores, r,
                                   secs, extra))
    ablation_rows = np.arange(0, n_rows, args.ablation_rows_step)
    ablations = {f"K={k}": f"ssmoe_{task}_k{k}_mqs" for k in (2, 8)}
    ablations.update({f"labels={lab}": f"ssmoe_{task}_k4_{lab}" for lab in ("quantile", "empirical", "kmeans")})
    found = {label: ("ssmoe", str(ck / f"{f}.safetensors")) for label, f in ablations.items()
             if (ck / f"{f}.json").exists()}
    if "ablations" in args.tables and found and (ck / f"ssmoe_{task}.json").exists():
        found = {"K=4 (MQS)": ("ssmoe", str(ck / f"ssmoe_{task}.safetensors")), **found}
        r2, s2, t2 = per_volume_mse(task, found, ablation_rows, device=args.device, progress=reporter,
                                    data=args.data)
        extra2 = {label: {"checkpoint": p, "weights": _n_weights(p)} for label, (_, p) in found.items()}
        report.append(write_report(out, f"ssmoe_{task}_ablations", f"Ablations ({task}): experts and labelers",
                                   s2, r2, t2, extra2))
    if "outgen" in args.tables:
        from .outgen import OUTGEN_NOTE
        from .outgen.evaluate import ratio_rows

        n_og = len(open_source("outgen").table())
        og_rows, og, og_secs = per_volume_mse(task, main, list(range(0, n_og, args.outgen_rows_step)),
                                              device=args.device, progress=reporter, data="outgen")
        report.append(write_report(out, f"ssmoe_{task}_outgen", f"Out-of-generator qMRI head ({task}): "
                                   "per-volume MSE", og, og_rows, og_secs,
                                   {"note": OUTGEN_NOTE}, what="volumes of the out-of-generator qMRI head"))
        if held_out is not None:
            from SuperResMoELib.io.atomic import write_text_atomic
            from SuperResMoELib.io.tables import markdown_table, write_csv

            ratios = ratio_rows(held_out, og)
            write_csv(ratios, out / f"ssmoe_{task}_sets.csv")
            md = (f"### Mean per-volume MSE over the SR U-Net's ({task})\n\nHeld out: the held-out sample subject "
                  f"(a warp of the training template, held out from training, not a new population); "
                  f"{OUTGEN_NOTE}.\n\n" + markdown_table(ratios, ["method", "held_out", "out_of_generator"], "{:.3f}"))
            write_text_atomic(out / f"ssmoe_{task}_sets.md", md)
            report.append(md)
    reporter.close()
    print("\n".join(report))
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), not {text}")
    return value


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto",
                   help="progress display: a bar, JSON lines, none, or auto (a bar on a terminal)")


def _add_device(p: argparse.ArgumentParser, amp: bool) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (the first CUDA GPU, else the CPU), cpu, cuda or cuda:N (default auto)")
    if amp:
        p.add_argument("--amp", choices=("auto", *AMP_MODES), default="auto",
                       help="mixed precision: none, bf16 or fp16 (fp16 with a gradient scaler, CUDA only); "
                            "default auto = bf16 on a CUDA GPU that supports it, else fp16, none on the CPU")


def _add_hr_data(p: argparse.ArgumentParser) -> None:
    from .split import SPLIT_UNITS

    p.add_argument("--data", default="sample",
                   help="'sample' (embedded T1 subjects), a folder of your own HR T1 volumes (NIfTI/NRRD/MHA; "
                        "library.subjects index them in name order) or a BIDS dataset "
                        "(sub-*/[ses-*/]anat/*_T1w.nii[.gz], subjects in label order); unusable scans are "
                        "skipped with a warning and counted")
    p.add_argument("--subjects", help="train on these subjects instead of the config's library.subjects: 'all' "
                                      "(every scan of --data) or indices and ranges, e.g. 0-49,60")
    p.add_argument("--split", choices=SPLIT_UNITS,
                   help="what validates: whole subjects, random patches of every subject, or auto (the config's "
                        "default: subjects on your own data, patches on the sample); the manifest states it")
    p.add_argument("--validation-subjects",
                   help="the subjects that validate in a split by subject (default: library.validation_fraction "
                        "of them, drawn with the seed)")


def _add_run(p: argparse.ArgumentParser, default_workdir: str) -> None:
    p.add_argument("--config", default="compact",
                   help="compact (CPU), full (GPU) or a JSON file (default compact)")
    p.add_argument("--workdir", help=f"run folder, resumable (default {default_workdir})")
    p.add_argument("--export", help="checkpoint folder (default <workdir>/checkpoints)")
    _add_device(p, amp=True)
    _add_progress(p)


def cmd_domain(args: argparse.Namespace) -> int:
    """Stamp the training domain into every SS-MoE / REMIx manifest of a folder."""
    from pathlib import Path

    from SuperResMoELib.checkpoints.store import MANIFEST_SUFFIX, read_manifest
    from SuperResMoELib.io.atomic import write_text_atomic

    from .domain import remix_domain, ssmoe_domain
    from .remix.config import load_config as remix_config
    from .ssmoe.config import load_config as ssmoe_config
    from .ssmoe.sources import open_source

    folder = Path(args.checkpoints)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such checkpoint folder")
    domains: dict[tuple[str, str], dict] = {}
    for path in sorted(folder.glob("*" + MANIFEST_SUFFIX)):
        manifest = read_manifest(path)
        key = (manifest.method, manifest.task)
        if key not in domains:
            if manifest.method == "ssmoe":
                cfg = ssmoe_config(args.config)
                domains[key] = ssmoe_domain(open_source("sample", cfg.data_seed), manifest.task, cfg.library.subjects)
            elif manifest.method == "remix":
                domains[key] = remix_domain(remix_config(args.config).degradation)
            else:
                continue
        write_text_atomic(path, dataclasses.replace(manifest, domain=domains[key]).to_json())
        print(f"{path.name}: domain {domains[key]}")
    return 0


def cmd_moediff(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .moediff.config import load_config
    from .moediff.train import MoEDiffTrainer, export
    from .moediff.variants import moediff_variant, variant_name

    cfg = moediff_variant(load_config(args.config), args.gating, args.single_expert, args.extra_inputs,
                          args.joint_epochs)
    cfg = _hr_library(args, cfg)
    workdir = Path(args.workdir or f"runs/moediff_{Path(args.config).stem}")
    export_dir = Path(args.export or workdir / "checkpoints")
    ctx, device, reporter = _start_run(args)
    t0 = time.perf_counter()
    trainer = MoEDiffTrainer(cfg, workdir, reporter, device=device, amp=args.amp, data=args.data)
    times = {"library": round(time.perf_counter() - t0, 1), **trainer.run()}
    data = _training_data(args, cfg, trainer)
    name = args.name or variant_name(cfg)
    reporter.close()
    if ctx.is_main:
        written = export(trainer, export_dir / name, data, times)
        _finish_run(ctx, f"MoEDiff-SR: done in {time.perf_counter() - t0:.0f} s; phases: {times}; "
                         f"checkpoint: {written} ({written.stat().st_size / 1e6:.1f} MB)")
    else:
        _finish_run(ctx, "")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m training`` parser (every option has a help text)."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"exit status: {ExitCode.describe()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do (python -m training COMMAND --help for its options)")
    p = sub.add_parser("sample-data", help="build and cache the embedded sample subjects",
                       description="Build (and cache) the embedded sample subjects; report the time of each.")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample-data generator (default 0)")
    p.add_argument("--t1-subjects", type=int, default=3, help="T1 subjects to build (default 3)")
    p.add_argument("--mudi-subjects", type=int, default=5, help="MUDI-like subjects to build (default 5)")
    p.set_defaults(func=cmd_sample_data)
    p = sub.add_parser("ssmoe", help="train SS-MoE (all phases) and its baselines for one task",
                       description="Train SS-MoE for one task (baseline SR U-Net, pseudo labels, gater, experts) "
                                   "and the Hard-MoE baseline; export the checkpoints. Resumable.")
    p.add_argument("--task", choices=("aniso", "iso"), required=True, help="the SR task: aniso or iso")
    p.add_argument("--data", default="sample",
                   help="'sample' (embedded MUDI-like subjects) or 'mudi:<folder>' (real Super MUDI, see README)")
    p.add_argument("--width", type=_positive_int, help="override the config's network width")
    p.add_argument("--k", type=_positive_int, nargs="+", default=[4], help="numbers of experts (default 4)")
    p.add_argument("--labeler", nargs="+", default=["mqs"], choices=("mqs", "quantile", "empirical", "kmeans"),
                   help="pseudo labelers to train gaters and experts with (default mqs)")
    p.add_argument("--no-hardmoe", action="store_true", help="skip the Hard-MoE baseline")
    p.add_argument("--start-from", metavar="CHECKPOINTS",
                   help="a finished run's checkpoint folder (the same config but for 'joint'): its SR U-Net, "
                        "SS-MoE and Hard-MoE are read from there instead of trained; only the joint phase trains")
    _add_run(p, "runs/ssmoe_<task>_<config>")
    p.set_defaults(func=cmd_ssmoe)
    p = sub.add_parser("remix", help="train the seven REMIx experts and the 1-network baseline",
                       description="Train the seven REMIx resolution experts and the 1-network baseline; "
                                   "export the checkpoints. Resumable.")
    p.add_argument("--width", type=_positive_int, help="override the config's U-Net width")
    p.add_argument("--no-single", action="store_true", help="skip the 1-network baseline")
    p.add_argument("--start-from", metavar="CHECKPOINTS",
                   help="a finished run's checkpoint folder: its expert 1 and 1 network are read from there "
                        "instead of trained (same library, degradation, U-Net, loss and those two phases); "
                        "the other experts (and an isotropic expert) train from them")
    _add_hr_data(p)
    _add_run(p, "runs/remix_<config>")
    p.set_defaults(func=cmd_remix)
    p = sub.add_parser("moediff", help="train MoEDiff-SR (VQ-VAE, latent cache, joint diffusion)",
                       description="Train MoEDiff-SR: the 2D VQ-VAE, the latent cache, then the condition encoder, "
                                   "gating and three diffusion experts jointly; export one checkpoint. Resumable.")
    _add_hr_data(p)
    p.add_argument("--name", help="checkpoint name (default moediff_t1, moediff_t1_<variant> for the variants)")
    p.add_argument("--gating", choices=("global", "spatial", "uniform"),
                   help="override the config's gating mode (spatial: per-token gates; uniform: 1/K, no routing)")
    p.add_argument("--single-expert", action="store_true",
                   help="the single-expert baseline: expert E1 alone, T = 1000, three times the joint steps "
                        "(the same number of expert evaluations)")
    p.add_argument("--extra-inputs", nargs="+", choices=("bias", "warp"),
                   help="give the corrections b (bias) and/or g (warp) to the condition encoder (Table I ablation)")
    p.add_argument("--joint-epochs", type=_positive_int,
                   help="override the config's joint-phase epochs (the Table I ablation trains its four cells "
                        "at one shorter budget)")
    _add_run(p, "runs/moediff_<config>")
    p.set_defaults(func=cmd_moediff)
    p = sub.add_parser("moediff-table1", help="MoEDiff-SR Table I ablation (corrections b, g) from its runs",
                       description="The paper's Table I ablation of MoEDiff-SR: gating-loss convergence and "
                                   "held-out tile quality of runs trained with and without the corrections "
                                   "(python -m training moediff --joint-epochs N [--extra-inputs ...]).")
    p.add_argument("--runs", nargs="+", required=True, help="the cells' run folders (each with its exported checkpoint)")
    p.add_argument("--out", required=True, help="folder for moediff_table1.{md,csv,json,png}")
    p.add_argument("--config", default="compact", help="config whose library and degradation cut the held-out tiles")
    p.add_argument("--steps", type=_positive_int, help="sampler steps (default: the method's)")
    p.add_argument("--crops", type=_positive_int, default=8, help="cubes cut per held-out subject (default 8)")
    p.add_argument("--slices", type=_positive_int, default=8, help="tiles per cube (default 8)")
    p.set_defaults(func=cmd_moediff_table1)
    p = sub.add_parser("remix-figure", help="figure of drawn REMIx degradations per bin",
                       description="A PNG of drawn REMIx training degradations, one row per bin.")
    p.add_argument("--config", default="compact", help="config whose degradation is drawn (default compact)")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--per-bin", type=_positive_int, default=3, help="draws per bin (default 3)")
    p.set_defaults(func=cmd_remix_figure)
    p = sub.add_parser("domain", help="write the training domain into exported manifests",
                       description="Write the training inputs' domain (spacing, intensity range) into the manifests "
                                   "of SS-MoE and REMIx checkpoints exported before domains existed, from the "
                                   "sample data and config they were trained with.")
    p.add_argument("--checkpoints", required=True, help="folder with the exported checkpoints")
    p.add_argument("--config", default="compact", help="config the checkpoints were trained with (default compact)")
    p.set_defaults(func=cmd_domain)
    p = sub.add_parser("evaluate", help="paper-protocol evaluation of a method's checkpoints",
                       description="The paper-protocol evaluation of a method's exported checkpoints "
                                   "(Markdown, CSV and figures).")
    p.add_argument("method", choices=("ssmoe", "remix", "moediff"),
                   help="which method's checkpoints: ssmoe, remix or moediff")
    p.add_argument("--task", choices=("aniso", "iso"), help="SS-MoE task (required for ssmoe)")
    p.add_argument("--config", default="compact", help="REMIx: config whose degradation draws the cases")
    p.add_argument("--cases", type=_positive_int, default=5,
                   help="REMIx: cases per resolution bin; MoEDiff-SR: cases per held-out subject (default 5)")
    p.add_argument("--slices", type=_positive_int, default=16,
                   help="MoEDiff-SR: axial slices per case (a slab through the brain's middle; default 16)")
    p.add_argument("--steps", type=_positive_int, help="MoEDiff-SR: sampler steps (default: the method's)")
    p.add_argument("--curve", action="store_true", help="MoEDiff-SR: also measure quality and time vs sampler steps")
    p.add_argument("--curve-steps", type=_positive_int, nargs="+", default=[1, 2, 5, 10, 20, 50, 100],
                   help="MoEDiff-SR: the sampler steps of the curve (default 1 2 5 10 20 50 100)")
    p.add_argument("--remix-checkpoints", help="MoEDiff-SR: folder with remix_t1 for the REMIx row")
    p.add_argument("--bins", type=int, nargs="+", help="REMIx: only these bins (default all)")
    p.add_argument("--overlap", type=_fraction, default=0.5,
                   help="REMIx, MoEDiff-SR out-of-generator table: patch overlap of the networks")
    p.add_argument("--checkpoints", required=True, help="folder with the exported checkpoints")
    p.add_argument("--out", required=True, help="folder for Markdown, CSV and figures")
    p.add_argument("--data", default="sample", help="'sample' or 'mudi:<folder>' (held out: the last subject)")
    p.add_argument("--rows-step", type=_positive_int, default=1,
                   help="evaluate every N-th volume (default 1: all)")
    p.add_argument("--ablation-rows-step", type=_positive_int, default=4,
                   help="volume step of the ablation tables (default 4)")
    p.add_argument("--tables", nargs="+", choices=("table1", "ablations", "outgen"),
                   default=["table1", "ablations", "outgen"],
                   help="which tables to compute (default all): table1 on the held-out sample subject(s), the "
                        "SS-MoE ablations (they need their checkpoints), outgen: the out-of-generator set "
                        "(training/outgen: the qMRI head for SS-MoE, the T1 head for REMIx)")
    p.add_argument("--outgen-rows-step", type=_positive_int, default=1,
                   help="SS-MoE: evaluate every N-th volume of the out-of-generator head (default 1: all 96)")
    p.add_argument("--outgen-block", type=_positive_int,
                   help="REMIx, MoEDiff-SR: only a central block of this many mm of the out-of-generator head (default: "
                        "its whole brain box)")
    _add_device(p, amp=False)
    _add_progress(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a :class:`SuperResMoEError` is one line on stderr and
    its :class:`ExitCode` (a bad config: 8, bad input data: 3, ...)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SuperResMoEError as err:
        print(f"python -m training {args.command}: error: {err}", file=sys.stderr)
        return int(err.exit_code)


if __name__ == "__main__":
    sys.exit(main())
