"""Batch Enhance through the module's logic, for Slicer without a main window::

    Slicer --no-main-window --python-script SuperResMoE/batch.py \\
        --input scans/ --output enhanced/ --method remix [--reference hr/] [--device cuda:0]

Every image file (.nii, .nii.gz, .nrrd, .mha) of the inputs is loaded into the
scene, enhanced by the same background process the panel uses, and the SR
volume (plus error maps / expert map when there are any) written to the output
folder as ``<name>_<method>.nii.gz``.  The script exits with 0 (all done),
3 (no input could be processed), 7 (some inputs failed) or 5 (cancelled)
(:class:`SuperResMoELib.core.errors.ExitCode`),
and prints one line per file.

It also runs with plain Python where the ``slicer-core`` wheel is installed
(``python SuperResMoE/batch.py ...``), which is how it is tested.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
for _candidate in (_HERE, os.path.dirname(_HERE)):
    if os.path.isdir(os.path.join(_candidate, "SuperResMoELib")) and _candidate not in sys.path:
        sys.path.insert(0, _candidate)


def parse(argv: list[str]) -> argparse.Namespace:
    from SuperResMoELib.core.errors import ExitCode
    from SuperResMoELib.core.options import add_enhance_arguments

    p = argparse.ArgumentParser(prog="batch.py", description="Batch Enhance with the SuperResMoE module logic.",
                                epilog=f"Exit codes: {ExitCode.describe()}.")
    p.add_argument("--input", "-i", nargs="+", required=True, type=Path, help="image files or folders")
    p.add_argument("--output", "-o", required=True, type=Path, help="output folder")
    p.add_argument("--reference", type=Path, help="HR file or folder (matched by file name): error maps + metrics")
    add_enhance_arguments(p, only=lambda spec: spec.batch)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    import slicer

    from SuperResMoELib import io
    from SuperResMoELib.core.errors import ExitCode
    from SuperResMoELib.core.options import values_from_namespace
    from SuperResMoELib.slicer import mrml
    from SuperResMoELib.slicer.logic import EnhanceCancelled, EnhanceFailed, EnhanceRun, request_from_dict

    scene = getattr(slicer, "mrmlScene", None) or slicer.vtkMRMLScene()
    files = io.volume_files(args.input)
    if not files:
        print(f"batch: no image files in {', '.join(map(str, args.input))}", file=sys.stderr)
        return ExitCode.INPUT
    given = {k: v for k, v in values_from_namespace(args).items() if hasattr(args, k)}
    request = request_from_dict(given)
    args.output.mkdir(parents=True, exist_ok=True)
    done, failed = 0, 0
    for path in files:
        stem = io.volume_stem(path)
        try:
            node = mrml.read_volume_node(scene, path, stem)
            ref = None
            if args.reference is not None:
                ref_path = args.reference / path.name if args.reference.is_dir() else args.reference
                ref = mrml.read_volume_node(scene, ref_path, f"{stem}_reference")
            outcome = EnhanceRun(scene, node, request, ref).run(wait=True)
        except EnhanceCancelled:
            print(f"{path.name}: cancelled", file=sys.stderr)
            return ExitCode.CANCELLED
        except (EnhanceFailed, OSError) as exc:
            failed += 1
            print(f"{path.name}: FAILED: {exc}", file=sys.stderr)
            continue
        written = []
        for tag, out_node in outcome.nodes.items():
            if out_node.IsA("vtkMRMLVolumeNode"):
                suffix = "" if tag == "sr" else f"_{tag}"
                written.append(mrml.write_node(out_node, args.output / f"{stem}_{args.method}{suffix}.nii.gz").name)
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in outcome.metrics.items() if isinstance(v, float))
        print(f"{path.name}: {', '.join(written)}" + (f" ({metrics})" if metrics else ""))
        done += 1
    print(f"batch: {done} done, {failed} failed")
    return ExitCode.OK if failed == 0 else (ExitCode.INPUT if done == 0 else ExitCode.PARTIAL)


def main(argv: list[str] | None = None) -> int:
    return int(run(parse(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    code = main()
    try:  # inside Slicer: quit the application with the code
        import slicer

        if hasattr(slicer, "app") and slicer.app is not None:
            slicer.util.exit(code)
    except Exception:  # noqa: BLE001 - plain Python: the normal exit below
        pass
    sys.exit(code)
