"""Method registry: maps names to method classes, imported lazily so that
listing methods stays cheap and a broken optional method cannot break others."""

from __future__ import annotations

import importlib

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.methods.base import EnhanceOptions, Method, Result

#: name -> "module:Class" (relative to this package).
_REGISTRY: dict[str, str] = {
    "cubic": ".cubic:CubicMethod",
    "ssmoe": ".ssmoe:SSMoEMethod",
    "srunet": ".ssmoe:SRUNetMethod",
    "hardmoe": ".ssmoe:HardMoEMethod",
    "remix": ".remix:REMIxMethod",
    "remix1": ".remix:REMIxSingleMethod",
    "moediff": ".moediff.method:MoEDiffMethod",
}


def register(name: str, target: str) -> None:
    """Add a method: ``target`` is ``"package.module:Class"`` (or relative ``.module:Class``)."""
    _REGISTRY[name] = target


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    return list(_REGISTRY)


def get_method_class(name: str) -> type[Method]:
    """The class registered under ``name``.

    Raises:
        InputError: unknown name (the message lists the available ones).
    """
    if name not in _REGISTRY:
        raise InputError(f"unknown method {name!r}; available: {', '.join(_REGISTRY)}")
    module_name, cls_name = _REGISTRY[name].split(":")
    module = importlib.import_module(module_name, package=__name__)
    return getattr(module, cls_name)


def create_method(name: str) -> Method:
    """An instance of the method registered under ``name``."""
    return get_method_class(name)()


__all__ = ["EnhanceOptions", "Method", "Result", "create_method", "get_method_class", "method_names", "register"]
