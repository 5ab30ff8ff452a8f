"""SS-MoE inference (``ssmoe``, ``srunet``, ``hardmoe``) with tiny random checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_THREADS, make_matrix

from SuperResMoELib.checkpoints import store as ckpt_mod
from SuperResMoELib.checkpoints.store import load_checkpoint, save_checkpoint
from SuperResMoELib.core.errors import CancelledError, CheckpointError, InputError
from SuperResMoELib.core.geometry import scaled_grid
from SuperResMoELib.engine.sliding import run_patches
from SuperResMoELib.methods import EnhanceOptions, create_method, method_names
from SuperResMoELib.methods.ssmoe import TASK_PATCHES, build_network, ssmoe_manifest
from SuperResMoELib.nets.srunet import SRUNetConfig
from SuperResMoELib.engine.windows import EngineConfig
from SuperResMoELib.core.progress import CancelToken
from SuperResMoELib.core.volume import AcquisitionTable, Volume

REPO = Path(__file__).resolve().parents[1]
K = 4  # experts
MEAN = np.array([0.0, 0.0, 0.0, 1000.0, 500.0, 100.0], np.float32)
STD = np.array([1.0, 1.0, 1.0, 100.0, 100.0, 10.0], np.float32)


@pytest.fixture(autouse=True)
def _isolated_search(tmp_path, monkeypatch):
    """Only tmp_path/ckpts is searched (not the bundled folder or the user cache)."""
    folder = tmp_path / "ckpts"
    folder.mkdir()
    monkeypatch.setenv("SUPERRESMOE_CHECKPOINTS", str(folder))
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ckpt_mod, "bundled_checkpoint_dir", lambda: tmp_path / "no_bundled")
    torch.set_num_threads(TEST_THREADS)
    return folder


def make_net(kind="ssmoe", task="aniso", width=4, seed=0, b_router=False):
    torch.manual_seed(seed)
    cfg = SRUNetConfig(task, width=width)
    manifest = ssmoe_manifest(kind, cfg, K, 0.01, description="test")
    net = build_network(manifest)
    randomize(net)
    if kind == "ssmoe":
        net.gater.set_param_stats(torch.tensor(MEAN), torch.tensor(STD))
        if b_router:
            route_by_b(net)
    return net.eval(), manifest


def randomize(net):
    """Random biases and batch-norm statistics: a freshly initialised net has
    zero biases and identity batch norms, so it is positively homogeneous
    (``net(c x) = c net(x)``), which would hide a missing intensity factor."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in net.named_parameters():
            if name.endswith("bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
        for mod in net.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=gen))
                mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=gen))


def route_by_b(net):
    """Gater logits that only depend on the z-scored b-value: b above the mean
    -> expert K-1, below -> expert 0."""
    lin = [m for m in net.gater.mlp if isinstance(m, torch.nn.Linear)]
    n_feat = lin[0].in_features - 6
    with torch.no_grad():
        for mod in net.gater.mlp:
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.reset_parameters()  # identity batch norms
        for layer in lin:
            layer.weight.zero_()
            layer.bias.zero_()
        lin[0].weight[0, n_feat + 3] = 1.0  # +z_b
        lin[0].weight[1, n_feat + 3] = -1.0  # -z_b
        for layer in lin[1:-1]:
            layer.weight[0, 0] = 1.0
            layer.weight[1, 1] = 1.0
        lin[-1].weight[K - 1, 0] = 1.0
        lin[-1].weight[0, 1] = 1.0
        lin[-1].bias[1:K - 1] = -1.0


def save(net, manifest, folder, name="net", factor=None):
    if factor is not None:
        manifest = ssmoe_manifest(manifest.architecture["kind"], SRUNetConfig(**manifest.architecture["srunet"]),
                                  manifest.architecture["n_experts"], factor)
    return save_checkpoint(Path(folder) / name, net.state_dict(), manifest)


def volume(shape=(8, 16, 16), kind="axis", seed=0, frames=None, table=None, scale=100.0):
    rng = np.random.default_rng(seed)
    full = shape if frames is None else (frames,) + shape
    arr = (rng.random(full) * scale + 1.0).astype(np.float32)
    acq = None if table is None else AcquisitionTable(np.asarray(table, float))
    return Volume(arr, make_matrix(kind), acq, name="v")


def acq_rows(bvalues):
    return [[1.0, 0.0, 0.0, b, 500.0, 100.0] for b in bvalues]


# ------------------------------------------------------------------ manifest
def test_manifest_and_network_round_trip(_isolated_search):
    for kind, cls in (("ssmoe", "SSMoE"), ("srunet", "SRUNet"), ("hardmoe", "HardMoE")):
        net, m = make_net(kind)
        assert m.method == "ssmoe" and m.task == "aniso" and m.architecture["kind"] == kind
        assert m.architecture["n_params"] == 6 and m.architecture["srunet"]["width"] == 4
        assert m.scale_factors == [1.0, 1.0, 2.0] and m.intensity == {"kind": "scale", "factor": 0.01}
        assert type(net).__name__ == cls
        path = save(net, m, _isolated_search, kind)
        ck = load_checkpoint(path)
        assert set(ck.tensors) == set(net.state_dict())
        assert build_network(ck.manifest).load_state_dict(ck.tensors, strict=True)
    iso = ssmoe_manifest("ssmoe", SRUNetConfig("iso", width=4), 2, 1.0, metrics={"mse": 1.0}, foo=3)
    assert iso.scale_factors == [2.0, 2.0, 2.0] and iso.metrics == {"mse": 1.0} and iso.extra == {"foo": 3}
    with pytest.raises(CheckpointError, match="kind"):
        ssmoe_manifest("dense", SRUNetConfig("iso", width=4), 2, 1.0)
    with pytest.raises(CheckpointError, match="factor"):
        ssmoe_manifest("ssmoe", SRUNetConfig("iso", width=4), 2, 0.0)


def test_registry():
    for name, title in (("ssmoe", "SS-MoE"), ("srunet", "SR U-Net"), ("hardmoe", "Hard-MoE")):
        assert name in method_names()
        m = create_method(name)
        assert m.name == name and m.title == title and m.needs_checkpoint and m.tasks == ("aniso", "iso")
        assert m.description


# --------------------------------------------------------------------- grid
@pytest.mark.parametrize("task,factors,opts", [
    ("aniso", (1, 1, 2), EnhanceOptions()),
    ("aniso", (1, 1, 2), EnhanceOptions(scale=(1, 1, 2))),
    ("iso", (2, 2, 2), EnhanceOptions(scale=2)),
    ("iso", (2, 2, 2), EnhanceOptions(task="iso")),
])
def test_output_grid_oblique(_isolated_search, task, factors, opts):
    net, m = make_net("ssmoe", task)
    save(net, m, _isolated_search)
    shape = (6, 9, 10) if task == "iso" else (5, 17, 18)
    v = volume(shape, "oblique")
    method = create_method("ssmoe")
    grid = method.output_grid(v, opts)
    expected = scaled_grid(v.grid, factors)
    assert grid.same_as(expected, atol=1e-9)
    np.testing.assert_allclose(grid.corners(), v.grid.corners(), atol=1e-9)  # same physical extent
    res = method.enhance(v, opts, device="cpu")
    z = tuple(reversed(factors))
    assert res.volume.array.shape == tuple(n * f for n, f in zip(shape, z))
    assert res.volume.grid.same_as(expected, atol=1e-9) and res.volume.array.dtype == np.float32
    assert res.maps["routing"].grid.same_as(expected, atol=1e-9)
    assert res.info["task"] == task and res.info["kind"] == "ssmoe"


# -------------------------------------------------------------------- units
def test_intensity_factor_applied_and_undone(_isolated_search):
    net, m = make_net("ssmoe")
    path = save(net, m, _isolated_search, "f1", factor=0.01)
    v = volume((8, 32, 16), scale=1000.0)
    res = create_method("ssmoe").enhance(v, EnhanceOptions(checkpoint=str(path)), device="cpu")
    params = torch.tensor(MEAN)[None]

    def by_hand(x):  # user units -> network units -> user units
        y, labels = net(x * 0.01, params.expand(x.shape[0], -1))
        return y / 0.01, {"expert": labels.float()}

    ref = run_patches(np.array(v.array)[None], by_hand, (2, 1, 1), EngineConfig((8, 16, 16), 0.5, 64))
    np.testing.assert_allclose(res.volume.array, ref.image[0], rtol=1e-4, atol=1e-3 * np.abs(ref.image).max())
    np.testing.assert_array_equal(res.maps["routing"].array, ref.patch_maps["expert"])
    # same weights, factor doubled: enhance_2f(v) == enhance_f(2 v) / 2
    path2 = save(net, m, _isolated_search, "f2", factor=0.02)
    res2 = create_method("ssmoe").enhance(v, EnhanceOptions(checkpoint=str(path2)), device="cpu")
    v_twice = v.with_array(np.asarray(v.array) * 2)
    res_twice = create_method("ssmoe").enhance(v_twice, EnhanceOptions(checkpoint=str(path)), device="cpu")
    np.testing.assert_allclose(res2.volume.array, res_twice.volume.array / 2, rtol=1e-4,
                               atol=1e-4 * np.abs(res2.volume.array).max())
    assert not np.allclose(res2.volume.array, res.volume.array, rtol=1e-3)  # the factor matters
    assert res.info["intensity_factor"] == 0.01 and res2.info["intensity_factor"] == 0.02


# ------------------------------------------------------------------ routing
def test_routing_map_forced_expert_and_background(_isolated_search):
    net, m = make_net("ssmoe")
    save(net, m, _isolated_search)
    arr = np.asarray(volume((8, 16, 48)).array).copy()
    arr[..., 24:] = 0.0  # background: windows starting at i = 24 and 32 are all zero
    v = Volume(arr, make_matrix("axis"), name="bg")
    method = create_method("ssmoe")
    res = method.enhance(v, device="cpu")
    routing = res.maps["routing"].array
    # one patch by hand: the gater's choice for the first window
    with torch.no_grad():
        _, lab = net(torch.from_numpy(arr[None, None, :, :, :16]) * 0.01, torch.tensor(MEAN)[None])
    assert np.all(routing[..., :8] == float(lab[0]))
    used = {int(k) for k in res.info["experts_per_frame"][0] if k != "background"}
    assert set(np.unique(routing[routing >= 0]).astype(int)) <= used <= set(range(K))
    assert res.info["experts_per_frame"][0]["background"] == 2
    assert np.all(res.volume.array[..., 32:] == 0.0) and np.all(routing[..., 32:] == -1.0)
    assert np.all(routing[..., :16] >= 0)
    forced = method.enhance(v, EnhanceOptions(expert=2), device="cpu")
    fr = forced.maps["routing"].array
    assert set(np.unique(fr).tolist()) == {-1.0, 2.0}
    assert np.all(fr[..., :24] == 2.0) and np.all(fr[..., 32:] == -1.0)
    assert forced.info["expert_forced"] == 2 and forced.info["experts_per_frame"][0]["2"] == 3


def test_acquisition_rows_drive_routing_4d(_isolated_search):
    net, m = make_net("ssmoe", b_router=True)
    save(net, m, _isolated_search)
    rng = np.random.default_rng(1)
    frame = (rng.random((8, 16, 24)) * 100 + 1).astype(np.float32)
    arr = np.stack([frame, frame, frame])
    table = AcquisitionTable(np.asarray(acq_rows([500.0, 1500.0, 500.0])))
    v = Volume(arr, make_matrix("oblique"), table, name="mudi")
    res = create_method("ssmoe").enhance(v, device="cpu")
    assert res.volume.array.shape == (3, 16, 16, 24) and res.volume.is_4d
    np.testing.assert_array_equal(res.volume.acquisition.values, table.values)  # table kept
    routing = res.maps["routing"]
    assert routing.array.shape == (3, 16, 16, 24) and routing.grid.same_as(res.volume.grid)
    assert np.all(routing.array[0] == 0) and np.all(routing.array[1] == K - 1) and np.all(routing.array[2] == 0)
    np.testing.assert_array_equal(res.volume.array[0], res.volume.array[2])
    assert not np.allclose(res.volume.array[0], res.volume.array[1])  # another expert decoded frame 1
    assert res.info["acquisition"]["source"] == "table"
    assert res.info["experts_per_frame"] == [{"0": 2}, {str(K - 1): 2}, {"0": 2}]
    # 3D input: the training protocol's mean acquisition (z = 0: experts 0 and K-1 tie at logit 0,
    # the others are at -1), unless given in the options
    v3 = Volume(frame, make_matrix("axis"), name="one")
    res3 = create_method("ssmoe").enhance(v3, device="cpu")
    assert res3.info["acquisition"]["source"] == "default" and "mean acquisition" in res3.info["acquisition"]["note"]
    assert res3.info["acquisition"]["values"] == pytest.approx(MEAN.tolist())
    assert res3.maps["routing"].array.ndim == 3
    high = create_method("ssmoe").enhance(v3, EnhanceOptions(extra={"acquisition": acq_rows([2000.0])[0]}),
                                          device="cpu")
    assert np.all(high.maps["routing"].array == K - 1) and high.info["acquisition"]["source"] == "options"
    with pytest.raises(InputError, match="6"):
        create_method("ssmoe").enhance(v3, EnhanceOptions(extra={"acquisition": [1, 2, 3]}), device="cpu")


def test_baselines_maps(_isolated_search):
    for kind in ("srunet", "hardmoe"):
        net, m = make_net(kind)
        save(net, m, _isolated_search, kind)
    v = volume((8, 16, 24), frames=2)
    sr = create_method("srunet").enhance(v, device="cpu")
    assert sr.maps == {} and sr.volume.array.shape == (2, 16, 16, 24) and sr.info["kind"] == "srunet"
    hm = create_method("hardmoe").enhance(v, device="cpu")
    r = hm.maps["routing"].array
    assert r.shape == (2, 16, 16, 24) and set(np.unique(r).tolist()) <= set(map(float, range(K)))
    forced = create_method("hardmoe").enhance(v, EnhanceOptions(expert=1), device="cpu")
    assert np.all(forced.maps["routing"].array == 1.0)
    with pytest.raises(InputError, match="no experts"):
        create_method("srunet").enhance(v, EnhanceOptions(expert=0), device="cpu")


# --------------------------------------------------------- progress, cancel
def test_progress_and_cancel(_isolated_search):
    net, m = make_net("ssmoe")
    save(net, m, _isolated_search)
    v = volume((8, 16, 32), frames=2)
    calls = []
    create_method("ssmoe").enhance(v, EnhanceOptions(batch_size=1), device="cpu",
                                   progress=lambda s, f, msg="": calls.append((s, f)))
    fractions = [f for s, f in calls]
    assert {s for s, _ in calls} == {"enhance"} and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(0.4 < f < 0.6 for f in fractions)  # one frame of two done
    token = CancelToken()

    def cancel_midway(stage, fraction, message=""):
        if fraction > 0.3:
            token.cancel()

    with pytest.raises(CancelledError):
        create_method("ssmoe").enhance(v, EnhanceOptions(batch_size=1), device="cpu",
                                       progress=cancel_midway, cancel=token)


# ------------------------------------------------------------------- errors
def test_errors(_isolated_search, tmp_path):
    v = volume((8, 16, 16))
    with pytest.raises(CheckpointError, match="no SS-MoE checkpoint") as err:
        create_method("ssmoe").enhance(v, device="cpu")
    assert str(_isolated_search) in str(err.value) and "SUPERRESMOE_CHECKPOINTS" in str(err.value)
    net, m = make_net("ssmoe")
    path = save(net, m, _isolated_search, "only_ssmoe")
    with pytest.raises(CheckpointError, match=r"kind 'hardmoe'.*only_ssmoe.safetensors \(kind ssmoe\)"):
        create_method("hardmoe").enhance(v, device="cpu")
    with pytest.raises(CheckpointError, match="holds a 'ssmoe' network.*--method ssmoe"):
        create_method("srunet").enhance(v, EnhanceOptions(checkpoint=str(path)), device="cpu")
    with pytest.raises(CheckpointError, match="task 'iso'"):
        create_method("ssmoe").enhance(v, EnhanceOptions(task="iso"), device="cpu")
    method = create_method("ssmoe")
    for scale in (3, (1, 1, 3), (2, 2, 1)):
        with pytest.raises(InputError, match="aniso = scale 1,1,2; iso = scale 2,2,2"):
            method.enhance(v, EnhanceOptions(scale=scale), device="cpu")
    with pytest.raises(InputError, match="does not fit task 'aniso'"):
        method.output_grid(v, EnhanceOptions(scale=2, task="aniso"))
    with pytest.raises(InputError, match="unknown task"):
        method.output_grid(v, EnhanceOptions(task="x4"))
    with pytest.raises(InputError, match="8x16x16.*trained"):
        method.enhance(v, EnhanceOptions(patch_size=16), device="cpu")
    assert method.enhance(v, EnhanceOptions(patch_size=TASK_PATCHES["aniso"]), device="cpu").volume.is_4d is False
    for expert in (K, -1):
        with pytest.raises(InputError, match="out of range.*4 experts"):
            method.enhance(v, EnhanceOptions(expert=expert), device="cpu")


# ---------------------------------------------------------------------- CLI
def test_cli_enhance(_isolated_search, tmp_path):
    from SuperResMoELib import io

    net, m = make_net("ssmoe")
    path = save(net, m, tmp_path, "cli_net")
    src = tmp_path / "in.nii.gz"
    io.write_volume(volume((8, 16, 20), "oblique"), src)
    out = tmp_path / "out" / "sr.nii.gz"
    env = dict(os.environ, OMP_NUM_THREADS=str(TEST_THREADS))
    proc = subprocess.run(
        [sys.executable, "-m", "SuperResMoELib", "enhance", "-i", str(src), "-o", str(out),
         "--method", "ssmoe", "--checkpoint", str(path), "--device", "cpu", "--progress", "none"],
        check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    sr = io.read_volume(out)
    routing = io.read_volume(tmp_path / "out" / "sr_routing.nii.gz")
    lr = io.read_volume(src)
    assert sr.array.shape == (16, 16, 20) and routing.array.shape == (16, 16, 20)
    assert sr.grid.same_as(scaled_grid(lr.grid, (1, 1, 2)), atol=1e-3)
    assert set(np.unique(routing.array).tolist()) <= set(map(float, range(K)))
