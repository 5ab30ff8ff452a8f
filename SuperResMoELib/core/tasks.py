"""The SS-MoE / Super MUDI tasks: one table of scale factors and patch sizes.

Every place that needs a task's geometry reads it here: the SR U-Net's patch
sizes and zoom, SS-MoE's output grid and inference patch, the MUDI-like
sample data's block average and the training patch library.

A task super-resolves by integer factors ``(s_i, s_j, s_k)`` (IJK order, as
:func:`~SuperResMoELib.core.geometry.scaled_grid`); its networks read LR
patches of ``lr_patch`` voxels and write HR patches of ``hr_patch`` voxels,
both in KJI (array) order.
"""

from __future__ import annotations

from dataclasses import dataclass

from SuperResMoELib.core.types import Int3


@dataclass(frozen=True)
class SRTask:
    """One fixed-factor super-resolution task.

    Attributes:
        name: ``"aniso"`` or ``"iso"``.
        factors: integer SR factors ``(s_i, s_j, s_k)`` (IJK order).
        lr_patch: LR patch ``(pk, pj, pi)`` the networks (and the gater) read.
    """

    name: str
    factors: Int3
    lr_patch: Int3

    @property
    def zoom(self) -> Int3:
        """SR factors along ``(K, J, I)`` (array order)."""
        fi, fj, fk = self.factors
        return (fk, fj, fi)

    @property
    def hr_patch(self) -> Int3:
        """HR patch ``(pk, pj, pi)``: the LR patch times the zoom."""
        return tuple(p * z for p, z in zip(self.lr_patch, self.zoom))  # type: ignore[return-value]

    @property
    def float_factors(self) -> tuple[float, float, float]:
        """``factors`` as floats (for matching a requested scale)."""
        return tuple(float(f) for f in self.factors)  # type: ignore[return-value]


#: The tasks: x2 through-plane (along k, the slice axis) and x2 isotropic.
SR_TASKS: dict[str, SRTask] = {
    "aniso": SRTask("aniso", (1, 1, 2), (8, 16, 16)),
    "iso": SRTask("iso", (2, 2, 2), (8, 8, 8)),
}


def sr_task(name: str) -> SRTask:
    """The task called ``name``.

    Raises:
        ValueError: unknown name (the message lists the tasks).
    """
    try:
        return SR_TASKS[name]
    except KeyError:
        raise ValueError(f"unknown SS-MoE task {name!r}; choose one of {sorted(SR_TASKS)}") from None
