"""REMIx training and evaluation end to end on a tiny configuration: the real
command in a subprocess, real sample data, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEST_THREADS
from SuperResMoELib.core.errors import ConfigError, ExitCode
from training.config import from_dict, to_dict
from training.remix.config import REMIxConfig

ROOT = Path(__file__).resolve().parents[1]
DEGRADATION = {
    "bins": [1, 2, 3, 4, 5, 6, 7], "bin_halfwidth": 0.5, "min_voxel_volume": 0.8,
    "orientations": {"axial": 0.25, "coronal": 0.25, "sagittal": 0.25, "oblique": 0.25}, "max_tilt_deg": 20.0,
    "in_plane_mm": [0.8, 1.3], "gap_probability": 0.5, "gap_fraction": [0.1, 0.3], "profile": "gaussian",
    "noise_fraction": [0.0, 0.02], "native_probability": 0.35,
}
TINY = {
    "description": "tiny test config", "unet": {"width": 2, "levels": 2, "convs": 1, "norm": "none"},
    "seed": 0, "batch_size": 2, "loss": {"mae": 1.0, "ssim": 1.0, "gradient": 1.0, "correlation": 1.0},
    "library": {"subjects": [0], "crops_per_subject_and_bin": 3, "crop": 24, "patch": 16,
                "validation_fraction": 0.34, "intensity_jitter": 0.1},
    "degradation": DEGRADATION,
    "expert1": {"epochs": 2, "steps_per_epoch": 3, "lr": 0.001},
    "experts": {"epochs": 1, "steps_per_epoch": 2, "lr": 0.001},
    "single": {"epochs": 1, "steps_per_epoch": 3, "lr": 0.001},
}


def tiny_with_experts(**changes) -> dict:
    """A copy of :data:`TINY` whose ``experts`` phase spec has ``changes``."""
    cfg = json.loads(json.dumps(TINY))
    cfg["experts"].update(changes)
    return cfg


def tiny_config(**changes) -> REMIxConfig:
    """:func:`tiny_with_experts` loaded as the trainers take it."""
    return from_dict(REMIxConfig, tiny_with_experts(**changes), "tiny")


def run_training(root: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", "remix", "--config", str(root / "tiny.json"), "--workdir",
         str(root / "run"), "--progress", "none"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("remix")
    (root / "tiny.json").write_text(json.dumps(TINY))
    env = {**os.environ, "SUPERRESMOE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": str(TEST_THREADS)}
    proc = run_training(root, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"root": root, "env": env, "proc": proc}


def test_training_command_writes_logs_libraries_and_checkpoints(trained) -> None:
    root = trained["root"]
    assert "REMIx: done" in trained["proc"].stdout
    for phase in ["expert1", *[f"expert{v}" for v in range(2, 8)], "single"]:
        assert (root / "run" / phase / "done.json").exists(), phase
    head = (root / "run" / "expert1" / "log.csv").read_text().splitlines()
    assert len(head) == 3 and {"loss", "mae", "ssim", "gradient", "correlation", "val_psnr"} <= set(head[0].split(","))
    libs = sorted((root / "cache" / "training" / "remix").glob("library_bin*"))
    assert all((p / "meta.json").is_file() and (p / "lr.npy").is_file() for p in libs)
    assert len(libs) == 7
    from SuperResMoELib.checkpoints.store import load_checkpoint

    ck = load_checkpoint(root / "run" / "checkpoints" / "remix_t1.safetensors", method="remix", task="t1")
    assert ck.manifest.architecture["kind"] == "experts" and ck.manifest.dtype == "float16"
    assert {k.split(".")[0] for k in ck.tensors} == {f"expert{v}" for v in range(1, 8)}
    single = load_checkpoint(root / "run" / "checkpoints" / "remix_t1_single.safetensors")
    assert single.manifest.architecture["kind"] == "single"
    assert single.manifest.training_data["degradation"]["bins"] == DEGRADATION["bins"]
    # the resolved config (defaults filled in) is in both manifests and loads back
    resolved = tiny_config()
    for manifest in (ck.manifest, single.manifest):
        assert manifest.extra["training_config"] == to_dict(resolved)
        assert from_dict(REMIxConfig, manifest.extra["training_config"]) == resolved
    assert ck.manifest.extra["training_config"]["experts"]["init"] == "expert1"
    assert ck.manifest.extra["training_config"]["degradation"]["orientations"] == DEGRADATION["orientations"]
    # each network's last validation scores go into its manifest, the same as the phase log
    last = (root / "run" / "expert4" / "log.csv").read_text().splitlines()
    row = dict(zip(last[0].split(","), last[-1].split(",")))
    val = ck.manifest.metrics["validation"]
    assert sorted(val) == [f"expert{v}" for v in range(1, 8)]
    assert val["expert4"]["val_psnr"] == pytest.approx(float(row["val_psnr"]), abs=1e-3)
    assert set(single.manifest.metrics["validation"]) == {"val_loss", "val_psnr", "val_psnr_input"}


def test_bin_libraries_hold_their_voxel_volumes(trained, monkeypatch) -> None:
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(trained["root"] / "cache"))
    from training.remix.data import bin_library
    from training.remix.train import library_config

    cfg = library_config(tiny_config())
    for b in (1, 4, 7):
        lib = bin_library(cfg, b)  # from the cache
        assert lib["lr"].shape == (3, 1, 16, 16, 16) and lib["lr"].dtype == np.float16
        lo, hi = cfg.degradation.voxel_volume_range(b)
        assert np.all((lib["voxel_volume"] >= lo) & (lib["voxel_volume"] < hi))
        assert np.all(lib["hr"].max(axis=(1, 2, 3, 4)) > 0.05)  # crops centred on brain
    assert isinstance(lib["lr"], np.memmap)  # read from disk on demand
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(trained["root"] / "cache-again"))
    again = bin_library(cfg, 4)  # deterministic: built again, the same pairs
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(trained["root"] / "cache"))
    np.testing.assert_array_equal(again["lr"], bin_library(cfg, 4)["lr"])


def test_experts_start_from_expert1(trained) -> None:
    from SuperResMoELib.nets.unet3d import ResidualUNet3D, UNet3DConfig
    from training.state import load_state

    def weights(phase):
        net = ResidualUNet3D(UNet3DConfig(**TINY["unet"]))
        load_state(trained["root"] / "run" / phase, {"net": net}, None)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    e1, e5, single = weights("expert1"), weights("expert5"), weights("single")
    torch.manual_seed(123)
    fresh = torch.cat([p.detach().flatten() for p in ResidualUNet3D(UNet3DConfig(**TINY["unet"])).parameters()])
    for w in (e5, single):
        assert 0 < (w - e1).norm() < 0.2 * (fresh - e1).norm()


@pytest.mark.parametrize("init, parent", [("expert1", "expert1"), ("previous", "expert2")])
def test_experts_init_picks_the_parent(trained, monkeypatch, tmp_path, init, parent) -> None:
    """Experts 1 and 2 trained, then expert 3 with a zero learning rate keeps its
    starting weights exactly: expert 1's (``init = "expert1"``) or expert 2's
    (``"previous"``)."""
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(trained["root"] / "cache"))
    from training.remix.train import REMIxTrainer

    def same(a, b) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))

    REMIxTrainer(tiny_config(), tmp_path / "run").expert(2)
    # experts 1 and 2 resume from their finished phases
    trainer = REMIxTrainer(tiny_config(lr=0.0, init=init), tmp_path / "run")
    e3 = trainer.expert(3)
    assert sorted(trainer.nets) == sorted({"expert1", parent, "expert3"})
    assert same(e3, trainer.nets[parent])
    if parent == "expert2":  # expert 2 moved away from expert 1, so the two cases differ
        assert not same(e3, trainer.nets["expert1"])


def test_experts_init_single_starts_from_the_one_network(trained, monkeypatch, tmp_path) -> None:
    """``experts.init = "single"``: the 1 network is trained first and an
    expert with a zero learning rate is exactly it; with ``validate_start``
    the expert's log begins with the start's validation (epoch 0)."""
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(trained["root"] / "cache"))
    from training.remix.train import REMIxTrainer

    trainer = REMIxTrainer(tiny_config(lr=0.0, init="single", select="best", validate_start=True), tmp_path / "run")
    e4 = trainer.expert(4)
    assert sorted(trainer.nets) == ["expert1", "expert4", "single"]
    assert all(torch.equal(x, y) for x, y in zip(e4.parameters(), trainer.nets["single"].parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(e4.parameters(), trainer.nets["expert1"].parameters()))
    log = (tmp_path / "run" / "expert4" / "log.csv").read_text().splitlines()
    assert log[1].startswith("0,") and len(log) == 1 + 1 + TINY["experts"]["epochs"]


def test_no_single_refuses_experts_from_the_single_network(tmp_path) -> None:
    (tmp_path / "s.json").write_text(json.dumps(tiny_with_experts(init="single")))
    proc = subprocess.run([sys.executable, "-m", "training", "remix", "--config", str(tmp_path / "s.json"),
                           "--workdir", str(tmp_path / "run"), "--no-single", "--progress", "none"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.CONFIG
    assert 'experts.init "single"' in proc.stderr and not (tmp_path / "run").exists()


def test_experts_init_must_be_known(tmp_path) -> None:
    """A bad ``experts.init`` stops the run before any library or phase work:
    the config does not load, so no trainer can be made from it."""
    with pytest.raises(ConfigError, match="experts.init must be 'expert1', 'previous' or 'single', not 'chain'"):
        tiny_config(init="chain")
    assert not (tmp_path / "run").exists()


def test_bad_config_is_one_line_error(tmp_path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps(tiny_with_experts(init="chain")))
    proc = subprocess.run([sys.executable, "-m", "training", "remix", "--config", str(tmp_path / "bad.json"),
                           "--workdir", str(tmp_path / "run"), "--progress", "none"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.CONFIG
    assert proc.stderr.strip().splitlines() == [
        f"python -m training remix: error: {tmp_path / 'bad.json'}: "
        "experts.init must be 'expert1', 'previous' or 'single', not 'chain'"]
    assert not (tmp_path / "run").exists()


def test_rerun_resumes_without_training(trained) -> None:
    before = (trained["root"] / "run" / "expert3" / "state.safetensors").read_bytes()
    proc = run_training(trained["root"], trained["env"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (trained["root"] / "run" / "expert3" / "state.safetensors").read_bytes() == before


def test_trained_checkpoints_run_and_evaluate(trained, monkeypatch) -> None:
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(trained["root"] / "cache"))
    from SuperResMoELib import sample_data
    from training.remix.data import crop
    from training.remix.degradation import DegradationConfig
    from training.remix.evaluate import EXPERTS_LABEL, LR_LABEL, SINGLE_LABEL, evaluate_cases, summary, write_report

    ck = trained["root"] / "run" / "checkpoints"
    template = sample_data.t1_subject(0)
    small = lambda s: crop(template, (70, 90, 70), 48)  # noqa: E731 - a brain block, 48^3 mm
    rows = evaluate_cases({"single": str(ck / "remix_t1_single.safetensors"),
                           "experts": str(ck / "remix_t1.safetensors")}, [2, 6], 2,
                          DegradationConfig.from_dict(DEGRADATION), subjects=(0,), device="cpu",
                          options={"patch_size": 16, "overlap": 0.25}, load_subject=small)
    assert len(rows) == 2 * 2 * 3
    assert {r["model"] for r in rows} == {LR_LABEL, SINGLE_LABEL, EXPERTS_LABEL}
    assert {r["expert"] for r in rows if r["model"] == EXPERTS_LABEL} == {2, 6}
    for r in rows:
        assert 10 < r["psnr"] < 60 and 0.5 < r["correlation"] <= 1 and 0 < r["dice"] <= 1
    table = summary(rows, "psnr")
    assert [t["model"] for t in table] == [LR_LABEL, SINGLE_LABEL, EXPERTS_LABEL]
    lr_rows = [r["psnr"] for r in rows if r["model"] == LR_LABEL and r["bin"] == 2]
    assert table[0]["2 mm³"] == pytest.approx(np.mean(lr_rows))
    md = write_report(trained["root"] / "report", rows, {"test": True})
    assert "Experts (7 models)" in md and (trained["root"] / "report" / "remix_psnr.png").stat().st_size > 1000


def test_outgen_validation_selects_on_the_t1_validation_head(tmp_path: Path, monkeypatch) -> None:
    """``library.validation = "outgen"``: every library pair trains, pairs of the
    out-of-generator T1 validation head validate, and ``select = "best"``
    keeps the epoch with the lowest validation loss."""
    import csv

    from training.remix.train import REMIxTrainer

    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    cfg = json.loads(json.dumps(TINY))
    cfg["degradation"]["bins"] = [1, 2]
    cfg["library"].update(validation="outgen", validation_crops=2)
    cfg["expert1"].update(epochs=3, select="best", lr=0.01)
    trainer = REMIxTrainer(from_dict(REMIxConfig, cfg, "tiny outgen"), tmp_path / "run")
    for b in (1, 2):
        assert len(trainer.train[b]["lr"]) == 3 and len(trainer.val[b]["lr"]) == 2  # no split: all 3 train
    assert not np.array_equal(trainer.val[1]["hr"][0], trainer.train[1]["hr"][0])
    assert list((tmp_path / "cache" / "training" / "remix").glob("validation_bin1_*"))
    net = trainer.expert(1)
    history = list(csv.DictReader((tmp_path / "run" / "expert1" / "log.csv").open()))
    best = min(history, key=lambda r: float(r["val_loss"]))
    assert (tmp_path / "run" / "expert1" / "best.safetensors").exists()
    assert trainer.validate(net, [1])["val_loss"] == pytest.approx(float(best["val_loss"]), rel=1e-4)
    again = REMIxTrainer(from_dict(REMIxConfig, cfg, "tiny outgen"), tmp_path / "run2")  # the cached pairs
    np.testing.assert_array_equal(again.val[2]["lr"], trainer.val[2]["lr"])


def test_scan_selection_keeps_the_epoch_of_the_best_validation_scan_psnr(tmp_path: Path, monkeypatch) -> None:
    """``experts.select_on = "scans"``: every candidate epoch of an expert (its
    start included) is scored on whole scans of the out-of-generator
    validation head, and the phase keeps the highest PSNR: the kept network
    scores exactly the logged maximum (the four candidates differ, so the
    lowest or the last would not)."""
    import csv

    from training.remix.scan_validation import ScanValidation
    from training.remix.train import REMIxTrainer

    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    cfg = tiny_with_experts(epochs=3, lr=0.01, init="expert1", select="best", validate_start=True,
                            select_on="scans")
    cfg["degradation"]["bins"] = [1, 2]
    trainer = REMIxTrainer(from_dict(REMIxConfig, cfg, "tiny scans"), tmp_path / "run")
    trainer.scan_validation = ScanValidation(trainer.unet_cfg, trainer.device, block_mm=40.0)
    net = trainer.expert(2)
    history = list(csv.DictReader((tmp_path / "run" / "expert2" / "log.csv").open()))
    assert [int(r["epoch"]) for r in history] == [0, 1, 2, 3] and all(r["val_scan_psnr"] for r in history)
    scores = [float(r["val_scan_psnr"]) for r in history]
    assert len(set(scores)) == 4, scores  # four different candidates
    assert trainer.scan_validation.score(net, 2)["val_scan_psnr"] == pytest.approx(max(scores), abs=1e-6)
    assert "val_scan_psnr" not in list(csv.DictReader((tmp_path / "run" / "expert1" / "log.csv").open()))[0]
    scans = trainer.scan_validation.scans(2)
    assert [tuple(np.round(s.lr.grid.spacing, 3)) for s in scans] == [(2.0, 1.0, 1.0), (1.0, 2.0, 1.0)]
    assert all(s.hr.shape == s.mask.shape and s.mask.any() for s in scans)
    with pytest.raises(ValueError, match="no validation scans"):
        trainer.scan_validation.scans(1)


def test_scan_selection_needs_the_best_epoch() -> None:
    with pytest.raises(ConfigError, match='select_on "scans".*select "best"'):
        tiny_config(select_on="scans")
    with pytest.raises(ConfigError, match="select_on"):
        tiny_config(select="best", select_on="loss")
    assert tiny_config().experts.select_on == "pairs"


def test_both_validation_sources_join_the_split_and_the_t1_validation_head(tmp_path: Path, monkeypatch) -> None:
    """``library.validation = "both"``: the split's training pairs train; its
    validation pairs and the T1 validation head's validate together."""
    from training.remix.train import REMIxTrainer

    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    cfg = json.loads(json.dumps(TINY))
    cfg["degradation"]["bins"] = [1]
    runs = {}
    for source in ("split", "outgen", "both"):
        cfg["library"].update(validation=source, validation_crops=2)
        runs[source] = REMIxTrainer(from_dict(REMIxConfig, cfg, f"tiny {source}"), tmp_path / source)
    split, head, both = runs["split"], runs["outgen"], runs["both"]
    assert len(split.val[1]["lr"]) > 0 and len(head.val[1]["lr"]) == 2
    np.testing.assert_array_equal(both.train[1]["hr"][:], split.train[1]["hr"][:])
    for k in ("lr", "hr"):
        np.testing.assert_array_equal(both.val[1][k], np.concatenate([split.val[1][k][:], head.val[1][k][:]]))
    assert both.split["validation_head"] == "outgen t1_validation"
    net = both.expert(1)
    scores = [t.validate(net, [1])["val_loss"] for t in (split, head, both)]
    assert scores[2] != pytest.approx(scores[0]) and scores[2] != pytest.approx(scores[1])  # both sources count


def router_config() -> dict:
    """:data:`TINY` with the anisotropy-aware router (beyond the paper)."""
    cfg = json.loads(json.dumps(TINY))
    cfg["router"] = "anisotropy"
    return cfg


def test_isotropic_phase_needs_the_anisotropy_router() -> None:
    cfg = json.loads(json.dumps(TINY))
    cfg["isotropic"] = {"epochs": 1, "steps_per_epoch": 2, "lr": 0.001}
    with pytest.raises(ConfigError, match='isotropic expert trains only with router "anisotropy"'):
        from_dict(REMIxConfig, cfg, "tiny")
    cfg["router"] = "anisotropy"
    assert from_dict(REMIxConfig, cfg, "tiny").isotropic_phase.steps_per_epoch == 2
    with pytest.raises(ConfigError, match="router must be"):
        from_dict(REMIxConfig, {**cfg, "router": "shape"}, "tiny")


def test_anisotropy_router_pools_thick_and_isotropic_pairs(trained, monkeypatch, tmp_path) -> None:
    """The volume experts' pools hold thick-slice acquisitions only and the
    isotropic pools isotropic ones (libraries of their own degradation); the
    1 network draws from both with the configured isotropic probability."""
    from dataclasses import replace

    from training.remix.data import bin_library
    from training.remix.train import REMIxTrainer, isotropic_pool, library_config

    monkeypatch.setenv("SUPERRESMOE_CACHE", str(trained["root"] / "cache"))
    cfg = router_config()
    cfg["degradation"]["isotropic_probability"] = 0.25
    trainer = REMIxTrainer(from_dict(REMIxConfig, cfg, "tiny router"), tmp_path / "run")
    assert sorted(k for k in trainer.train if isinstance(k, int)) == list(range(1, 8))
    assert sorted(k for k in trainer.train if isinstance(k, str)) == [isotropic_pool(b) for b in range(2, 8)]
    cache = trained["root"] / "cache" / "training" / "remix"
    assert len(list(cache.glob("library_bin1_*"))) == 1  # thick only: the plain run's library
    assert len(list(cache.glob("library_bin4_*"))) == 2  # and the isotropic one
    lib = library_config(from_dict(REMIxConfig, cfg, "tiny router"))
    iso = bin_library(replace(lib, degradation=replace(lib.degradation, isotropic_probability=1.0)), 4)
    pool = np.asarray(trainer.train[isotropic_pool(4)]["lr"][:])
    assert all(any(np.array_equal(row, other) for other in np.asarray(iso["lr"])) for row in pool)  # its pairs
    lo, hi = lib.degradation.voxel_volume_range(4)
    assert np.all((iso["voxel_volume"] >= lo) & (iso["voxel_volume"] < hi))
    assert not np.array_equal(trainer.train[4]["lr"][:], trainer.train[isotropic_pool(4)]["lr"][:])
    drawn = []
    real_draw = trainer._draw

    def spy(pools, weights=None):
        drawn.append((list(pools), weights))
        return real_draw(pools, weights)

    monkeypatch.setattr(trainer, "_draw", spy)
    trainer.single()
    pools, weights = drawn[-1]
    assert sum(weights) == pytest.approx(1.0)
    w = dict(zip(pools, weights))
    assert w[1] == pytest.approx(1 / 7) and w[4] == pytest.approx(0.75 / 7) and w["iso4"] == pytest.approx(0.25 / 7)


def test_router_run_from_a_finished_run_trains_the_experts_and_the_isotropic_expert(trained, tmp_path) -> None:
    """``--start-from``: expert 1 and the 1 network come from the finished run
    (bit for bit, not trained again); experts 2..7 and the isotropic expert
    train and are exported with the router's manifest; the checkpoint runs
    and its evaluation has the router's row."""
    from SuperResMoELib.checkpoints.store import load_checkpoint
    from SuperResMoELib.methods.remix.checkpoint import has_isotropic_expert
    from training.remix.evaluate import EXPERTS_LABEL, ROUTER_LABEL, SINGLE_LABEL, remix_models, versus

    (tmp_path / "router.json").write_text(json.dumps(router_config()))
    before = trained["root"] / "run" / "checkpoints"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "remix", "--config", str(tmp_path / "router.json"), "--workdir",
         str(tmp_path / "run"), "--start-from", str(before), "--progress", "none"],
        cwd=ROOT, env=trained["env"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "run" / "expert1").exists() and not (tmp_path / "run" / "single").exists()
    for phase in [*(f"expert{v}" for v in range(2, 8)), "expert_iso"]:
        assert (tmp_path / "run" / phase / "done.json").exists(), phase
    ck = tmp_path / "run" / "checkpoints"
    experts, old = load_checkpoint(ck / "remix_t1"), load_checkpoint(before / "remix_t1")
    assert has_isotropic_expert(experts.manifest) and "isotropic expert" in experts.manifest.description
    assert experts.manifest.extra["training_config"]["router"] == "anisotropy"
    assert {k.split(".")[0] for k in experts.tensors} == {*(f"expert{v}" for v in range(1, 8)), "expert_iso"}
    assert set(experts.manifest.metrics["validation"]) >= {"expert1", "expert_iso"}
    for k, t in old.tensors.items():
        if k.startswith("expert1."):
            assert torch.equal(experts.tensors[k], t), k
    single, old_single = load_checkpoint(ck / "remix_t1_single"), load_checkpoint(before / "remix_t1_single")
    assert all(torch.equal(single.tensors[k], t) for k, t in old_single.tensors.items())
    assert not torch.equal(experts.tensors["expert_iso.out.weight"], experts.tensors["expert7.out.weight"])
    paths = {"single": str(ck / "remix_t1_single.safetensors"), "experts": str(ck / "remix_t1.safetensors")}
    models = remix_models(paths)
    assert [m[0] for m in models] == [SINGLE_LABEL, EXPERTS_LABEL, ROUTER_LABEL]
    assert versus(models) == (ROUTER_LABEL, SINGLE_LABEL)
    plain = remix_models({k: str(before / f"{n}.safetensors") for k, n in
                          (("single", "remix_t1_single"), ("experts", "remix_t1"))})
    assert [m[0] for m in plain] == [SINGLE_LABEL, EXPERTS_LABEL] and versus(plain) == (EXPERTS_LABEL, SINGLE_LABEL)


def test_start_from_refuses_a_run_of_another_library(trained, tmp_path) -> None:
    cfg = router_config()
    cfg["library"]["crops_per_subject_and_bin"] = 4
    (tmp_path / "other.json").write_text(json.dumps(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "training", "remix", "--config", str(tmp_path / "other.json"), "--workdir",
         str(tmp_path / "run"), "--start-from", str(trained["root"] / "run" / "checkpoints"), "--progress", "none"],
        cwd=ROOT, env=trained["env"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.CONFIG
    assert "library.crops_per_subject_and_bin" in proc.stderr and not (tmp_path / "run").exists()
