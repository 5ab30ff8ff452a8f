"""REMIx inference: expert choice by voxel volume, target grid, intensity
handling, the single-network baseline, checkpoint checks (real files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_matrix
from SuperResMoELib.checkpoints import store as ckpt_mod
from SuperResMoELib.checkpoints.store import save_checkpoint
from SuperResMoELib.core.errors import CheckpointError, InputError
from SuperResMoELib.methods import EnhanceOptions, create_method, method_names
from SuperResMoELib.methods.remix import EXPERTS, choose_expert, expert_for_voxel_volume, remix_manifest
from SuperResMoELib.methods.remix.experts import ISOTROPIC_SINGLE_FROM_MM3, single_network_reason
from SuperResMoELib.nets.unet3d import ResidualUNet3D, UNet3DConfig
from SuperResMoELib.core.volume import Grid, Volume

CFG = UNet3DConfig(width=2, levels=2)


@pytest.fixture
def ckpt_dir(tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    monkeypatch.setenv("SUPERRESMOE_CHECKPOINTS", str(folder))
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ckpt_mod, "bundled_checkpoint_dir", lambda: tmp_path / "no_bundled")
    return folder


def offset_net(offset: float) -> ResidualUNet3D:
    """A U-Net whose correction is the constant ``offset`` (zero weights, output bias)."""
    net = ResidualUNet3D(CFG)
    with torch.no_grad():
        net.out.bias.fill_(offset)
    return net


#: What a REMIx training run records: thick-slice acquisitions only, or isotropic ones too.
THICK_ONLY = {"degradation": {"bins": list(EXPERTS), "native_probability": 0.35}}
WITH_ISOTROPIC = {"degradation": {"bins": list(EXPERTS), "isotropic_probability": 0.3}}


def save_experts(folder: Path, offsets=None, name="remix_t1", training_data=None, isotropic: float | None = None
                 ) -> Path:
    """Experts whose corrections are constants (expert v: 0.01 v); with
    ``isotropic`` also the isotropic expert (anisotropy router) of that offset."""
    offsets = offsets or {v: 0.01 * v for v in EXPERTS}
    tensors = {f"expert{v}.{k}": t for v in EXPERTS for k, t in offset_net(offsets[v]).state_dict().items()}
    if isotropic is not None:
        tensors.update({f"expert_iso.{k}": t for k, t in offset_net(isotropic).state_dict().items()})
    extra = {} if training_data is None else {"training_data": training_data}
    return save_checkpoint(folder / name, tensors,
                           remix_manifest("experts", CFG, isotropic_expert=isotropic is not None, **extra))


def save_single(folder: Path, offset=0.5, name="remix_t1_single") -> Path:
    tensors = {f"net.{k}": t for k, t in offset_net(offset).state_dict().items()}
    return save_checkpoint(folder / name, tensors, remix_manifest("single", CFG))


def lr_volume(spacing=(1.0, 1.0, 5.0), shape=(6, 20, 18), kind="axis", value=None) -> Volume:
    rng = np.random.default_rng(0)
    m = make_matrix(kind)
    m[:3, :3] = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0) * np.asarray(spacing)
    arr = (50.0 + 100.0 * rng.random(shape)).astype(np.float32) if value is None else np.full(shape, value, np.float32)
    return Volume(arr, m, name="lr")


# ------------------------------------------------------------------ experts
@pytest.mark.parametrize("v,expert", [(0.3, 1), (1.0, 1), (1.49, 1), (1.5, 2), (2.2, 2), (4.5, 5), (6.6, 7),
                                      (7.0, 7), (27.0, 7)])
def test_expert_bins(v, expert) -> None:
    assert expert_for_voxel_volume(v) == expert


def test_choose_expert_explains_itself_and_accepts_overrides() -> None:
    e, why = choose_expert((1.0, 1.0, 5.0))
    assert e == 5 and not why["forced"] and "5.00 mm^3 -> expert 5" in why["reason"]
    e, why = choose_expert((0.9, 0.9, 5.0), forced=2)
    assert e == 2 and why["forced"] and why["automatic"] == 4 and "chosen by the user" in why["reason"]
    for bad in (0, 8, "x", 2.5):
        with pytest.raises(InputError, match="expert must be one of"):
            choose_expert((1.0, 1.0, 5.0), forced=bad)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="voxel volume"):
            expert_for_voxel_volume(bad)


def test_registry_lists_remix() -> None:
    assert {"remix", "remix1"} <= set(method_names())


# ---------------------------------------------------------------- inference
@pytest.mark.parametrize("kind", ["axis", "oblique", "flipped"])
def test_untrained_experts_equal_cubic_on_the_1mm_grid(ckpt_dir, kind) -> None:
    save_experts(ckpt_dir, {v: 0.0 for v in EXPERTS})
    lr = lr_volume(kind=kind)
    before = np.array(lr.array)
    res = create_method("remix").enhance(lr, EnhanceOptions(overlap=0.25, patch_size=8), "cpu")
    cubic = create_method("cubic").enhance(lr, EnhanceOptions(target_spacing=1.0))
    assert res.volume.grid.same_as(cubic.volume.grid)
    np.testing.assert_allclose(res.volume.grid.spacing, 1.0, atol=1e-9)
    np.testing.assert_allclose(res.volume.grid.corners(), lr.grid.corners(), atol=1e-6)  # same extent
    np.testing.assert_allclose(res.volume.array, cubic.volume.array, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(lr.array, before)  # input untouched
    assert res.info["expert"] == 5 and res.volume.array.shape == (30, 20, 18)


def test_the_voxel_volume_routes_to_its_expert_and_the_user_can_override(ckpt_dir) -> None:
    save_experts(ckpt_dir)  # expert v adds 0.01 v (normalised units)
    lr = lr_volume(spacing=(1.0, 1.0, 3.0), value=80.0)
    method = create_method("remix")
    cubic = create_method("cubic").enhance(lr, EnhanceOptions(target_spacing=1.0)).volume.array
    res = method.enhance(lr, EnhanceOptions(patch_size=8), "cpu")
    scale = res.info["intensity_scales"][0]
    assert scale == pytest.approx(80.0, rel=1e-4)  # robust max of a constant image
    assert res.info["expert"] == 3 and res.info["voxel_volume_mm3"] == pytest.approx(3.0)
    np.testing.assert_allclose(res.volume.array - cubic, 0.03 * scale, rtol=1e-3)
    forced = method.enhance(lr, EnhanceOptions(patch_size=8, expert=6), "cpu")
    assert forced.info["expert"] == 6 and forced.info["forced"] and forced.info["automatic"] == 3
    np.testing.assert_allclose(forced.volume.array - cubic, 0.06 * scale, rtol=1e-3)
    with pytest.raises(InputError, match="expert must be one of"):
        method.enhance(lr, EnhanceOptions(expert=9), "cpu")


def test_non_negative_inputs_give_non_negative_outputs(ckpt_dir) -> None:
    save_experts(ckpt_dir, offsets={v: -0.2 for v in EXPERTS})  # every expert subtracts 0.2 (normalised)
    lr = lr_volume(spacing=(1.0, 1.0, 3.0))  # 50..150
    arr = np.array(lr.array)
    arr[:, :, :6] = 0.0  # background
    res = create_method("remix").enhance(lr.with_array(arr), EnhanceOptions(patch_size=8, overlap=0.0), "cpu")
    assert res.info["clamped_at_zero"] == [True]
    out = np.asarray(res.volume.array)
    assert out.min() == 0.0 and np.all(out[:, :, :4] == 0.0)  # the shifted background is clamped
    assert out[:, :, 9:].min() > 0  # bright voxels keep their (shifted) values
    signed = lr.with_array(arr - 10.0)  # an image with negative values is left as the network gives it
    res = create_method("remix").enhance(signed, EnhanceOptions(patch_size=8, overlap=0.0), "cpu")
    assert res.info["clamped_at_zero"] == [False] and res.volume.array.min() < -10.0


def test_single_network_baseline(ckpt_dir) -> None:
    save_experts(ckpt_dir)
    save_single(ckpt_dir, offset=0.5)
    lr = lr_volume(spacing=(1.0, 1.0, 4.0), value=40.0)
    cubic = create_method("cubic").enhance(lr, EnhanceOptions(target_spacing=1.0)).volume.array
    res = create_method("remix1").enhance(lr, EnhanceOptions(patch_size=8), "cpu")
    assert res.info["kind"] == "single" and res.info["expert"] is None
    np.testing.assert_allclose(res.volume.array - cubic, 0.5 * 40.0, rtol=1e-3)
    with pytest.raises(InputError, match="single network"):
        create_method("remix1").enhance(lr, EnhanceOptions(expert=2), "cpu")


def test_target_spacing_and_target_grid(ckpt_dir) -> None:
    save_experts(ckpt_dir, {v: 0.0 for v in EXPERTS})
    lr = lr_volume(spacing=(1.0, 1.0, 4.0), shape=(5, 12, 12))
    method = create_method("remix")
    res = method.enhance(lr, EnhanceOptions(target_spacing=2.0, patch_size=8), "cpu")
    np.testing.assert_allclose(res.volume.grid.spacing, 2.0)
    grid = Grid((16, 10, 9), make_matrix("oblique"))
    res = method.enhance(lr, EnhanceOptions(patch_size=8, extra={"target_grid": grid}), "cpu")
    assert res.volume.grid.same_as(grid)
    with pytest.raises(InputError, match="target_grid"):
        method.enhance(lr, EnhanceOptions(extra={"target_grid": "mni"}), "cpu")


def test_empty_image_comes_back_as_its_resampling(ckpt_dir) -> None:
    save_experts(ckpt_dir)
    res = create_method("remix").enhance(lr_volume(value=0.0), EnhanceOptions(patch_size=8), "cpu")
    assert np.all(res.volume.array == 0) and "no positive voxels" in res.info["events"][0]


def test_background_patches_are_skipped(ckpt_dir) -> None:
    save_experts(ckpt_dir)
    lr = lr_volume(spacing=(1.0, 1.0, 1.0), shape=(16, 16, 32), value=0.0)
    arr = np.array(lr.array)
    arr[:, :, :8] = 100.0
    res = create_method("remix").enhance(lr.with_array(arr), EnhanceOptions(patch_size=8, overlap=0.0), "cpu")
    assert res.info["patches_skipped"] >= 8
    assert np.abs(res.volume.array[:, :, 24:]).max() < 1e-6  # far background: cubic ringing only


# -------------------------------------------------------------- checkpoints
def test_checkpoint_errors_name_the_problem(ckpt_dir, tmp_path) -> None:
    lr = lr_volume()
    with pytest.raises(CheckpointError, match="no REMIx checkpoint"):
        create_method("remix").enhance(lr, EnhanceOptions(), "cpu")
    single = save_single(tmp_path)
    with pytest.raises(CheckpointError, match="use --method remix1"):
        create_method("remix").enhance(lr, EnhanceOptions(checkpoint=str(single)), "cpu")
    # a file of another method
    from SuperResMoELib.methods.ssmoe import ssmoe_manifest
    from SuperResMoELib.nets.srunet import SRUNet, SRUNetConfig

    other = save_checkpoint(tmp_path / "srunet", SRUNet(SRUNetConfig("aniso", width=4)).state_dict(),
                            ssmoe_manifest("srunet", SRUNetConfig("aniso", width=4), 1, 1.0))
    with pytest.raises(CheckpointError, match="not 'remix'"):
        create_method("remix").enhance(lr, EnhanceOptions(checkpoint=str(other)), "cpu")
    # tensors that do not fit the manifest
    bad = {f"expert{v}.{k}": t for v in EXPERTS
           for k, t in ResidualUNet3D(UNet3DConfig(width=3, levels=2)).state_dict().items()}
    path = save_checkpoint(tmp_path / "bad", bad, remix_manifest("experts", CFG))
    with pytest.raises(CheckpointError, match="does not fit"):
        create_method("remix").enhance(lr, EnhanceOptions(checkpoint=str(path)), "cpu")
    with pytest.raises(CheckpointError, match="kind"):
        remix_manifest("moe", CFG)


@pytest.mark.parametrize(("spacing", "training_data", "single"), [
    ((2.0, 2.0, 2.0), THICK_ONLY, True),  # 8 mm^3 isotropic, experts never saw isotropic blur
    ((1.6, 1.55, 1.65), THICK_ONLY, True),  # near-isotropic, 4.09 mm^3
    ((1.42, 1.42, 1.42), THICK_ONLY, False),  # isotropic, 2.86 mm^3: below the measured threshold
    ((1.6, 1.6, 2.1), THICK_ONLY, False),  # 5.4 mm^3 but anisotropic (ratio 1.31)
    ((1.0, 1.0, 5.0), THICK_ONLY, False),  # thick slices: the experts' own kind of input
    ((2.0, 2.0, 2.0), WITH_ISOTROPIC, False),  # experts trained on isotropic acquisitions too
    ((2.0, 2.0, 2.0), "trained elsewhere", False),  # no recorded degradation: the paper's rule
])
def test_single_network_rule(spacing, training_data, single) -> None:
    reason = single_network_reason(spacing, training_data)
    assert (reason is not None) == single
    if single:
        assert "isotropic" in reason and f"{ISOTROPIC_SINGLE_FROM_MM3:g} mm^3" in reason and "--expert" in reason


def test_isotropic_input_runs_the_single_network_unless_an_expert_is_forced(ckpt_dir) -> None:
    save_experts(ckpt_dir, training_data=THICK_ONLY)  # expert v adds 0.01 v
    save_single(ckpt_dir, offset=0.5)
    lr = lr_volume(spacing=(2.0, 2.0, 2.0), shape=(8, 10, 9), value=60.0)
    cubic = create_method("cubic").enhance(lr, EnhanceOptions(target_spacing=1.0)).volume.array
    method = create_method("remix")
    res = method.enhance(lr, EnhanceOptions(patch_size=8), "cpu")
    assert res.info["routed_to"] == "remix1" and res.info["method"] == "remix" and res.info["expert"] is None
    assert "isotropic input voxel 2.00x2.00x2.00 mm" in res.info["reason"]
    assert res.info["experts_checkpoint"].endswith("remix_t1.safetensors")
    assert res.info["checkpoint"].endswith("remix_t1_single.safetensors") and res.volume.name == "lr_remix"
    np.testing.assert_allclose(res.volume.array - cubic, 0.5 * 60.0, rtol=1e-3)  # the single network's offset
    forced = method.enhance(lr, EnhanceOptions(patch_size=8, expert=7), "cpu")
    assert "routed_to" not in forced.info and forced.info["expert"] == 7
    np.testing.assert_allclose(forced.volume.array - cubic, 0.07 * 60.0, rtol=1e-3)
    paper = method.enhance(lr, EnhanceOptions(patch_size=8, extra={"routing": "voxel-volume"}), "cpu")
    assert "routed_to" not in paper.info and paper.info["expert"] == 7 and not paper.info["forced"]
    with pytest.raises(InputError, match="routing must be one of auto, voxel-volume"):
        method.enhance(lr, EnhanceOptions(extra={"routing": "paper"}), "cpu")
    thick = method.enhance(lr_volume(spacing=(1.0, 1.0, 3.0), value=60.0), EnhanceOptions(patch_size=8), "cpu")
    assert "routed_to" not in thick.info and thick.info["expert"] == 3


def test_a_user_checkpoint_pairs_only_with_the_single_network_beside_it(ckpt_dir, tmp_path) -> None:
    save_single(ckpt_dir, offset=0.5)  # in the search folder: never paired with a user's own experts
    mine = tmp_path / "mine"
    mine.mkdir()
    experts = save_experts(mine, name="run7", training_data=THICK_ONLY)
    lr = lr_volume(spacing=(2.0, 2.0, 2.0), shape=(8, 10, 9), value=60.0)
    method = create_method("remix")
    alone = method.enhance(lr, EnhanceOptions(patch_size=8, checkpoint=str(experts)), "cpu")
    assert "routed_to" not in alone.info and alone.info["expert"] == 7
    assert any("the single network would be used, but none was found" in w for w in alone.info["warnings"])
    save_single(mine, offset=0.25, name="run7_single")
    paired = method.enhance(lr, EnhanceOptions(patch_size=8, checkpoint=str(experts)), "cpu")
    assert paired.info["routed_to"] == "remix1" and paired.info["checkpoint"].endswith("run7_single.safetensors")
    cubic = create_method("cubic").enhance(lr, EnhanceOptions(target_spacing=1.0)).volume.array
    np.testing.assert_allclose(paired.volume.array - cubic, 0.25 * 60.0, rtol=1e-3)


@pytest.mark.parametrize(("spacing", "expert"), [
    ((2.0, 2.0, 2.0), "iso"),  # 8 mm^3 isotropic: the isotropic expert, not expert 7
    ((1.2, 1.2, 1.2), "iso"),  # 1.73 mm^3, from 1.5 on
    ((1.1, 1.1, 1.1), 1),  # 1.33 mm^3: expert 1's bin, near the target spacing
    ((1.6, 1.6, 2.1), 5),  # anisotropic (ratio 1.31): the voxel volume decides
    ((1.0, 1.0, 5.0), 5),
])
def test_anisotropy_router_sends_isotropic_inputs_to_the_isotropic_expert(spacing, expert) -> None:
    from SuperResMoELib.methods.remix.experts import ISOTROPIC_EXPERT

    e, why = choose_expert(spacing, isotropic_expert=True)
    assert e == expert and why["automatic"] == expert and not why["forced"]
    assert ("isotropic expert" in why["reason"]) == (expert == ISOTROPIC_EXPERT)
    assert choose_expert(spacing)[0] == expert_for_voxel_volume(float(np.prod(spacing)))  # the paper's rule
    assert choose_expert(spacing, forced=3, isotropic_expert=True)[0] == 3
    with pytest.raises(InputError, match="must be one of"):
        choose_expert(spacing, forced="iso", isotropic_expert=True)  # chosen by the router only


def test_an_anisotropy_router_checkpoint_runs_its_isotropic_expert(ckpt_dir) -> None:
    """The eighth network runs on isotropic inputs (not the single network,
    although the experts were trained without isotropic draws); the paper's
    routing and a forced expert still reach the volume experts."""
    save_experts(ckpt_dir, training_data=THICK_ONLY, isotropic=0.3)
    save_single(ckpt_dir, offset=0.5)
    lr = lr_volume(spacing=(2.0, 2.0, 2.0), shape=(8, 10, 9), value=60.0)
    cubic = create_method("cubic").enhance(lr, EnhanceOptions(target_spacing=1.0)).volume.array
    method = create_method("remix")
    res = method.enhance(lr, EnhanceOptions(patch_size=8), "cpu")
    assert "routed_to" not in res.info and res.info["expert"] == "iso" and "isotropic expert" in res.info["reason"]
    np.testing.assert_allclose(res.volume.array - cubic, 0.3 * 60.0, rtol=1e-3)
    paper = method.enhance(lr, EnhanceOptions(patch_size=8, extra={"routing": "voxel-volume"}), "cpu")
    assert paper.info["expert"] == 7
    np.testing.assert_allclose(paper.volume.array - cubic, 0.07 * 60.0, rtol=1e-3)
    assert method.enhance(lr, EnhanceOptions(patch_size=8, expert=2), "cpu").info["expert"] == 2
    thick = method.enhance(lr_volume(spacing=(1.0, 1.0, 3.0), value=60.0), EnhanceOptions(patch_size=8), "cpu")
    assert thick.info["expert"] == 3


def test_isotropic_expert_tensors_must_match_the_manifest(ckpt_dir, tmp_path) -> None:
    """A manifest that promises the isotropic expert refuses a file without it
    (and the other way round): the weights load strictly."""
    tensors = {f"expert{v}.{k}": t for v in EXPERTS for k, t in offset_net(0.0).state_dict().items()}
    save_checkpoint(ckpt_dir / "remix_t1", tensors, remix_manifest("experts", CFG, isotropic_expert=True))
    with pytest.raises(CheckpointError):
        create_method("remix").enhance(lr_volume(), EnhanceOptions(patch_size=8), "cpu")
    with pytest.raises(CheckpointError, match="only an experts checkpoint"):
        remix_manifest("single", CFG, isotropic_expert=True)
