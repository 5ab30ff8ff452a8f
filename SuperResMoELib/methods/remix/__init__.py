"""REMIx (Morell-Ortega et al., MIDL 2024) and its 1-network baseline: the
expert rule (:mod:`.experts`), checkpoints (:mod:`.checkpoint`) and inference (:mod:`.method`)."""

from SuperResMoELib.methods.remix.checkpoint import (
    CHECKPOINT_METHOD,
    DEFAULT_INTENSITY,
    KINDS,
    TASK,
    build_remix_network,
    intensity_percentile,
    remix_manifest,
    unet_config,
)
from SuperResMoELib.methods.remix.experts import EXPERTS, choose_expert, expert_for_voxel_volume
from SuperResMoELib.methods.remix.method import (
    DEFAULT_PATCH,
    DEFAULT_TARGET_SPACING,
    NO_SIGNAL_FLOOR,
    REMIxMethod,
    REMIxSingleMethod,
)

__all__ = ["CHECKPOINT_METHOD", "DEFAULT_INTENSITY", "DEFAULT_PATCH", "DEFAULT_TARGET_SPACING", "EXPERTS", "KINDS",
           "NO_SIGNAL_FLOOR", "TASK", "REMIxMethod", "REMIxSingleMethod", "build_remix_network", "choose_expert",
           "expert_for_voxel_volume", "intensity_percentile", "remix_manifest", "unet_config"]
