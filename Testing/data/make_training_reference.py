"""Make ``training_reference.safetensors``: the weights of tiny SS-MoE and REMIx
runs on CPU (one thread), the reference of ``Testing/test_training_reference.py``.

The file holds every network's weights (float32, as trained) and
``sha256.<network>``: the SHA-256 of all its tensors (names, dtypes, shapes,
bytes; :func:`digest`).

Made with the training code of commit 4820810 (before the config dataclasses
and training devices; this script as of commit 7fa2468, which passed the
config dicts below to the trainers directly, with its ``reference`` storing
every network in full as here), on an AVX-512 CPU, by::

    SUPERRESMOE_CACHE=$(mktemp -d) PYTHONPATH=. python Testing/data/make_training_reference.py

The test re-runs the same phases with today's code (the dicts loaded through
:func:`training.config.from_dict`, on the CPU, no AMP) and asserts
bit-identical weights where the CPU's float kernels round as that machine's
(today's code gave the same bits as commit 4820810 on it), and agreement to a
small relative gap elsewhere (an earlier file, made on another CPU, differed
from both in the low bits of every network). Regenerate it only when a
change of the numbers is intended.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent / "training_reference.safetensors"

SSMOE = {
    "width": 2, "n_experts": 2, "labeler": "quantile", "batch_size": 8, "seed": 0, "intensity_factor": 0.001,
    "library": {"subjects": [0], "volumes_per_subject": 6, "patches_per_volume": 8, "validation_fraction": 0.25},
    "baseline": {"epochs": 2, "steps_per_epoch": 3, "lr": 0.001},
    "gater": {"epochs": 1, "steps_per_epoch": 3, "lr": 0.01},
    "experts": {"epochs": 1, "steps_per_epoch": 2, "lr": 0.001, "batchnorm": "train"},
    "hardmoe": {"epochs": 1, "steps_per_epoch": 2, "lr": 0.001},
}
REMIX = {
    "unet": {"width": 2, "levels": 2, "convs": 1, "norm": "none"},
    "seed": 0, "batch_size": 2, "loss": {"mae": 1.0, "ssim": 1.0, "gradient": 1.0, "correlation": 1.0},
    "library": {"subjects": [0], "crops_per_subject_and_bin": 3, "crop": 24, "patch": 16,
                "validation_fraction": 0.34, "intensity_jitter": 0.1},
    "degradation": {"bins": [1, 2], "native_probability": 0.35},
    "expert1": {"epochs": 2, "steps_per_epoch": 3, "lr": 0.001},
    "experts": {"epochs": 1, "steps_per_epoch": 2, "lr": 0.001, "init": "previous"},
    "single": {"epochs": 1, "steps_per_epoch": 2, "lr": 0.001},
}


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def digest(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(32,)`` uint8 SHA-256 of ``tensors`` (sorted names, dtype, shape, raw bytes)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8).clone()


def reference(nets: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The fixture's tensors: every network's weights in full and its digest."""
    out = {f"sha256.{name}": digest(w) for name, w in nets.items()}
    for name, w in nets.items():
        out.update({f"{name}.{k}": v for k, v in w.items()})
    return out


def main(workdir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Train the tiny runs in ``workdir`` on the CPU (one thread); the weights of each network."""
    from training.config import from_dict
    from training.remix.config import REMIxConfig
    from training.remix.train import REMIxTrainer
    from training.ssmoe.config import SSMoEConfig
    from training.ssmoe.train import SSMoETrainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        nets: dict[str, dict[str, torch.Tensor]] = {}
        ss = SSMoETrainer("aniso", from_dict(SSMoEConfig, SSMOE), workdir / "ssmoe", device="cpu", amp="none")
        base = ss.baseline()
        nets["ssmoe.srunet"] = weights(base)
        lab = ss.labels(base, 2, "quantile")
        moe, _ = ss.experts(ss.gater(base, 2, "quantile", lab["labels"]), 2, "quantile")
        nets["ssmoe.ssmoe"] = weights(moe)
        nets["ssmoe.hardmoe"] = weights(ss.hardmoe(2))
        rx = REMIxTrainer(from_dict(REMIxConfig, REMIX), workdir / "remix", device="cpu", amp="none")
        rx.expert(2)
        rx.single()
        nets.update({f"remix.{name}": weights(net) for name, net in rx.nets.items()})
    finally:
        torch.set_num_threads(threads)
    return nets


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        tensors = reference(main(Path(tmp)))
    save_file(tensors, str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(tensors)} tensors)", file=sys.stderr)
