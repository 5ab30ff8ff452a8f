"""The MNI152 template, its tissue fraction maps and brain mask, read offline from the nilearn wheel.

Images: the MNI152 2009 T1 template (skull-stripped, nilearn's ``[0, 1]``
scale), its GM and WM probability maps and its brain mask, 197 x 233 x 189
voxels of 1 mm (IJK), RAS axis-aligned; held as KJI ``(189, 233, 197)``
float32 arrays.
"""

from __future__ import annotations

import functools

import numpy as np

from SuperResMoELib.core.errors import SuperResMoEError
from SuperResMoELib.core.volume import Volume


def _nilearn_version() -> str:
    """The installed nilearn version (its template files could change with it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nilearn")
    except PackageNotFoundError:  # pragma: no cover - nilearn is a dependency
        return "unknown"


@functools.lru_cache(maxsize=1)
def _template_arrays() -> dict[str, np.ndarray]:
    """The nilearn MNI152 images as read-only KJI float32 arrays (+ ``affine``)."""
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise SuperResMoEError(
            "the embedded sample data needs nilearn (pip install nilearn)"
        ) from exc
    loaders = {
        "t1": datasets.load_mni152_template,
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
        "mask": datasets.load_mni152_brain_mask,
    }
    out: dict[str, np.ndarray] = {}
    affine = None
    for name, loader in loaders.items():
        img = loader(resolution=1)
        data = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)
        out[name] = np.ascontiguousarray(data.transpose(2, 1, 0))  # (i,j,k) -> (k,j,i)
        if affine is None:
            affine = np.asarray(img.affine, dtype=np.float64)
        elif not np.allclose(affine, img.affine):  # pragma: no cover - nilearn invariant
            raise SuperResMoEError(f"nilearn MNI152 {name} image is not on the template grid")
    # Tissue fractions: GM + WM <= 1, CSF = brain mask - GM - WM, clipped.
    gm = np.clip(out["gm"], 0.0, 1.0)
    wm = np.clip(out["wm"], 0.0, 1.0)
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    out["gm"], out["wm"] = gm, wm
    out["csf"] = np.clip((out["mask"] > 0).astype(np.float32) - gm - wm, 0.0, 1.0)
    out["affine"] = affine  # type: ignore[assignment]
    for a in out.values():
        a.flags.writeable = False
    return out


def mni_template() -> Volume:
    """The MNI152 2009 T1 template (skull-stripped, nilearn's ``[0, 1]`` scale),
    float32, 1 mm, shape ``(189, 233, 197)`` (KJI), the nilearn affine as IJK->RAS."""
    t = _template_arrays()
    return Volume(t["t1"], t["affine"], name="mni152_t1", meta={"source": "nilearn MNI152 2009"})


def tissue_maps() -> dict[str, Volume]:
    """``{"gm", "wm", "csf"}`` tissue fraction maps on the template grid (float32).

    GM and WM are nilearn's MNI152 probability maps (rescaled where they sum
    above 1); CSF = brain mask - GM - WM clipped to ``[0, 1]``, so the three
    sum to at most 1 (to 1 inside the brain mask).
    """
    t = _template_arrays()
    return {name: Volume(t[name], t["affine"], name=f"mni152_{name}") for name in ("gm", "wm", "csf")}
