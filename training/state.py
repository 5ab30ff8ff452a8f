"""Resumable training state without pickle: tensors in safetensors, the rest in JSON.

A phase's state is ``<dir>/state.safetensors`` (module weights and buffers,
optimizer tensors, torch RNG state) plus ``<dir>/state.json`` (epoch/step
counters, optimizer hyper-parameters, numpy RNG state, loss history).  Both are
written atomically, weights first, then the JSON that points at them by sha256,
so a kill at any moment leaves either the previous or the new state.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import numpy as np
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from SuperResMoELib.io.atomic import write_bytes_atomic, write_text_atomic
from SuperResMoELib.io.jsonutil import dumps

STATE_WEIGHTS = "state.safetensors"
STATE_JSON = "state.json"


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("opt."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, extra in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_state(
    folder: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    info: dict[str, Any],
    rng: "np.random.Generator | None" = None,
) -> None:
    """Write the training state of ``modules`` (+ ``optimizer``) and ``info`` (JSON-able)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value.detach().cpu().contiguous()
    opt_meta = None
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    blob = save_bytes(tensors)
    write_bytes_atomic(folder / STATE_WEIGHTS, blob)
    meta = {
        "info": info,
        "optimizer": opt_meta,
        "numpy_rng": rng.bit_generator.state if rng is not None else None,
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    write_text_atomic(folder / STATE_JSON, dumps(meta))


def load_state(
    folder: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
    rng: "np.random.Generator | None" = None,
) -> dict[str, Any] | None:
    """Restore a state written by :func:`save_state`; ``None`` when there is none
    (or it is inconsistent, e.g. a kill between the two writes of a first save)."""
    wpath, jpath = folder / STATE_WEIGHTS, folder / STATE_JSON
    if not (wpath.exists() and jpath.exists()):
        return None
    meta = json.loads(jpath.read_text())
    blob = wpath.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        return None
    tensors = load_bytes(blob)
    for name, module in modules.items():
        prefix = f"module.{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if optimizer is not None and meta["optimizer"] is not None:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    if rng is not None and meta["numpy_rng"] is not None:
        rng.bit_generator.state = meta["numpy_rng"]
    return meta["info"]
