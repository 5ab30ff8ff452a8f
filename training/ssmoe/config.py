"""The SS-MoE training config (``configs/ssmoe_*.json``) as a frozen dataclass
tree; :mod:`training.config` loads and checks it.

Defaults are the ones the trainer always used for keys a JSON may omit:
``residual = "none"`` (the reference; the compact config uses ``"linear"``),
``experts.batchnorm = "frozen"`` (the full config trains them: ``"train"``),
``data_seed = 0``, ``library.min_foreground = 0.5``.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path

from SuperResMoELib.core.errors import ConfigError
from SuperResMoELib.nets.srunet import NORMALIZATIONS, RESIDUALS, SRUNetConfig

from .. import config as _config
from SuperResMoELib.sample_data import MUDI_VARIATIONS

from ..config import (FRACTION, NON_NEGATIVE, NOT_EMPTY, ORDERED, POSITIVE, Node, PhaseSpec, RunConfig, each, one_of,
                      setting)
from .pseudo_labels import LABELERS

#: How the experts' batch norms behave while they are fine-tuned.
BATCHNORM_MODES: tuple[str, ...] = ("frozen", "train")
#: Where the Hard-MoE baseline starts: its own random weights (end to end from
#: scratch), or the trained SR U-Net in every head (as SS-MoE's experts do).
HARDMOE_INITS: tuple[str, ...] = ("scratch", "baseline")
#: Where the validation pairs come from: a fraction of the library, the
#: out-of-generator validation head (``training/outgen/qmri.py``), or both.
VALIDATION_SOURCES: tuple[str, ...] = ("split", "outgen", "both")


@dataclass(frozen=True)
class SSMoELibrary(Node):
    """The training patch library (:class:`training.ssmoe.data.LibraryConfig`).

    Attributes:
        subjects: sample subjects drawn from (a ``mudi:`` folder uses all but the held-out one).
        volumes_per_subject: acquisition rows per subject (capped at the table's length).
        patches_per_volume: patch positions per (subject, row).
        validation_fraction: fraction of the pairs held out for validation.
        min_foreground: minimum fraction of non-zero voxels of an HR patch.
        variation: which sample subjects (:data:`SuperResMoELib.sample_data.MUDI_VARIATIONS`:
            ``"standard"``, or ``"wide"``: pose, tissue values, mask, bias and noise vary per subject).
        lr_blur, lr_blur_probability: slice-profile variation of the LR
            (:class:`training.ssmoe.data.LibraryConfig`; ``[0, 0]`` / 0: the block average only).
        validation: ``"split"`` (``validation_fraction`` of the library),
            ``"outgen"`` (pairs of the out-of-generator *validation* head, not
            the generator's subjects; the test head is never used) or
            ``"both"`` (the split's pairs and the head's, one mean MSE over
            all: selection then watches the generator's distribution too).
        validation_rows: acquisition rows of the validation head used (``"outgen"``, ``"both"``).
        wide_subjects: subjects of the ``wide`` set drawn from as well (the
            sample data only; ``subjects`` keep ``variation``): a mix keeps the
            standard subjects' distribution in the library.
    """

    subjects: tuple[int, ...] = setting(MISSING, NOT_EMPTY, each(NON_NEGATIVE))
    volumes_per_subject: int = setting(MISSING, POSITIVE)
    patches_per_volume: int = setting(MISSING, POSITIVE)
    validation_fraction: float = setting(MISSING, FRACTION)
    min_foreground: float = setting(0.5, FRACTION)
    variation: str = setting("standard", one_of(tuple(MUDI_VARIATIONS)))
    lr_blur: tuple[float, float] = setting((0.0, 0.0), each(NON_NEGATIVE), ORDERED)
    lr_blur_probability: float = setting(0.0, FRACTION)
    validation: str = setting("split", one_of(VALIDATION_SOURCES))
    validation_rows: int = setting(48, POSITIVE)
    wide_subjects: tuple[int, ...] = setting((), each(NON_NEGATIVE))


@dataclass(frozen=True)
class SSMoEExperts(PhaseSpec):
    """Phase 3 (the experts): a phase plus the batch-norm mode
    (:data:`BATCHNORM_MODES`; ``"frozen"`` starts exactly from the baseline)."""

    batchnorm: str = setting("frozen", one_of(BATCHNORM_MODES))


@dataclass(frozen=True)
class SSMoEHardMoE(PhaseSpec):
    """The Hard-MoE baseline's phase plus where it starts (:data:`HARDMOE_INITS`;
    ``"baseline"``: encoder, skips and every head from the trained SR U-Net, the
    same start SS-MoE's experts get; trained end to end either way)."""

    init: str = setting("scratch", one_of(HARDMOE_INITS))


@dataclass(frozen=True)
class SSMoEConfig(RunConfig):
    """Everything an SS-MoE training run reads (see ``configs/ssmoe_compact.json``);
    ``batch_size``, ``seed``, ``data_seed`` and ``description`` as :class:`~training.config.RunConfig`.

    Attributes:
        width: SR U-Net base width.
        n_experts: K of the exported ``ssmoe_<task>`` checkpoint.
        labeler: pseudo labeler of the exported checkpoint (:data:`LABELERS`).
        intensity_factor: network units = user units x this.
        library: the patch library.
        baseline, gater, experts, hardmoe: the phases.
        joint: beyond the paper (which keeps the encoder frozen), an optional
            last phase: the encoder and every expert fine-tuned together,
            each patch through the expert the trained gater sends it to, as
            at inference; ``null`` (default): off.
        residual: SR U-Net output mode (:data:`SuperResMoELib.nets.srunet.RESIDUALS`).
        normalize: input normalisation of every network
            (:data:`SuperResMoELib.nets.srunet.NORMALIZATIONS`; beyond the
            paper): ``"patch"`` divides each LR patch by its mean absolute
            intensity and multiplies the output back; the pseudo labels then
            score each patch's error relative to its scale squared, which is
            what the gater (seeing the normalised patch) can tell apart.
    """

    width: int = setting(MISSING, POSITIVE)
    n_experts: int = setting(MISSING, POSITIVE)
    labeler: str = setting(MISSING, one_of(tuple(LABELERS)))
    intensity_factor: float = setting(MISSING, POSITIVE)
    library: SSMoELibrary = setting()
    baseline: PhaseSpec = setting()
    gater: PhaseSpec = setting()
    experts: SSMoEExperts = setting()
    hardmoe: SSMoEHardMoE = setting()
    joint: PhaseSpec | None = setting(None)
    residual: str = setting("none", one_of(RESIDUALS))
    normalize: str = setting("none", one_of(NORMALIZATIONS))

    def __post_init__(self) -> None:
        super().__post_init__()
        try:  # the network's own limits (e.g. width >= 2), before any work
            SRUNetConfig("iso", self.width, residual=self.residual, normalize=self.normalize)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def load_config(name_or_path: str | Path) -> SSMoEConfig:
    """An SS-MoE config by name (``compact``, ``full``) or JSON path, checked.

    Raises:
        ConfigError: see :func:`training.config.from_dict`.
    """
    return _config.load(SSMoEConfig, "ssmoe", name_or_path)
