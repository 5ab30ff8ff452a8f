"""The checkpoint manifest: the JSON file beside the weights (torch-free).

A :class:`Manifest` holds the method, task, architecture config, scale
factors, intensity normalisation, training data, held-out metrics, the
training inputs' domain, the sha256 of the weights file and versions;
:func:`build_manifest` makes one for a method, :meth:`Manifest.from_dict`
validates a parsed file.  Reading and writing checkpoints is
:mod:`SuperResMoELib.checkpoints.store`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from SuperResMoELib.core.errors import CheckpointError
from SuperResMoELib.io.jsonutil import dumps

#: Manifest format written by this version (``format_version`` field).
FORMAT_VERSION: int = 1
#: Storage dtypes of floating tensors a manifest may name.
STORAGE_DTYPE_NAMES: tuple[str, ...] = ("float32", "float16")
#: Fields every manifest must have.
REQUIRED_FIELDS: tuple[str, ...] = ("method", "task", "architecture", "scale_factors", "intensity")
#: Length of ``scale_factors``.
N_SCALE_FACTORS: int = 3


def _library_version() -> str:
    from SuperResMoELib import __version__  # late import: the package imports its modules first

    return __version__


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ manifest
@dataclass
class Manifest:
    """What a checkpoint is for and how it was made.

    Attributes:
        method: method name in the registry, e.g. ``"ssmoe"``.
        task: what the weights were trained for, e.g. ``"t1_x2"``.
        architecture: keyword arguments that rebuild the network.
        scale_factors: super-resolution factors ``(s_i, s_j, s_k)``.
        intensity: normalisation the method applies to its input and undoes on
            output, e.g. ``{"kind": "scale", "factor": 0.001}``.
        training_data: description of the training data.
        metrics: held-out metrics, e.g. ``{"mse_ssmoe": 1.2e-4}``.
        sha256: hex digest of the weights file (written by :func:`save_checkpoint`).
        version: SuperResMoELib version that wrote the checkpoint.
        format_version: manifest format (:data:`FORMAT_VERSION`).
        created: ISO 8601 time of writing.
        dtype: storage dtype of floating tensors, ``"float32"`` or ``"float16"``.
        description: free text for users.
        domain: the training inputs' domain (spacing, intensity range,
            dimensionality; :mod:`SuperResMoELib.checkpoints.domain`): inputs far
            outside it get a warning.
        extra: anything else (unknown fields of newer manifests land here).
    """

    method: str
    task: str
    architecture: dict
    scale_factors: list[float]
    intensity: dict
    training_data: dict | str = ""
    metrics: dict = field(default_factory=dict)
    sha256: str = ""
    version: str = field(default_factory=_library_version)
    format_version: int = FORMAT_VERSION
    created: str = ""
    dtype: str = "float32"
    description: str = ""
    domain: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("method", "task"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise CheckpointError(f"manifest field '{name}' must be a non-empty string, got {value!r}")
        for name in ("architecture", "intensity", "metrics", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise CheckpointError(
                    f"manifest field '{name}' must be an object (dict), got {type(getattr(self, name)).__name__}"
                )
        if not isinstance(self.training_data, (dict, str)):
            raise CheckpointError("manifest field 'training_data' must be a string or an object")
        self.scale_factors = _check_scale_factors(self.scale_factors)
        for name in ("sha256", "version", "created", "description"):
            if not isinstance(getattr(self, name), str):
                raise CheckpointError(f"manifest field '{name}' must be a string")
        if self.dtype not in STORAGE_DTYPE_NAMES:
            raise CheckpointError(
                f"manifest field 'dtype' must be one of {', '.join(STORAGE_DTYPE_NAMES)}, got {self.dtype!r}"
            )
        fv = self.format_version
        if isinstance(fv, bool) or not isinstance(fv, int) or fv < 1:
            raise CheckpointError(f"manifest field 'format_version' must be a positive integer, got {fv!r}")
        if fv > FORMAT_VERSION:
            raise CheckpointError(
                f"manifest format {fv} is newer than this SuperResMoE supports ({FORMAT_VERSION}); "
                "update the extension"
            )

    def to_json(self) -> str:
        """The manifest as indented JSON text (numpy values become plain numbers)."""
        return dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        """Build and validate a manifest from parsed JSON.

        Unknown keys are kept in ``extra``.

        Raises:
            CheckpointError: not an object, a required field missing, a field of
                the wrong type, or a format newer than :data:`FORMAT_VERSION`.
        """
        if not isinstance(d, dict):
            raise CheckpointError(f"a manifest must be a JSON object, got {type(d).__name__}")
        fv = d.get("format_version", FORMAT_VERSION)
        if isinstance(fv, int) and not isinstance(fv, bool) and fv > FORMAT_VERSION:
            raise CheckpointError(
                f"manifest format {fv} is newer than this SuperResMoE supports ({FORMAT_VERSION}); "
                "update the extension"
            )
        missing = [name for name in REQUIRED_FIELDS if name not in d]
        if missing:
            raise CheckpointError(f"manifest lacks required field(s): {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        unknown = {k: v for k, v in d.items() if k not in known}
        if unknown:
            extra = kwargs.get("extra", {})
            if not isinstance(extra, dict):
                raise CheckpointError("manifest field 'extra' must be an object (dict)")
            kwargs["extra"] = {**unknown, **extra}
        return cls(**kwargs)


def build_manifest(method: str, task: str, architecture: dict[str, Any], scale_factors: list[float],
                   intensity: dict[str, Any], **fields: Any) -> Manifest:
    """A :class:`Manifest`; each of ``fields`` that names a manifest attribute
    (``training_data``, ``metrics``, ``description``, ...) sets it, the others
    go into ``extra`` (together with a given ``extra``)."""
    known = {f.name for f in dataclasses.fields(Manifest)}
    kwargs = {k: v for k, v in fields.items() if k in known}
    unknown = {k: v for k, v in fields.items() if k not in known}
    if unknown:
        kwargs["extra"] = {**unknown, **kwargs.get("extra", {})}
    return Manifest(method=method, task=task, architecture=architecture, scale_factors=scale_factors,
                    intensity=intensity, **kwargs)


def _check_scale_factors(values: Any) -> list[float]:
    try:
        factors = [float(v) for v in values]
    except (TypeError, ValueError):
        raise CheckpointError(f"manifest field 'scale_factors' must be a list of numbers, got {values!r}") from None
    if any(isinstance(v, (bool, str)) for v in values):
        raise CheckpointError(f"manifest field 'scale_factors' must be a list of numbers, got {values!r}")
    if len(factors) != N_SCALE_FACTORS or not all(math.isfinite(f) and f > 0 for f in factors):
        raise CheckpointError(
            f"manifest field 'scale_factors' must be {N_SCALE_FACTORS} positive numbers "
            f"(s_i, s_j, s_k), got {values!r}"
        )
    return factors
