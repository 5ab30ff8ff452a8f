"""The MoEDiff-SR training config (``configs/moediff_*.json``) as a frozen
dataclass tree; :mod:`training.config` loads and checks it.

Sections: ``library`` (which tiles, :mod:`.data`), ``degradation``
(:class:`~training.moediff.degradation.MoEDiffDegradation`), ``architecture``
(:class:`~SuperResMoELib.methods.moediff.model.MoEDiffArchitecture`: the
networks, schedules and gating mode; its ``tile`` is the training tile side),
``vqvae`` (the autoencoder phase) and ``joint`` (the diffusion phase).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path

from SuperResMoELib.core.errors import ConfigError
from SuperResMoELib.methods.moediff.model import MoEDiffArchitecture

from .. import config as _config
from ..config import FRACTION, NON_NEGATIVE, NOT_EMPTY, POSITIVE, Node, PhaseSpec, RunConfig, each, one_of, setting
from ..config import check_validation_subjects
from ..split import SPLIT_UNITS
from .data import tile_margin
from .degradation import MoEDiffDegradation


@dataclass(frozen=True)
class MoEDiffLibrary(Node):
    """The slice library (:class:`training.moediff.data.SliceLibraryConfig`).

    Attributes:
        subjects: training T1 sample subjects.
        crops_per_subject: cubes cut (and degraded) per subject.
        slices_per_crop: tiles taken from each cube.
        crop: side of a cube (voxels).
        validation_fraction: fraction of the tiles held out for validation.
        intensity_jitter: intensities scaled by a random factor in ``1 +- this`` per cube.
        split: what validates (:data:`training.split.SPLIT_UNITS`): whole
            subjects, random tiles of every subject, or ``auto`` (subjects on
            your own data, tiles on the embedded sample).
        validation_subjects: the subjects (of ``subjects``) that validate in a
            split by subject (default: ``validation_fraction`` of them, seeded).
    """

    subjects: tuple[int, ...] = setting(MISSING, NOT_EMPTY, each(NON_NEGATIVE))
    crops_per_subject: int = setting(MISSING, POSITIVE)
    slices_per_crop: int = setting(MISSING, POSITIVE)
    crop: int = setting(MISSING, POSITIVE)
    validation_fraction: float = setting(0.1, FRACTION)
    intensity_jitter: float = setting(0.1, FRACTION)
    split: str = setting("auto", one_of(SPLIT_UNITS))
    validation_subjects: tuple[int, ...] = setting((), each(NON_NEGATIVE))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_validation_subjects(self)


@dataclass(frozen=True)
class VQVAEPhase(PhaseSpec):
    """The autoencoder phase: a :class:`~training.config.PhaseSpec` plus the
    weight of the L1 term (the loss is MSE + ``l1`` x L1 + the commitment term)
    and the share of tiles decoded from the continuous latent (quantiser bypassed)."""

    l1: float = setting(1.0, NON_NEGATIVE)
    bypass_probability: float = setting(0.5, FRACTION)


@dataclass(frozen=True)
class JointPhase(PhaseSpec):
    """The joint diffusion phase (Eq. 13-18).

    Attributes:
        uniform_fraction: share of the steps with gates fixed to ``1 / K`` (paper 0.2).
        task_weights: weight of each expert's task loss (E1 perceptual, E2 Sobel +
            Fourier, E3 STFT) next to its noise MSE (E2's term is ~10x the others
            at the start, hence its smaller default weight).
        task_min_level: the task losses see only samples whose noise level
            ``alpha_bar`` is at least this (``z0`` estimates from nearly pure noise
            are amplified noise).
        max_gating_weight: cap of the uncertainty weight ``1 / sigma^2`` of Eq. 17
            (an almost constant gating loss would otherwise get an unbounded weight:
            ~10 at the first steps here, ten times the expert loss).
        diversity_weight: weight of Eq. 16's diversity term inside the gating loss
            (the paper: 1).  It rewards experts for *disagreeing*, also with the
            truth: at 1 the experts that the gates use little are pushed apart
            until they diverge (on a one-tile overfit their noise MSE rose from
            1.3 to 3.6-4.9 in 600 steps while the used expert's fell), so the
            default is 0.1.
        validation_tiles: validation tiles sampled at each epoch end.
        validation_steps: sampler steps of that validation.
    """

    uniform_fraction: float = setting(0.2, FRACTION)
    task_weights: tuple[float, ...] = setting((0.5, 0.05, 0.5), each(NON_NEGATIVE))
    task_min_level: float = setting(0.25, FRACTION)
    max_gating_weight: float = setting(1.0, POSITIVE)
    diversity_weight: float = setting(0.1, NON_NEGATIVE)
    validation_tiles: int = setting(32, POSITIVE)
    validation_steps: int = setting(10, POSITIVE)


@dataclass(frozen=True)
class MoEDiffConfig(RunConfig):
    """Everything a MoEDiff-SR training run reads (see ``configs/moediff_compact.json``)."""

    library: MoEDiffLibrary = setting()
    architecture: MoEDiffArchitecture = setting()
    vqvae: VQVAEPhase = setting()
    joint: JointPhase = setting()
    degradation: MoEDiffDegradation = MoEDiffDegradation()

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.architecture.experts)
        if len(self.joint.task_weights) not in (1, n):
            raise ConfigError(f"joint.task_weights needs one weight or one per expert ({n}), "
                              f"got {list(self.joint.task_weights)}")
        need = self.architecture.tile + 2 * tile_margin(self.architecture.tile)
        if self.library.crop < need:
            raise ConfigError(f"library.crop must be at least {need} for {self.architecture.tile}-pixel tiles, "
                              f"got {self.library.crop}")


def load_config(name_or_path: str | Path) -> MoEDiffConfig:
    """A MoEDiff-SR config by name (``compact``, ``full``) or JSON path, checked.

    Raises:
        ConfigError: see :func:`training.config.from_dict`.
    """
    return _config.load(MoEDiffConfig, "moediff", name_or_path)
