"""SR U-Net backbone, gater and the two mixtures of experts."""

from __future__ import annotations

import pytest
import torch

from SuperResMoELib.nets.blocks import keras_style_parameter_count
from SuperResMoELib.nets.moe import Gater, HardMoE, SSMoE
from SuperResMoELib.nets.srunet import SCALE_FLOOR, SRUNet, SRUNetConfig, patch_scale

# Keras counts of the SS-MoE reference at width 64 (weights + BN moving statistics).
REFERENCE_COUNTS = {"iso": 8_918_657, "aniso": 9_440_929}


@pytest.mark.parametrize("task", ["iso", "aniso"])
def test_reference_width_parameter_count(task: str) -> None:
    net = SRUNet(SRUNetConfig(task, 64))
    assert keras_style_parameter_count(net) == REFERENCE_COUNTS[task]


def test_expert_and_gater_sizes_match_reference() -> None:
    net = SRUNet(SRUNetConfig("iso", 64))
    assert keras_style_parameter_count(net.decoder) == 2_171_649  # trainable part of one expert
    assert keras_style_parameter_count(Gater(256, 4)) == 110_532  # 262-256-128-64-4 with BN


@pytest.mark.parametrize("task, lr, hr", [("iso", (8, 8, 8), (16, 16, 16)), ("aniso", (8, 16, 16), (16, 16, 16))])
def test_shapes(task: str, lr, hr) -> None:
    cfg = SRUNetConfig(task, 8)
    assert cfg.lr_patch == lr and cfg.hr_patch == hr
    net = SRUNet(cfg).eval()
    assert net(torch.randn(3, 1, *lr)).shape == (3, 1, *hr)
    feats = net.encoder(torch.randn(3, 1, *lr))
    assert feats.bottleneck.shape == (3, 32, 4, 4, 4)
    # larger inputs: outputs scale by the zoom
    big = tuple(2 * v for v in lr)
    assert net(torch.randn(1, 1, *big)).shape == (1, 1, *(b * z for b, z in zip(big, cfg.zoom)))


def test_ssmoe_routes_each_patch_to_its_expert() -> None:
    torch.manual_seed(0)
    base = SRUNet(SRUNetConfig("iso", 8)).eval()
    moe = SSMoE.from_baseline(base, 3).eval()
    for k, expert in enumerate(moe.experts):  # make experts differ
        with torch.no_grad():
            expert.up.out.bias.fill_(float(k))
    x, a = torch.randn(7, 1, 8, 8, 8), torch.randn(7, 6)
    with torch.no_grad():
        y, labels = moe(x, a)
        for b in range(7):
            single = moe.experts[int(labels[b])](moe.encoder(x[b:b + 1]))
            torch.testing.assert_close(y[b:b + 1], single, rtol=1e-5, atol=1e-5)
        forced, lab2 = moe(x, a, expert=1)
    assert set(lab2.tolist()) == {1}
    # the baseline-initialised expert 1 differs from the baseline only by its bias
    torch.testing.assert_close(forced, base(x) + 1.0, rtol=1e-5, atol=1e-5)


def test_frozen_encoder_keeps_batchnorm_statistics() -> None:
    base = SRUNet(SRUNetConfig("iso", 8))
    moe = SSMoE.from_baseline(base, 2)
    before = moe.encoder.bottleneck.norm.running_mean.clone()
    moe.train()
    assert not moe.encoder.training and moe.experts[0].training and moe.gater.training
    moe(torch.randn(4, 1, 8, 8, 8) * 5 + 3, torch.randn(4, 6))
    torch.testing.assert_close(moe.encoder.bottleneck.norm.running_mean, before)


def test_gater_zscores_parameters() -> None:
    g = Gater(4, 2, n_params=2).eval()
    g.set_param_stats(torch.tensor([10.0, 1000.0]), torch.tensor([2.0, 0.0]))
    feats = torch.randn(3, 4, 2, 2, 2)
    a = torch.tensor([[10.0, 1000.0], [12.0, 1000.0], [8.0, 1001.0]])
    same = Gater(4, 2, n_params=2).eval()
    same.load_state_dict(g.state_dict())
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 1.0]])  # std 0 -> 1
    same.set_param_stats(torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(g(feats, a), same(feats, z))
    with pytest.raises(ValueError, match="needs acquisition parameters"):
        g(feats)


def test_hard_moe_is_softmax_weighted_sum_of_heads() -> None:
    torch.manual_seed(1)
    moe = HardMoE(SRUNetConfig("aniso", 8), 3).eval()
    x = torch.randn(2, 1, 8, 16, 16)
    with torch.no_grad():
        y, w = moe(x)
        feats = moe.encoder(x)
        skips = moe.skips(feats.skips)
        heads = [h(skips, feats.bottleneck) for h in moe.heads]
    expected = sum(w[:, k].view(2, 1, 1, 1, 1) * heads[k] for k in range(3))
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(2))
    assert keras_style_parameter_count(HardMoE(SRUNetConfig("iso", 64), 4)) == 14_775_560


@pytest.mark.parametrize("task", ["aniso", "iso"])
def test_hard_moe_from_baseline_starts_as_the_baseline(task: str) -> None:
    torch.manual_seed(1)
    base = SRUNet(SRUNetConfig(task, 4, residual="linear"))
    for p in base.decoder.up.out.parameters():  # a non-zero output layer, so the check can fail
        torch.nn.init.normal_(p, std=0.1)
    base.eval()
    hm = HardMoE.from_baseline(base, 3).eval()
    x = torch.randn(2, 1, 8, 16, 16) if task == "aniso" else torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        y, w = hm(x)
        ref = base(x)
    assert (w.max(dim=1).values < 0.999).all()  # the gater really mixes the heads
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    assert ref.abs().max() > 0 and not torch.allclose(y, HardMoE(base.cfg, 3).eval()(x)[0])


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="unknown SR U-Net task"):
        SRUNetConfig("x4")


@pytest.mark.parametrize("task", ["iso", "aniso"])
def test_linear_residual_adds_edge_aligned_trilinear_upsampling(task: str) -> None:
    """With the output convolution zeroed, a residual network returns the
    trilinear upsampling of its input (a linear ramp stays a linear ramp in the
    interior, sampled at the SR voxel centres)."""
    cfg = SRUNetConfig(task, 4, residual="linear")
    net = SRUNet(cfg).eval()
    moe = SSMoE.from_baseline(net, 2).eval()
    hm = HardMoE(cfg, 2).eval()
    with torch.no_grad():
        for m in (net.decoder.up.out, *[e.up.out for e in moe.experts], *[h.out for h in hm.heads]):
            m.weight.zero_()
            m.bias.zero_()
    k = torch.arange(cfg.lr_patch[0], dtype=torch.float32)
    x = (3.0 * k).view(1, 1, -1, 1, 1).expand(1, 1, *cfg.lr_patch).contiguous()
    with torch.no_grad():
        outs = [net(x), moe(x, torch.zeros(1, 6))[0], hm(x)[0]]
    centres = (torch.arange(cfg.hr_patch[0], dtype=torch.float32) + 0.5) / cfg.zoom[0] - 0.5
    for y in outs:
        torch.testing.assert_close(y[0, 0, 2:-2, 3, 3], 3.0 * centres[2:-2])
    assert SRUNetConfig(task, 4).residual == "none"  # the reference has no global residual
    with pytest.raises(ValueError, match="unknown residual"):
        SRUNetConfig(task, 4, residual="cubic")


def _brightness_error(net, x: torch.Tensor, c: float, *args) -> float:
    """max |f(c x) - c f(x)| / max |c f(x)| of a network returning ``(y, ...)`` or ``y``."""
    out = lambda v: (lambda r: r[0] if isinstance(r, tuple) else r)(net(v, *args))  # noqa: E731
    with torch.no_grad():
        y, yc = out(x), out(c * x)
    return float((yc - c * y).abs().max() / (c * y).abs().max())


@pytest.mark.parametrize("task", ["iso", "aniso"])
def test_patch_normalisation_makes_every_network_follow_the_brightness(task: str) -> None:
    """``normalize: "patch"``: SR U-Net, SS-MoE (its routing included) and
    Hard-MoE give ``c`` times the output for ``c`` times the input (up to the
    scale floor, negligible at these intensities); without it they do not."""
    torch.manual_seed(0)
    x = torch.rand(4, 1, *SRUNetConfig(task).lr_patch) * 20 + 10  # mean |x| ~ 20 >> SCALE_FLOOR
    a = torch.randn(4, 6)
    for normalize, bound in (("patch", 1e-3), ("none", None)):
        base = SRUNet(SRUNetConfig(task, 4, residual="linear", normalize=normalize)).eval()
        torch.nn.init.normal_(base.decoder.up.out.weight, std=0.5)  # a correction that is not zero
        for name, p in base.named_parameters():  # biases, as trained networks have (with none, a ReLU
            if name.endswith("bias"):              # network is positively homogeneous by itself)
                torch.nn.init.normal_(p, std=0.5)
        nets = [(base, ()), (SSMoE.from_baseline(base, 3).eval(), (a,)), (HardMoE.from_baseline(base, 3).eval(), ())]
        for net, args in nets:
            err = _brightness_error(net, x, 7.0, *args)
            if bound is None:
                assert err > 1e-2, type(net).__name__
            else:
                assert err < bound, type(net).__name__
    moe = SSMoE.from_baseline(SRUNet(SRUNetConfig(task, 4, normalize="patch")), 3).eval()
    with torch.no_grad():  # the gater sees the same features at every brightness: same experts
        torch.testing.assert_close(moe(x, a)[1], moe(7.0 * x, a)[1])
    torch.testing.assert_close(patch_scale(torch.zeros(2, 1, 4, 4, 4)).flatten(), torch.full((2,), SCALE_FLOOR))
    with pytest.raises(ValueError, match="unknown normalize"):
        SRUNetConfig(task, 4, normalize="volume")
