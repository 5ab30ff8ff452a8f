"""SS-MoE (Lin et al., MICCAI 2021) and its baselines: checkpoints (:mod:`.checkpoint`) and inference (:mod:`.method`)."""

from SuperResMoELib.methods.ssmoe.checkpoint import (
    CHECKPOINT_METHOD,
    KINDS,
    N_PARAMS,
    backbone_config,
    build_network,
    intensity_factor,
    ssmoe_manifest,
)
from SuperResMoELib.methods.ssmoe.method import (
    BACKGROUND,
    DEFAULT_TASK,
    TASK_FACTORS,
    TASK_PATCHES,
    HardMoEMethod,
    SRUNetMethod,
    SSMoEMethod,
)

__all__ = ["BACKGROUND", "CHECKPOINT_METHOD", "DEFAULT_TASK", "KINDS", "N_PARAMS", "TASK_FACTORS", "TASK_PATCHES",
           "HardMoEMethod", "SRUNetMethod", "SSMoEMethod", "backbone_config", "build_network", "intensity_factor",
           "ssmoe_manifest"]
