"""The three MoEDiff-SR denoising experts: shapes, size checks, zero head,
dependence on t / cond / tokens, the special blocks (Laplacian edge enhancement,
complex spectral bottleneck, non-local attention), a tiny eps-prediction overfit,
config validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from SuperResMoELib.nets.moediff_experts import (
    EXPERT_CLASSES, ComplexSpectralBlock, EdgeEnhanceBlock, Expert1, Expert2, Expert3, ExpertConfig,
    NonLocalBlock, adapted_groups, build_expert, timestep_embedding)
from SuperResMoELib.nets.unet3d import count_parameters

INDICES = (1, 2, 3)
C, CC, D = 4, 3, 8  # latent channels, cond channels, token dim


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: one intra-op thread is as fast and avoids OpenMP spin-waits
    that slow small ops down many-fold on a loaded shared CPU (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(**kw) -> ExpertConfig:
    """Smallest useful config (fast on CPU)."""
    base = dict(latent_channels=C, cond_channels=CC, base_channels=8, time_embed_dim=32, groups=4,
                growth_rate=8, dense_layers=3, token_dim=D)
    return ExpertConfig.compact(**{**base, **kw})


def inputs(b: int = 2, h: int = 8, w: int = 8, seed: int = 0, tokens: bool = True):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, C, h, w, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    cond = torch.randn(b, CC, h, w, generator=g)
    tok = torch.randn(b, 5, D, generator=g) if tokens else None
    return z, t, cond, tok


def randomise_head(expert: Any, seed: int = 0) -> Any:
    """Test helper: undo the zero initialisation of the last convolution."""
    torch.manual_seed(seed)
    nn.init.normal_(expert.out.weight, std=0.5)
    nn.init.normal_(expert.out.bias, std=0.5)
    return expert


def expert(index: int, seed: int = 0, **kw) -> Any:
    torch.manual_seed(seed)
    return build_expert(index, tiny(**kw))


@pytest.mark.parametrize("index", INDICES)
@pytest.mark.parametrize("hw", [(8, 8), (12, 16)])
def test_shape(index, hw):
    m = expert(index)
    z, t, cond, tok = inputs(3, *hw)
    assert m(z, t, cond, tok).shape == z.shape
    assert m(z, t, cond, None).shape == z.shape  # tokens are optional


@pytest.mark.parametrize("index", INDICES)
def test_bad_inputs(index):
    m = expert(index)
    z, t, cond, tok = inputs()
    with pytest.raises(ValueError, match="multiples of 4"):
        m(torch.randn(2, C, 10, 8), t, torch.randn(2, CC, 10, 8))
    with pytest.raises(ValueError, match="multiples of 4"):
        m(torch.randn(2, C, 8, 6), t, torch.randn(2, CC, 8, 6))
    with pytest.raises(ValueError):
        m(torch.randn(2, C + 1, 8, 8), t, cond)                 # latent channels
    with pytest.raises(ValueError, match="cond"):
        m(z, t, torch.randn(2, CC + 1, 8, 8))
    with pytest.raises(ValueError, match="cond"):
        m(z, t, torch.randn(2, CC, 4, 8))
    with pytest.raises(ValueError, match="t of shape"):
        m(z, t[:1], cond)
    with pytest.raises(ValueError, match="tokens"):
        m(z, t, cond, torch.randn(2, 5, D + 1))
    with pytest.raises(ValueError, match="token_dim = 0"):
        expert(index, token_dim=0)(z, t, cond, tok)


@pytest.mark.parametrize("index", INDICES)
def test_zero_at_init_then_trains(index):
    m = expert(index)
    z, t, cond, tok = inputs()
    out = m(z, t, cond, tok)
    assert torch.equal(out, torch.zeros_like(z))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    (m(z, t, cond, tok) - torch.randn_like(z)).pow(2).mean().backward()
    opt.step()
    with torch.no_grad():
        assert m(z, t, cond, tok).abs().max() > 0


@pytest.mark.parametrize("index", INDICES)
def test_depends_on_t_cond_tokens(index):
    m = randomise_head(expert(index))
    z, t, cond, tok = inputs()
    with torch.no_grad():
        ref = m(z, t, cond, tok)
        assert not torch.allclose(ref, m(z, t + 100, cond, tok), atol=1e-5)
        assert not torch.allclose(ref, m(z, t, cond + torch.randn_like(cond), tok), atol=1e-5)
        assert not torch.allclose(ref, m(z, t, cond, tok + torch.randn_like(tok)), atol=1e-5)
        assert not torch.allclose(ref, m(z, t, cond, None), atol=1e-5)
        # per item: changing item 1's t leaves item 0 alone (no batch mixing)
        t2 = t.clone()
        t2[1] += 100
        other = m(z, t2, cond, tok)
        assert torch.allclose(ref[0], other[0], atol=1e-6) and not torch.allclose(ref[1], other[1], atol=1e-5)


def test_depends_on_t_after_training():
    """With the zero head kept, a few optimiser steps make the output depend on t."""
    m = expert(1)
    z, t, cond, tok = inputs()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        (m(z, t, cond, tok) - torch.randn_like(z)).pow(2).mean().backward()
        opt.step()
    with torch.no_grad():
        assert not torch.allclose(m(z, t, cond, tok), m(z, t + 300, cond, tok), atol=1e-6)


def test_timestep_embedding_and_groups():
    e = timestep_embedding(torch.tensor([0, 5, 999]), 16)
    assert e.shape == (3, 16)
    assert torch.equal(e[0], torch.cat([torch.ones(8), torch.zeros(8)]))
    assert torch.allclose(e[1, 0], torch.cos(torch.tensor(5.0))) and torch.allclose(e[1, 8], torch.sin(torch.tensor(5.0)))
    assert torch.allclose(e[:, 7], torch.cos(torch.tensor([0, 5, 999.0]) * 10000 ** (-7 / 8)))
    assert [adapted_groups(c, 8) for c in (8, 12, 7, 3, 64)] == [8, 6, 7, 3, 8]
    assert adapted_groups(11, 8) == 1


def test_edge_block():
    blk = EdgeEnhanceBlock(3, gain_init=0.5)
    const = torch.full((2, 3, 9, 9), 0.75)
    assert torch.allclose(blk(const), const, atol=1e-6)
    ramp = torch.arange(9.0).expand(2, 3, 9, 9).clone()            # linear: interior unchanged
    assert torch.allclose(blk(ramp)[..., 1:-1], ramp[..., 1:-1], atol=1e-5)
    step = torch.zeros(1, 3, 9, 9)
    step[..., 5:] = 1.0                                              # vertical edge between columns 4 and 5
    out = blk(step)
    diff = out - step
    assert diff[..., 4].lt(-0.1).all() and diff[..., 5].gt(0.1).all()   # under/overshoot: sharpened
    assert torch.equal(diff[..., :3], torch.zeros_like(diff[..., :3]))   # far from the edge: untouched
    assert torch.equal(diff[..., 7:], torch.zeros_like(diff[..., 7:]))
    assert [n for n, _ in blk.named_parameters()] == ["gain"]           # the kernel is fixed


def test_complex_block():
    torch.manual_seed(0)
    blk = ComplexSpectralBlock(6)
    for shape in [(2, 6, 8, 8), (1, 6, 5, 7)]:
        x = torch.randn(shape)
        assert torch.equal(blk(x), x)                 # exactly the identity at init
    x = torch.randn(2, 6, 8, 8, requires_grad=True)
    blk(x).pow(2).sum().backward()
    assert blk.mag_out.weight.grad is not None and blk.mag_out.weight.grad.abs().sum() > 0
    assert blk.mag_out.bias.grad is not None and blk.mag_out.bias.grad.abs().sum() > 0
    # a per-channel phase offset of pi (bias of the theta half) negates that channel;
    # a log-gain of log 2 doubles it
    with torch.no_grad():
        blk.mag_out.bias[6 + 1] = torch.pi
        blk.mag_out.bias[2] = torch.log(torch.tensor(2.0))
        x = torch.randn(2, 6, 8, 8)
        y = blk(x)
    assert y.shape == x.shape
    assert torch.allclose(y[:, 1], -x[:, 1], atol=1e-5)
    assert torch.allclose(y[:, 2], 2 * x[:, 2], atol=1e-5)
    assert torch.allclose(y[:, 0], x[:, 0], atol=1e-6)


def test_nonlocal_long_range():
    torch.manual_seed(0)
    blk = NonLocalBlock(8)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 12, 12)
    x2 = x.clone()
    x2[..., 0, 0] += 3.0
    with torch.no_grad():
        far_nl = (blk(x2) - blk(x))[..., -1, -1]
        far_conv = (conv(x2) - conv(x))[..., -1, -1]
    assert far_nl.abs().max() > 1e-4
    assert torch.equal(far_conv, torch.zeros_like(far_conv))
    assert blk(x).shape == x.shape


@pytest.mark.parametrize("index", INDICES)
def test_overfit_tiny_eps_task(index):
    """60 Adam steps on 8 fixed (z_t, t, cond, tokens, eps): the eps loss falls by > 20x."""
    torch.manual_seed(1)
    m = build_expert(index, tiny(base_channels=16))       # ~0.2-0.35 M parameters
    z, t, cond, tok = inputs(8, 8, 8, seed=3)
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(4))
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (m(z, t, cond, tok) - eps).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])   # measured: / 120 .. / 830


def test_distinct_architectures_and_factory():
    cfg = tiny()
    counts = [count_parameters(build_expert(i, cfg)) for i in INDICES]
    assert len(set(counts)) == 3
    assert [type(build_expert(i, cfg)) for i in INDICES] == [Expert1, Expert2, Expert3] == list(EXPERT_CLASSES)
    for bad in (0, 4, -1, True, 1.0):
        with pytest.raises(ValueError, match="index"):
            build_expert(bad, cfg)  # type: ignore[arg-type]
    m1 = build_expert(1, cfg)
    assert m1.mid_conv.dilation == (2, 2)
    assert build_expert(1, tiny(dilation=3)).mid_conv.dilation == (3, 3)
    assert isinstance(build_expert(3, cfg).nonlocal_block, NonLocalBlock)
    assert len(build_expert(2, cfg).enc1.layers) == cfg.dense_layers


def test_config():
    cfg = ExpertConfig.compact(token_dim=16, channel_mults=[1, 2, 2])
    assert cfg.channel_mults == (1, 2, 2) and cfg.level_channels == (32, 64, 64) and cfg.multiple == 4
    d = json.loads(json.dumps(cfg.to_dict()))
    assert ExpertConfig(**d) == cfg
    assert ExpertConfig().growth_rate == 16 and ExpertConfig().dilation == 2
    for bad in [dict(base_channels=0), dict(latent_channels=0), dict(cond_channels=-1), dict(token_dim=-1),
                dict(time_embed_dim=31), dict(groups=0), dict(dilation=0), dict(growth_rate=0),
                dict(channel_mults=(1, 2)), dict(channel_mults=(1, 0, 2)), dict(channel_mults="124"),
                dict(edge_gain_init=float("nan")), dict(base_channels=8.0), dict(dense_layers=True)]:
        with pytest.raises(ValueError):
            ExpertConfig(**bad)
    with pytest.raises(Exception):
        cfg.base_channels = 3  # type: ignore[misc]  # frozen
