"""Training configs as data: JSON files -> frozen, validated dataclass trees.

A method's config is a tree of frozen dataclasses (``training/ssmoe/config.py``,
``training/remix/config.py``); their field defaults are the only defaults.
:func:`from_dict` turns a JSON object into such a tree generically, from the
type hints: nested dataclasses from objects, ``tuple[T, ...]`` and
``tuple[A, B]`` from lists, ``tuple[tuple[str, T], ...]`` from an object of
named values.  It rejects, before any work, with a :class:`ConfigError` that
names the file and the full key path (``library.subjects[2]``):

* unknown (misspelled) keys, with the closest known keys (difflib);
* missing keys (fields without a default);
* values of the wrong JSON type (``"8"`` for an integer, ``true`` for a number);
* values a field's checks refuse (:func:`setting`: positive, fraction in
  ``[0, 1]``, one of some choices, ...) or the dataclass's own
  ``__post_init__`` refuses (a ``ValueError``).

The checks run in :class:`Node.__post_init__`, so a tree built in code or
changed with :func:`dataclasses.replace` (command-line overrides) is checked
the same way.  :func:`to_dict` is the inverse of :func:`from_dict`: the
resolved config (every default filled in) as plain JSON data.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from SuperResMoELib.core.errors import ConfigError

#: The shipped configs: ``configs/<method>_<name>.json``.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

T = TypeVar("T")


@dataclass(frozen=True)
class Check:
    """A condition on a config value: ``ok(value)`` must hold; ``what`` says
    what the value must be (``"a positive integer"``)."""

    what: str
    ok: Callable[[Any], bool]
    #: The allowed values of a :func:`one_of` check (suggested when close).
    choices: tuple[str, ...] = ()


POSITIVE = Check("> 0", lambda v: v > 0)
NON_NEGATIVE = Check(">= 0", lambda v: v >= 0)
FRACTION = Check("a fraction in [0, 1]", lambda v: 0.0 <= v <= 1.0)
NOT_EMPTY = Check("a non-empty list", lambda v: len(v) > 0)
ORDERED = Check("a range [low, high] with low <= high", lambda v: v[0] <= v[1])


def one_of(choices: Sequence[str]) -> Check:
    """``value in choices``; the message lists them as ``'a' or 'b'``."""
    names = [repr(c) for c in choices]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return Check(text, lambda v, c=tuple(choices): v in c, tuple(choices))


def each(check: Check) -> Check:
    """``check`` on every element of a list (or every value of named values)."""
    def ok(values) -> bool:
        items = [v for _, v in values] if values and isinstance(values[0], tuple) else values
        return all(check.ok(v) for v in items)

    return Check(f"a list of values {check.what}", ok)


def check_validation_subjects(library: Any) -> None:
    """A library node's ``validation_subjects`` must be some, not all, of its
    ``subjects`` and need a split by subject.

    Raises:
        ConfigError: naming the key.
    """
    given = tuple(library.validation_subjects)
    if not given:
        return
    if library.split == "patches":
        raise ConfigError("library.validation_subjects needs library.split 'subjects' or 'auto', not 'patches'")
    extra = sorted(set(given) - set(library.subjects))
    if extra:
        raise ConfigError(f"library.validation_subjects {extra} are not in library.subjects {list(library.subjects)}")
    if set(given) >= set(library.subjects):
        raise ConfigError("library.validation_subjects leave no subject of library.subjects to train on")


def setting(default: Any = dataclasses.MISSING, *checks: Check) -> Any:
    """A dataclass field with ``default`` (none: the key is required) and
    ``checks`` run by :class:`Node` on every construction."""
    return dataclasses.field(default=default, metadata={"checks": checks})


class Node:
    """Mixin of config dataclasses: runs each field's :func:`setting` checks.

    Raises:
        ConfigError: ``"<field> must be <what>, not <value>"``.
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            for check in f.metadata.get("checks", ()):
                if not check.ok(value):
                    near = difflib.get_close_matches(str(value), check.choices, n=1, cutoff=0.6)
                    hint = f"; did you mean {near[0]!r}?" if near else ""
                    raise ConfigError(f"{f.name} must be {check.what}, not {_show(value)}{hint}")


def _show(value: Any) -> str:
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return repr(dict(value))
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _closest(prefix: str, name: str, known: Sequence[str]) -> str:
    """``"did you mean 'library.subjects'?"``, or the known keys when none is close."""
    near = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if near:
        return "did you mean " + " or ".join(repr(_key(prefix, n)) for n in near) + "?"
    return "known keys here: " + ", ".join(known)


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class _Loader:
    """One :func:`from_dict` call: the file name for messages, the recursion."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {message}")

    def node(self, cls: type, data: Any, path: str) -> Any:
        if not isinstance(data, Mapping):
            raise self.fail(f"{path or 'the config'} must be a JSON object, not {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in data:
            if key not in fields:
                raise self.fail(f"unknown key {_key(path, str(key))!r}; {_closest(path, str(key), list(fields))}")
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = self.value(hints[name], data[name], _key(path, name))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise self.fail(f"missing key {_key(path, name)!r}")
        try:
            return cls(**kwargs)
        except ConfigError as exc:  # a Node check: "<field> must be ...", or about the whole node
            message = str(exc)
            about_field = message.split(" ", 1)[0].rstrip(":") in fields
            raise self.fail(_key(path, message) if about_field or not path else f"{path}: {message}") from None
        except (ValueError, TypeError) as exc:  # the dataclass's own __post_init__
            raise self.fail(f"{path or 'the config'}: {exc}") from None

    def value(self, hint: Any, data: Any, path: str) -> Any:
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            return self.node(hint, data, path)
        if origin in (typing.Union, types.UnionType):
            if data is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.value(inner, data, path)
        if origin is tuple:
            return self.sequence(args, data, path)
        if hint is bool:
            if not isinstance(data, bool):
                raise self.fail(f"{path} must be true or false, not {data!r}")
            return data
        if hint is int:
            if isinstance(data, bool) or not isinstance(data, int):
                raise self.fail(f"{path} must be an integer, not {data!r}")
            return data
        if hint is float:
            if isinstance(data, bool) or not isinstance(data, (int, float)) or not math.isfinite(data):
                raise self.fail(f"{path} must be a finite number, not {data!r}")
            return float(data)
        if hint is str:
            if not isinstance(data, str):
                raise self.fail(f"{path} must be a string, not {data!r}")
            return data
        raise TypeError(f"config field {path}: unsupported type {hint!r}")  # a programming error

    def sequence(self, args: tuple, data: Any, path: str) -> tuple:
        named = len(args) == 2 and args[1] is Ellipsis and typing.get_origin(args[0]) is tuple \
            and typing.get_args(args[0])[0] is str
        if named and isinstance(data, Mapping):  # {"axial": 0.35, ...} -> (("axial", 0.35), ...)
            value_hint = typing.get_args(args[0])[1]
            return tuple((str(k), self.value(value_hint, v, f"{path}.{k}")) for k, v in data.items())
        if not isinstance(data, list):
            what = "an object of named values" if named else "a list"
            raise self.fail(f"{path} must be {what}, not {data!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(self.value(args[0], v, f"{path}[{i}]") for i, v in enumerate(data))
        if len(data) != len(args):
            raise self.fail(f"{path} must be a list of {len(args)} values, not {data!r}")
        return tuple(self.value(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, data)))


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """The config tree ``cls`` from JSON data (see the module docstring).

    Args:
        cls: the root dataclass.
        data: the parsed JSON object.
        source: what the messages call it (the file path).

    Raises:
        ConfigError: unknown/missing key, wrong type or refused value.
    """
    return _Loader(source).node(cls, data, "")


def config_path(method: str, name_or_path: str | Path) -> Path:
    """``configs/<method>_<name>.json`` for a shipped name (``compact``,
    ``full``), else ``name_or_path`` itself.

    Raises:
        ConfigError: neither exists.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{method}_{name_or_path}.json"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem[len(method) + 1:] for p in CONFIG_DIR.glob(f"{method}_*.json"))
    raise ConfigError(f"no {method} config {str(name_or_path)!r}: not a file, nor one of {', '.join(names)}")


def load(cls: type[T], method: str, name_or_path: str | Path) -> T:
    """Read and validate the config ``name_or_path`` of ``method`` (see :func:`config_path`).

    Raises:
        ConfigError: missing file, invalid JSON, or a config :func:`from_dict` refuses.
    """
    path = config_path(method, name_or_path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    return from_dict(cls, data, str(path))


def to_dict(cfg: Any) -> Any:
    """The resolved config as JSON data (every default filled in); named
    values become objects again, so ``from_dict(type(cfg), to_dict(cfg)) == cfg``."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple):
        if cfg and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in cfg):
            return {k: to_dict(v) for k, v in cfg}
        return [to_dict(v) for v in cfg]
    return cfg


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A JSON tree as ``{"library.subjects": [...], ...}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differing_keys(cls: type, recorded: Mapping[str, Any], cfg: Any, source: str,
                   compared: Callable[[str], bool]) -> list[str]:
    """The flat keys (:func:`flat`) on which a checkpoint's recorded training
    config and ``cfg`` differ, among those whose top-level name ``compared``
    accepts; the record goes through ``cls`` first, so keys added since (with
    their defaults) compare equal.

    Raises:
        ConfigError: the record is not a valid ``cls`` config (named by ``source``).
    """
    theirs = flat(to_dict(from_dict(cls, recorded, source)))
    ours = flat(to_dict(cfg))
    return sorted(key for key in set(theirs) | set(ours)
                  if compared(key.split(".")[0]) and theirs.get(key) != ours.get(key))


#: Which epoch's weights a phase keeps (:class:`PhaseSpec`, :class:`training.loop.PhaseConfig`).
SELECT_MODES: tuple[str, ...] = ("last", "best")


@dataclass(frozen=True)
class PhaseSpec(Node):
    """Length and learning rate of one training phase.

    Attributes:
        epochs: number of epochs.
        steps_per_epoch: optimisation steps per epoch.
        lr: Adam learning rate (0 keeps the starting weights: tests use it).
        select: which epoch's weights the phase keeps: ``"last"`` or
            ``"best"`` (lowest validation MSE; :mod:`training.loop`).
        validate_start: with ``"best"``, the phase's starting weights are a
            candidate too (validated as epoch 0): a fine-tuning phase then
            keeps where it began unless an epoch beats it.
    """

    epochs: int = setting(dataclasses.MISSING, POSITIVE)
    steps_per_epoch: int = setting(dataclasses.MISSING, POSITIVE)
    lr: float = setting(dataclasses.MISSING, NON_NEGATIVE)
    select: str = setting("last", one_of(SELECT_MODES))
    validate_start: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.validate_start and self.select != "best":
            raise ConfigError('validate_start needs select "best" (it adds the start as a candidate epoch)')

    def phase_config(self, name: str, select_metric: str = "val_mse", select_max: bool = False):
        """The :class:`training.loop.PhaseConfig` of this phase under ``name``
        (``select_metric``: the validation value ``select: "best"`` minimises,
        or maximises with ``select_max``)."""
        from .loop import PhaseConfig

        return PhaseConfig(name, self.epochs, self.steps_per_epoch, select=self.select, select_metric=select_metric,
                           validate_start=self.validate_start, select_max=select_max)


@dataclass(frozen=True, kw_only=True)
class RunConfig(Node):
    """The fields every method's training config has (keyword-only, so a
    method's config adds its own fields in any order).

    Attributes:
        batch_size: training pairs per step.
        seed: seed of the weights, the libraries, the split and the batches.
        data_seed: seed of the sample-data generator.
        description: free text, copied into the checkpoints' manifests.
    """

    batch_size: int = setting(dataclasses.MISSING, POSITIVE)
    seed: int = setting(0, NON_NEGATIVE)
    data_seed: int = setting(0, NON_NEGATIVE)
    description: str = ""
