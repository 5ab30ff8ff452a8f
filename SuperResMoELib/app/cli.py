"""The ``superresmoe`` command line.

Subcommands: ``enhance``, ``evaluate``, ``sample-data``, ``info``, ``demo``.
Run ``superresmoe <command> --help`` for the options of each.

Exit codes: :class:`~SuperResMoELib.core.errors.ExitCode` (``superresmoe --help`` lists them).

``--progress json`` prints one JSON object per line on stdout:
``{"stage": ..., "fraction": 0..1, "message": ...}``; the last line has
``"stage": "done"`` and a ``"result"`` object (or ``"stage": "error"``
with ``"exit_code"``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from SuperResMoELib import __version__
from SuperResMoELib.core.errors import (
    CancelledError,
    ExitCode,
    InputError,
    SuperResMoEError,
    missing_package_error,
)
from SuperResMoELib.app.cluster import add_cluster_arguments
from SuperResMoELib.app.cohort import DEFAULT_RETRIES
from SuperResMoELib.core.options import add_enhance_arguments, values_from_namespace
from SuperResMoELib.core.progress import CancelToken
from SuperResMoELib.io.tables import append_csv, flatten, write_csv


log = logging.getLogger("superresmoe")

#: The metrics table of an output folder (one row per enhanced input, appended).
METRICS_TABLE = "metrics.csv"


# ------------------------------------------------------------------ parsing
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto",
                   help="progress display: a bar on a terminal (auto), JSON lines for scripts, or none")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superresmoe",
        description="Mixture-of-experts MRI super-resolution (SS-MoE, REMIx, MoEDiff-SR) and the cubic baseline.",
        epilog=f"Exit codes: {ExitCode.describe()}.",
    )
    parser.add_argument("--version", action="version", version=f"superresmoe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("enhance", help="super-resolve image files, folders or a BIDS dataset",
                       description="Super-resolve files, every image in folders (.nii, .nii.gz, .nrrd, .mha) or "
                                   "every T1w scan of a BIDS dataset; here, or on a Dask cluster (--workers, "
                                   "--scheduler). An input whose output and sidecar show it done with the same "
                                   "input, method, checkpoint and settings is skipped (--overwrite redoes it).")
    p.add_argument("-i", "--input", nargs="+", required=True, type=Path,
                   help="image file(s), folder(s) or a BIDS dataset root")
    p.add_argument("-o", "--output", type=Path,
                   help="output file (one input) or folder (written as <stem>_<method><ext>); with --bids the "
                        "derivatives folder (default <dataset>/derivatives/superresmoe)")
    p.add_argument("--bids", action="store_true",
                   help="the input is a BIDS dataset: write derivatives sub-*/[ses-*/]anat/*_desc-<method>_T1w.nii.gz "
                        "with JSON sidecars and dataset_description.json")
    p.add_argument("--overwrite", action="store_true", help="enhance inputs again even when already done")
    p.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                   help=f"retries of a file that failed for a reason other than its input (default {DEFAULT_RETRIES})")
    p.add_argument("--reference", type=Path, help="HR reference file (or folder with the same file names): "
                   "also write error maps and metrics")
    p.add_argument("--table", type=Path, help="acquisition table for a 4D input (gx gy gz b TI TE per frame)")
    add_enhance_arguments(p)
    add_cluster_arguments(p)
    _add_common(p)

    p = sub.add_parser("evaluate", help="compare predictions with references",
                       description="Metrics (MSE, SS-MoE MSE, PSNR, SSIM, correlation) of predictions vs references; "
                                   "files, or folders matched by file name.")
    p.add_argument("--reference", "-r", required=True, type=Path, help="reference file or folder")
    p.add_argument("--prediction", "-p", required=True, type=Path, help="prediction file or folder")
    p.add_argument("--output", type=Path, help="write the table here (.csv) and as .json beside it")
    p.add_argument("--error-maps", type=Path, help="folder for squared and absolute error maps")
    _add_common(p)

    p = sub.add_parser("sample-data", help="write the embedded sample data (built offline from the MNI152 template)")
    p.add_argument("--out", type=Path, default=Path("superresmoe-sample"), help="output folder")
    p.add_argument("--kind", choices=("t1", "mudi", "all"), default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subject", type=int, help="subject index (default: the held-out one)")
    p.add_argument("--rows", type=int, default=64, help="MUDI frames to write (0 = all 1344; default 64)")
    _add_common(p)

    p = sub.add_parser("info", help="methods, checkpoints, devices and versions")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_common(p)

    p = sub.add_parser("demo", help="make sample LR/HR pairs, enhance them with each method, print metrics",
                       description="Build the sample LR/HR pairs offline and enhance them with every method that "
                                   "can run (under a minute on 2 CPU cores; --full: about 8 minutes).")
    p.add_argument("--out", type=Path, default=Path("superresmoe-demo"), help="output folder")
    p.add_argument("--methods", nargs="+", help="methods to run (default: all that can run)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=0, help="sample data seed (default 0)")
    p.add_argument("--full", action="store_true",
                   help="the whole T1 volume and 64 qMRI frames instead of a central T1 block and 4 frames")
    _add_common(p)
    return parser


# ----------------------------------------------------------------- commands
def cmd_enhance(args: argparse.Namespace, progress, cancel: CancelToken) -> tuple[int, Any]:
    from SuperResMoELib.app import cluster, cohort
    from SuperResMoELib.app.pipeline import build_job

    if args.retries < 0:
        raise InputError(f"--retries must be 0 or more, got {args.retries}")
    req = cluster.request_from_namespace(args)
    first = args.input[0]
    template = build_job(values_from_namespace(args), first, args.output or first, reference=args.reference,
                         table=args.table)
    planned, out = cohort.plan_jobs(args.input, args.output, template, args.bids)
    since = time.time()
    where = "here"
    if req.wanted:
        client, local, where = cluster.open_client(req)
        progress("enhance", 0.0, f"{len(planned)} input(s) {where}")
        try:
            outcomes = cohort.run_on_dask(client, planned, args.overwrite, args.retries, progress, cancel)
        finally:
            cluster.close(client, local)
    else:
        outcomes = cohort.run_here(planned, args.overwrite, args.retries, progress, cancel)
    stale = cohort.remove_stale_temporaries(planned, since)
    c = cohort.counts(outcomes)
    failures = [o for o in outcomes if o["status"] == cohort.FAILED]
    if failures and c["failed"] == c["total"]:
        raise InputError(failures[0]["error"] if len(failures) == 1 else
                         f"all {len(failures)} inputs failed; first: {Path(failures[0]['input']).name}: "
                         f"{failures[0]['error']}")
    for o in failures:
        log.error("%s: %s", Path(o["input"]).name, o["error"])
    summaries = [o["summary"] for o in outcomes if o["status"] == cohort.DONE]
    description = None
    if args.bids:
        description = str(_write_bids_description(out, args.input[0], template.method, outcomes))
    finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [{"time": finished, "method": s["method"], "input": str(s["input"]), "output": s["output"],
             **flatten(s["metrics"]), "seconds": round(s["seconds"], 3)} for s in summaries]
    tables = []
    if any(s["metrics"] for s in summaries):  # one row per run and input, appended: earlier runs are kept
        n = append_csv(rows, out / METRICS_TABLE)
        tables.append({"path": str(out / METRICS_TABLE), "rows": n, "added": len(rows)})
    code = ExitCode.PARTIAL if failures else ExitCode.OK
    return code, {"counts": c, "where": where, "outputs": summaries,
                  "skipped": [{k: o[k] for k in ("input", "output", "reason")} for o in outcomes
                              if o["status"] == cohort.SKIPPED],
                  "failures": [{"input": o["input"], "error": o["error"]} for o in failures],
                  "records": [{k: o[k] for k in ("input", "output", "status", "worker")} for o in outcomes],
                  "checkpoint_loads": {o["worker"]: o["checkpoint_loads"] for o in outcomes
                                       if o.get("checkpoint_loads") is not None},
                  "tables": tables, "stale_temporaries_removed": stale, "dataset_description": description}


def _write_bids_description(out: Path, root: Path, method: str, outcomes: list[dict[str, Any]]) -> Path:
    """``dataset_description.json`` of the derivatives, one ``GeneratedBy``
    entry per checkpoint the finished outputs' sidecars name."""
    from SuperResMoELib import __version__
    from SuperResMoELib.app.provenance import read_sidecar
    from SuperResMoELib.io.bids import write_dataset_description

    checkpoints: dict[str, dict[str, Any] | None] = {}
    for o in outcomes:
        side = read_sidecar(Path(o["output"])) if o["status"] != "failed" else None
        if side is not None:
            ck = side.get("checkpoint")
            checkpoints[json.dumps(ck, sort_keys=True)] = None if ck is None else \
                {"name": ck.get("name"), "sha256": ck.get("sha256")}
    path = out / "dataset_description.json"
    for ck in checkpoints.values() or [None]:
        path = write_dataset_description(out, root, method, ck, __version__)
    return path


def _print_table(rows: list[dict[str, Any]], keys: Sequence[str], stream=None) -> None:
    stream = stream or sys.stdout

    def fmt(v: Any) -> str:
        return f"{v:.5g}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    stream.write("  ".join(k.ljust(w) for k, w in zip(keys, widths)) + "\n")
    for c in cells:
        stream.write("  ".join(v.ljust(w) for v, w in zip(c, widths)) + "\n")


def cmd_evaluate(args: argparse.Namespace, progress, cancel: CancelToken) -> tuple[int, Any]:
    from SuperResMoELib import io
    from SuperResMoELib.evaluation.metrics import absolute_error_map, squared_error_map
    from SuperResMoELib.app.pipeline import compare_to_reference

    if args.prediction.is_dir():
        preds = io.list_volume_files(args.prediction)
        if not args.reference.is_dir():
            raise InputError("a prediction folder needs a reference folder (files matched by name)")
        pairs = [(args.reference / p.name, p) for p in preds]
    else:
        pairs = [(args.reference, args.prediction)]
    if not pairs:
        raise InputError(f"no image files in {args.prediction}")
    rows = []
    for n, (ref_path, pred_path) in enumerate(pairs):
        cancel.check()
        progress("evaluate", n / len(pairs), pred_path.name)
        ref, pred = io.read_volume(ref_path), io.read_volume(pred_path)
        metrics = compare_to_reference(ref, pred)
        rows.append({"prediction": pred_path.name, "reference": ref_path.name, **flatten(metrics)})
        if args.error_maps is not None:
            stem = io.volume_stem(pred_path)
            io.write_volume(squared_error_map(ref, pred), args.error_maps / f"{stem}_sqerr.nii.gz")
            io.write_volume(absolute_error_map(ref, pred), args.error_maps / f"{stem}_abserr.nii.gz")
    progress("evaluate", 1.0, f"{len(rows)} pair(s)")
    if args.output is not None:
        write_csv(rows, args.output)
        from SuperResMoELib.io.atomic import write_text_atomic

        write_text_atomic(args.output.with_suffix(".json"), json.dumps(rows, indent=2))
    return ExitCode.OK, {"rows": rows}


def cmd_sample_data(args: argparse.Namespace, progress, cancel: CancelToken) -> tuple[int, Any]:
    from SuperResMoELib.sample_data import write_sample_data

    rows = None if args.rows == 0 else args.rows
    res = write_sample_data(args.out, kind=args.kind, seed=args.seed, subject=args.subject,
                            mudi_rows=rows, progress=progress)
    return ExitCode.OK, res


def info_dict() -> dict[str, Any]:
    import platform

    import numpy
    import torch

    from SuperResMoELib.checkpoints.store import checkpoint_search_dirs, list_checkpoints
    from SuperResMoELib.engine.devices import available_devices
    from SuperResMoELib.methods import get_method_class, method_names

    methods = []
    for name in method_names():
        cls = get_method_class(name)
        methods.append({"name": name, "title": cls.title, "description": cls.description,
                        "tasks": list(cls.tasks), "needs_checkpoint": cls.needs_checkpoint})
    ckpts = [{"path": str(p), "method": m.method, "task": m.task, "version": m.version}
             for p, m in list_checkpoints()]
    return {
        "superresmoe": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "cuda_available": torch.cuda.is_available(),
        "devices": [{"name": d.name, "label": d.label, "memory_bytes": d.memory_bytes, "small": d.small}
                    for d in available_devices()],
        "methods": methods, "checkpoints": ckpts,
        "checkpoint_dirs": [str(d) for d in checkpoint_search_dirs()],
    }


def cmd_info(args: argparse.Namespace, progress, cancel: CancelToken) -> tuple[int, Any]:
    info = info_dict()
    if args.json:
        print(json.dumps(info, indent=2))
        return ExitCode.OK, None
    print(f"superresmoe {info['superresmoe']}  (python {info['python']}, torch {info['torch']}, "
          f"numpy {info['numpy']})")
    print("\nMethods:")
    for m in info["methods"]:
        tasks = f" tasks: {', '.join(m['tasks'])}" if m["tasks"] else ""
        print(f"  {m['name']:<11} {m['description']}{tasks}")
    print("\nCheckpoints:")
    for c in info["checkpoints"] or [{"path": "(none found)", "method": "", "task": ""}]:
        print(f"  {c['method']:<11} {c['task']:<8} {c['path']}")
    print("  searched: " + os.pathsep.join(info["checkpoint_dirs"]))
    print("\nDevices:")
    for d in info["devices"]:
        print(f"  {d['label']}" + ("  (small: < 4 GiB, use a small batch)" if d["small"] else ""))
    return ExitCode.OK, None


def cmd_demo(args: argparse.Namespace, progress, cancel: CancelToken) -> tuple[int, Any]:
    from SuperResMoELib.app.demo import run_demo
    from SuperResMoELib.methods import get_method_class, method_names

    names = args.methods or [n for n in method_names() if _can_run(get_method_class(n))]
    return ExitCode.OK, run_demo(args.out, names, args.device, args.seed, args.full, progress, cancel)


def _can_run(cls) -> bool:
    """True when the method needs nothing, or finds a checkpoint for one of its tasks."""
    if not cls.needs_checkpoint:
        return True
    from SuperResMoELib.core.errors import CheckpointError

    finder = getattr(cls(), "find_checkpoint", None)
    for task in cls.tasks or ("",):
        try:
            if finder is not None:
                finder(task)
                return True
        except CheckpointError:
            continue
    return False


COMMANDS = {"enhance": cmd_enhance, "evaluate": cmd_evaluate, "sample-data": cmd_sample_data,
            "info": cmd_info, "demo": cmd_demo}


def _report(command: str, result: Any) -> None:
    """Human-readable summary on stdout (not for --progress json)."""
    if result is None:
        return
    if command == "enhance":
        for sk in result["skipped"]:
            print(f"{sk['input']}: skipped, {sk['reason']}")
        for s in result["outputs"]:
            print(f"{s['input']} -> {s['output']}  ({s['seconds']:.1f} s)")
            if s.get("simulation"):
                print(f"    {s['simulation']['note']}")
            if s["info"].get("reason"):
                print(f"    {s['info']['reason']}")
            for w in s["info"].get("warnings", []):
                print(f"    warning: {w}")
            for f in s["files"]:
                if f != s["output"]:
                    print(f"    {f}")
            if s["metrics"]:
                m = flatten(s["metrics"])
                print("    " + "  ".join(f"{k}={v:.5g}" for k, v in m.items() if isinstance(v, float)))
        for t in result.get("tables", []):
            print(f"metrics table: {t['path']} ({t['added']} row(s) added, {t['rows']} in all)")
        if result.get("dataset_description"):
            print(f"BIDS derivatives: {result['dataset_description']}")
        c = result["counts"]
        print(f"{c['total']} input(s) {result['where']}: {c['done']} done, {c['skipped']} skipped, "
              f"{c['failed']} failed")
    elif command == "evaluate":
        keys = [k for k in ("prediction", "psnr", "ssim", "mse", "mse_ssmoe", "rmse", "correlation",
                            "mse_ssmoe_per_frame_mean", "mean_psnr") if any(k in r for r in result["rows"])]
        _print_table(result["rows"], keys)
    elif command == "sample-data":
        print(f"wrote {len(result['files'])} file(s) in {result['seconds']:.1f} s:")
        for f in result["files"]:
            print(f"  {f}")
    elif command == "demo":
        for kind, c in result["cases"].items():
            print(f"sample {kind}: LR {c['lr']} -> HR {c['hr']} ({c['frames']} volume(s)"
                  + ("" if c["full"] else "; quick demo, --full for the whole data") + ")")
        print("files written:")
        for f in result["files"]:
            print(f"  {f}")
        print("metrics against the HR reference:")
        if result["metrics"]:
            _print_table(result["metrics"], list(result["metrics"][0]))


def _internal_error(exc: BaseException, reporter: Any, debug: bool) -> int:
    """Report a program error as one line (the traceback with ``--debug``)."""
    if debug:
        traceback.print_exc()
    msg = f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"
    reporter.emit({"stage": "error", "fraction": 1.0, "message": msg, "exit_code": ExitCode.INTERNAL})
    print(f"superresmoe: {msg}", file=sys.stderr)
    return int(ExitCode.INTERNAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``superresmoe`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    from SuperResMoELib.app.progress_report import make_reporter

    reporter = make_reporter(args.progress)
    cancel = CancelToken()

    def on_signal(signum, frame):  # noqa: ARG001
        cancel.cancel()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM,) if hasattr(signal, "SIGTERM")}
    try:
        code, result = COMMANDS[args.command](args, reporter, cancel)
        reporter.close()
        if args.progress == "json":
            reporter.emit({"stage": "done", "fraction": 1.0, "message": "finished", "exit_code": code,
                           "result": result})
        else:
            _report(args.command, result)
        return int(code)
    except (SuperResMoEError, KeyboardInterrupt, ImportError) as exc:
        reporter.close()
        if isinstance(exc, ImportError) and missing_package_error(exc) is None:
            return _internal_error(exc, reporter, args.debug)
        err = (CancelledError("cancelled by the user") if isinstance(exc, KeyboardInterrupt)
               else missing_package_error(exc) if isinstance(exc, ImportError) else exc)
        assert err is not None
        if args.debug:
            traceback.print_exc()
        reporter.emit({"stage": "error", "fraction": 1.0, "message": str(err), "exit_code": err.exit_code})
        print(f"superresmoe: error: {err}", file=sys.stderr)
        return int(err.exit_code)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback on request
        reporter.close()
        return _internal_error(exc, reporter, args.debug)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
