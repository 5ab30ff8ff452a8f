"""Model selection of the REMIx experts on whole scans of the out-of-generator
T1 *validation* head (beyond the paper; ``experts.select_on: "scans"``).

Why: a fine-tuned expert's validation on 32³ pairs (the generator's
held-out pairs and the validation head's pairs, both through the training
acquisitions) can prefer an epoch that is worse on whole scans of a head the
generator did not make; the whole-scan result on the validation head follows
the test head's closely (``docs/results/outgen_remix_scans``).  So each
candidate epoch of an expert (its start included, with ``validate_start``) is
also scored the way the evaluation scores a scan: the network runs through
the real inference path (:class:`SuperResMoELib.methods.remix.method.REMIxSingleMethod`
on an fp16 checkpoint, as it will be exported) on LR scans of the validation
head, and the phase keeps the epoch of the highest mean PSNR inside the HR
brain mask (``val_scan_psnr``).

The scans (:data:`VALIDATION_SCANS`): the validation head
(:data:`training.outgen.t1.T1_SETS` ``["validation"]``: its own pose, tissue
values, timing, bias and texture; never reported as a test) cut to its brain
box, acquired by the out-of-generator acquisition model (trapezoid slice
profile, one sample per slice, Gaussian noise; :func:`training.outgen.t1.acquire`)
with thick slices of ``v`` mm across the sagittal and the coronal axes for
volume expert ``v`` and 2x2x2 mm for the isotropic expert.  The test head's
scans are not used.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from SuperResMoELib.core.volume import Grid, Volume
from SuperResMoELib.methods.remix.experts import ISOTROPIC_EXPERT

#: Expert -> the (i, j, k) mm spacings of its validation scans (module docstring).
VALIDATION_SCANS: dict[int | str, tuple[tuple[float, float, float], ...]] = {
    **{v: ((float(v), 1.0, 1.0), (1.0, float(v), 1.0)) for v in range(2, 8)},
    ISOTROPIC_EXPERT: ((2.0, 2.0, 2.0),),
}
#: Every validation scan's spacing, in the order that numbers their noise streams.
_SPACINGS: list[tuple[float, float, float]] = sorted({s for v in VALIDATION_SCANS.values() for s in v})
#: Salt of the validation scans' noise (the test scans use another stream).
SCAN_SALT = 3
#: Sliding-window overlap of the validation inference (the evaluation uses 0.5; 0.25 is faster and ranks alike).
SCAN_OVERLAP = 0.25


@dataclass(frozen=True)
class _Scan:
    lr: Volume  # on its own LR grid
    hr: np.ndarray  # (K, J, I) float32 on the 1 mm grid the LR covers
    mask: np.ndarray  # (K, J, I) bool brain mask of ``hr``
    grid: Grid  # the HR grid (the inference's target grid)


class ScanValidation:
    """Scores networks on :data:`VALIDATION_SCANS` (built on first use, kept in memory)."""

    def __init__(self, unet_cfg, device: torch.device, block_mm: float | None = None) -> None:
        """``block_mm``: only the validation head's central cube of this many
        mm (small scans for tests; default the whole head in its brain box)."""
        self.unet_cfg = unet_cfg
        self.device = device
        self.block_mm = block_mm
        self._head: Volume | None = None
        self._scans: dict[tuple[float, float, float], _Scan] = {}

    def _validation_head(self) -> Volume:
        """The validation head (its brain box, or the central ``block_mm`` cube), made once."""
        from training.outgen.t1 import t1_head

        from .evaluate import brain_box

        if self._head is None:
            head = t1_head(self.block_mm, "validation")
            self._head = brain_box(head) if self.block_mm is None else head
        return self._head

    def scans(self, expert: int | str) -> list[_Scan]:
        """The validation scans of ``expert`` (:data:`VALIDATION_SCANS`)."""
        from SuperResMoELib.evaluation.segmentation import brain_mask
        from training.outgen.t1 import NOISE_FRACTION, SEED, acquire

        if expert not in VALIDATION_SCANS:
            raise ValueError(f"no validation scans for REMIx expert {expert!r}; "
                             f"experts with scans: {list(VALIDATION_SCANS)}")
        for spacing in VALIDATION_SCANS[expert]:
            if spacing not in self._scans:
                rng = np.random.default_rng([SEED, SCAN_SALT, _SPACINGS.index(spacing)])
                lr, hr = acquire(self._validation_head(), spacing, rng, NOISE_FRACTION * 1000.0)
                arr = np.asarray(hr.array, np.float32)
                self._scans[spacing] = _Scan(lr, arr, brain_mask(arr), hr.grid)
        return [self._scans[s] for s in VALIDATION_SCANS[expert]]

    def score(self, net: torch.nn.Module, expert: int | str) -> dict[str, float]:
        """``{"val_scan_psnr": mean PSNR (dB, HR brain mask) of net on expert's scans}``;
        ``net`` is exported (fp16) and run as the 1-network method runs a checkpoint."""
        from SuperResMoELib.checkpoints.store import save_checkpoint
        from SuperResMoELib.methods import EnhanceOptions
        from SuperResMoELib.methods.remix import remix_manifest
        from SuperResMoELib.methods.remix.method import REMIxSingleMethod

        from .evaluate import brain_psnr

        tensors = {f"net.{k}": t.detach().cpu().contiguous() for k, t in net.state_dict().items()}
        values = []
        with tempfile.TemporaryDirectory(prefix="remix_scan_validation_") as tmp:
            path = save_checkpoint(Path(tmp) / "candidate", tensors,
                                   remix_manifest("single", self.unet_cfg, description="validation candidate"),
                                   half=True)
            method = REMIxSingleMethod()  # a fresh method: no network cached from an earlier candidate
            for s in self.scans(expert):
                opts = EnhanceOptions(checkpoint=str(path), overlap=SCAN_OVERLAP, extra={"target_grid": s.grid})
                res = method.enhance(s.lr, opts, str(self.device))
                values.append(brain_psnr(s.hr, np.asarray(res.volume.array, np.float32), s.mask))
        return {"val_scan_psnr": float(np.mean(values))}
