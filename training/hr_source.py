"""Where the HR T1 volumes of a training run come from: the embedded sample
subjects, a folder of the user's own scans, or a BIDS dataset.

``--data`` takes ``sample`` (the default), a folder holding NIfTI / NRRD / MHA
volumes (one subject each, sorted by file name), or the root of a BIDS dataset
(a folder with ``dataset_description.json`` or ``sub-*`` folders), whose scans
are ``sub-<label>/[ses-<label>/]anat/*_T1w.nii[.gz]`` (one subject per
``sub-`` label; its first session's first T1w run).  A training config's
``library.subjects`` index these subjects in that order.

Bad files are never dropped silently: a file that cannot be read, is not 3D,
or holds no positive voxel is skipped with a warning naming it and the reason,
and :func:`hr_subject` raises :class:`SkippedSubject` so the library builders
count it (their logs and cached libraries say how many were skipped).
Volumes are resampled (cubic) to 1 mm isotropic: the degradations draw
spacings on a 1 mm grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from SuperResMoELib import sample_data
from SuperResMoELib.core.errors import InputError, SuperResMoEError
from SuperResMoELib.core.geometry import isotropic_grid, resample
from SuperResMoELib.core.volume import Volume
from SuperResMoELib.io import is_volume_file, read_volume
from SuperResMoELib.io.bids import is_bids, subject_dirs, subject_t1w

log = logging.getLogger("superresmoe.training")

__all__ = ["HRScan", "SkippedSubject", "bids_scans", "describe", "each_usable_subject", "hr_scans", "hr_subject",
           "is_bids", "parse_subjects", "source_key", "split_statement", "subject_labels", "usable_subjects"]


class SkippedSubject(InputError):
    """A subject whose scan cannot be used (the message says why)."""


@dataclass(frozen=True)
class HRScan:
    """One subject's HR scan: its label (file stem, or the BIDS ``sub-`` label) and file."""

    subject: str
    path: Path


def bids_scans(root: Path) -> list[HRScan]:
    """One T1w scan per subject of a BIDS dataset (sorted by subject label)."""
    scans = []
    for sub in subject_dirs(root):
        found = subject_t1w(sub)
        if found:
            scans.append(HRScan(sub.name, found[0]))
        else:
            log.warning("%s: no *_T1w.nii[.gz] in anat/ (or ses-*/anat/): subject skipped", sub.name)
    return scans


def hr_scans(source: str) -> list[HRScan]:
    """The scans of a folder or BIDS dataset (see the module docstring).

    Raises:
        InputError: not a folder, or no scan in it.
    """
    root = Path(source)
    if not root.is_dir():
        raise InputError(f"HR T1 data {source} does not exist or is not a folder (give a folder of volumes, "
                         "a BIDS dataset, or 'sample')")
    if is_bids(root):
        scans = bids_scans(root)
        what = "BIDS dataset with no sub-*/[ses-*/]anat/*_T1w.nii[.gz]"
    else:
        scans = [HRScan(p.name.split(".")[0], p) for p in sorted(root.iterdir()) if is_volume_file(p)]
        what = "folder holds no NIfTI/NRRD/MHA volume"
    if not scans:
        raise InputError(f"HR T1 data {source}: {what}")
    return scans


def source_key(source: str) -> list[tuple[str, int, int]] | str:
    """What identifies a source's contents for caches: ``"sample"``, or each
    scan's path (relative to the root), size and modification time."""
    if source == "sample":
        return "sample"
    root = Path(source).resolve()
    return [(str(s.path.resolve().relative_to(root)), s.path.stat().st_size, s.path.stat().st_mtime_ns)
            for s in hr_scans(source)]


def describe(source: str) -> str:
    """One phrase for manifests and logs."""
    if source == "sample":
        return "the embedded T1 sample subjects"
    kind = "BIDS dataset" if is_bids(Path(source)) else "folder"
    return f"the HR T1 {kind} {Path(source).resolve()} ({len(hr_scans(source))} subjects)"


def hr_subject(source: str, subject: int, data_seed: int, scans: list[HRScan] | None = None) -> Volume:
    """HR subject ``subject`` of ``source`` on a 1 mm isotropic grid
    (``scans``: the source's :func:`hr_scans`, when the caller has them).

    Raises:
        InputError: a subject index beyond the source's subjects.
        SkippedSubject: the scan is unreadable, not 3D, or has no positive voxel.
    """
    if source == "sample":
        return sample_data.t1_subject(subject, data_seed)
    scans = hr_scans(source) if scans is None else scans
    if not 0 <= subject < len(scans):
        raise InputError(f"subject {subject} requested but {source} holds {len(scans)} subject(s)")
    scan = scans[subject]
    try:
        vol = read_volume(scan.path)
    except (SuperResMoEError, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise SkippedSubject(f"{scan.path}: unreadable ({exc})") from None
    if vol.is_4d:
        raise SkippedSubject(f"{scan.path}: 4D; an HR T1 scan is 3D")
    if not np.any(np.asarray(vol.array) > 0):
        raise SkippedSubject(f"{scan.path}: no positive voxel")
    return resample(vol, isotropic_grid(vol.grid, 1.0), "cubic")


def each_usable_subject(source: str, subjects: tuple[int, ...] | list[int], data_seed: int,
                        skipped: list[str]) -> Iterator[tuple[int, Volume]]:
    """``(subject index, volume)`` of each of ``subjects`` that can be read, one
    at a time (a large dataset is never held in memory at once); the messages
    of those skipped are appended to ``skipped`` (each also logged).

    Raises:
        InputError: none of them could be used (after the last).
    """
    scans = None if source == "sample" else hr_scans(source)
    n_ok = 0
    for s in subjects:
        try:
            vol = hr_subject(source, s, data_seed, scans)
        except SkippedSubject as exc:
            skipped.append(str(exc))
            log.warning("skipped subject %d: %s", s, exc)
            continue
        n_ok += 1
        yield s, vol
    if not n_ok:
        raise InputError(f"none of the training subjects {list(subjects)} of {source} could be used: "
                         + "; ".join(skipped))


def usable_subjects(source: str, subjects: tuple[int, ...] | list[int], data_seed: int):
    """:func:`each_usable_subject` as a list, and the messages of those skipped."""
    skipped: list[str] = []
    return list(each_usable_subject(source, subjects, data_seed, skipped)), skipped


def subject_labels(source: str, subjects: list[int] | tuple[int, ...]) -> list[str]:
    """How the manifests name subjects: ``sample <n>``, or the scan's label
    (file stem, BIDS ``sub-`` label)."""
    if source == "sample":
        return [f"sample {s}" for s in subjects]
    scans = hr_scans(source)
    return [scans[s].subject for s in subjects]


#: Beside every split statement: what "held out" means for the embedded sample.
SAMPLE_NOTE = ("the embedded sample subjects are warps of one template: a subject held out from training is not "
               "a new population, and volumes of one subject are not independent samples for a significance test")


def split_statement(source: str, subjects: tuple[int, ...] | list[int], split: dict) -> dict:
    """What a manifest says about the data split: the unit, the training and
    validation subjects by label, the held-out subjects (the source's subjects
    not trained or validated on) and, for the sample, what held out means.

    Args:
        subjects: the config's ``library.subjects``.
        split: :func:`training.split.library_split`'s statement.
    """
    out = {"unit": split["unit"],
           "training_subjects": subject_labels(source, split["training_subjects"]),
           "validation_subjects": subject_labels(source, split["validation_subjects"])}
    if source == "sample":
        out["held_out_subjects"] = (f"every embedded sample subject but {sorted(subjects)}; the evaluations use "
                                    f"subject {sample_data.T1_HELD_OUT}")
        out["note"] = SAMPLE_NOTE
    else:
        scans = hr_scans(source)
        out["held_out_subjects"] = [scans[i].subject for i in range(len(scans)) if i not in set(subjects)]
    if split["unit"] == "patches":
        out["validation"] = "random pairs of the training subjects (not a subject-level split)"
    return out


def parse_subjects(text: str, n: int | None) -> tuple[int, ...]:
    """``--subjects``: ``all`` (every subject of a source of ``n``), or indices
    and ranges ``0,2,5-9``.

    Raises:
        InputError: unparsable, ``all`` without a folder, an index beyond ``n``.
    """
    text = text.strip()
    if text == "all":
        if n is None:
            raise InputError("--subjects all needs --data (a folder or BIDS dataset); the sample has no fixed count")
        return tuple(range(n))
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            a, _, b = part.partition("-")
            lo, hi = int(a), int(b) if b else int(a)
            if lo < 0 or hi < lo:
                raise ValueError(part)
            out.extend(range(lo, hi + 1))
    except ValueError:
        raise InputError(f"--subjects {text!r}: give 'all' or indices and ranges like 0,2,5-9") from None
    if not out:
        raise InputError("--subjects names no subject")
    if n is not None and max(out) >= n:
        raise InputError(f"--subjects {text}: the data holds {n} subject(s) (0..{n - 1})")
    return tuple(sorted(set(out)))
