"""Training configs as checked dataclass trees (training/config.py and the
methods' config modules): the shipped JSON loads, mistakes fail before any
work with one line naming the file, the key path and close matches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from SuperResMoELib.core.errors import ConfigError, ExitCode
from training import __main__ as cli
from training.moediff.config import MoEDiffConfig
from training.config import CONFIG_DIR, PhaseSpec, config_path, from_dict, load, to_dict
from training.remix.config import EXPERT_INITS, LossWeights, REMIxConfig
from training.remix.degradation import DegradationConfig
from training.remix.losses import TERMS
from training.ssmoe.config import SSMoEConfig

CLASSES = {"ssmoe": SSMoEConfig, "remix": REMIxConfig, "moediff": MoEDiffConfig}
SHIPPED = sorted(CONFIG_DIR.glob("*.json"))


def shipped(name: str) -> dict:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_loads_and_round_trips(path: Path) -> None:
    method, name = path.stem.split("_", 1)
    cfg = load(CLASSES[method], method, name)
    assert isinstance(cfg, CLASSES[method]) and cfg.description
    assert load(CLASSES[method], method, path) == cfg  # by path too
    resolved = to_dict(cfg)
    json.dumps(resolved)  # plain JSON data
    assert from_dict(CLASSES[method], resolved) == cfg
    # everything the file says is what the tree holds (the tree only adds defaults)
    raw = json.loads(path.read_text())

    def contained(a, b) -> bool:
        if isinstance(a, dict):
            return all(k in b and contained(v, b[k]) for k, v in a.items())
        if isinstance(a, list) and a and isinstance(a[0], dict):  # e.g. one schedule per expert
            return isinstance(b, list) and len(a) == len(b) and all(contained(x, y) for x, y in zip(a, b))
        return a == b

    assert contained(raw, resolved)


def test_shipped_configs_cover_both_methods_and_both_sizes() -> None:
    assert [p.stem for p in SHIPPED] == ["moediff_compact", "moediff_full", "remix_compact", "remix_finetuned",
                                         "remix_full", "remix_wide", "ssmoe_compact", "ssmoe_full", "ssmoe_long", "ssmoe_mixed", "ssmoe_wide"]


@pytest.mark.parametrize("method, edit, message", [
    ("ssmoe", lambda d: d.__setitem__("batch_sise", d.pop("batch_size")),
     "unknown key 'batch_sise'; did you mean 'batch_size'?"),
    ("ssmoe", lambda d: d["library"].__setitem__("subjets", d["library"].pop("subjects")),
     "unknown key 'library.subjets'; did you mean 'library.subjects' or 'library.wide_subjects'?"),
    ("remix", lambda d: d["degradation"].__setitem__("gap_probabilty", 0.2),
     "unknown key 'degradation.gap_probabilty'; did you mean 'degradation.gap_probability' or "
     "'degradation.native_probability' or 'degradation.isotropic_probability'?"),
    ("remix", lambda d: d["unet"].__setitem__("widht", 4), "unknown key 'unet.widht'; did you mean 'unet.width'?"),
    ("ssmoe", lambda d: d.pop("width"), "missing key 'width'"),
    ("ssmoe", lambda d: d["baseline"].pop("lr"), "missing key 'baseline.lr'"),
    ("ssmoe", lambda d: d.__setitem__("width", "8"), "width must be an integer, not '8'"),
    ("ssmoe", lambda d: d.__setitem__("batch_size", 6.5), "batch_size must be an integer, not 6.5"),
    ("ssmoe", lambda d: d.__setitem__("batch_size", 0), "batch_size must be > 0, not 0"),
    ("ssmoe", lambda d: d.__setitem__("width", 1), "width must be at least 2"),
    ("ssmoe", lambda d: d["library"].__setitem__("validation_fraction", 1.5),
     "library.validation_fraction must be a fraction in [0, 1], not 1.5"),
    ("ssmoe", lambda d: d["library"].__setitem__("subjects", [0, True]),
     "library.subjects[1] must be an integer, not True"),
    ("ssmoe", lambda d: d.__setitem__("labeler", "mqss"),
     "labeler must be 'mqs', 'quantile', 'empirical' or 'kmeans', not 'mqss'; did you mean 'mqs'?"),
    ("ssmoe", lambda d: d["experts"].__setitem__("batchnorm", "frozn"),
     "experts.batchnorm must be 'frozen' or 'train', not 'frozn'; did you mean 'frozen'?"),
    ("ssmoe", lambda d: d.__setitem__("residual", "cubic"), "residual must be 'none' or 'linear', not 'cubic'"),
    ("ssmoe", lambda d: d["gater"].__setitem__("epochs", -1), "gater.epochs must be > 0, not -1"),
    ("ssmoe", lambda d: d.__setitem__("library", [1, 2]), "library must be a JSON object, not list"),
    ("remix", lambda d: d["experts"].__setitem__("init", "previos"),
     "experts.init must be 'expert1', 'previous' or 'single', not 'previos'; did you mean 'previous'?"),
    ("remix", lambda d: d["library"].__setitem__("patch", 100), "library.patch (100) must not exceed crop (80)"),
    ("remix", lambda d: d.__setitem__("loss", {"mae": 0, "ssim": 0}),
     "loss: at least one loss term needs a positive weight"),
    ("remix", lambda d: d["loss"].__setitem__("ssim", -1), "loss.ssim must be >= 0, not -1.0"),
    ("remix", lambda d: d["degradation"].__setitem__("in_plane_mm", [1.3, 0.8]),
     "degradation.in_plane_mm must be a range [low, high] with low <= high, not [1.3, 0.8]"),
    ("remix", lambda d: d["degradation"].__setitem__("in_plane_mm", [1.0]),
     "degradation.in_plane_mm must be a list of 2 values, not [1.0]"),
    ("remix", lambda d: d["degradation"]["orientations"].__setitem__("axail", 0.1),
     "degradation.orientations: unknown orientation(s) ['axail']"),
    ("remix", lambda d: d["degradation"].__setitem__("profile", "box"),
     "degradation.profile must be 'gaussian' or 'boxcar', not 'box'"),
    ("remix", lambda d: d["unet"].__setitem__("norm", "group"), "unet: unknown norm 'group'"),
])
def test_mistakes_name_file_key_and_close_matches(tmp_path, method, edit, message) -> None:
    data = shipped(f"{method}_compact")
    edit(data)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load(CLASSES[method], method, path)
    assert str(info.value).startswith(f"{path}: {message}")
    assert info.value.exit_code == ExitCode.CONFIG and "\n" not in str(info.value)


def test_misspelled_key_fails_before_any_library_is_built(tmp_path, monkeypatch, capsys) -> None:
    """The command stops at the config: no cache, no run folder, exit CONFIG."""
    monkeypatch.setenv("SUPERRESMOE_CACHE", str(tmp_path / "cache"))
    for method, extra in (("ssmoe", ["--task", "aniso"]), ("remix", [])):
        data = shipped(f"{method}_compact")
        data["library"]["subjets"] = data["library"].pop("subjects")
        bad = tmp_path / f"{method}.json"
        bad.write_text(json.dumps(data))
        code = cli.main([method, *extra, "--config", str(bad), "--workdir", str(tmp_path / "run"),
                         "--progress", "none", "--device", "cpu"])
        assert code == ExitCode.CONFIG
        assert capsys.readouterr().err.splitlines() == [
            f"python -m training {method}: error: {bad}: unknown key 'library.subjets'; did you mean "
            + ("'library.subjects' or 'library.wide_subjects'?" if method == "ssmoe" else "'library.subjects'?")]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_unknown_config_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="no ssmoe config 'tiny': not a file, nor one of compact, full"):
        config_path("ssmoe", "tiny")


def test_invalid_json_is_a_config_error(tmp_path) -> None:
    (tmp_path / "broken.json").write_text('{"width": 8,')
    with pytest.raises(ConfigError, match="broken.json: not valid JSON"):
        load(SSMoEConfig, "ssmoe", tmp_path / "broken.json")


def test_defaults_live_in_the_dataclasses() -> None:
    """Keys a JSON may omit get the dataclass defaults (the trainers read no others)."""
    data = shipped("ssmoe_compact")
    for key in ("residual", "seed", "description"):
        data.pop(key)
    data["experts"].pop("batchnorm")
    cfg = from_dict(SSMoEConfig, data)
    assert (cfg.residual, cfg.seed, cfg.data_seed, cfg.experts.batchnorm, cfg.description) == \
        ("none", 0, 0, "frozen", "")
    data = shipped("remix_compact")
    data["experts"].pop("init")
    data["library"].pop("intensity_jitter")
    data.pop("degradation")
    data["loss"] = {"ssim": 2.0}
    cfg = from_dict(REMIxConfig, data)
    assert cfg.experts.init == EXPERT_INITS[0] == "expert1"
    assert cfg.library.intensity_jitter == 0.1
    assert cfg.degradation == DegradationConfig() and cfg.degradation.native_probability == 0.0
    assert cfg.loss == LossWeights(ssim=2.0) and (cfg.loss.mae, cfg.loss.gradient) == (0.0, 0.0)


def test_loss_weights_name_every_loss_term() -> None:
    assert tuple(f.name for f in dataclasses.fields(LossWeights)) == TERMS


def test_replace_is_checked_like_loading() -> None:
    """Command-line overrides go through dataclasses.replace, which runs the same checks."""
    cfg = load(SSMoEConfig, "ssmoe", "compact")
    assert dataclasses.replace(cfg, width=16).width == 16 and cfg.width == 8
    with pytest.raises(ConfigError, match="width must be > 0, not 0"):
        dataclasses.replace(cfg, width=0)
    remix = load(REMIxConfig, "remix", "compact")
    with pytest.raises(ValueError, match="U-Net width"):
        dataclasses.replace(remix, unet=dataclasses.replace(remix.unet, width=0))
    with pytest.raises(ConfigError, match="lr must be >= 0"):
        PhaseSpec(epochs=1, steps_per_epoch=1, lr=-0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 3  # type: ignore[misc]


def test_degradation_from_dict_keeps_defaults_and_checks() -> None:
    cfg = DegradationConfig.from_dict({"bins": [2, 3], "orientations": {"axial": 1.0}})
    assert cfg.bins == (2, 3) and cfg.orientations == (("axial", 1.0),) and cfg.profile == "gaussian"
    with pytest.raises(ConfigError, match="unknown key 'bin'; did you mean 'bins'?"):
        DegradationConfig.from_dict({"bin": [1]})
    with pytest.raises(ConfigError, match="must not all be 0"):
        DegradationConfig.from_dict({"orientations": {"axial": 0.0, "coronal": 0.0}})
