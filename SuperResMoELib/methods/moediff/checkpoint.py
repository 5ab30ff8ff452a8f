"""MoEDiff-SR checkpoints: manifest ``method="moediff"``, ``task="t1"``;
``architecture = {"kind": "moediff", **MoEDiffArchitecture.to_dict(),
"latent_scale": s}``; tensors = the :class:`~.model.MoEDiffSR` state dict
(``vqvae.*``, ``condition.*``, ``gating.*``, ``experts.<i>.*``,
``latent_scale``).  Intensities are normalised by each frame's robust maximum."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from SuperResMoELib.core.errors import CheckpointError
from SuperResMoELib.core.intensity import ROBUST_MAX_PERCENTILE

if TYPE_CHECKING:  # torch loads only when a method runs
    from SuperResMoELib.checkpoints.manifest import Manifest
    from SuperResMoELib.methods.moediff.model import MoEDiffArchitecture, MoEDiffSR

#: Manifest method, task and network kind of MoEDiff-SR checkpoints.
CHECKPOINT_METHOD = "moediff"
TASK = "t1"
KIND = "moediff"
#: Intensity normalisation: divide by the robust maximum (the 99.5th percentile).
DEFAULT_INTENSITY: dict[str, Any] = {"kind": "robust_max", "percentile": ROBUST_MAX_PERCENTILE}


def moediff_manifest(arch: MoEDiffArchitecture, latent_scale: float, **extra: Any) -> Manifest:
    """The manifest of a MoEDiff-SR checkpoint (``extra`` as :func:`build_manifest`'s fields)."""
    from SuperResMoELib.checkpoints.manifest import build_manifest

    architecture = {"kind": KIND, **arch.to_dict(), "latent_scale": float(latent_scale)}
    return build_manifest(CHECKPOINT_METHOD, TASK, architecture, [1.0, 1.0, 1.0], dict(DEFAULT_INTENSITY), **extra)


def architecture_of(manifest: Manifest) -> MoEDiffArchitecture:
    """The :class:`~.model.MoEDiffArchitecture` recorded in a manifest.

    Raises:
        CheckpointError: missing or invalid fields.
    """
    from SuperResMoELib.methods.moediff.model import MoEDiffArchitecture

    d = {k: v for k, v in manifest.architecture.items() if k not in ("kind", "latent_scale")}
    try:
        return MoEDiffArchitecture.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"manifest architecture is not a valid MoEDiff-SR architecture: {exc}") from None


def build_moediff_network(manifest: Manifest) -> MoEDiffSR:
    """An untrained :class:`~.model.MoEDiffSR` as the manifest describes."""
    from SuperResMoELib.methods.checkpointed import network_kind
    from SuperResMoELib.methods.moediff.model import MoEDiffSR

    if network_kind(manifest) != KIND:
        raise CheckpointError(f"manifest architecture kind {network_kind(manifest)!r} is not {KIND!r}")
    return MoEDiffSR(architecture_of(manifest))
