"""Why the bundled networks fall behind on the out-of-generator set: four checks.

    python scripts/outgen_diagnostics.py ssmoe-psf --task aniso [--checkpoints DIR]
        the SS-MoE / Hard-MoE / SR U-Net ratio on the qMRI test head (16 of its 96
        rows) with its own Gaussian point-spread function, and with the Super MUDI
        block average instead (everything else unchanged)
    python scripts/outgen_diagnostics.py ssmoe-experts --task iso [--checkpoints DIR] [--head validation]
        per out-of-generator volume (16 of 96 rows; of the test head, or of the
        validation head that model selection sees): the SR U-Net, SS-MoE with
        its gater's routing, SS-MoE with every patch forced to one expert, and
        the best forced expert per volume: is it the routing or the experts?
    python scripts/outgen_diagnostics.py remix-head [--checkpoints DIR]
        REMIx (1 network, experts) and cubic on the held-out *sample* T1 subject 4
        acquired with the out-of-generator scans (trapezoid profile, Gaussian
        noise), with and without its skull: is it the acquisition or the head?
    python scripts/outgen_diagnostics.py remix-scans [--checkpoints DIR]
        each REMIx expert of an experts checkpoint and its 1 network on the
        whole-scan validation of ``experts.select_on: "scans"`` (the validation
        head, :mod:`training.remix.scan_validation`), with the trapezoid slice
        profile and with a Gaussian one instead: does the head or the profile
        hold an expert back?
    python scripts/outgen_diagnostics.py smoothness
        the fraction of image power above 0.2 and 0.35 cycles/mm in the central
        96 mm cube of the out-of-generator T1 head and of sample T1 subject 4

Numbers print one line per case; none are written to disk.
"""

from __future__ import annotations

import argparse

import numpy as np

BUNDLED = "SuperResMoELib/checkpoints/bundled"


def ssmoe_psf(task: str, checkpoints: str) -> None:
    from training.outgen import qmri
    from training.ssmoe.evaluate import per_volume_mse

    methods = {"SR U-Net": ("srunet", f"{checkpoints}/ssmoe_{task}_srunet.safetensors"),
               "Hard MoE": ("hardmoe", f"{checkpoints}/ssmoe_{task}_hardmoe.safetensors"),
               "SS-MoE": ("ssmoe", f"{checkpoints}/ssmoe_{task}.safetensors")}
    for profile in ("gaussian", "block average"):
        if profile == "block average":  # a box of the factor's width sampled at the block centre = block mean
            qmri.QMRI_SETS["test"] = qmri.QmriSet(**{**qmri.QMRI_SETS["test"].__dict__,
                                                     "profile": lambda f: np.ones(f) / f})
        _, s, _ = per_volume_mse(task, methods, rows=list(range(0, 96, 6)), data="outgen", device="cpu")
        base = s["SR U-Net"].mean()
        print(task, profile, {k: round(float(v.mean() / base), 3) for k, v in s.items()})


def ssmoe_experts(task: str, checkpoints: str, head: str = "test") -> None:
    from SuperResMoELib.checkpoints.store import read_manifest
    from training.ssmoe.evaluate import per_volume_mse

    ckpt = f"{checkpoints}/ssmoe_{task}.safetensors"
    k = int(read_manifest(ckpt).architecture["n_experts"])
    methods = {"SR U-Net": ("srunet", f"{checkpoints}/ssmoe_{task}_srunet.safetensors"),
               "SS-MoE": ("ssmoe", ckpt),
               **{f"expert {e}": ("ssmoe", ckpt, {"expert": e}) for e in range(k)}}
    data = "outgen" if head == "test" else "outgen-validation"
    rows, s, _ = per_volume_mse(task, methods, rows=list(range(0, 96, 6)), data=data, device="cpu")
    forced = np.stack([s[f"expert {e}"] for e in range(k)])
    best = forced.min(axis=0)
    print("row", *methods, "best forced", "(MSE; the best forced expert's index)")
    for i, r in enumerate(rows):
        print(int(r), *(f"{s[m][i]:.1f}" for m in methods), f"{best[i]:.1f} ({int(forced[:, i].argmin())})")
    base = s["SR U-Net"].mean()
    print("mean / SR U-Net:", {m: round(float(s[m].mean() / base), 3) for m in methods},
          "best forced", round(float(best.mean() / base), 3))


def remix_head(checkpoints: str) -> None:
    from scipy import ndimage

    from SuperResMoELib.sample_data import t1_subject
    from SuperResMoELib.sample_data.template import _template_arrays
    from training.outgen import evaluate as ev
    from SuperResMoELib.methods.remix.method import PAPER_ROUTING

    subject = t1_subject(4)
    mask = ndimage.binary_dilation(_template_arrays()["mask"] > 0, iterations=2)
    heads = {"with skull": subject,
             "skull-stripped": subject.with_array((np.asarray(subject.array) * mask).astype(np.float32))}
    methods = [("1 network", "remix1", f"{checkpoints}/remix_t1_single.safetensors"),
               ("Experts", "remix", f"{checkpoints}/remix_t1.safetensors")]
    for name, head in heads.items():
        scale = 1000.0 / np.percentile(np.asarray(head.array)[mask], 90)  # white matter near 1000, as the set
        head = head.with_array((np.asarray(head.array) * scale).astype(np.float32))
        ev.t1_head = lambda block_mm=None, h=head: h  # type: ignore[assignment]
        for r in ev.t1_rows(methods, device="cpu", names=["2x2x2 mm", "1x1x5 mm"], options={"extra": PAPER_ROUTING}):
            print(name, r["scan"], r["model"], r["expert"], round(r["psnr"], 2))


def remix_scans(checkpoints: str) -> None:
    import torch

    import training.outgen.t1 as t1
    from SuperResMoELib.methods import EnhanceOptions, create_method
    from SuperResMoELib.methods.remix.checkpoint import TASK, unet_config
    from SuperResMoELib.methods.remix.experts import expert_key
    from training.outgen.acquisition import gaussian
    from training.remix.scan_validation import VALIDATION_SCANS, ScanValidation

    def load(name: str, kind: str):
        net, _, manifest = create_method(kind).load(TASK, EnhanceOptions(checkpoint=f"{checkpoints}/{name}"))
        return net, manifest

    experts, manifest = load("remix_t1.safetensors", "remix")
    one = load("remix_t1_single.safetensors", "remix1")[0]["net"]
    for profile in ("trapezoid", "gaussian"):
        if profile == "gaussian":
            t1.trapezoid = gaussian  # type: ignore[assignment]  # acquire() reads the module's profile
        sv = ScanValidation(unet_config(manifest), torch.device("cpu"))
        for e in (e for e in VALIDATION_SCANS if expert_key(e) in experts):
            a = sv.score(experts[expert_key(e)], e)["val_scan_psnr"]
            b = sv.score(one, e)["val_scan_psnr"]
            print(profile, "expert", e, f"{a:.2f}", "1 network", f"{b:.2f}", f"difference {a - b:+.2f} dB", flush=True)


def smoothness() -> None:
    from SuperResMoELib.sample_data import t1_subject
    from training.outgen.t1 import t1_head
    from training.remix.evaluate import brain_box

    def power(a) -> dict[str, float]:
        a = np.asarray(a, np.float64)
        c = [n // 2 for n in a.shape]
        b = a[c[0] - 48:c[0] + 48, c[1] - 48:c[1] + 48, c[2] - 48:c[2] + 48]
        f2 = np.abs(np.fft.fftn(b - b.mean())) ** 2
        f = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(96) ** 2] * 3, indexing="ij")))
        return {f"> {t} cycles/mm": round(float(f2[f > t].sum() / f2.sum()), 4) for t in (0.2, 0.35)}

    print("out-of-generator T1 head", power(brain_box(t1_head()).array))
    print("sample T1 subject 4", power(t1_subject(4).array))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("check", choices=("ssmoe-psf", "ssmoe-experts", "remix-head", "remix-scans", "smoothness"))
    p.add_argument("--task", default="aniso", choices=("aniso", "iso"))
    p.add_argument("--checkpoints", default=BUNDLED)
    p.add_argument("--head", default="test", choices=("test", "validation"),
                   help="ssmoe-experts: the out-of-generator head to score")
    a = p.parse_args()
    if a.check == "ssmoe-psf":
        ssmoe_psf(a.task, a.checkpoints)
    elif a.check == "ssmoe-experts":
        ssmoe_experts(a.task, a.checkpoints, a.head)
    elif a.check == "remix-head":
        remix_head(a.checkpoints)
    elif a.check == "remix-scans":
        remix_scans(a.checkpoints)
    else:
        smoothness()


if __name__ == "__main__":
    main()
