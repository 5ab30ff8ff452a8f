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
    request = params.to_request()           # -> slicer.logic.EnhanceRequest
"""

from __future__ import annotations

import dataclasses
from typing import Any

from SuperResMoELib.core.options import panel_default, panel_options, panel_to_value
from SuperResMoELib.slicer.logic import EnhanceRequest

#: Node-reference roles (attribute name -> reference role).
NODE_REFERENCES: tuple[str, ...] = ("inputVolume", "referenceVolume", "acquisitionTable", "targetVolume",
                                    "outputVolume", "errorVolume", "expertVolume", "lowResolutionVolume",
                                    "metricsTable")
#: Plain panel settings that are not enhance options (the acquisition file of a 4D input).
EXTRA_FIELDS: tuple[tuple[str, type, Any], ...] = (("acquisitionFile", str, ""),)


def _defaults_class() -> type:
    """:class:`PanelDefaults`: one typed field per panel option of the schema."""
    fields = [(o.panel.name, o.panel.type, dataclasses.field(default=panel_default(o)))  # type: ignore[union-attr]
              for o in panel_options()]
    fields += [(name, kind, dataclasses.field(default=default)) for name, kind, default in EXTRA_FIELDS]
    return dataclasses.make_dataclass(
        "PanelDefaults", fields,
        namespace={"__doc__": "Plain parameters with their types and defaults, derived from "
                              ":data:`SuperResMoELib.core.options.ENHANCE_OPTIONS` (the 'unset' value of a "
                              "field, e.g. 0 or '', means the method's default).", "__module__": __name__})


#: The panel's plain parameters, their types and defaults.
PanelDefaults: Any = _defaults_class()
#: parameter name -> (field, option spec).
_FIELDS = {f.name: f for f in dataclasses.fields(PanelDefaults)}
_SPECS = {o.panel.name: o for o in panel_options()}  # type: ignore[union-attr]


def _parse(text: str, kind: type) -> Any:
    if kind is bool:
        return text.lower() in ("1", "true", "yes", "on")
    return kind(text)


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
        return EnhanceRequest(**{spec.name: panel_to_value(spec, v[name]) for name, spec in _SPECS.items()})

    def acquisition_source(self):
        """The acquisition of a 4D input: the table node, else the file path, else ``None``."""
        return self.acquisitionTable or (self.acquisitionFile or None)


def _type(f: dataclasses.Field) -> Any:
    return {"str": str, "float": float, "int": int, "bool": bool}.get(f.type, f.type)  # type: ignore[arg-type]
