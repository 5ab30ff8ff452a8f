"""Variants of a MoEDiff-SR training config for the ablations and baselines
(``python -m training moediff --gating ... --single-expert --extra-inputs ...``),
each a validated config derived from the base one, and its checkpoint name."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from SuperResMoELib.core.errors import ConfigError
from SuperResMoELib.methods.moediff.model import EXTRA_CHANNELS
from SuperResMoELib.methods.moediff.schedules import ScheduleConfig

from .config import MoEDiffConfig

#: The single-expert baseline's architecture (E1) and steps T.
SINGLE_EXPERT, SINGLE_STEPS = 1, 1000


def moediff_variant(cfg: MoEDiffConfig, gating: str | None = None, single_expert: bool = False,
                    extra_inputs: Sequence[str] | None = None, joint_epochs: int | None = None) -> MoEDiffConfig:
    """``cfg`` with another gating mode, as the single-expert baseline (E1 alone,
    ``T = 1000``, three times the joint steps: as many expert evaluations as the
    three-expert model), with correction inputs (the condition encoder
    reads ``1 + channels`` channels) and/or another joint-phase length
    (``joint_epochs``: the shorter, matched budget of the Table I ablation).

    Raises:
        ConfigError: ``joint_epochs`` not positive.
    """
    arch, joint = cfg.architecture, cfg.joint
    if joint_epochs is not None:
        if joint_epochs < 1:
            raise ConfigError(f"joint epochs must be positive, got {joint_epochs}")
        joint = dataclasses.replace(joint, epochs=int(joint_epochs))
    if gating:
        arch = dataclasses.replace(arch, gating_mode=gating)
    if single_expert:
        k = len(arch.experts)
        arch = dataclasses.replace(arch, experts=(SINGLE_EXPERT,), schedules=(ScheduleConfig(steps=SINGLE_STEPS),),
                                   gating=dataclasses.replace(arch.gating, n_experts=1), gating_mode="uniform")
        joint = dataclasses.replace(joint, steps_per_epoch=joint.steps_per_epoch * k,
                                    task_weights=(joint.task_weights[0],))
    if extra_inputs:
        names = tuple(dict.fromkeys(extra_inputs))
        channels = 1 + sum(EXTRA_CHANNELS[n] for n in names)
        arch = dataclasses.replace(arch, extra_inputs=names,
                                   condition=dataclasses.replace(arch.condition, in_channels=channels))
    return dataclasses.replace(cfg, architecture=arch, joint=joint)


def variant_name(cfg: MoEDiffConfig) -> str:
    """``moediff_t1`` plus ``_single``, ``_spatial`` / ``_uniform`` and ``_b`` / ``_g`` / ``_bg``."""
    arch = cfg.architecture
    name = "moediff_t1"
    if len(arch.experts) == 1:
        name += "_single"
    elif arch.gating_mode != "global":
        name += f"_{arch.gating_mode}"
    if arch.extra_inputs:
        name += "_" + "".join({"bias": "b", "warp": "g"}[e] for e in arch.extra_inputs)
    return name
