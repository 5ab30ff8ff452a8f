"""The module's parameter node: a typed view of a ``vtkMRMLScriptedModuleNode``.

Every panel setting lives in the scene (saved and restored with it): plain
values as node parameters (strings, converted by the field's type), volumes as
node references.  Slicer's own ``parameterNodeWrapper`` does the same inside
the application; this wrapper works with the ``slicer-core`` wheel too, so
the binding is tested without the application.

Usage::

    params = PanelParameters(node)          # node: vtkMRMLScriptedModuleNode
    params.method = "remix"
    params.inputVolume = volume_node
    request = params.to_request()           # -> slicer_logic.EnhanceRequest
"""

from __future__ import annotations

import dataclasses
from typing import Any

from SuperResMoELib.slicer.logic import EnhanceRequest

#: Node-reference roles (attribute name -> reference role).
NODE_REFERENCES: tuple[str, ...] = ("inputVolume", "referenceVolume", "outputVolume", "errorVolume", "expertVolume",
                                    "lowResolutionVolume", "metricsTable")


@dataclasses.dataclass
class PanelDefaults:
    """Plain parameters with their types and defaults (0 / "" = the method's default)."""

    method: str = "cubic"
    task: str = ""
    checkpoint: str = ""
    device: str = "auto"
    targetSpacing: float = 0.0
    scale: str = ""
    expert: int = -1
    acquisition: str = ""
    patchSize: int = 0
    batchSize: int = 0
    overlap: float = 0.5
    mixedPrecision: bool = True
    simulate: bool = False


_FIELDS = {f.name: f for f in dataclasses.fields(PanelDefaults)}


def _parse(text: str, kind: type) -> Any:
    if kind is bool:
        return text.lower() in ("1", "true", "yes", "on")
    return kind(text)


def _numbers(text: str) -> tuple[float, ...] | None:
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.replace("x", ",").replace(" ", ",").split(",") if v)
    except ValueError:
        raise ValueError(f"expected numbers separated by commas, got {text!r}") from None


class PanelParameters:
    """Typed attributes over a scripted module node (see the module docstring)."""

    def __init__(self, node) -> None:
        object.__setattr__(self, "node", node)

    def __getattr__(self, name: str) -> Any:
        if name in NODE_REFERENCES:
            return self.node.GetNodeReference(name)
        if name in _FIELDS:
            f = _FIELDS[name]
            if name not in self.node.GetParameterNames():
                return f.default
            return _parse(self.node.GetParameter(name), _type(f))
        raise AttributeError(f"no parameter {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in NODE_REFERENCES:
            self.node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        elif name in _FIELDS:
            kind = _type(_FIELDS[name])
            if not isinstance(value, kind) and not (kind is float and isinstance(value, int)):
                raise TypeError(f"parameter {name} must be {kind.__name__}, got {type(value).__name__}")
            self.node.SetParameter(name, str(value))
        else:
            raise AttributeError(f"no parameter {name!r}")

    def values(self) -> dict[str, Any]:
        """All plain parameters."""
        return {name: getattr(self, name) for name in _FIELDS}

    def reset(self) -> None:
        """Set every plain parameter to its default."""
        for name, f in _FIELDS.items():
            setattr(self, name, f.default)

    def to_request(self) -> EnhanceRequest:
        """The :class:`EnhanceRequest` these settings describe.

        Raises:
            ValueError: unparsable numbers (scale, acquisition).
        """
        v = self.values()
        scale = _numbers(v["scale"])
        acq = _numbers(v["acquisition"])
        if acq is not None and len(acq) != 6:
            raise ValueError(f"acquisition parameters are six numbers gx gy gz b TI TE, got {len(acq)}")
        return EnhanceRequest(
            method=v["method"], task=v["task"] or None, checkpoint=v["checkpoint"] or None, device=v["device"],
            scale=scale, spacing=(v["targetSpacing"],) if v["targetSpacing"] > 0 else None,
            expert=v["expert"] if v["expert"] >= 0 else None, acquisition=acq,
            patch_size=v["patchSize"] or None, batch_size=v["batchSize"] or None, overlap=v["overlap"],
            mixed_precision=v["mixedPrecision"], simulate=v["simulate"])


def _type(f: dataclasses.Field) -> type:
    return {"str": str, "float": float, "int": int, "bool": bool}.get(f.type, f.type)  # type: ignore[arg-type]
