"""BIDS datasets: finding the T1w scans of a raw dataset and naming the
derivatives SuperResMoE writes for them.

A dataset root holds ``dataset_description.json`` or ``sub-<label>`` folders;
its T1w scans are ``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<key>-<value>...]_T1w.nii[.gz]``.

Derivatives (``superresmoe enhance --bids``) mirror the raw layout under
``<out>`` (by default ``<dataset>/derivatives/superresmoe``)::

    <out>/dataset_description.json
    <out>/sub-01/[ses-1/]anat/sub-01[_ses-1]_desc-<method>_T1w.nii.gz
    <out>/sub-01/[ses-1/]anat/sub-01[_ses-1]_desc-<method>_T1w.json

The ``desc`` entity is the last before the suffix (BIDS entity order); an
input's own ``desc`` is replaced.  Labels are alphanumeric, so a method name
keeps only its letters and digits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from SuperResMoELib.core.errors import InputError

#: A BIDS T1w image name (``.nii`` or ``.nii.gz``).
BIDS_T1W = re.compile(r"^sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?(_[A-Za-z0-9]+-[A-Za-z0-9]+)*_T1w\.nii(\.gz)?$")
#: The BIDS specification version the derivatives follow.
BIDS_VERSION = "1.9.0"
#: Where derivatives go inside a dataset when no output folder is given.
DERIVATIVES = Path("derivatives") / "superresmoe"
#: The pipeline name in ``dataset_description.json`` (``GeneratedBy``).
PIPELINE = "SuperResMoE"


def is_bids(root: Path) -> bool:
    """A BIDS dataset root: a folder with ``dataset_description.json`` or ``sub-*`` folders."""
    root = Path(root)
    return root.is_dir() and ((root / "dataset_description.json").is_file()
                              or any(p.is_dir() for p in root.glob("sub-*")))


def subject_t1w(subject_dir: Path) -> list[Path]:
    """The T1w scans of one ``sub-*`` folder: ``anat/`` first, then each
    ``ses-*/anat/`` in order, each folder's files sorted by name."""
    anat_dirs = [subject_dir / "anat"] + sorted(s / "anat" for s in subject_dir.glob("ses-*") if s.is_dir())
    return [f for d in anat_dirs if d.is_dir() for f in sorted(d.iterdir()) if BIDS_T1W.match(f.name)]


def subject_dirs(root: Path) -> list[Path]:
    """The ``sub-*`` folders of a dataset, sorted by label."""
    return sorted(p for p in Path(root).glob("sub-*") if p.is_dir())


def t1w_files(root: Path) -> list[Path]:
    """Every T1w scan of the dataset (all subjects, sessions and runs), in
    subject order.

    Raises:
        InputError: ``root`` is not a BIDS dataset or holds no T1w scan.
    """
    root = Path(root)
    if not is_bids(root):
        raise InputError(f"{root} is not a BIDS dataset (no dataset_description.json and no sub-* folders)")
    files = [f for sub in subject_dirs(root) for f in subject_t1w(sub)]
    if not files:
        raise InputError(f"BIDS dataset {root} holds no sub-*/[ses-*/]anat/*_T1w.nii[.gz]")
    return files


def method_label(method: str) -> str:
    """``method`` as a BIDS label (letters and digits only)."""
    label = re.sub(r"[^A-Za-z0-9]", "", method)
    if not label:
        raise InputError(f"method name {method!r} gives an empty BIDS desc label")
    return label


def derivative_path(scan: Path, root: Path, out: Path, method: str) -> Path:
    """Where the SR of the raw ``scan`` (inside dataset ``root``) goes under the
    derivatives folder ``out``: the same relative folder, the name with
    ``desc-<method>`` before ``_T1w`` and the extension ``.nii.gz``.

    Raises:
        InputError: ``scan`` is not a BIDS T1w file inside ``root``.
    """
    scan, root = Path(scan), Path(root)
    if not BIDS_T1W.match(scan.name):
        raise InputError(f"{scan.name} is not a BIDS T1w image name (sub-<label>[_...]_T1w.nii[.gz])")
    try:
        rel = scan.resolve().parent.relative_to(root.resolve())
    except ValueError:
        raise InputError(f"{scan} is not inside the BIDS dataset {root}") from None
    stem = scan.name.split(".", 1)[0][: -len("_T1w")]
    entities = [e for e in stem.split("_") if not e.startswith("desc-")]
    name = "_".join(entities + [f"desc-{method_label(method)}", "T1w"]) + ".nii.gz"
    return Path(out) / rel / name


def sources_entry(scan: Path, root: Path) -> str:
    """The BIDS URI of a raw scan for a derivative's ``Sources`` (``bids:raw:sub-01/anat/...``)."""
    return "bids:raw:" + Path(scan).resolve().relative_to(Path(root).resolve()).as_posix()


def dataset_description(method: str, checkpoint: dict[str, Any] | None, version: str, raw: str,
                        existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The derivatives' ``dataset_description.json``: ``existing`` (an earlier
    run's) with a ``GeneratedBy`` entry for this method and checkpoint added
    unless one is already there.

    Args:
        checkpoint: ``{"name", "sha256"}`` of the weights (``None``: a method without one).
        raw: the raw dataset's path relative to the derivatives folder (``DatasetLinks.raw``).
    """
    entry: dict[str, Any] = {
        "Name": PIPELINE, "Version": version,
        "Description": f"super-resolution with method {method}"
                       + (f", checkpoint {checkpoint['name']}" if checkpoint else ""),
        "CodeURL": "https://github.com/SuperResMoE/SlicerSuperResMoE",
        "Method": method,
        "Checkpoint": checkpoint,
    }
    desc = dict(existing or {})
    desc.setdefault("Name", f"{PIPELINE} super-resolution")
    desc.setdefault("BIDSVersion", BIDS_VERSION)
    desc["DatasetType"] = "derivative"
    desc["DatasetLinks"] = {**desc.get("DatasetLinks", {}), "raw": raw}
    generated = [g for g in desc.get("GeneratedBy", []) if isinstance(g, dict)]
    key = (PIPELINE, version, method, json.dumps(checkpoint, sort_keys=True))
    if not any((g.get("Name"), g.get("Version"), g.get("Method"), json.dumps(g.get("Checkpoint"), sort_keys=True))
               == key for g in generated):
        generated.append(entry)
    desc["GeneratedBy"] = generated
    return desc


def write_dataset_description(out: Path, root: Path, method: str, checkpoint: dict[str, Any] | None,
                              version: str) -> Path:
    """Write (or extend) ``<out>/dataset_description.json`` for derivatives of
    the raw dataset ``root`` atomically; returns its path."""
    import os

    from SuperResMoELib.io.atomic import write_text_atomic

    path = Path(out) / "dataset_description.json"
    existing = None
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path} exists but is not readable JSON ({exc}); move it away") from None
    write_text_atomic(path, json.dumps(dataset_description(method, checkpoint, version,
                                                                Path(os.path.relpath(root, out)).as_posix(), existing), indent=2) + "\n")
    return path
