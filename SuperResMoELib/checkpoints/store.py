"""Safe checkpoints: safetensors weights plus a JSON manifest.

A checkpoint named ``name`` is two files side by side:

* ``name.safetensors`` - the weights (tensors only: loading it cannot run code);
* ``name.json`` - the :class:`Manifest`: method, task, architecture config,
  scale factors, intensity normalisation, training data, held-out metrics,
  the sha256 of the weights file, and versions.

Pickle-based files (``torch.save`` output, ``.pt``/``.pth``/``.ckpt``/``.bin``)
are refused without being opened by a deserialiser: a checkpoint downloaded
from the internet must not be able to execute code.  ``torch.load`` is never
called in this module.

Checkpoints are looked up in :func:`checkpoint_search_dirs`: the folders in
``$SUPERRESMOE_CHECKPOINTS``, the bundled ones (package data) and a
per-user cache folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as _load_safetensors_bytes
from safetensors.torch import save_file as _save_file

from SuperResMoELib.io.atomic import atomic_path, write_text_atomic
from SuperResMoELib.checkpoints.manifest import (  # re-exported: the store's API names them
    FORMAT_VERSION as FORMAT_VERSION,
)
from SuperResMoELib.checkpoints.manifest import STORAGE_DTYPE_NAMES, Manifest, _now_iso
from SuperResMoELib.core.errors import CheckpointError, DeviceError
from SuperResMoELib.io.hashing import sha256_file as sha256_file  # re-exported
from SuperResMoELib.io.paths import ENV_CACHE as ENV_CACHE  # re-exported
from SuperResMoELib.io.paths import user_cache_dir

#: Suffix of the weights file.
WEIGHTS_SUFFIX: str = ".safetensors"
#: Suffix of the manifest file.
MANIFEST_SUFFIX: str = ".json"
#: Suffixes of pickle-based files, refused without being opened.
PICKLE_SUFFIXES: frozenset[str] = frozenset({".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle"})
#: First bytes of a zip archive (``torch.save`` since torch 1.6).
ZIP_MAGIC: bytes = b"PK\x03\x04"
#: Pickle PROTO opcode, the first byte of pickles of protocol 2 and later.
PICKLE_PROTO_OPCODE: int = 0x80
#: Highest pickle protocol number (the byte after the PROTO opcode).
PICKLE_MAX_PROTOCOL: int = 5
#: Size of the little-endian u64 header length that opens a safetensors file.
SAFETENSORS_LENGTH_BYTES: int = 8
#: Largest safetensors JSON header accepted (the format's own limit, 100 MB).
SAFETENSORS_MAX_HEADER: int = 100_000_000
#: Environment variable: extra checkpoint folders, ``os.pathsep`` separated.
ENV_CHECKPOINTS: str = "SUPERRESMOE_CHECKPOINTS"
#: Storage dtypes a manifest may record (:data:`STORAGE_DTYPE_NAMES`) as torch dtypes.
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
assert tuple(STORAGE_DTYPES) == STORAGE_DTYPE_NAMES
#: Folder of the bundled checkpoints inside this package.
BUNDLED_FOLDER: str = "bundled"
#: How to turn a pickle checkpoint into a safe one (quoted in error messages).
CONVERT_HINT: str = (
    "convert it to safetensors with SuperResMoELib.checkpoints.store.save_checkpoint, after loading it "
    "with torch.load(..., weights_only=True) in a trusted environment"
)


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the ``.safetensors`` file.
        manifest: its manifest.
        tensors: name -> tensor (floating tensors float32 even when stored as float16).
    """

    path: Path
    manifest: Manifest
    tensors: dict[str, torch.Tensor]


# --------------------------------------------------------------------- paths
def _refuse_pickle(path: Path) -> None:
    raise CheckpointError(
        f"{path}: refusing to load a pickle-based file: it could run code; {CONVERT_HINT}"
    )


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, manifest)`` paths for ``x``, ``x.safetensors`` or ``x.json``.

    Raises:
        CheckpointError: ``path`` names a pickle-based file (by suffix).
    """
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        _refuse_pickle(p)
    if suffix in (WEIGHTS_SUFFIX, MANIFEST_SUFFIX):
        p = p.with_suffix("")
    return p.with_name(p.name + WEIGHTS_SUFFIX), p.with_name(p.name + MANIFEST_SUFFIX)


def _looks_like_safetensors(data: bytes) -> bool:
    """True when ``data`` opens with a plausible safetensors header length and ``{``."""
    if len(data) < SAFETENSORS_LENGTH_BYTES + 2:
        return False
    (n,) = struct.unpack("<Q", data[:SAFETENSORS_LENGTH_BYTES])
    return (
        0 < n <= SAFETENSORS_MAX_HEADER
        and SAFETENSORS_LENGTH_BYTES + n <= len(data)
        and data[SAFETENSORS_LENGTH_BYTES : SAFETENSORS_LENGTH_BYTES + 1] == b"{"
    )


def _looks_like_pickle(data: bytes) -> bool:
    """True for a zip archive (``torch.save``) or a pickle of protocol >= 2."""
    if data.startswith(ZIP_MAGIC):
        return True
    return len(data) >= 2 and data[0] == PICKLE_PROTO_OPCODE and 1 <= data[1] <= PICKLE_MAX_PROTOCOL


# ---------------------------------------------------------------- save, load
def save_checkpoint(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    manifest: Manifest,
    half: bool = False,
) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json``, each atomically.

    The weights are written first, then the manifest with the weights' sha256
    (and ``created``/``dtype`` filled in).  The caller's manifest is not modified.

    Args:
        path: ``x``, ``x.safetensors`` or ``x.json``.
        tensors: name -> tensor (any device; copied to CPU).
        manifest: the checkpoint's description.
        half: store floating tensors as float16 (about half the size);
            :func:`load_checkpoint` casts them back to float32.

    Returns:
        The ``.safetensors`` path.

    Raises:
        CheckpointError: a value is not a tensor, a float16 value would
            overflow, or the manifest is not JSON serialisable.
    """
    weights_path, manifest_path = checkpoint_paths(path)
    store: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"checkpoint tensors must map names to torch tensors, got {name!r}")
        t = tensor.detach().to("cpu")
        if half and t.is_floating_point():
            h = t.to(torch.float16)
            if bool((torch.isinf(h) & torch.isfinite(t)).any()):
                raise CheckpointError(
                    f"tensor '{name}' has values beyond float16's range; save it with half=False"
                )
            t = h
        store[name] = t.contiguous().clone()  # own storage: safetensors refuses shared memory
    final = dataclasses.replace(
        manifest,
        dtype="float16" if half else "float32",
        created=manifest.created or _now_iso(),
        format_version=FORMAT_VERSION,
    )
    try:
        final.to_json()  # fail before touching the disk
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"manifest for {manifest_path} is not JSON serialisable: {exc}") from exc
    with atomic_path(weights_path) as tmp:
        _save_file(store, str(tmp), metadata={"format": "pt"})
        final.sha256 = sha256_file(tmp)
    try:
        write_text_atomic(manifest_path, final.to_json())
    except BaseException:
        weights_path.unlink(missing_ok=True)  # no weights without a manifest
        raise
    return weights_path


def _parse_manifest(manifest_path: Path) -> Manifest:
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(
            f"manifest {manifest_path} is missing: a checkpoint needs its .json next to the "
            "weights; re-export it with save_checkpoint or the training command"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read manifest {manifest_path} ({exc}); check the file") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"manifest {manifest_path} is not valid JSON ({exc}); restore or re-export the checkpoint"
        ) from None
    try:
        return Manifest.from_dict(data)
    except CheckpointError as exc:
        raise CheckpointError(f"manifest {manifest_path} is invalid: {exc}") from None
    except TypeError as exc:  # pragma: no cover - from_dict filters keyword names
        raise CheckpointError(f"manifest {manifest_path} is invalid: {exc}") from None


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of a checkpoint, without reading the weights.

    Args:
        path: ``x``, ``x.safetensors`` or ``x.json``.
    """
    return _parse_manifest(checkpoint_paths(path)[1])


def _check_expected(manifest: Manifest, manifest_path: Path, method: str | None, task: str | None) -> None:
    for label, expected, actual in (("method", method, manifest.method), ("task", task, manifest.task)):
        if expected is not None and expected != actual:
            raise CheckpointError(
                f"checkpoint {manifest_path} is for {label} '{actual}', not '{expected}'; "
                f"pick a checkpoint made for {label} '{expected}'"
            )


def load_checkpoint(
    path: str | os.PathLike,
    method: str | None = None,
    task: str | None = None,
    device: str = "cpu",
) -> Checkpoint:
    """Load and verify a checkpoint.

    Args:
        path: the ``.safetensors`` file, the ``.json`` manifest, or their stem.
        method, task: when given, the manifest must match them.
        device: where the tensors go.

    Returns:
        The checkpoint; floating tensors are float32.

    Raises:
        CheckpointError: missing weights or manifest, pickle-based file,
            invalid manifest, wrong method/task, sha256 mismatch, or a
            weights file that is not safetensors.
        DeviceError: ``device`` cannot be used.
    """
    weights_path, manifest_path = checkpoint_paths(path)
    try:
        data = weights_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint weights {weights_path} not found; check the path or set "
            f"{ENV_CHECKPOINTS} to the folder holding <name>{WEIGHTS_SUFFIX} and <name>{MANIFEST_SUFFIX}"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint weights {weights_path} ({exc}); check the file") from exc
    if not _looks_like_safetensors(data) and _looks_like_pickle(data):
        _refuse_pickle(weights_path)
    manifest = _parse_manifest(manifest_path)
    _check_expected(manifest, manifest_path, method, task)
    if not manifest.sha256:
        raise CheckpointError(
            f"manifest {manifest_path} has no sha256, so {weights_path.name} cannot be verified; "
            "re-export the checkpoint with save_checkpoint"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.sha256:
        raise CheckpointError(
            f"checkpoint weights {weights_path} are corrupt or modified (sha256 differs from "
            f"{manifest_path.name}); download or export the checkpoint again"
        )
    try:
        tensors = _load_safetensors_bytes(data)
    except Exception as exc:  # safetensors raises SafetensorError and others
        raise CheckpointError(
            f"checkpoint weights {weights_path} are not a readable safetensors file ({exc}); "
            "export the checkpoint again"
        ) from None
    try:
        target = torch.device(device)
        out = {
            name: (t.to(torch.float32) if t.is_floating_point() else t).to(target)
            for name, t in tensors.items()
        }
    except (RuntimeError, AssertionError) as exc:
        raise DeviceError(f"cannot use device '{device}' ({exc}); use 'cpu' or an available GPU") from exc
    return Checkpoint(path=weights_path, manifest=manifest, tensors=out)


# ------------------------------------------------------------------- search
def _user_checkpoint_dir() -> Path:
    """``<user cache>/checkpoints``; the cache folder comes from ``ENV_CACHE`` or XDG."""
    return user_cache_dir() / "checkpoints"


def bundled_checkpoint_dir() -> Path:
    """The bundled checkpoints: package data ``SuperResMoELib/checkpoints/bundled``,
    found the same way by a wheel, an editable install and the Slicer extension."""
    from importlib.resources import files

    return Path(str(files("SuperResMoELib.checkpoints") / BUNDLED_FOLDER))


def checkpoint_search_dirs() -> list[Path]:
    """Folders searched for checkpoints, in order: ``$SUPERRESMOE_CHECKPOINTS``
    (``os.pathsep`` separated), the bundled folder, the user cache folder.
    Folders need not exist; duplicates are dropped."""
    dirs: list[Path] = [
        Path(p).expanduser() for p in os.environ.get(ENV_CHECKPOINTS, "").split(os.pathsep) if p.strip()
    ]
    dirs += [bundled_checkpoint_dir(), _user_checkpoint_dir()]
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def list_checkpoints(method: str | None = None, task: str | None = None) -> list[tuple[Path, Manifest]]:
    """Checkpoints in the search folders (not their subfolders), in search order.

    A checkpoint counts when its ``*.json`` parses as a manifest and its
    ``.safetensors`` file exists; other JSON files are ignored.

    Returns:
        ``(weights path, manifest)`` pairs matching ``method`` and ``task``.
    """
    found: list[tuple[Path, Manifest]] = []
    seen: set[Path] = set()
    for folder in checkpoint_search_dirs():
        if not folder.is_dir():
            continue
        for manifest_path in sorted(folder.glob("*" + MANIFEST_SUFFIX)):
            weights_path = checkpoint_paths(manifest_path)[0]
            key = weights_path.resolve()
            if key in seen or not weights_path.is_file():
                continue
            try:
                manifest = _parse_manifest(manifest_path)
            except CheckpointError:
                continue
            if (method is None or manifest.method == method) and (task is None or manifest.task == task):
                seen.add(key)
                found.append((weights_path, manifest))
    return found


def find_checkpoint(method: str, task: str) -> Path:
    """The first checkpoint for ``method`` and ``task`` in the search folders.

    Raises:
        CheckpointError: none found (the message lists the folders searched).
    """
    matches = list_checkpoints(method, task)
    if matches:
        return matches[0][0]
    where = ", ".join(str(d) for d in checkpoint_search_dirs())
    raise CheckpointError(
        f"no checkpoint for method '{method}' task '{task}' in: {where}; set {ENV_CHECKPOINTS} to a "
        f"folder holding <name>{WEIGHTS_SUFFIX} + <name>{MANIFEST_SUFFIX}, or build one with the "
        "training command"
    )
