"""The paper's Table I ablation on our data: MoEDiff-SR with and without the
corrections ``b`` (bias field) and ``g`` (gradient-nonlinearity warp) given
to the condition encoder as extra inputs (paper 003, Table I; the paper shows
gating-loss convergence and image quality per cell).

Cells: four runs of ``python -m training moediff --joint-epochs N
[--extra-inputs bias|warp|bias warp]`` at one joint budget (the same config,
seed and VQ-VAE phase).  For each run this reads its joint-phase log
(``<run>/joint/log.csv``: the gating loss per epoch, Eq. 17 with its
uncertainty weight) and its checkpoint, and scores the checkpoint on tiles of
the **held-out subjects** cut and degraded exactly as the training tiles
(:mod:`.data`; the degradation's corrections are known there, so every cell
gets the inputs it was trained with): PSNR and SSIM per tile in normalised
units, mean +- std, with the cubic input's scores beside them.

What this data can show: whether knowing b and g helps the network undo a
bias field and a warp of the sizes drawn here (bias up to 10 %, warp up to
1 mm).  What it cannot: the HR is template-derived (smoother than a real 7T
scan) and a real scanner's b and g are estimated, not known exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from SuperResMoELib.core.errors import InputError
from SuperResMoELib.io.atomic import write_text_atomic
from SuperResMoELib.io.tables import markdown_table, write_csv

from ..figures import pyplot, save_figure
from ..remix.evaluate import HELD_OUT_SUBJECTS
from .config import MoEDiffConfig, load_config
from ..library import Library
from .data import slice_library
from .evaluate import CAVEAT
from .train import extra_channels, library_config

log = logging.getLogger("superresmoe.training")

#: Seed offset of the held-out tiles' draws (independent of the training library's).
TILE_SEED_OFFSET = 0x71
#: Short names of the correction sets.
CELL_NAMES = {(): "none", ("bias",): "b", ("warp",): "g", ("bias", "warp"): "b+g"}


def load_network(checkpoint: Path):
    """The :class:`~SuperResMoELib.methods.moediff.model.MoEDiffSR` of a checkpoint,
    correction-reading ones included (the method refuses those), in eval mode on the CPU."""
    from SuperResMoELib.checkpoints.store import load_checkpoint
    from SuperResMoELib.methods.moediff.checkpoint import build_moediff_network

    ckpt = load_checkpoint(checkpoint, method="moediff", task="t1")
    net = build_moediff_network(ckpt.manifest)
    net.load_state_dict(ckpt.tensors, strict=True)
    net.latent_scale.fill_(float(ckpt.manifest.architecture["latent_scale"]))
    return net.eval(), ckpt.manifest


def run_checkpoint(run: Path) -> Path:
    """The one checkpoint a run folder exported (``<run>/checkpoints/*.safetensors``).

    Raises:
        InputError: none, or several.
    """
    found = sorted((run / "checkpoints").glob("*.safetensors"))
    if len(found) != 1:
        raise InputError(f"{run}: expected one exported checkpoint in {run / 'checkpoints'}, found {len(found)} "
                         "(train it with python -m training moediff --workdir RUN first)")
    return found[0]


def joint_log(run: Path) -> list[dict[str, float]]:
    """The joint phase's per-epoch log of a run (``<run>/joint/log.csv``).

    Raises:
        InputError: no log.
    """
    path = run / "joint" / "log.csv"
    if not path.is_file():
        raise InputError(f"{run}: no joint-phase log {path}")
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def held_out_tiles(cfg: MoEDiffConfig, subjects: Sequence[int] = HELD_OUT_SUBJECTS[:2], crops: int = 8,
                   slices: int = 8) -> Library:
    """Tiles of held-out ``subjects`` through the training degradation (columns as
    :func:`.data.build_library`; cached like a training library)."""
    lib = dataclasses.replace(library_config(cfg), subjects=tuple(int(s) for s in subjects),
                              crops_per_subject=int(crops), slices_per_crop=int(slices),
                              seed=cfg.seed + TILE_SEED_OFFSET)
    return slice_library(lib)


def tile_scores(net, tiles: Library | dict[str, np.ndarray], steps: int, batch: int = 32) -> dict[str, np.ndarray]:
    """PSNR (peak 1 - min of each HR tile) and SSIM of ``net``'s output and of the
    input on each tile ``(N,)``, the corrections ``net`` reads given from ``tiles["extras"]``."""
    import torch

    from SuperResMoELib.evaluation.metrics import psnr, ssim_slices

    idx = extra_channels(net.arch.extra_inputs)
    out: dict[str, list[float]] = {"psnr": [], "ssim": [], "psnr_input": [], "ssim_input": []}
    gen = torch.Generator().manual_seed(0)
    for s in range(0, len(tiles["lr"]), batch):
        lr = torch.from_numpy(tiles["lr"][s:s + batch].astype(np.float32))
        extras = torch.from_numpy(tiles["extras"][s:s + batch][:, idx].astype(np.float32)) if idx else None
        with torch.no_grad():
            sr = net.enhance_slices(lr, extras, steps=steps, generator=gen).sr.numpy()
        for n in range(len(lr)):
            hr = tiles["hr"][s + n, 0].astype(np.float32)
            peak = float(hr.max() - hr.min()) or 1.0
            for key, img in (("", sr[n, 0]), ("_input", lr[n, 0].numpy())):
                out["psnr" + key].append(psnr(hr, img, data_range=peak))
                out["ssim" + key].append(ssim_slices(hr[None], img[None], data_range=peak))
    return {k: np.asarray(v) for k, v in out.items()}


def evaluate_cells(runs: Sequence[Path], config: str = "compact", steps: int | None = None, crops: int = 8,
                   slices: int = 8) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, float]]]]:
    """One row per run (its corrections, joint epochs, final and best gating loss,
    held-out tile PSNR/SSIM mean +- std and the input's) and each run's joint log."""
    from SuperResMoELib.methods.moediff.method import DEFAULT_STEPS

    steps = steps or DEFAULT_STEPS
    tiles = held_out_tiles(load_config(config), crops=crops, slices=slices)
    rows, logs = [], {}
    for run in runs:
        run = Path(run)
        net, manifest = load_network(run_checkpoint(run))
        cell = CELL_NAMES.get(tuple(net.arch.extra_inputs), "+".join(net.arch.extra_inputs))
        history = joint_log(run)
        logs[cell] = history
        sc = tile_scores(net, tiles, steps)
        gating = [h["loss_gating"] for h in history if h.get("gating_weight", 0) > 0] or [np.nan]
        last = history[-1]
        gates = [last.get(f"gate{i + 1}", np.nan) for i in range(net.n_experts)]
        rows.append({"cell": cell, "b": "bias" in net.arch.extra_inputs, "g": "warp" in net.arch.extra_inputs,
                     "joint_epochs": len(history), "gating_loss_final": round(float(gating[-1]), 4),
                     "gating_loss_min": round(float(np.min(gating)), 4),
                     "gate_ce_final": round(float(last.get("gate_ce", np.nan)), 4),
                     "gates_final": "/".join(f"{g:.2f}" for g in gates),
                     "val_psnr": round(float(history[-1].get("val_psnr", np.nan)), 3),
                     "psnr": round(float(sc["psnr"].mean()), 3), "psnr_std": round(float(sc["psnr"].std()), 3),
                     "ssim": round(float(sc["ssim"].mean()), 4), "ssim_std": round(float(sc["ssim"].std()), 4),
                     "psnr_input": round(float(sc["psnr_input"].mean()), 3),
                     "ssim_input": round(float(sc["ssim_input"].mean()), 4),
                     "tiles": int(len(sc["psnr"])), "steps": steps, "run": str(run)})
        log.info("Table I cell %s: held-out tiles PSNR %.2f +- %.2f dB (input %.2f), final gating loss %.4f",
                 cell, rows[-1]["psnr"], rows[-1]["psnr_std"], rows[-1]["psnr_input"], rows[-1]["gating_loss_final"])
    return rows, logs


def convergence_figure(logs: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Per joint epoch, one line per cell: the gating loss (Eq. 17 with the diversity
    term), its supervised cross-entropy alone, the leading expert's mean gate, and
    the validation PSNR."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for cell, history in logs.items():
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [h["loss_gating"] for h in history], marker="o", ms=3, label=cell)
        axes[1].plot(epochs, [h.get("gate_ce", np.nan) for h in history], marker="o", ms=3, label=cell)
        axes[2].plot(epochs, [max(h.get(f"gate{i}", 0.0) for i in (1, 2, 3)) for h in history], marker="o", ms=3,
                     label=cell)
        axes[3].plot(epochs, [h.get("val_psnr", np.nan) for h in history], marker="o", ms=3, label=cell)
    axes[0].set(xlabel="joint epoch", ylabel="gating loss (Eq. 17 + diversity)", title="gating-loss convergence")
    axes[1].set(xlabel="joint epoch", ylabel="gating cross-entropy", title="supervised gating term")
    axes[2].set(xlabel="joint epoch", ylabel="largest mean gate", title="routing concentration")
    axes[3].set(xlabel="joint epoch", ylabel="validation PSNR (dB)", title="validation tiles")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(title="corrections")
    fig.tight_layout()
    save_figure(fig, path)


def write_table1(out: Path, rows: list[dict[str, Any]], logs: dict[str, list[dict[str, float]]]) -> str:
    """``moediff_table1.{md,csv,json,png}`` in ``out``; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "moediff_table1.csv")
    write_text_atomic(out / "moediff_table1.json", json.dumps({"rows": rows, "logs": logs}, indent=1))
    convergence_figure(logs, out / "moediff_table1.png")
    cols = ["cell", "b", "g", "joint_epochs", "gating_loss_final", "gate_ce_final", "gates_final", "val_psnr",
            "psnr", "psnr_std", "ssim", "psnr_input", "ssim_input", "tiles"]
    text = ("# MoEDiff-SR Table I ablation: corrections b (bias) and g (warp) as inputs\n\n"
            + markdown_table(rows, cols) + "\n\n"
            + f"PSNR/SSIM: {rows[0]['tiles']} tiles of held-out subjects {list(HELD_OUT_SUBJECTS[:2])} through the "
              f"training degradation, {rows[0]['steps']} sampler steps; val_psnr: the run's own validation tiles "
              "(held-out crops of the training subjects). Gating loss: the joint phase's Eq. 17 term with its "
              "uncertainty weight, per epoch (figure `moediff_table1.png`).\n\n" + CAVEAT + "\n")
    write_text_atomic(out / "moediff_table1.md", text)
    return text
