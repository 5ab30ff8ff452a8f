"""The 2D VQ-VAE of MoEDiff-SR: shapes, size checks, quantiser, EMA codebook,
straight-through gradient, a tiny overfit, config validation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from SuperResMoELib.nets.unet3d import count_parameters
from SuperResMoELib.nets.vqvae2d import EMAQuantizer, VQVAE2D, VQVAE2DConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are tiny: one intra-op thread is as fast and does not thrash on a
    busy shared CPU (two threads there made this module minutes long)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(**kw) -> VQVAE2DConfig:
    """Smallest useful config (fast on CPU)."""
    return VQVAE2DConfig.compact(**{"base_channels": 8, "norm_groups": 4, **kw})


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``(n, 1, size, size)`` smooth random images (bicubic upsampling of 4x4 noise)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=(size, size), mode="bicubic",
                         align_corners=False)


@pytest.mark.parametrize("cfg,shape,f", [
    (tiny(), (2, 1, 32, 48), 4),                                             # (1, 2, 2): factor 4
    (tiny(channel_mults=(1, 2), latent_channels=6), (3, 1, 16, 8), 2),       # factor 2
    (tiny(channel_mults=(1, 1, 2, 2), norm="none", num_res_blocks=2), (1, 1, 24, 40), 8),
    (tiny(channel_mults=(2,), in_channels=2), (2, 2, 5, 7), 1),              # no downsampling
])
def test_shapes(cfg: VQVAE2DConfig, shape: tuple[int, ...], f: int) -> None:
    net = VQVAE2D(cfg)
    assert cfg.downsample == cfg.multiple == f
    b, _, h, w = shape
    x = torch.randn(shape)
    z_e = net.encode(x)
    assert z_e.shape == (b, cfg.latent_channels, h // f, w // f)
    z_q, loss, idx = net.quantize(z_e)
    assert z_q.shape == z_e.shape and loss.shape == () and idx.shape == (b, h // f, w // f)
    assert idx.dtype == torch.long and int(idx.min()) >= 0 and int(idx.max()) < cfg.codebook_size
    assert net.decode(z_q).shape == shape
    x_hat, vq_loss, indices = net(x)
    assert x_hat.shape == shape and vq_loss.shape == () and indices.shape == (b, h // f, w // f)


@pytest.mark.parametrize("shape", [(1, 1, 30, 32), (1, 1, 32, 34), (2, 1, 6, 8), (1, 2, 32, 32), (1, 32, 32),
                                   (1, 1, 1, 32, 32)])
def test_bad_image_shapes_are_refused(shape: tuple[int, ...]) -> None:
    net = VQVAE2D(tiny())  # multiple 4
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(shape))


def test_bad_latent_shapes_are_refused() -> None:
    net = VQVAE2D(tiny(latent_channels=4))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        net.decode(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        net.quantize(torch.randn(1, 5, 8, 8))


def _separated_quantizer(k: int = 16, d: int = 4, epsilon: float = 1e-5) -> EMAQuantizer:
    q = EMAQuantizer(k, d, epsilon=epsilon)
    codes = torch.randn(k, d, generator=torch.Generator().manual_seed(3)) * 3.0
    q.embedding.copy_(codes)
    q.embed_avg.copy_(codes)
    return q


@pytest.mark.parametrize("train", [False, True])
def test_codewords_map_to_themselves(train: bool) -> None:
    q = _separated_quantizer()
    q.train(train)
    codes = q.embedding.clone()
    idx = torch.randint(0, 16, (2, 3, 5), generator=torch.Generator().manual_seed(1))
    z_e = codes[idx].permute(0, 3, 1, 2)  # (2, 4, 3, 5)
    z_q, loss, indices = q(z_e)
    assert torch.equal(indices, idx)
    assert torch.equal(z_q, z_e)  # z_q is looked up before any EMA update
    assert float(loss) == 0.0
    if not train:  # in training the codebook has since moved (a little: smoothing)
        assert torch.equal(q.lookup(indices), z_e)


def test_nearest_codeword_and_commitment_loss() -> None:
    q = _separated_quantizer().eval()
    z_e = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2)) * 3.0
    z_q, loss, idx = q(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 4)
    brute = torch.cdist(flat.double(), q.embedding.double()).argmin(1)
    assert torch.equal(idx.reshape(-1), brute)
    assert torch.allclose(z_q, q.embedding[idx].permute(0, 3, 1, 2), atol=1e-6)
    assert torch.allclose(loss, 0.25 * ((z_e - q.embedding[idx].permute(0, 3, 1, 2)) ** 2).mean())


def test_straight_through_gradient_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    net = VQVAE2D(tiny())
    x = smooth_images(2, 16)
    x_hat, _, _ = net(x)
    F.mse_loss(x_hat, x).backward()  # reconstruction only: the encoder learns through z_q
    stem = net.encoder.net[0].weight.grad
    assert stem is not None and float(stem.abs().sum()) > 0
    assert all(b.grad is None and not b.requires_grad for b in net.quantizer.buffers())
    # the commitment loss alone trains the encoder and not the decoder
    net.zero_grad(set_to_none=True)
    _, vq_loss, _ = net(x)
    vq_loss.backward()
    assert float(net.encoder.net[0].weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in net.decoder.parameters())


def test_ema_update_moves_codes_toward_their_inputs_and_eval_leaves_them() -> None:
    q = _separated_quantizer(epsilon=0.01)  # a large epsilon makes the smoothing visible
    codes = q.embedding.clone()
    g = torch.Generator().manual_seed(5)
    idx = torch.tensor([0, 0, 0, 3, 3, 7])
    targets = codes[idx] + torch.randn(6, 4, generator=g) * 0.5  # still nearest to their code
    z_e = targets.T.reshape(1, 4, 2, 3)

    q.eval()
    before = {n: b.clone() for n, b in q.named_buffers() if n != "perplexity"}
    _, _, got = q(z_e)
    assert torch.equal(got.reshape(-1), idx)
    assert all(torch.equal(b, before[n]) for n, b in q.named_buffers() if n != "perplexity")

    q.train()
    with torch.enable_grad():
        q(z_e.clone().requires_grad_(True))
    assert not q.embedding.requires_grad and q.embedding.grad_fn is None
    # exact EMA / Laplace update from N = 1, m = e (gamma 0.99, eps 0.01, K 16)
    counts = torch.bincount(idx, minlength=16).float()
    sums = torch.zeros(16, 4).index_add_(0, idx, targets)
    n_k = 0.99 + 0.01 * counts
    m_k = 0.99 * codes + 0.01 * sums
    total = n_k.sum()
    expected = m_k / ((n_k + 0.01) / (total + 16 * 0.01) * total)[:, None]
    assert torch.allclose(q.cluster_size, n_k) and torch.allclose(q.embed_avg, m_k)
    assert torch.allclose(q.embedding, expected, rtol=0, atol=1e-5)
    for k in (0, 3, 7):  # used codes move toward the mean of their inputs
        mean = targets[idx == k].mean(0)
        assert (q.embedding[k] - mean).norm() < (codes[k] - mean).norm()
    unused = counts == 0
    assert torch.allclose(q.embedding[unused], codes[unused], rtol=1e-3)  # unused codes stay


def test_perplexity_of_the_last_batch() -> None:
    q = _separated_quantizer().eval()
    all_codes = q.embedding.T.reshape(1, 4, 4, 4)  # every code once
    q(all_codes)
    assert float(q.perplexity) == pytest.approx(16.0, rel=1e-5)
    q(q.embedding[[2, 2, 2, 2]].T.reshape(1, 4, 2, 2))
    assert float(q.perplexity) == pytest.approx(1.0)


def test_dead_codes_are_reseeded_with_batch_vectors() -> None:
    torch.manual_seed(0)
    q = EMAQuantizer(8, 3, dead_code_threshold=0.995).train()
    z_e = torch.randn(1, 3, 4, 4) + 10.0  # far from the codebook: one code takes everything
    q(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    dead = q.cluster_size < 0.995
    assert int(dead.sum()) == 7
    for e in q.embedding[dead]:
        assert (flat - e).norm(dim=1).min() < 1e-5  # each re-seeded code is one of the inputs
    _, _, idx = q(z_e)
    assert idx.unique().numel() > 1


def test_tiny_overfit_reduces_the_reconstruction_error() -> None:
    torch.manual_seed(0)
    net = VQVAE2D(tiny())
    x = smooth_images(4, 32)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        x_hat, vq_loss, _ = net(x)
        rec = F.mse_loss(x_hat, x)
        opt.zero_grad()
        (rec + vq_loss).backward()
        opt.step()
        losses.append(rec.item())
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    assert float(net.quantizer.perplexity) > 1.5  # more than one code in use


def test_decode_indices_matches_the_forward_in_eval() -> None:
    torch.manual_seed(0)
    net = VQVAE2D(tiny()).eval()
    x = smooth_images(2, 16)
    with torch.no_grad():
        x_hat, _, idx = net(x)
        assert torch.allclose(net.decode_indices(idx), x_hat, atol=1e-5)


def test_initialisation_is_deterministic_given_the_seed() -> None:
    def state(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return VQVAE2D(tiny()).state_dict()

    a, b, c = state(7), state(7), state(8)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["quantizer.embedding"], c["quantizer.embedding"])
    assert "quantizer.perplexity" not in a  # not persistent


def test_defaults_are_the_paper_settings_and_compact_is_small() -> None:
    cfg = VQVAE2DConfig()
    assert (cfg.base_channels, cfg.latent_channels, cfg.codebook_size, cfg.latent_scale) == (128, 512, 1024, 0.2)
    assert (cfg.commitment_cost, cfg.ema_decay, cfg.epsilon, cfg.in_channels) == (0.25, 0.99, 1e-5, 1)
    assert cfg.level_channels == (128, 256, 512) and cfg.downsample == 4
    compact = VQVAE2DConfig.compact()
    assert compact.level_channels == (16, 32, 32) and compact.downsample == 4
    assert count_parameters(VQVAE2D(compact)) == 197909


@pytest.mark.parametrize("kwargs", [
    {"in_channels": 0}, {"base_channels": 0}, {"base_channels": 16.0}, {"in_channels": True},
    {"channel_mults": ()}, {"channel_mults": (1, 0)}, {"channel_mults": (1, 1.5)}, {"channel_mults": 2},
    {"channel_mults": "12"}, {"num_res_blocks": 0}, {"latent_channels": 0}, {"codebook_size": 0},
    {"commitment_cost": -0.1}, {"commitment_cost": float("nan")}, {"ema_decay": 0.0}, {"ema_decay": 1.0},
    {"ema_decay": 1.5}, {"epsilon": 0.0}, {"latent_scale": 0.0}, {"latent_scale": float("inf")},
    {"norm": "batch"}, {"norm_groups": 0}, {"norm_groups": 24}, {"dead_code_threshold": -1.0},
])
def test_bad_configs_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        VQVAE2DConfig(**kwargs)


def test_group_count_is_only_checked_with_group_norm() -> None:
    assert VQVAE2DConfig(base_channels=12, norm="none").norm_groups == 32
    with pytest.raises(ValueError, match="norm_groups"):
        VQVAE2DConfig(base_channels=12)


@pytest.mark.parametrize("cfg", [VQVAE2DConfig(), VQVAE2DConfig.compact(dead_code_threshold=0.5)])
def test_to_dict_round_trip(cfg: VQVAE2DConfig) -> None:
    assert VQVAE2DConfig(**cfg.to_dict()) == cfg
    from_json = VQVAE2DConfig(**json.loads(json.dumps(cfg.to_dict())))  # list channel_mults -> tuple
    assert from_json == cfg and isinstance(from_json.channel_mults, tuple)
    assert hash(from_json) == hash(cfg)
