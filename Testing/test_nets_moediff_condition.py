"""MoEDiff-SR condition encoder E2 (Eq. 1) and gating network G (Eq. 2-4):
token layout and shapes, size checks, locality of the tokens, Eq. 2-3 by hand,
gates and the usage EMA, gradients, and a tiny left/right routing task."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from SuperResMoELib.nets.moediff_condition import (
    ConditionConfig,
    ConditionEncoder,
    GatingConfig,
    GatingNetwork,
    sincos_position_embedding,
)
from SuperResMoELib.nets.unet3d import count_parameters


#: tiny tensors on shared cores: intra-op threads only add overhead
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(patch_sizes: tuple[int, ...] = (16, 8, 4), dim: int = 16, k: int = 3, **gating: float | bool
          ) -> tuple[ConditionEncoder, GatingNetwork]:
    enc = ConditionEncoder(ConditionConfig(patch_sizes=patch_sizes, dim=dim, depth=1, heads=2))
    gate = GatingNetwork(GatingConfig(dim=dim, n_experts=k, **gating))  # type: ignore[arg-type]
    return enc, gate


# ---- shapes and token layout ------------------------------------------------------------------------


@pytest.mark.parametrize("size,patch_sizes,expected_n", [
    ((64, 64), (16, 8, 4), 16 + 64 + 256),
    ((32, 48), (8, 4, 2), 2 * 3 * 4 * (1 + 4 + 16)),  # 24 + 96 + 384, non-square
    ((48, 32), (4, 8), 12 * 8 + 6 * 4),  # two scales, finest listed first
])
def test_token_count_grids_and_output_shapes(size, patch_sizes, expected_n) -> None:
    torch.manual_seed(0)
    h, w = size
    enc, gate = small(patch_sizes)
    y = torch.rand(2, 1, h, w)
    z = enc(y)
    assert enc.cfg.num_tokens(h, w) == enc.num_tokens() == expected_n
    assert z.shape == (2, expected_n, 16)
    slices = enc.token_slices()
    assert [s.stop - s.start for s in slices] == [(h // p) * (w // p) for p in patch_sizes]
    assert slices[0].start == 0 and slices[-1].stop == expected_n
    for s, p in enumerate(patch_sizes):
        assert enc.grid(s) == enc.grid(s, h, w) == (h // p, w // p)
    finest = patch_sizes.index(min(patch_sizes))
    gh, gw = h // min(patch_sizes), w // min(patch_sizes)
    fmap = enc.finest_tokens_map(z, h, w)
    assert fmap.shape == (2, 16, gh, gw)
    # row-major layout: map position (r, c) is token start + r * gw + c
    start = slices[finest].start
    assert torch.equal(fmap[:, :, 1, 2], z[:, start + 1 * gw + 2])
    assert torch.equal(fmap.flatten(2).transpose(1, 2), z[:, slices[finest]])

    assert gate(z).shape == (2, 3)
    assert gate.token_scores(z).shape == (2, 3, expected_n)
    assert gate.spatial_scores(z, enc, h, w).shape == (2, 3, gh, gw)
    assert gate.gates(z).shape == (2, 3)
    assert gate.gates(z, spatial=True, encoder=enc).shape == (2, 3, gh, gw)


def test_paper_patch_sizes_on_a_256_slice_give_the_compact_token_count() -> None:
    enc = ConditionEncoder(ConditionConfig(patch_sizes=(64, 32, 16), dim=8, depth=1, heads=1))
    with torch.no_grad():
        assert enc(torch.rand(1, 1, 256, 256)).shape == (1, 336, 8)
    assert ConditionConfig().num_tokens(64, 64) == 336


def test_grid_defaults_to_the_last_forward_and_needs_one() -> None:
    enc, _ = small()
    with pytest.raises(RuntimeError):
        enc.grid(0)
    assert enc.grid(-1, 32, 64) == (8, 16)
    with torch.no_grad():
        enc(torch.rand(1, 1, 32, 64))
    assert enc.grid(0) == (2, 4) and enc.grid(2) == (8, 16)
    with pytest.raises(IndexError):
        enc.grid(3)
    with pytest.raises(ValueError):
        enc.grid(0, 32)  # height without width


@pytest.mark.parametrize("shape", [(1, 1, 60, 64), (1, 1, 64, 72), (1, 1, 8, 16), (1, 2, 64, 64), (1, 64, 64),
                                   (1, 1, 1, 64, 64)])
def test_sizes_not_fitting_the_largest_patch_are_rejected(shape) -> None:
    enc, _ = small()
    with pytest.raises(ValueError):
        enc(torch.rand(shape))


@pytest.mark.parametrize("kwargs", [
    dict(patch_sizes=()), dict(patch_sizes=(16, 6)), dict(patch_sizes=(8, 8, 4)), dict(patch_sizes=(8, 0)),
    dict(patch_sizes=(8.0, 4)), dict(dim=18, heads=2), dict(dim=12, heads=8), dict(depth=0), dict(heads=0),
    dict(mlp_ratio=0.0), dict(dropout=1.0), dict(in_channels=True),
])
def test_condition_config_validation(kwargs) -> None:
    with pytest.raises(ValueError):
        ConditionConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(n_experts=0), dict(dim=0), dict(scale_init=0.0), dict(scale_init=200.0), dict(max_scale=0.5),
    dict(gamma=-0.1), dict(usage_decay=1.0), dict(usage_decay=-0.1), dict(mlp_ratio=-1.0),
    dict(learn_scale=1), dict(gamma=float("nan")),
])
def test_gating_config_validation(kwargs) -> None:
    with pytest.raises(ValueError):
        GatingConfig(**kwargs)


def test_configs_round_trip_through_to_dict() -> None:
    c = ConditionConfig(patch_sizes=(8, 4, 2), dim=32)
    assert ConditionConfig(**c.to_dict()) == c
    assert c.to_dict()["patch_sizes"] == [8, 4, 2]
    g = GatingConfig(n_experts=4, gamma=0.2)
    assert GatingConfig(**g.to_dict()) == g
    assert ConditionConfig().finest == 2 and ConditionConfig(patch_sizes=(4, 16, 8)).finest == 0


def test_wrong_token_shapes_are_rejected() -> None:
    enc, gate = small()
    z = enc(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError):
        gate(torch.rand(1, 336, 8))  # wrong dim
    with pytest.raises(ValueError):
        enc.finest_tokens_map(z[:, :-1], 64, 64)
    with pytest.raises(ValueError):
        gate.gates(z, spatial=True)  # spatial gates need the encoder's grid
    with pytest.raises(ValueError):
        gate.update_usage(torch.full((1, 2), 0.5))


# ---- position and locality --------------------------------------------------------------------------


def test_position_embedding_aligns_scales_and_separates_positions() -> None:
    enc, _ = small((16, 8, 4), dim=16)
    pos = enc.position_embedding(32, 32)  # scales: 2x2, 4x4, 8x8 tokens
    assert pos.shape == (4 + 16 + 64, 16)
    fine = pos[20:].reshape(8, 8, 16)
    assert torch.unique(pos, dim=0).shape[0] == pos.shape[0]  # every token has its own code
    # the coarsest token (0, 0) covers fine tokens (0..3, 0..3): its centre is theirs, (2, 2) in fine units
    assert torch.allclose(pos[0], sincos_position_embedding(torch.tensor([2.0]), torch.tensor([2.0]), 16)[0])
    assert torch.allclose(fine[1, 2], sincos_position_embedding(torch.tensor([1.5]), torch.tensor([2.5]), 16)[0])


def test_moving_a_bright_block_changes_the_tokens_of_that_region_most() -> None:
    torch.manual_seed(0)
    enc, _ = small((16, 8, 4), dim=32)
    enc.eval()
    base = 0.1 * torch.rand(1, 1, 64, 64)
    a, b = base.clone(), base.clone()
    a[..., 8:16, 8:16] += 1.0  # fine tokens (2..3, 2..3)
    b[..., 44:52, 44:52] += 1.0  # fine tokens (11..12, 11..12)
    with torch.no_grad():
        za, zb = enc(a), enc(b)
    assert not torch.allclose(za, zb)
    diff = (enc.finest_tokens_map(za, 64, 64) - enc.finest_tokens_map(zb, 64, 64)).norm(dim=1)[0]  # (16, 16)
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[2:4, 2:4] = region[11:13, 11:13] = True
    assert diff[region].min() > 2 * diff[~region].mean()
    # identical content at another place is not the same token: the encoder knows where a token is
    flat = torch.full((1, 1, 64, 64), 0.5)
    with torch.no_grad():
        fmap = enc.finest_tokens_map(enc(flat), 64, 64)[0]
    assert (fmap[:, 0, 0] - fmap[:, 15, 15]).norm() > 0.1 * fmap[:, 0, 0].norm()


# ---- Eq. 2-4 ----------------------------------------------------------------------------------------


def eq2_eq3_by_hand(zt: torch.Tensor, q: torch.Tensor, tau: float) -> torch.Tensor:
    """Score_i of Eq. 2-3 with explicit loops over experts and tokens; ``zt (N, d)``, ``q (K, d)``."""
    k, n = q.shape[0], zt.shape[0]
    scores = torch.zeros(k, dtype=torch.float64)
    for i in range(k):
        cos = [tau * float(q[i] @ zt[m]) / (float(q[i].norm()) * float(zt[m].norm())) for m in range(n)]
        denom = sum(math.exp(c) for c in cos)
        scores[i] = sum(math.exp(c) / denom * c for c in cos)
    return scores


@pytest.mark.parametrize("scale_init,learn_scale", [(1.0, False), (4.0, True), (2.5, False)])
def test_scores_equal_a_hand_computation_of_eq_2_and_3(scale_init, learn_scale) -> None:
    torch.manual_seed(1)
    enc, gate = small((16, 8), dim=16, scale_init=scale_init, learn_scale=learn_scale)
    with torch.no_grad():
        gate.log_scale.add_(0.3 if learn_scale else 0.0)  # a learned scale away from its start
        z = enc(torch.rand(2, 1, 32, 32))
        scores = gate(z)
        zt = gate.refine(z)
        tau = float(gate.scale)
    assert tau == pytest.approx(scale_init * (math.exp(0.3) if learn_scale else 1.0))
    for b in range(2):
        expected = eq2_eq3_by_hand(zt[b].double(), gate.queries.detach().double(), tau)
        assert torch.allclose(scores[b].double(), expected, atol=1e-5)
    # with tau = 1 the scores are attention-weighted cosines: inside [-1, 1]
    if scale_init == 1.0:
        assert scores.abs().max() <= 1.0


def test_learned_scale_is_clamped() -> None:
    _, gate = small(scale_init=4.0, max_scale=10.0)
    with torch.no_grad():
        gate.log_scale.fill_(5.0)
        assert float(gate.scale) == pytest.approx(10.0)
        gate.log_scale.fill_(-3.0)
        assert float(gate.scale) == pytest.approx(1.0)


def test_gates_are_distributions_and_follow_eq_4() -> None:
    torch.manual_seed(2)
    enc, gate = small(k=4)
    with torch.no_grad():
        gate.usage.copy_(torch.tensor([0.7, 0.1, 0.1, 0.1]))
        z = enc(torch.rand(3, 1, 64, 64))
        g = gate.gates(z)
        gs = gate.gates(z, spatial=True, encoder=enc)
        scores, spatial = gate(z), gate.spatial_scores(z, enc)
    assert torch.allclose(g.sum(1), torch.ones(3), atol=1e-6) and (g >= 0).all()
    assert gs.shape == (3, 4, 16, 16)
    assert torch.allclose(gs.sum(1), torch.ones(3, 16, 16), atol=1e-6) and (gs >= 0).all()
    # Eq. 4 as printed, renormalised
    printed = torch.softmax(scores, 1) * torch.softmax(-0.1 * gate.usage, 0)
    assert torch.allclose(g, printed / printed.sum(1, keepdim=True), atol=1e-6)
    printed_s = torch.softmax(spatial, 1) * torch.softmax(-0.1 * gate.usage, 0)[:, None, None]
    assert torch.allclose(gs, printed_s / printed_s.sum(1, keepdim=True), atol=1e-6)
    # the spatial scores are the finest scale's per-token scores
    fine = enc.token_slices()[enc.cfg.finest]
    assert torch.allclose(spatial.flatten(2), gate.token_scores(z)[:, :, fine])


def test_usage_updates_only_in_training_and_stays_a_distribution() -> None:
    torch.manual_seed(3)
    enc, gate = small()
    assert torch.allclose(gate.usage, torch.full((3,), 1 / 3))
    assert "usage" in gate.state_dict()
    z = enc(torch.rand(4, 1, 64, 64)).detach()
    gate.eval()
    g = gate.gates(z)
    gate.update_usage(g)
    gate.update_usage(gate.gates(z, spatial=True, encoder=enc))
    assert torch.allclose(gate.usage, torch.full((3,), 1 / 3))  # eval: untouched
    gate.train()
    before = gate.usage.clone()
    out = gate.update_usage(g)
    assert out is gate.usage
    assert torch.allclose(gate.usage, 0.99 * before + 0.01 * g.detach().mean(0))
    assert not torch.equal(gate.usage, before)
    for _ in range(50):
        gate.update_usage(gate.gates(z, spatial=True, encoder=enc))
        gate.update_usage(torch.eye(3)[torch.randint(0, 3, (5,))])
    assert torch.allclose(gate.usage.sum(), torch.tensor(1.0), atol=1e-5) and (gate.usage >= 0).all()
    assert not gate.usage.requires_grad


# ---- gradients and learning -------------------------------------------------------------------------


def test_gradient_reaches_queries_scale_and_every_patch_embedding() -> None:
    torch.manual_seed(4)
    enc, gate = small()
    z = enc(torch.rand(2, 1, 64, 64))
    loss = gate.gates(z)[:, 0].sum() + gate.gates(z, spatial=True, encoder=enc)[:, 1].mean()
    loss.backward()
    for name, p in [("queries", gate.queries), ("log_scale", gate.log_scale), ("scale_embed", enc.scale_embed)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for s, proj in enumerate(enc.embeds):
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0, s
    _, fixed = small(learn_scale=False, scale_init=1.0)
    assert "log_scale" not in dict(fixed.named_parameters()) and "log_scale" in fixed.state_dict()


def test_parameter_count_of_the_compact_config() -> None:
    d, h, k = 64, 128, 3  # ConditionConfig() / GatingConfig(): dim 64, mlp ratio 2, 2 blocks, 3 experts
    embeds = sum(p * p * d + d for p in (16, 8, 4)) + 3 * d
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * h + h + h * d + d)
    encoder = embeds + 2 * block + 2 * d
    gating = (d * h + h + h * d + d) + k * d + 1
    assert count_parameters(ConditionEncoder()) == encoder == 88960
    assert count_parameters(GatingNetwork()) == gating == 16769


def left_right_batch(n: int, gen: torch.Generator, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices with a bright left half (label 0) or right half (label 1) of random brightness, over noise."""
    labels = torch.randint(0, 2, (n,), generator=gen)
    y = 0.3 * torch.rand(n, 1, size, size, generator=gen)
    level = (0.4 + 0.6 * torch.rand(n, 1, 1, generator=gen))
    left = torch.zeros(n, 1, size, size, dtype=torch.bool)
    left[..., : size // 2] = True
    bright = torch.where(labels[:, None, None, None] == 0, left, ~left)
    return y + bright * level[..., None], labels


def test_gating_learns_to_route_left_and_right_bright_slices() -> None:
    # left- and right-bright slices are (up to noise) token permutations of each other, and
    # attention and Eq. 2-3 pooling are permutation invariant: only the position embedding
    # separates them (with it zeroed this reaches ~0.5 accuracy)
    torch.manual_seed(5)
    enc, gate = small((16, 8, 4), dim=32)
    params = list(enc.parameters()) + list(gate.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    gen = torch.Generator().manual_seed(6)
    enc.train()
    gate.train()
    for _ in range(120):
        y, labels = left_right_batch(16, gen)
        g = gate.gates(enc(y))
        gate.update_usage(g)
        loss = F.nll_loss(torch.log(g.clamp_min(1e-8)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    gate.eval()
    y, labels = left_right_batch(200, torch.Generator().manual_seed(7))
    with torch.no_grad():
        g = gate.gates(enc(y))
    assert (g.argmax(1) == labels).float().mean() > 0.9
    assert torch.allclose(gate.usage.sum(), torch.tensor(1.0), atol=1e-5)
