"""The REMIx training config (``configs/remix_*.json``) as a frozen dataclass
tree; :mod:`training.config` loads and checks it.

Defaults for keys a JSON may omit: ``experts.init = "expert1"`` (the shipped
configs chain the experts: ``"previous"``), ``library.intensity_jitter = 0.1``
(as the shipped configs), loss weights 0 (an omitted term is not computed),
the :class:`~training.remix.degradation.DegradationConfig` defaults (note
``native_probability = 0``; the shipped configs use 0.35), ``data_seed = 0``.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from SuperResMoELib.core.errors import ConfigError
from SuperResMoELib.nets.unet3d import UNet3DConfig

from .. import config as _config
from ..config import (FRACTION, NON_NEGATIVE, NOT_EMPTY, ORDERED, POSITIVE, Node, PhaseSpec, RunConfig, each, one_of,
                      setting)
from ..config import check_validation_subjects
from ..split import SPLIT_UNITS
from .degradation import DegradationConfig

#: Where experts 2..7 start: expert 1's weights, the previous expert's (a
#: chain), or the trained 1 network's (``"single"``: each expert is the
#: 1 network fine-tuned on its bin; beyond the paper).
EXPERT_INITS: tuple[str, ...] = ("expert1", "previous", "single")


#: What an expert phase's ``select: "best"`` compares (``experts.select_on``):
#: the composite loss on the validation pairs, or beyond the paper the PSNR on
#: whole scans of the out-of-generator validation head
#: (:mod:`training.remix.scan_validation`).
EXPERT_SELECTIONS: tuple[str, ...] = ("pairs", "scans")


#: How the experts are chosen: the paper's voxel volume alone, or beyond the
#: paper the voxel volume and the anisotropy (``"anisotropy"``: the seven
#: experts train on thick-slice acquisitions only and an eighth, the isotropic
#: expert, on isotropic ones; :mod:`SuperResMoELib.methods.remix.experts`).
ROUTERS: tuple[str, ...] = ("voxel-volume", "anisotropy")


#: Where REMIx's validation pairs come from: a split of the library, the
#: out-of-generator T1 validation head (``training/outgen/t1.py``), or both.
REMIX_VALIDATION_SOURCES: tuple[str, ...] = ("split", "outgen", "both")


@dataclass(frozen=True)
class LossWeights(Node):
    """Weights of the composite loss terms (:data:`training.remix.losses.TERMS`);
    a term of weight 0 is not computed, at least one must be positive."""

    mae: float = setting(0.0, NON_NEGATIVE)
    ssim: float = setting(0.0, NON_NEGATIVE)
    gradient: float = setting(0.0, NON_NEGATIVE)
    correlation: float = setting(0.0, NON_NEGATIVE)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not any(getattr(self, f.name) > 0 for f in fields(self)):
            raise ConfigError("at least one loss term needs a positive weight")


@dataclass(frozen=True)
class RemixLibrary(Node):
    """The per-bin pair libraries (:class:`training.remix.data.RemixLibraryConfig`).

    Attributes:
        subjects: training T1 sample subjects.
        crops_per_subject_and_bin: cubes cut per subject and bin.
        crop: side of a cube (voxels), degraded as a whole.
        patch: side of the central pair patch (voxels), at most ``crop``.
        validation_fraction: fraction of each bin's pairs held out.
        intensity_jitter: intensities scaled by a random factor in ``1 ± this``.
        split: what validates (:data:`training.split.SPLIT_UNITS`): whole
            subjects, random pairs of every subject, or ``auto`` (subjects on
            your own data, pairs on the embedded sample).
        validation_subjects: the subjects (of ``subjects``) that validate in a
            split by subject (default: ``validation_fraction`` of them, seeded).
        hr_blur_mm, hr_blur_probability, contrast_gamma: content variation of
            the cubes (:mod:`training.remix.data`; default off).
        validation: ``"split"`` (a split of the library, as ``split`` says)
            or ``"outgen"`` (every library pair trains; ``validation_crops``
            pairs per bin of the out-of-generator T1 *validation* head
            validate, :func:`training.remix.data.validation_library`), or
            ``"both"`` (the split's training pairs train; its validation
            pairs and the head's validate together, so the kept epoch must
            fit the generator's subjects as well as the head).
        validation_crops: pairs per bin of that head (``"outgen"``, ``"both"``).
    """

    subjects: tuple[int, ...] = setting(MISSING, NOT_EMPTY, each(NON_NEGATIVE))
    crops_per_subject_and_bin: int = setting(MISSING, POSITIVE)
    crop: int = setting(MISSING, POSITIVE)
    patch: int = setting(MISSING, POSITIVE)
    validation_fraction: float = setting(MISSING, FRACTION)
    intensity_jitter: float = setting(0.1, FRACTION)
    split: str = setting("auto", one_of(SPLIT_UNITS))
    validation_subjects: tuple[int, ...] = setting((), each(NON_NEGATIVE))
    hr_blur_mm: tuple[float, float] = setting((0.0, 0.0), each(NON_NEGATIVE), ORDERED)
    hr_blur_probability: float = setting(0.0, FRACTION)
    contrast_gamma: tuple[float, float] = setting((1.0, 1.0), each(POSITIVE), ORDERED)
    validation: str = setting("split", one_of(REMIX_VALIDATION_SOURCES))
    validation_crops: int = setting(48, POSITIVE)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch > self.crop:
            raise ConfigError(f"patch ({self.patch}) must not exceed crop ({self.crop})")
        check_validation_subjects(self)


@dataclass(frozen=True)
class RemixExperts(PhaseSpec):
    """Experts 2..7 (and the isotropic expert): a phase plus where they start
    (:data:`EXPERT_INITS`) and what picks the kept epoch (``select_on``,
    :data:`EXPERT_SELECTIONS`; ``"scans"`` needs ``select: "best"``)."""

    init: str = setting("expert1", one_of(EXPERT_INITS))
    select_on: str = setting(EXPERT_SELECTIONS[0], one_of(EXPERT_SELECTIONS))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.select_on == "scans" and self.select != "best":
            raise ConfigError('select_on "scans" picks the best epoch: it needs select "best"')


@dataclass(frozen=True)
class REMIxConfig(RunConfig):
    """Everything a REMIx training run reads (see ``configs/remix_compact.json``);
    ``batch_size``, ``seed``, ``data_seed`` and ``description`` as :class:`~training.config.RunConfig`.

    Attributes:
        unet: the U-Net of every network.
        loss: the composite loss weights.
        library: the pair libraries.
        degradation: the drawn acquisitions.
        expert1, experts, single: the phases (expert 1; each of experts 2..7; the 1-network baseline).
        router: :data:`ROUTERS`.  With ``"anisotropy"`` every volume expert
            trains on the thick-slice acquisitions of its bin only, the
            isotropic expert on the isotropic acquisitions of the bins from
            2 mm³ on (started as ``experts.init`` says), and the 1 network on
            both, an isotropic draw with probability
            ``degradation.isotropic_probability`` where a bin has them.
        isotropic: the isotropic expert's phase (``router: "anisotropy"``;
            default: ``experts``'s).
    """

    unet: UNet3DConfig = setting()
    loss: LossWeights = setting()
    library: RemixLibrary = setting()
    expert1: PhaseSpec = setting()
    experts: RemixExperts = setting()
    single: PhaseSpec = setting()
    degradation: DegradationConfig = DegradationConfig()
    router: str = setting(ROUTERS[0], one_of(ROUTERS))
    isotropic: RemixExperts | None = setting(None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.isotropic is not None and self.router != "anisotropy":
            raise ConfigError('isotropic: the isotropic expert trains only with router "anisotropy"')
        if self.router == "anisotropy" and not any(b >= 2 for b in self.degradation.bins):
            raise ConfigError('router "anisotropy": the isotropic expert needs a bin of 2 mm^3 or more')

    @property
    def isotropic_phase(self) -> RemixExperts:
        """The isotropic expert's phase spec (``isotropic``, else ``experts``)."""
        return self.isotropic if self.isotropic is not None else self.experts


def load_config(name_or_path: str | Path) -> REMIxConfig:
    """A REMIx config by name (``compact``, ``full``) or JSON path, checked.

    Raises:
        ConfigError: see :func:`training.config.from_dict`.
    """
    return _config.load(REMIxConfig, "remix", name_or_path)
