"""REMIx checkpoints: manifest ``method="remix"``, ``task="t1"``;
``architecture = {"kind": "experts" | "single", "unet": UNet3DConfig fields,
"experts": [1..7]}``, plus ``"isotropic_expert": true`` for a checkpoint of the
anisotropy-aware router (:mod:`.experts`); tensors ``expert<v>.<param>`` (kind
``experts``, all seven in one file, and ``expert_iso.<param>`` when it has the
isotropic expert) or ``net.<param>`` (kind ``single``).  Intensities are
normalised by each frame's robust maximum (:data:`DEFAULT_INTENSITY`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from SuperResMoELib.core.errors import CheckpointError
from SuperResMoELib.core.intensity import ROBUST_MAX_PERCENTILE
from SuperResMoELib.methods.checkpointed import architecture_config, network_kind
from SuperResMoELib.methods.remix.experts import EXPERTS, ISOTROPIC_EXPERT, expert_key

if TYPE_CHECKING:  # torch loads only when a method runs
    import torch

    from SuperResMoELib.checkpoints.manifest import Manifest
    from SuperResMoELib.nets.unet3d import UNet3DConfig

#: Manifest method and task of REMIx checkpoints.
CHECKPOINT_METHOD = "remix"
TASK = "t1"
#: Network kinds: all seven experts in one file, or the single network.
KINDS: tuple[str, ...] = ("experts", "single")
#: Default intensity normalisation: divide by the robust maximum (the 99.5th percentile).
DEFAULT_INTENSITY: dict[str, Any] = {"kind": "robust_max", "percentile": ROBUST_MAX_PERCENTILE}


def remix_manifest(kind: str, cfg: UNet3DConfig, isotropic_expert: bool = False, **extra: Any) -> Manifest:
    """The manifest of a REMIx checkpoint (``kind`` = ``"experts"`` or ``"single"``;
    ``isotropic_expert``: the experts file also holds the isotropic expert).

    ``extra`` goes into the manifest's fields (``training_data``, ``metrics``,
    ``description``...) or, for unknown names, its ``extra``.
    """
    from SuperResMoELib.checkpoints.manifest import build_manifest

    if kind not in KINDS:
        raise CheckpointError(f"unknown REMIx network kind {kind!r}; choose one of {', '.join(KINDS)}")
    arch: dict[str, Any] = {"kind": kind, "unet": cfg.to_dict()}
    if kind == "experts":
        arch["experts"] = list(EXPERTS)
        if isotropic_expert:
            arch["isotropic_expert"] = True
    elif isotropic_expert:
        raise CheckpointError("only an experts checkpoint holds the isotropic expert")
    return build_manifest(CHECKPOINT_METHOD, TASK, arch, [1.0, 1.0, 1.0], dict(DEFAULT_INTENSITY), **extra)


def unet_config(manifest: Manifest) -> UNet3DConfig:
    """The U-Net configuration recorded in a manifest.

    Raises:
        CheckpointError: missing or invalid ``architecture["unet"]``.
    """
    from SuperResMoELib.nets.unet3d import UNet3DConfig

    return architecture_config(manifest, "unet", UNet3DConfig)


def has_isotropic_expert(manifest: Manifest) -> bool:
    """Whether an experts checkpoint holds the isotropic expert (anisotropy-aware router)."""
    return manifest.architecture.get("isotropic_expert") is True


def build_remix_network(manifest: Manifest) -> torch.nn.ModuleDict:
    """``ModuleDict`` ``{"expert1".."expert7"[, "expert_iso"]}`` or ``{"net"}`` of untrained U-Nets."""
    import torch

    from SuperResMoELib.nets.unet3d import ResidualUNet3D

    kind = network_kind(manifest)
    cfg = unet_config(manifest)
    if kind == "single":
        return torch.nn.ModuleDict({"net": ResidualUNet3D(cfg)})
    if kind != "experts":
        raise CheckpointError(f"manifest architecture kind {kind!r} is not one of {', '.join(KINDS)}")
    experts = manifest.architecture.get("experts")
    if list(experts or []) != list(EXPERTS):
        raise CheckpointError(f"an experts checkpoint must hold experts {list(EXPERTS)}, its manifest lists "
                              f"{experts!r}")
    names: list[int | str] = [*EXPERTS, *([ISOTROPIC_EXPERT] if has_isotropic_expert(manifest) else [])]
    return torch.nn.ModuleDict({expert_key(v): ResidualUNet3D(cfg) for v in names})


def intensity_percentile(manifest: Manifest) -> float:
    """The robust-maximum percentile of the manifest's intensity normalisation.

    Raises:
        CheckpointError: an intensity normalisation REMIx does not know.
    """
    spec = manifest.intensity
    if spec.get("kind") != "robust_max":
        raise CheckpointError(f"unsupported intensity normalisation {spec.get('kind')!r} (expected 'robust_max')")
    try:
        q = float(spec.get("percentile", DEFAULT_INTENSITY["percentile"]))
    except (TypeError, ValueError):
        q = float("nan")
    if not 0 < q <= 100:
        raise CheckpointError(f"manifest intensity percentile must be in (0, 100], got {spec.get('percentile')!r}")
    return q
