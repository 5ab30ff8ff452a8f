"""SS-MoE training end to end on a tiny configuration (real data, real phases)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import from_dict, to_dict
from training.ssmoe.config import SSMoEConfig

TINY = {
    "width": 4, "n_experts": 2, "labeler": "quantile", "batch_size": 8, "seed": 0, "intensity_factor": 0.001,
    "library": {"subjects": [0], "volumes_per_subject": 6, "patches_per_volume": 8, "validation_fraction": 0.25},
    "baseline": {"epochs": 2, "steps_per_epoch": 3, "lr": 0.001},
    "gater": {"epochs": 1, "steps_per_epoch": 3, "lr": 0.001},
    "experts": {"epochs": 1, "steps_per_epoch": 2, "lr": 0.0001},
    "hardmoe": {"epochs": 1, "steps_per_epoch": 2, "lr": 0.001},
}
TINY_CFG = from_dict(SSMoEConfig, TINY, "TINY")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssmoe")
    mp = pytest.MonkeyPatch()
    mp.setenv("SUPERRESMOE_CACHE", str(root / "cache"))
    from training.ssmoe.train import SSMoETrainer

    trainer = SSMoETrainer("aniso", TINY_CFG, root / "run")
    base = trainer.baseline()
    lab = trainer.labels(base, 2, "quantile")
    moe = trainer.gater(base, 2, "quantile", lab["labels"])
    moe, routes = trainer.experts(moe, 2, "quantile")
    yield {"root": root, "trainer": trainer, "base": base, "labels": lab, "moe": moe, "routes": routes}
    mp.undo()


def test_library_pairs_are_block_averages(trained) -> None:
    lib = trained["trainer"].data.train
    assert lib.lr.shape[1:] == (1, 8, 16, 16) and lib.hr.shape[1:] == (1, 16, 16, 16)
    hr = lib.hr[:, 0]
    np.testing.assert_allclose(hr.reshape(len(lib), 8, 2, 16, 16).mean(axis=2), lib.lr[:, 0], rtol=1e-5, atol=1e-7)
    assert ((lib.hr != 0).reshape(len(lib), -1).mean(axis=1) >= 0.5).all()
    assert len(trained["trainer"].data.val) == 12 and len(lib) == 36


def test_phases_leave_logs_and_labels(trained) -> None:
    run = trained["root"] / "run"
    log = (run / "baseline" / "log.csv").read_text().splitlines()
    assert log[0].split(",")[:2] == ["epoch", "loss"] and len(log) == 3 and "val_mse" in log[0]
    lab = trained["labels"]
    assert set(np.unique(lab["labels"])) == {0, 1}
    # quantile labels: class 1 holds the larger errors
    assert lab["scores"][lab["labels"] == 1].min() >= lab["scores"][lab["labels"] == 0].max()
    assert (run / "k2_quantile" / "gater" / "done.json").exists()
    routed = np.bincount(trained["routes"], minlength=2)
    for c in range(2):  # an expert that received pairs was trained
        assert (run / "k2_quantile" / f"expert{c}" / "done.json").exists() == (routed[c] > 0)


def test_frozen_encoder_unchanged_by_experts(trained) -> None:
    base, moe = trained["base"], trained["moe"]
    for (name, a), b in zip(base.encoder.state_dict().items(), moe.encoder.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_rerun_reuses_finished_phases(trained) -> None:
    from training.ssmoe.train import SSMoETrainer

    trainer = SSMoETrainer("aniso", TINY_CFG, trained["root"] / "run")
    again = trainer.baseline()
    for a, b in zip(trained["base"].state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_export_and_enhance_with_the_trained_checkpoint(trained, tmp_path: Path) -> None:
    from SuperResMoELib.checkpoints.store import load_checkpoint
    from training.ssmoe.train import export

    path = export(trained["moe"], "ssmoe", "aniso", TINY_CFG, 2, tmp_path / "ssmoe_aniso", {"training_data": "tiny"})
    ck = load_checkpoint(path, method="ssmoe", task="aniso")
    assert ck.manifest.architecture["kind"] == "ssmoe" and ck.manifest.dtype == "float16"
    assert ck.manifest.intensity["factor"] == pytest.approx(0.001)
    assert json.loads(path.with_suffix(".json").read_text())["scale_factors"] == [1.0, 1.0, 2.0]
    # the resolved config (defaults filled in) travels with the checkpoint and loads back
    resolved = ck.manifest.extra["training_config"]
    assert resolved == to_dict(TINY_CFG) and resolved["residual"] == "none"
    assert resolved["experts"]["batchnorm"] == "frozen" and resolved["library"]["subjects"] == [0]
    assert from_dict(SSMoEConfig, resolved) == TINY_CFG
    on_disk = json.loads(path.with_suffix(".json").read_text())
    assert on_disk["extra"]["training_config"]["width"] == TINY["width"]


def test_hardmoe_from_the_baseline_starts_at_the_baseline(trained, tmp_path: Path) -> None:
    """``hardmoe.init: "baseline"``: the phase starts from the SR U-Net's weights
    (with lr 0 they stay: encoder, skips and every head equal the baseline's;
    only batch-norm statistics move in the one training step); from scratch
    they do not."""
    from training.ssmoe.train import SSMoETrainer

    spec = {"epochs": 1, "steps_per_epoch": 1, "lr": 0.0}
    trainer = SSMoETrainer("aniso", from_dict(SSMoEConfig, {**TINY, "hardmoe": {**spec, "init": "baseline"}}, "t"),
                           tmp_path / "run")
    base = trained["base"]
    with pytest.raises(ValueError, match="needs the trained SR U-Net"):
        trainer.hardmoe(2)
    hm = trainer.hardmoe(2, base)
    scratch = SSMoETrainer("aniso", from_dict(SSMoEConfig, {**TINY, "hardmoe": spec}, "t"), tmp_path / "s").hardmoe(2)
    pairs = [(hm.encoder, base.encoder), (hm.skips, base.decoder.skips)] + [(h, base.decoder.up) for h in hm.heads]
    for ours, theirs in pairs:
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(next(scratch.encoder.parameters()), next(base.encoder.parameters()))
    with pytest.raises(Exception, match="init"):
        from_dict(SSMoEConfig, {**TINY, "hardmoe": {**spec, "init": "srunet"}}, "t")


def test_blurred_lr_is_a_widened_block_average() -> None:
    """The slice-profile variation: sigma 0 is the block average; a blur keeps
    the mean and smooths along the coarsened axis only."""
    from SuperResMoELib.simulation.block_mean import block_mean
    from training.ssmoe.data import LibraryConfig, blurred_lr

    rng = np.random.default_rng(0)
    hr = rng.uniform(0, 1, (16, 12, 10)).astype(np.float32)
    np.testing.assert_allclose(blurred_lr(hr, "aniso", 0.0), block_mean(hr, (1, 1, 2)), rtol=1e-6)
    wide = blurred_lr(hr, "aniso", 0.4)
    assert wide.shape == (8, 12, 10) and abs(wide.mean() - hr.mean()) < 1e-3
    plain = block_mean(hr, (1, 1, 2))
    assert np.abs(np.diff(wide, axis=0)).mean() < np.abs(np.diff(plain, axis=0)).mean()  # smoother along k
    # a library built before the variation fields existed keeps its cache key
    old = LibraryConfig("aniso", (0,), 6, 8)
    assert old.key() == LibraryConfig("aniso", (0,), 6, 8, variation="standard", lr_blur=(0.0, 0.0)).key()
    assert old.key() != LibraryConfig("aniso", (0,), 6, 8, lr_blur=(0.1, 0.4), lr_blur_probability=0.5).key()


def test_wide_training_selects_on_the_out_of_generator_validation_head(tmp_path: Path, monkeypatch) -> None:
    """A standard subject mixed with a ``wide`` one, slice-profile blur and
    ``validation = "outgen"``: the validation pairs come from the validation head (not the
    generator, not the test head) and ``select = "best"`` keeps the best epoch."""
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    from training.ssmoe.train import SSMoETrainer

    wide = {**TINY, "library": {**TINY["library"], "subjects": [0], "wide_subjects": [5], "lr_blur": [0.1, 0.45],
                                "lr_blur_probability": 0.5, "validation": "outgen", "validation_rows": 3},
            "baseline": {"epochs": 3, "steps_per_epoch": 2, "lr": 0.01, "select": "best"}}
    cfg = from_dict(SSMoEConfig, wide, "wide tiny")
    trainer = SSMoETrainer("aniso", cfg, tmp_path / "run")
    assert len(trainer.data.train) == 96 and len(trainer.data.val) == 24
    assert set(np.unique(trainer.data.train.subject)) == {0, 105}  # standard subject 0, wide subject 5
    assert set(np.unique(trainer.data.val.row)) <= set(range(96))  # rows of the validation head's table
    base = trainer.baseline()
    history = [r for r in __import__("csv").DictReader((tmp_path / "run" / "baseline" / "log.csv").open())]
    best = min(history, key=lambda r: float(r["val_mse"]))
    assert (tmp_path / "run" / "baseline" / "best.safetensors").exists()
    from training.ssmoe.train import patch_mse

    kept = float(patch_mse(lambda x, a: base(x), trainer.data.val).mean())
    assert kept == pytest.approx(float(best["val_mse"]), rel=1e-4)


def test_both_validation_sources_join_the_split_and_the_head(tmp_path: Path, monkeypatch) -> None:
    """``validation = "both"``: the library's validation fraction and the
    validation head's pairs, one set; the training pairs are the split's."""
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    from training.ssmoe.train import SSMoETrainer

    lib = {**TINY["library"], "subjects": [0], "validation_fraction": 0.25, "validation_rows": 3}
    split = SSMoETrainer("aniso", from_dict(SSMoEConfig, {**TINY, "library": lib}, "t"), tmp_path / "a").data
    both = SSMoETrainer("aniso", from_dict(SSMoEConfig, {**TINY, "library": {**lib, "validation": "both"}}, "t"),
                        tmp_path / "b").data
    head = SSMoETrainer("aniso", from_dict(SSMoEConfig, {**TINY, "library": {**lib, "validation": "outgen"}}, "t"),
                        tmp_path / "c").data
    assert len(split.val) > 0 and len(head.val) > 0
    assert len(both.train) == len(split.train) and len(both.val) == len(split.val) + len(head.val)
    np.testing.assert_array_equal(both.train.lr, split.train.lr)
    np.testing.assert_array_equal(both.val.hr, np.concatenate([split.val.hr, head.val.hr]))


def test_joint_phase_moves_the_encoder_and_experts_but_not_the_gater(trained, tmp_path: Path) -> None:
    """``joint`` (beyond the paper): encoder and experts train together through
    the gater's routing; the gater's weights and every batch-norm statistic
    stay; with lr 0 nothing moves."""
    import copy

    from training.ssmoe.train import SSMoETrainer

    def run(lr: float, folder: str):
        cfg = from_dict(SSMoEConfig, {**TINY, "joint": {"epochs": 1, "steps_per_epoch": 2, "lr": lr}}, "t")
        trainer = SSMoETrainer("aniso", cfg, tmp_path / folder)
        start = copy.deepcopy(trained["moe"])
        return start, trainer.joint(copy.deepcopy(trained["moe"]), 2, "quantile")

    start, moved = run(1e-3, "run")
    assert (tmp_path / "run" / "k2_quantile" / "joint" / "done.json").exists()
    changed = lambda a, b: not torch.equal(a, b)  # noqa: E731
    assert any(changed(a, b) for a, b in zip(start.encoder.parameters(), moved.encoder.parameters()))
    assert any(changed(a, b) for a, b in zip(start.experts.parameters(), moved.experts.parameters()))
    for (name, a), b in zip(start.gater.state_dict().items(), moved.gater.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    for (name, a), b in zip(start.named_buffers(), moved.buffers()):
        torch.testing.assert_close(a, b, msg=name)
    start, still = run(0.0, "lr0")
    for (name, a), b in zip(start.state_dict().items(), still.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ValueError, match="no joint phase"):
        SSMoETrainer("aniso", TINY_CFG, tmp_path / "none").joint(start, 2, "quantile")


def test_start_from_a_finished_run_trains_only_the_joint_phase(tmp_path: Path, monkeypatch, capsys) -> None:
    """``--start-from``: the finished run's SR U-Net, SS-MoE and Hard-MoE are
    read, not trained; only the joint phase runs; the SR U-Net and Hard-MoE
    are exported unchanged. A folder of another config is refused, naming
    the keys, before any work."""
    from SuperResMoELib.checkpoints.store import load_checkpoint
    from SuperResMoELib.core.errors import ExitCode
    from training.__main__ import main

    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    joint = {**TINY, "description": "with joint", "joint": {"epochs": 1, "steps_per_epoch": 2, "lr": 1e-3}}
    (tmp_path / "joint.json").write_text(json.dumps(joint))
    common = ["--task", "aniso", "--k", "2", "--labeler", "quantile", "--device", "cpu", "--progress", "none"]
    assert main(["ssmoe", "--config", "tiny.json", "--workdir", "first", *common]) == 0
    assert main(["ssmoe", "--config", "joint.json", "--workdir", "second", "--start-from", "first/checkpoints",
                 *common]) == 0
    assert sorted(p.name for p in (tmp_path / "second").iterdir()) == ["checkpoints", "k2_quantile"]
    assert [p.name for p in (tmp_path / "second" / "k2_quantile").iterdir()] == ["joint"]
    ck = {run: {n: load_checkpoint(tmp_path / run / "checkpoints" / f"ssmoe_aniso{n}") for n in ("", "_srunet",
                                                                                                  "_hardmoe")}
          for run in ("first", "second")}
    for n in ("_srunet", "_hardmoe"):
        for key, a in ck["first"][n].tensors.items():
            torch.testing.assert_close(a, ck["second"][n].tensors[key], msg=n + key)
    moe1, moe2 = ck["first"][""], ck["second"][""]
    assert any(not torch.equal(a, moe2.tensors[key]) for key, a in moe1.tensors.items() if key.startswith("encoder."))
    assert moe2.manifest.extra["training_config"]["joint"]["lr"] == pytest.approx(1e-3)
    assert moe2.manifest.extra["thresholds"] == moe1.manifest.extra["thresholds"]
    capsys.readouterr()
    other = {**joint, "baseline": {**TINY["baseline"], "lr": 0.01}, "width": 6}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["ssmoe", "--config", "other.json", "--workdir", "third", "--start-from", "first/checkpoints",
                 *common]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "was trained with another config (baseline.lr, width differ)" in err and not (tmp_path / "third").exists()


def test_patch_normalised_training_scores_relative_errors_and_exports_the_option(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    """``normalize: "patch"``: every phase trains the normalised networks, the
    pseudo-label scores are each patch's MSE over its scale squared (the
    gater sees the normalised patch), and the option travels in the
    checkpoint so that the network built from it gives the trained output."""
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    from SuperResMoELib.checkpoints.store import load_checkpoint
    from SuperResMoELib.methods.ssmoe.checkpoint import build_network
    from SuperResMoELib.nets.srunet import patch_scale
    from training.ssmoe.train import SSMoETrainer, export, patch_mse

    cfg = from_dict(SSMoEConfig, {**TINY, "residual": "linear", "normalize": "patch"}, "t")
    trainer = SSMoETrainer("aniso", cfg, tmp_path / "run")
    base = trainer.baseline()
    assert base.cfg.normalize == "patch"
    lab = trainer.labels(base, 2, "quantile")
    lib = trainer.data.train
    raw = patch_mse(lambda x, a: base(x), lib)
    scale = patch_scale(torch.from_numpy(lib.lr).float()).reshape(-1).numpy().astype(np.float64)
    np.testing.assert_allclose(lab["scores"], raw / scale ** 2, rtol=1e-6)
    assert not np.allclose(lab["scores"] / lab["scores"].mean(), raw / raw.mean(), rtol=0.05)  # not the raw order
    moe, _ = trainer.experts(trainer.gater(base, 2, "quantile", lab["labels"]), 2, "quantile")
    path = export(moe, "ssmoe", "aniso", cfg, 2, tmp_path / "ssmoe_aniso", {"training_data": "tiny"})
    ck = load_checkpoint(path, method="ssmoe", task="aniso")
    assert ck.manifest.architecture["srunet"]["normalize"] == "patch"
    net = build_network(ck.manifest).eval()
    net.load_state_dict(ck.tensors)
    x, a = torch.from_numpy(lib.lr[:6]), torch.from_numpy(lib.params[:6])
    with torch.no_grad():
        ours, routes = moe(x, a)
        theirs, again = net(x, a)
    torch.testing.assert_close(theirs, ours, rtol=1e-2, atol=1e-4)  # float16 weights
    torch.testing.assert_close(again, routes)
    with pytest.raises(Exception, match="normalize"):
        from_dict(SSMoEConfig, {**TINY, "normalize": "volume"}, "t")
