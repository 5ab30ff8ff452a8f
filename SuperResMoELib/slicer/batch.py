"""Batch Enhance through the module's logic, for Slicer without a main window::

    Slicer --no-main-window --python-script <path>/SuperResMoELib/slicer/batch.py \\
        --input scans/ --output enhanced/ --method remix [--reference hr/] [--device cuda:0]

``<path>`` is the source tree, or for the installed extension the folder that
``import SuperResMoELib; print(SuperResMoELib.__file__)`` shows in Slicer's
Python console.  (The script lives in the library, not beside
``SuperResMoE.py``: Slicer loads every ``.py`` file of a module folder as a
module.)

Every image file (.nii, .nii.gz, .nrrd, .mha) of the inputs is loaded into the
scene, enhanced by the same background process the panel uses, and the SR
volume (plus error maps / expert map when there are any) written to the output
folder as ``<name>_<method>.nii.gz``; then that file's nodes leave the scene
again, so memory stays flat over a folder.  One line per file; the script
always exits, with a :class:`SuperResMoELib.core.errors.ExitCode`: 0 (all
done), 3 (no input could be processed), 7 (some inputs failed), 5
(cancelled), 2 (bad usage), or the code of the error that stopped it.

Options avoid the flags Slicer's own command line takes (``-h``/``--help``,
``-c``; :data:`SLICER_OPTIONS`): help is ``--usage``.

It also runs with plain Python where the ``slicer-core`` wheel is installed
(``python SuperResMoELib/slicer/batch.py ...`` or ``python -m
SuperResMoELib.slicer.batch ...``), which is how it is tested.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and sys.path[0] and os.path.abspath(sys.path[0]) == _HERE:
    del sys.path[0]  # run by path: this folder's modules must not shadow top-level ones
try:
    import SuperResMoELib  # noqa: F401 - inside Slicer the extension folder is on sys.path
except ImportError:  # the source tree, run by path: the library's parent, last (it must shadow nothing)
    sys.path.append(os.path.dirname(os.path.dirname(_HERE)))

#: Options of Slicer's own command line (qSlicerCoreCommandOptions.cxx,
#: qSlicerCommandOptions.cxx) that the script's options must not reuse.
SLICER_OPTIONS: frozenset[str] = frozenset({
    "-h", "--help", "-c", "-", "--ignore-rest", "--testing", "--disable-python", "--python-script", "--python-code",
    "--ignore-slicerrc", "--additional-module-path", "--additional-module-paths", "--modules-to-ignore",
    "--disable-modules", "--disable-builtin-modules", "--disable-cli-modules", "--disable-builtin-cli-modules",
    "--disable-loadable-modules", "--disable-builtin-loadable-modules", "--disable-scripted-loadable-modules",
    "--disable-builtin-scripted-loadable-modules", "--program-path", "--settings-path", "--temporary-path",
    "--application-information", "--verbose-module-discovery", "--disable-settings", "--keep-temporary-settings",
    "--disable-message-handlers", "--disable-terminal-outputs", "--disable-tooltips", "--no-splash",
    "--no-main-window", "--show-python-console", "--show-python-interactor", "--qt-testing",
    "--exit-after-startup", "--report-startup-timing", "--version",
})


def build_parser() -> argparse.ArgumentParser:
    """The script's parser (``--usage`` for help; no option Slicer takes)."""
    from SuperResMoELib.core.errors import ExitCode
    from SuperResMoELib.core.options import add_enhance_arguments

    p = argparse.ArgumentParser(prog="batch.py", description="Batch Enhance with the SuperResMoE module logic.",
                                epilog=f"Exit codes: {ExitCode.describe()}.", add_help=False)
    p.add_argument("--usage", action="help", help="show this help and exit")
    p.add_argument("--input", "-i", nargs="+", required=True, type=Path, help="image files or folders")
    p.add_argument("--output", "-o", required=True, type=Path, help="output folder")
    p.add_argument("--reference", type=Path, help="HR file or folder (matched by file name): error maps + metrics")
    add_enhance_arguments(p, only=lambda spec: spec.batch)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _remove(scene, nodes) -> None:
    """Remove volume/table nodes with their display and storage nodes."""
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        linked = []
        for getter, count in (("GetNthDisplayNode", "GetNumberOfDisplayNodes"),
                              ("GetNthStorageNode", "GetNumberOfStorageNodes")):
            if hasattr(node, count):
                linked += [getattr(node, getter)(n) for n in range(getattr(node, count)())]
        scene.RemoveNode(node)
        for other in linked:
            if other is not None and other.GetScene() is not None:
                scene.RemoveNode(other)


def run(args: argparse.Namespace) -> int:
    """Enhance every file of ``args.input``; returns the exit code."""
    import slicer

    from SuperResMoELib import io
    from SuperResMoELib.core.errors import ExitCode
    from SuperResMoELib.core.options import values_from_namespace
    from SuperResMoELib.slicer import mrml
    from SuperResMoELib.slicer.logic import EnhanceCancelled, EnhanceRun, request_from_dict

    scene = getattr(slicer, "mrmlScene", None) or slicer.vtkMRMLScene()
    files = io.volume_files(args.input)
    if not files:
        print(f"batch: no image files in {', '.join(map(str, args.input))}", file=sys.stderr)
        return ExitCode.INPUT
    given = {k: v for k, v in values_from_namespace(args).items() if hasattr(args, k)}
    request = request_from_dict(given)  # a bad option value stops here, before any file
    args.output.mkdir(parents=True, exist_ok=True)
    done, failed = 0, 0
    for path in files:
        stem = io.volume_stem(path)
        nodes: list = []
        try:
            node = mrml.read_volume_node(scene, path, stem)
            nodes.append(node)
            ref = None
            if args.reference is not None:
                ref_path = args.reference / path.name if args.reference.is_dir() else args.reference
                ref = mrml.read_volume_node(scene, ref_path, f"{stem}_reference")
                nodes.append(ref)
            outcome = EnhanceRun(scene, node, request, ref).run(wait=True)
            assert outcome is not None  # run(wait=True) returns the outcome or raises
            nodes += list(outcome.nodes.values())
            written = []
            for tag, out_node in outcome.nodes.items():
                if out_node.IsA("vtkMRMLVolumeNode"):
                    suffix = "" if tag == "sr" else f"_{tag}"
                    target = args.output / f"{stem}_{args.method}{suffix}.nii.gz"
                    written.append(mrml.write_node(out_node, target).name)
        except EnhanceCancelled:
            print(f"{path.name}: cancelled", file=sys.stderr)
            return ExitCode.CANCELLED
        except Exception as exc:  # noqa: BLE001 - one file's failure of any kind: report it, go on
            failed += 1
            print(f"{path.name}: FAILED: {str(exc).strip() or type(exc).__name__}", file=sys.stderr)
            continue
        finally:
            _remove(scene, nodes)
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in outcome.metrics.items() if isinstance(v, float))
        print(f"{path.name}: {', '.join(written)}" + (f" ({metrics})" if metrics else ""), flush=True)
        done += 1
    print(f"batch: {done} done, {failed} failed")
    return ExitCode.OK if failed == 0 else (ExitCode.INPUT if done == 0 else ExitCode.PARTIAL)


def main(argv: list[str] | None = None) -> int:
    """Parse, run; any error ends as one line on stderr and its exit code (never a hang)."""
    from SuperResMoELib.core.errors import ExitCode, SuperResMoEError

    try:
        return int(run(parse(sys.argv[1:] if argv is None else argv)))
    except SystemExit as exc:  # argparse: usage errors (2) and --usage (0)
        return int(exc.code) if isinstance(exc.code, int) else int(ExitCode.USAGE)
    except KeyboardInterrupt:
        print("batch: cancelled", file=sys.stderr)
        return int(ExitCode.CANCELLED)
    except SuperResMoEError as exc:
        print(f"batch: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the script must exit, whatever happened
        print(f"batch: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return int(ExitCode.INTERNAL)


def exit_with(code: int) -> None:
    """Quit with ``code``: the Slicer application when there is one, else the interpreter."""
    try:
        import slicer

        if getattr(slicer, "app", None) is not None:
            slicer.util.exit(code)
    except Exception:  # noqa: BLE001 - plain Python: the normal exit below
        pass
    sys.exit(code)


if __name__ == "__main__":
    exit_with(main())
