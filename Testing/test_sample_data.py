"""Embedded sample data: template, T1 subjects and pairs, MUDI-like qMRI, writing.

Every test runs against a private cache folder (``SUPERRESMOE_CACHE``), never
the user's; the expensive items (one T1 subject, two MUDI subjects) are made
once per module and shared.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from SuperResMoELib import sample_data as sd
from SuperResMoELib.sample_data.fields import _warp_field
from SuperResMoELib.sample_data.mudi_physics import reference_wm_signal
from SuperResMoELib.sample_data.template import _template_arrays
from SuperResMoELib.core.errors import InputError
from SuperResMoELib.core.geometry import scaled_grid

TEMPLATE_SHAPE_KJI = (189, 233, 197)


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """A private sample-data cache for the whole module."""
    path = tmp_path_factory.mktemp("superresmoe_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUPERRESMOE_CACHE", str(path))
        yield path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _observed(fn, *args, **kwargs):
    """``(result, messages)``: ``fn``'s result and what it logged to ``superresmoe.sample_data``
    (a module-scoped fixture cannot use ``caplog``)."""
    log = logging.getLogger("superresmoe.sample_data")
    handler, level = _Records(), log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        out = fn(*args, **kwargs)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    return out, handler.messages


def _cache_files(cache, pattern: str) -> dict[str, tuple[int, int, int]]:
    """``{name: (inode, mtime_ns, size)}`` of the cache files matching ``pattern``
    (an atomic rewrite gives a new inode, any rewrite a new mtime)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in cache.rglob(pattern)}


def _first_and_second(cache, fn, index: int, pattern: str) -> dict:
    """Two calls of ``fn(index)`` with what each logged, and the cache files after each."""
    sd.mni_template()  # the nilearn load is logged by neither call
    first, log_first = _observed(fn, index)
    files_first = _cache_files(cache, pattern)
    second, log_second = _observed(fn, index)
    return {"first": first, "second": second, "log_first": log_first, "log_second": log_second,
            "files_first": files_first, "files_second": _cache_files(cache, pattern)}


def _generated(messages: list[str]) -> list[str]:
    return [m for m in messages if m.startswith("generated ")]


@pytest.fixture(scope="module")
def t1_calls(cache):
    """T1 subject 1: first call (generates) and second call (cache)."""
    return _first_and_second(cache, sd.t1_subject, 1, "t1_subject1_seed0_*.npz")


@pytest.fixture(scope="module")
def mudi_calls(cache):
    """MUDI subject 0: first call (generates) and second call (cache)."""
    return _first_and_second(cache, sd.mudi_subject, 0, "mudi_subject0_seed0_*.npz")


@pytest.fixture(scope="module")
def mudi(mudi_calls) -> sd.MudiSubject:
    return mudi_calls["first"]


@pytest.fixture(scope="module")
def mudi1(cache) -> sd.MudiSubject:
    return sd.mudi_subject(1)


# ------------------------------------------------------------------ cache dir
def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "explicit"))
    assert sd.cache_dir() == tmp_path / "explicit"
    assert sd.cache_dir().is_dir()
    monkeypatch.delenv("SUPERRESMOE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sd.cache_dir() == tmp_path / "xdg" / "superresmoe"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sd.cache_dir() == tmp_path / "home" / ".cache" / "superresmoe"


# ------------------------------------------------------------------ template
def test_template_loads_offline_in_kji_with_the_nilearn_affine():
    from nilearn import datasets

    img = datasets.load_mni152_template(resolution=1)
    vol = sd.mni_template()
    assert vol.array.shape == TEMPLATE_SHAPE_KJI
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.ijk_to_ras, img.affine)
    np.testing.assert_allclose(vol.spacing, [1.0, 1.0, 1.0])
    data = img.get_fdata()
    for i, j, k in [(98, 134, 72), (60, 100, 50), (150, 180, 120)]:
        assert vol.array[k, j, i] == pytest.approx(data[i, j, k], abs=1e-6)
    # voxel (98, 134, 72) is the RAS origin of MNI space for this affine
    np.testing.assert_allclose(vol.grid.index_to_ras([98, 134, 72]), [0.0, 0.0, 0.0])
    # RAS axes: the left hemisphere (R < 0) sits at small i
    assert vol.grid.index_to_ras([0, 0, 0])[0] < 0


def test_tissue_maps_are_fractions_on_the_template_grid():
    maps = sd.tissue_maps()
    assert set(maps) == {"gm", "wm", "csf"}
    tpl = sd.mni_template()
    total = sum(m.array.astype(np.float64) for m in maps.values())
    for m in maps.values():
        assert m.grid.same_as(tpl.grid)
        assert m.array.min() >= 0.0 and m.array.max() <= 1.0
    assert total.max() <= 1.0 + 1e-6
    # contrast sanity: the T1 template is brighter in WM than in GM than in CSF
    t1 = tpl.array
    med = {n: np.median(t1[maps[n].array > 0.9]) for n in maps}
    assert med["wm"] > med["gm"] > med["csf"]


# ------------------------------------------------------------------ protocol
def test_acquisition_table_has_super_mudi_marginals():
    table = sd.mudi_acquisition_table()
    assert len(table) == 1344
    b, ti, te = table.column("b"), table.column("TI"), table.column("TE")
    assert Counter(b.tolist()) == {0.0: 84, 500.0: 315, 1000.0: 315, 2000.0: 315, 3000.0: 315}
    assert Counter(te.tolist()) == {80.0: 448, 105.0: 448, 130.0: 448}
    tis = Counter(ti.tolist())
    assert len(tis) == 28 and set(tis.values()) == {48}
    assert ti.min() == 20.0 and ti.max() == 7322.7
    g = table.values[:, :3]
    np.testing.assert_allclose(np.linalg.norm(g[b > 0], axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(g[b == 0], 0.0)
    assert len(np.unique(np.round(g[b > 0], 9), axis=0)) == sd.MUDI_N_DIRECTIONS
    # each (TI, TE) block: one b=0 row then 15 diffusion-weighted rows
    blocks = table.values.reshape(84, 16, 6)
    assert np.all(blocks[:, 0, 3] == 0) and np.all(blocks[:, 1:, 3] > 0)
    assert np.all(blocks[:, :, 4] == blocks[:, :1, 4]) and np.all(blocks[:, :, 5] == blocks[:, :1, 5])


def test_acquisition_table_is_deterministic_per_seed():
    a, b, c = sd.mudi_acquisition_table(0), sd.mudi_acquisition_table(0), sd.mudi_acquisition_table(1)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values[:, :3], c.values[:, :3])
    np.testing.assert_array_equal(a.values[:, 3:], c.values[:, 3:])  # same b, TI, TE


# ---------------------------------------------------------------- MUDI maps
def test_mudi_grid_and_maps(mudi):
    grid = mudi.grid
    np.testing.assert_allclose(grid.spacing, [2.5, 2.5, 2.5])
    assert all(n % 2 == 0 for n in grid.shape)
    # the HR box contains the template brain mask's bounding box
    bounds = grid.bounds()
    mask_pts = np.argwhere(_template_arrays()["mask"] > 0)[:, ::-1]  # (i, j, k)
    ras = sd.mni_template().grid.index_to_ras(np.stack([mask_pts.min(0), mask_pts.max(0)]))
    assert np.all(bounds[:, 0] <= ras.min(0)) and np.all(bounds[:, 1] >= ras.max(0))
    assert set(mudi.maps) >= {"PD", "T1", "T2s", "ADC", "FA", "V1"}
    m = mudi.mask
    for name in ("PD", "T1", "T2s", "ADC", "FA"):
        a = mudi.maps[name]
        assert a.shape == grid.shape and a.dtype == np.float32
        assert np.all(a[~m] == 0)
        assert np.all(a[m] > 0) or name == "FA"
    lit = sd.TISSUE_PARAMETERS
    for name in ("T1", "T2s", "ADC"):
        lo = min(p[name] for p in lit.values()) * 0.9
        hi = max(p[name] for p in lit.values()) * 1.1
        assert lo <= mudi.maps[name][m].min() and mudi.maps[name][m].max() <= hi
    v = mudi.maps["V1"][:, m]
    np.testing.assert_allclose(np.linalg.norm(v, axis=0), 1.0, atol=1e-5)


def test_signal_equation_by_hand(mudi):
    m = mudi.mask
    table = mudi.table
    rng = np.random.default_rng(3)
    voxels = np.argwhere(m)[rng.choice(int(m.sum()), 5, replace=False)]
    voxels = np.vstack([voxels, np.argwhere(mudi.maps["FA"] == mudi.maps["FA"].max())[:1]])
    rows = [0, 17, 33, 500, 1343]
    sig = mudi.signal(rows)
    assert sig.shape == (len(rows),) + mudi.grid.shape and sig.dtype == np.float32
    for k, j, i in voxels:
        pd, t1, t2s, md, fa = (float(mudi.maps[n][k, j, i]) for n in ("PD", "T1", "T2s", "ADC", "FA"))
        v = mudi.maps["V1"][:, k, j, i].astype(np.float64)
        a = fa / np.sqrt(3 - 2 * fa**2)
        lam_par, lam_perp = md * (1 + 2 * a), md * (1 - a)
        for n, r in enumerate(rows):
            gx, gy, gz, b, ti, te = table.values[r]
            g = np.array([gx, gy, gz])
            d = lam_perp + (lam_par - lam_perp) * float(g @ v) ** 2 if b > 0 else md
            expected = (
                sd.MUDI_SIGNAL_SCALE * pd
                * abs(1 - 2 * np.exp(-ti / t1) + np.exp(-sd.MUDI_TR_MS / t1))
                * np.exp(-te / t2s) * np.exp(-b * d)
            )
            assert sig[n, k, j, i] == pytest.approx(expected, rel=2e-5)
    assert np.all(sig[:, ~m] == 0)


def test_diffusion_is_anisotropic_in_white_matter(mudi):
    k, j, i = np.argwhere(mudi.maps["FA"] == mudi.maps["FA"].max())[0]
    v = mudi.maps["V1"][:, k, j, i]
    perp = np.cross(v, [1.0, 0.0, 0.0] if abs(v[0]) < 0.9 else [0.0, 1.0, 0.0])
    d_par, d_perp = mudi.diffusivity(v)[k, j, i], mudi.diffusivity(perp)[k, j, i]
    assert d_par > 1.5 * d_perp
    assert mudi.diffusivity([0, 0, 0])[k, j, i] == pytest.approx(mudi.maps["ADC"][k, j, i])


def test_tissue_contrast_follows_the_equation(mudi):
    """b = 0, longest TI, shortest TE: the order of pure-tissue signals is the
    one the literature values imply (CSF > GM > WM for the defaults)."""
    table = mudi.table
    b, ti, te = table.column("b"), table.column("TI"), table.column("TE")
    row = int(np.flatnonzero((b == 0) & (ti == ti.max()) & (te == te.min()))[0])
    lit = sd.TISSUE_PARAMETERS
    pure = {
        t: float(sd.signal_equation(p["PD"], p["T1"], p["T2s"], p["ADC"], 0.0, ti.max(), te.min()))
        for t, p in lit.items()
    }
    order = sorted(pure, key=pure.get, reverse=True)
    assert order == ["csf", "gm", "wm"]
    assert pure["wm"] == pytest.approx(reference_wm_signal())
    # voxels dominated by one tissue, recognised by their maps
    t1, adc = mudi.maps["T1"], mudi.maps["ADC"]
    select = {
        "csf": adc > 2.5e-3,
        "gm": (t1 > 1300) & (t1 < 1500) & (adc < 0.85e-3),
        "wm": (t1 > 0) & (t1 < 950),
    }
    s = mudi.signal([row])[0]
    med = {t: float(np.median(s[sel])) for t, sel in select.items()}
    assert all(select[t].sum() > 20 for t in select)
    assert med[order[0]] > med[order[1]] > med[order[2]]
    # the scale is Super MUDI-like: WM b=0 a few hundred to ~1000 scanner units
    assert 200 < med["wm"] < 1500


def test_signal_rows_are_computed_independently(mudi):
    part = mudi.signal([3, 100, 1343])
    block = mudi.signal(slice(96, 112))  # one (TI, TE) block
    np.testing.assert_array_equal(part[1], block[4])
    np.testing.assert_array_equal(part, mudi.signal([-1341, 100, -1])[[0, 1, 2]])
    np.testing.assert_array_equal(part[2], mudi.signal(slice(1343, 1330, -1))[0])
    with pytest.raises(InputError):
        mudi.signal([1344])


def test_mudi_cache_hit_reads_the_cache_and_is_identical(mudi_calls):
    first, second = mudi_calls["first"], mudi_calls["second"]
    assert first.meta["cache"] == "miss" and second.meta["cache"] == "hit"
    # generated once, by the first call; the second reads the file the first wrote
    assert len(_generated(mudi_calls["log_first"])) == 1
    assert "generated MUDI subject 0" in _generated(mudi_calls["log_first"])[0]
    assert _generated(mudi_calls["log_second"]) == []
    files = mudi_calls["files_first"]
    assert len(files) == 1 and mudi_calls["files_second"] == files  # not rewritten
    assert first.meta["cache_file"] == second.meta["cache_file"]
    assert first.meta["cache_file"].endswith("/" + next(iter(files)))
    for name in first.maps:
        np.testing.assert_array_equal(first.maps[name], second.maps[name])
    assert first.grid.same_as(second.grid)


def test_mudi_generation_is_deterministic(mudi, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path))  # force a fresh generation
    with caplog.at_level(logging.INFO, logger="superresmoe.sample_data"):
        again = sd.mudi_subject(0)
    assert again.meta["cache"] == "miss"
    assert "generated MUDI subject 0" in caplog.text
    for name in mudi.maps:
        assert mudi.maps[name].tobytes() == again.maps[name].tobytes()
    np.testing.assert_array_equal(mudi.hr([7]).array, again.hr([7]).array)


def test_different_subjects_and_seeds_differ(mudi, mudi1):
    assert mudi1.grid.same_as(mudi.grid)
    assert not np.array_equal(mudi.maps["PD"], mudi1.maps["PD"])
    corr = np.corrcoef(mudi.maps["PD"].ravel(), mudi1.maps["PD"].ravel())[0, 1]
    assert 0.8 < corr < 1.0
    shape = _template_arrays()["t1"].shape
    u = _warp_field(0, 1, "t1_warp", shape)
    np.testing.assert_array_equal(u, _warp_field(0, 1, "t1_warp", shape))
    for other in [(1, 1, "t1_warp"), (0, 2, "t1_warp"), (0, 1, "mudi_warp")]:
        assert not np.allclose(u, _warp_field(*other[:2], other[2], shape))
    # displacements of a few mm, diffeomorphic (positive Jacobian)
    mag = np.sqrt((u**2).sum(axis=0))
    assert 1.0 < mag.max() < 2 * sd.WARP_MAX_MM
    grads = np.stack([np.stack(np.gradient(c / sd.FIELD_CONTROL_SPACING_MM)) for c in u])
    jac = np.linalg.det(np.moveaxis(grads + np.eye(3)[:, :, None, None, None], (0, 1), (-2, -1)))
    assert jac.min() > 0.5
    assert not np.array_equal(mudi.hr([0]).array, mudi1.hr([0]).array)


# ---------------------------------------------------------------- MUDI noise
def test_hr_noise_does_not_depend_on_the_other_rows(mudi):
    alone = mudi.hr([5])
    with_others = mudi.hr([900, 5, 1])
    np.testing.assert_array_equal(alone.array[0], with_others.array[1])
    assert alone.acquisition is not None and len(with_others.acquisition) == 3
    np.testing.assert_array_equal(with_others.acquisition.values, mudi.table.values[[900, 5, 1]])
    np.testing.assert_array_equal(alone.ijk_to_ras, mudi.grid.ijk_to_ras)
    m = mudi.mask
    clean = mudi.signal([5])[0]
    noisy = alone.array[0]
    assert np.all(noisy[~m] == 0)
    assert np.all(noisy[m] >= 0)
    # high-SNR voxels: Rician ~ Gaussian with the subject's sigma
    bright = m & (clean > 20 * mudi.noise_sigma)
    resid = (noisy - clean)[bright]
    assert resid.size > 1000
    assert np.std(resid) == pytest.approx(mudi.noise_sigma, rel=0.1)
    assert abs(np.mean(resid)) < 0.1 * mudi.noise_sigma
    assert mudi.noise_sigma == pytest.approx(sd.MUDI_NOISE_FRACTION * reference_wm_signal())


@pytest.mark.parametrize("task, factors", [("aniso", (1, 1, 2)), ("iso", (2, 2, 2))])
def test_lr_tasks_are_block_means(mudi, task, factors):
    rows = [0, 40]
    lr, hr = mudi.lr(rows, task)
    np.testing.assert_array_equal(hr.array, mudi.hr(rows).array)
    fi, fj, fk = factors
    np.testing.assert_allclose(lr.spacing, [2.5 * fi, 2.5 * fj, 2.5 * fk])
    n, k, j, i = hr.array.shape
    assert lr.array.shape == (n, k // fk, j // fj, i // fi)
    expected = hr.array.reshape(n, k // fk, fk, j // fj, fj, i // fi, fi).astype(np.float64).mean(axis=(2, 4, 6))
    np.testing.assert_allclose(lr.array, expected, rtol=1e-6, atol=1e-4)
    assert scaled_grid(lr.grid, factors).same_as(hr.grid)
    np.testing.assert_allclose(lr.grid.bounds(), hr.grid.bounds(), atol=1e-9)
    np.testing.assert_array_equal(lr.acquisition.values, hr.acquisition.values)
    with pytest.raises(InputError):
        mudi.lr(rows, "x4")


# ---------------------------------------------------------------- T1 subjects
def test_t1_subject_is_a_warped_template(t1_calls):
    tpl = sd.mni_template()
    s1 = t1_calls["first"]
    assert s1.grid.same_as(tpl.grid) and s1.array.dtype == np.float32
    assert not np.array_equal(s1.array, tpl.array)
    corr = np.corrcoef(s1.array.ravel(), tpl.array.ravel())[0, 1]
    assert 0.8 < corr < 0.9999
    assert s1.array.min() >= 0 and 0.7 < s1.array.max() < 1.5
    np.testing.assert_array_equal(sd.t1_subject(0).array, tpl.array)


def test_t1_cache_hit_reads_the_cache_and_is_identical(t1_calls):
    assert t1_calls["first"].meta["sample_data"]["cache"] == "miss"
    assert t1_calls["second"].meta["sample_data"]["cache"] == "hit"
    # generated once, by the first call; the second reads the file the first wrote
    assert len(_generated(t1_calls["log_first"])) == 1
    assert "generated T1 subject 1" in _generated(t1_calls["log_first"])[0]
    assert _generated(t1_calls["log_second"]) == []
    files = t1_calls["files_first"]
    assert len(files) == 1 and t1_calls["files_second"] == files  # not rewritten
    assert t1_calls["first"].array.tobytes() == t1_calls["second"].array.tobytes()


def test_t1_pair_geometry(t1_calls):
    lr, hr = sd.t1_pair(1, lr_spacing=(1.0, 1.0, 4.0))
    np.testing.assert_allclose(lr.spacing, [1.0, 1.0, 4.0])
    assert scaled_grid(lr.grid, (1, 1, 4)).same_as(hr.grid)
    assert hr.array.shape == (188, 233, 197) and lr.array.shape == (47, 233, 197)
    np.testing.assert_array_equal(hr.array, t1_calls["first"].array[:188])
    np.testing.assert_allclose(lr.grid.bounds(), hr.grid.bounds(), atol=1e-9)
    # no noise + boxcar: LR is the exact block mean of the (cropped) HR
    lr0, hr0 = sd.t1_pair(1, (2.0, 1.0, 3.0), method="boxcar", noise_sigma_fraction=0.0)
    assert scaled_grid(lr0.grid, (2, 1, 3)).same_as(hr0.grid)
    k, j, i = hr0.array.shape
    blocks = hr0.array.reshape(k // 3, 3, j, i // 2, 2).astype(np.float64).mean(axis=(1, 4))
    np.testing.assert_allclose(lr0.array, blocks, atol=1e-5)
    # with noise the LR differs from the noise-free one, deterministically
    lr_b, _ = sd.t1_pair(1, lr_spacing=(1.0, 1.0, 4.0))
    np.testing.assert_array_equal(lr.array, lr_b.array)
    with pytest.raises(InputError):
        sd.t1_pair(1, lr_spacing=(1.0, 1.0, 2.5))
    with pytest.raises(InputError):
        sd.t1_subject(-1)


# ------------------------------------------------------------------- writing
def test_write_sample_data(tmp_path, t1_calls, mudi1):
    io = pytest.importorskip("SuperResMoELib.io")
    seen = []
    out = sd.write_sample_data(
        tmp_path, kind="all", subject=1, mudi_rows=4, progress=lambda s, f, m="": seen.append(f)
    )
    names = sorted(p.split("/")[-1] for p in out["files"])
    assert names == sorted(
        ["t1_hr.nii.gz", "t1_lr.nii.gz", "mudi_hr.nii.gz", "mudi_lr_aniso.nii.gz",
         "mudi_lr_iso.nii.gz", "parameters_new.txt"]
    )
    assert out["kind"] == "all" and out["seconds"] > 0
    assert seen and seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)
    t1_hr = io.read_volume(tmp_path / "t1_hr.nii.gz")
    t1_lr = io.read_volume(tmp_path / "t1_lr.nii.gz")
    np.testing.assert_allclose(t1_lr.spacing, [1, 1, 4], atol=1e-5)
    assert scaled_grid(t1_lr.grid, (1, 1, 4)).same_as(t1_hr.grid, atol=1e-3)
    hr = io.read_volume(tmp_path / "mudi_hr.nii.gz")
    assert hr.array.shape == (4,) + mudi1.grid.shape
    np.testing.assert_allclose(hr.array, mudi1.hr(range(4)).array, rtol=1e-6)
    aniso = io.read_volume(tmp_path / "mudi_lr_aniso.nii.gz")
    iso = io.read_volume(tmp_path / "mudi_lr_iso.nii.gz")
    np.testing.assert_allclose(aniso.spacing, [2.5, 2.5, 5.0], atol=1e-5)
    np.testing.assert_allclose(iso.spacing, [5.0, 5.0, 5.0], atol=1e-5)
    table = io.read_acquisition_table(tmp_path / "parameters_new.txt")
    np.testing.assert_allclose(table.values, mudi1.table.values[:4], rtol=1e-9)
    with pytest.raises(InputError):
        sd.write_sample_data(tmp_path, kind="bogus")


# ------------------------------------------------------------ wide variation
def test_wide_variation_subject_differs_in_pose_values_and_noise(mudi, cache):
    """A ``wide`` subject: its own cache kind, its drawn pose turns the brain,
    its tissue values and noise come from the drawn ranges; the standard
    subject of the same index is untouched."""
    from SuperResMoELib.sample_data.mudi_maps import subject_draw

    var = sd.MUDI_VARIATIONS["wide"]
    wide = sd.mudi_subject(0, 0, "wide")
    assert wide.meta["variation"] == "wide" and var.cache_kind() in wide.meta["cache_file"]
    assert var.cache_kind().startswith("mudi-wide-") and sd.MUDI_VARIATIONS["standard"].cache_kind() == "mudi"
    draw = subject_draw(0, 0, var)
    assert var.noise_fraction[0] <= draw.noise_fraction <= var.noise_fraction[1]
    assert wide.noise_sigma == pytest.approx(draw.noise_fraction * reference_wm_signal())
    for tissue in draw.factors.values():
        for f in tissue.values():
            assert np.exp(-2 * var.param_log_sd) - 1e-9 <= f <= np.exp(2 * var.param_log_sd) + 1e-9
    # the brain's principal axes turn by about the drawn rotation (not 0, not more than the range allows)

    def axes(subject):
        pts = np.argwhere(subject.mask) * sd.MUDI_SPACING_MM
        return np.linalg.eigh(np.cov((pts - pts.mean(0)).T))[1]

    cosines = np.abs(np.sum(axes(mudi) * axes(wide), axis=0))
    turned = np.degrees(np.arccos(np.clip(cosines, 0, 1))).max()
    assert 1.0 < turned < 3 * var.rotation_deg
    assert wide.grid.shape != mudi.grid.shape  # the wider margin
    m = wide.mask
    border = sum(int(face.sum()) for a in range(3) for face in (np.take(m, 0, a), np.take(m, -1, a)))
    assert border < 1e-3 * m.sum()  # the turned brain stays inside the grid
    assert np.median(wide.maps["T1"][m]) != pytest.approx(np.median(mudi.maps["T1"][mudi.mask]), rel=1e-3)
    with pytest.raises(InputError, match="unknown MUDI-like variation 'wider'"):
        sd.mudi_subject(0, 0, "wider")
