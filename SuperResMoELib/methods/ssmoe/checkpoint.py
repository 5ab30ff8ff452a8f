"""SS-MoE family checkpoints: the manifest, the network it describes, its
intensity factor.

All three networks (``ssmoe``, ``srunet``, ``hardmoe``) are stored as
``method="ssmoe"`` checkpoints told apart by ``architecture["kind"]``;
:func:`ssmoe_manifest` (used by the training code) writes them, the tensors
are the network's ``state_dict()``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from SuperResMoELib.core.errors import CheckpointError
from SuperResMoELib.core.tasks import SR_TASKS
from SuperResMoELib.core.volume import ACQUISITION_COLUMNS
from SuperResMoELib.methods.checkpointed import architecture_config, network_kind

if TYPE_CHECKING:  # torch loads only when a method runs
    import torch

    from SuperResMoELib.checkpoints.manifest import Manifest
    from SuperResMoELib.nets.srunet import SRUNetConfig

#: Method name every SS-MoE family checkpoint is stored under.
CHECKPOINT_METHOD = "ssmoe"
#: Network kinds a checkpoint may hold.
KINDS: tuple[str, ...] = ("ssmoe", "srunet", "hardmoe")
#: Number of acquisition parameters the gater reads.
N_PARAMS = len(ACQUISITION_COLUMNS)
#: The tasks a checkpoint may be for.
TASKS: tuple[str, ...] = tuple(SR_TASKS)


def ssmoe_manifest(kind: str, cfg: SRUNetConfig, n_experts: int, intensity_factor: float,
                   **extra: Any) -> Manifest:
    """The manifest of an SS-MoE family checkpoint.

    Args:
        kind: ``"ssmoe"``, ``"srunet"`` or ``"hardmoe"``.
        cfg: backbone configuration (its task names the checkpoint's task).
        n_experts: ``K`` (stored for every kind; ignored by ``srunet``).
        intensity_factor: the network input is ``user units * factor`` (and
            its output is divided by it).
        **extra: further :class:`~SuperResMoELib.checkpoints.store.Manifest` fields
            (``training_data``, ``metrics``, ``description``, ...); unknown
            names go into ``Manifest.extra``.

    Raises:
        CheckpointError: unknown kind, ``n_experts < 1`` or a factor that is
            not a positive finite number.
    """
    from SuperResMoELib.checkpoints.manifest import build_manifest

    if kind not in KINDS:
        raise CheckpointError(f"unknown SS-MoE network kind {kind!r}; choose one of {', '.join(KINDS)}")
    if int(n_experts) < 1:
        raise CheckpointError(f"n_experts must be at least 1, got {n_experts}")
    f = float(intensity_factor)
    if not math.isfinite(f) or f <= 0:
        raise CheckpointError(f"intensity factor must be a positive number, got {intensity_factor}")
    return build_manifest(
        CHECKPOINT_METHOD, cfg.task,
        {"kind": kind, "srunet": cfg.to_dict(), "n_experts": int(n_experts), "n_params": N_PARAMS},
        [float(z) for z in reversed(cfg.zoom)], {"kind": "scale", "factor": f}, **extra)


def backbone_config(manifest: Manifest) -> SRUNetConfig:
    """The SR U-Net configuration recorded in a manifest.

    Raises:
        CheckpointError: missing or invalid ``architecture["srunet"]``.
    """
    from SuperResMoELib.nets.srunet import SRUNetConfig

    return architecture_config(manifest, "srunet", SRUNetConfig)


def build_network(manifest: Manifest) -> torch.nn.Module:
    """An untrained :class:`SRUNet`, :class:`SSMoE` or :class:`HardMoE` as the
    manifest describes (load the checkpoint's tensors into it).

    Raises:
        CheckpointError: unknown kind or invalid architecture fields.
    """
    from SuperResMoELib.nets.moe import HardMoE, SSMoE
    from SuperResMoELib.nets.srunet import SRUNet

    kind = network_kind(manifest)
    if kind not in KINDS:
        raise CheckpointError(f"manifest architecture kind {kind!r} is not one of {', '.join(KINDS)}")
    cfg = backbone_config(manifest)
    arch = manifest.architecture
    try:
        k = int(arch.get("n_experts", 1))
        p = int(arch.get("n_params", N_PARAMS))
    except (TypeError, ValueError):
        raise CheckpointError("manifest architecture fields n_experts/n_params must be integers") from None
    if k < 1 or p < 0:
        raise CheckpointError(f"manifest architecture has n_experts={k}, n_params={p}")
    if kind == "srunet":
        return SRUNet(cfg)
    if kind == "hardmoe":
        return HardMoE(cfg, k)
    return SSMoE(cfg, k, p)


def intensity_factor(manifest: Manifest) -> float:
    """The factor user intensities are multiplied by before the network.

    Raises:
        CheckpointError: an intensity normalisation this method does not know.
    """
    spec = manifest.intensity
    kind = spec.get("kind", "scale")
    if kind == "none":
        return 1.0
    if kind != "scale":
        raise CheckpointError(f"unsupported intensity normalisation {kind!r} in the manifest (expected 'scale')")
    try:
        f = float(spec.get("factor", 1.0))
    except (TypeError, ValueError):
        f = float("nan")
    if not math.isfinite(f) or f <= 0:
        raise CheckpointError(f"manifest intensity factor must be a positive number, got {spec.get('factor')!r}")
    return f
