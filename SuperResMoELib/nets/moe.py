"""Mixtures of experts on the SR U-Net: SS-MoE (hard routing by a gater that
sees the encoder's bottleneck and the acquisition parameters) and the Hard-MoE
baseline (soft mixture of decoder heads, trained end to end).

Shapes: LR patches ``x`` are ``(B, 1, *lr_patch)``, acquisition parameters
``a`` are ``(B, P)`` in physical units (``gx gy gz b TI TE``; z-scored inside
the gater with statistics stored as buffers), outputs ``(B, 1, *hr_patch)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from SuperResMoELib.nets.blocks import glorot_init, mlp
from SuperResMoELib.nets.srunet import (
    Features,
    SkipPath,
    SRDecoder,
    SREncoder,
    SRUNet,
    SRUNetConfig,
    UpPath,
    encode_normalised,
    finish_output,
    zero_output,
)

#: Hidden sizes of the gater MLP (reference: 256-128-64).
GATER_HIDDEN: tuple[int, ...] = (256, 128, 64)
#: Number of acquisition parameters (gx gy gz b TI TE).
N_ACQ_PARAMS = 6


class Gater(nn.Module):
    """``GAP(bottleneck) ++ zscore(a) -> MLP -> K`` logits.

    Args:
        feat_channels: bottleneck channels ``C``.
        n_experts: ``K``.
        n_params: acquisition parameters ``P`` (0: features only, as Hard-MoE).
        hidden: MLP hidden sizes.

    Forward: ``bottleneck (B, C, k, j, i)``, ``a (B, P)`` -> ``(B, K)`` logits.
    """

    def __init__(self, feat_channels: int, n_experts: int, n_params: int = N_ACQ_PARAMS,
                 hidden: Sequence[int] = GATER_HIDDEN) -> None:
        super().__init__()
        self.n_params = n_params
        self.mlp = mlp([feat_channels + n_params, *hidden], n_experts)
        self.param_mean: torch.Tensor
        self.param_std: torch.Tensor
        self.register_buffer("param_mean", torch.zeros(n_params))
        self.register_buffer("param_std", torch.ones(n_params))

    def set_param_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """z-score statistics of the acquisition parameters (std 0 -> 1)."""
        self.param_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        s = torch.as_tensor(std, dtype=torch.float32)
        self.param_std.copy_(torch.where(s > 0, s, torch.ones_like(s)))

    def forward(self, bottleneck: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        feat = bottleneck.mean(dim=(2, 3, 4))
        if self.n_params:
            if params is None:
                raise ValueError("this gater needs acquisition parameters (B, %d)" % self.n_params)
            z = (params.to(feat.dtype) - self.param_mean) / self.param_std
            feat = torch.cat([feat, z], dim=1)
        return self.mlp(feat)


class SSMoE(nn.Module):
    """Shared (frozen) encoder, gater, ``K`` expert decoders; hard routing.

    ``forward(x, a)`` encodes once, routes each patch to ``argmax`` of the
    gater (or ``expert`` when given) and decodes each group with its expert.
    Returns ``(y (B, 1, *hr_patch), labels (B,))``.
    """

    def __init__(self, cfg: SRUNetConfig, n_experts: int, n_params: int = N_ACQ_PARAMS) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SREncoder(cfg)
        self.gater = Gater(cfg.bottleneck_channels, n_experts, n_params)
        self.experts = nn.ModuleList([SRDecoder(cfg) for _ in range(n_experts)])
        self.freeze_encoder = True
        glorot_init(self)

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    @classmethod
    def from_baseline(cls, baseline: SRUNet, n_experts: int, n_params: int = N_ACQ_PARAMS) -> "SSMoE":
        """Encoder and every expert initialised from a trained baseline."""
        model = cls(baseline.cfg, n_experts, n_params)
        model.encoder.load_state_dict(baseline.encoder.state_dict())
        for expert in model.experts:
            expert.load_state_dict(baseline.decoder.state_dict())
        return model

    def train(self, mode: bool = True) -> "SSMoE":
        """Training mode for gater/experts; the encoder stays in eval mode when
        frozen, so its batch-norm statistics do not move."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def encode(self, x: torch.Tensor) -> tuple[Features, torch.Tensor, torch.Tensor | None]:
        """:func:`~SuperResMoELib.nets.srunet.encode_normalised` with this
        mixture's encoder: ``(features, normalised input, scale)``."""
        return encode_normalised(self.encoder, x, self.cfg)

    def route(self, x: torch.Tensor, params: torch.Tensor | None) -> tuple[Features, torch.Tensor]:
        """Encoder features and gater logits ``(B, K)``."""
        feats = self.encode(x)[0]
        return feats, self.gater(feats.bottleneck, params)

    def decode(self, feats: Features, labels: torch.Tensor) -> torch.Tensor:
        """Each patch through the expert ``labels[b]``; ``(B, 1, *hr_patch)``."""
        out = None
        for k in torch.unique(labels).tolist():
            idx = (labels == k).nonzero(as_tuple=True)[0]
            sub = Features(tuple(s[idx] for s in feats.skips), feats.bottleneck[idx])
            y = self.experts[int(k)](sub)
            if out is None:
                out = y.new_zeros((labels.shape[0],) + tuple(y.shape[1:]))
            out[idx] = y
        assert out is not None
        return out

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None,
                expert: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats, xn, scale = self.encode(x)
        if expert is None:
            labels = self.gater(feats.bottleneck, params).argmax(dim=1)
        else:
            labels = torch.full((x.shape[0],), int(expert), dtype=torch.long, device=x.device)
        return finish_output(self.decode(feats, labels), xn, scale, self.cfg), labels


class HardMoE(nn.Module):
    """Hard-MoE baseline (Gross et al. 2017 as built in the SS-MoE reference):
    shared encoder and skip blocks, a gater on the bottleneck only (no
    acquisition parameters), ``K`` expanding-path heads mixed by the gater's
    softmax. ``forward(x, expert=None) -> (y (B, 1, *hr_patch), weights (B, K))``."""

    def __init__(self, cfg: SRUNetConfig, n_experts: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SREncoder(cfg)
        self.skips = SkipPath(cfg)
        self.gater = Gater(cfg.bottleneck_channels, n_experts, n_params=0)
        self.heads = nn.ModuleList([UpPath(cfg) for _ in range(n_experts)])
        glorot_init(self)
        if cfg.residual != "none":
            for head in self.heads:
                zero_output(head)  # type: ignore[arg-type]  # ModuleList items are UpPath

    @classmethod
    def from_baseline(cls, baseline: SRUNet, n_experts: int) -> "HardMoE":
        """Encoder and skip blocks from a trained baseline, every head from its
        expanding path; the gater keeps its random start. Until training moves
        the heads apart, the mixture equals the baseline's output."""
        model = cls(baseline.cfg, n_experts)
        model.encoder.load_state_dict(baseline.encoder.state_dict())
        model.skips.load_state_dict(baseline.decoder.skips.state_dict())
        for head in model.heads:
            head.load_state_dict(baseline.decoder.up.state_dict())
        return model

    def forward(self, x: torch.Tensor, expert: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, weights)``: the gater's softmax mixture of the heads, or with
        ``expert`` only that head (``weights`` one-hot); the global residual
        (when configured) is added either way."""
        feats, xn, scale = encode_normalised(self.encoder, x, self.cfg)
        skips = self.skips(feats.skips)
        if expert is not None:
            if not 0 <= int(expert) < len(self.heads):
                raise ValueError(f"expert {expert} out of range 0..{len(self.heads) - 1}")
            y = self.heads[int(expert)](skips, feats.bottleneck)
            weights = torch.zeros((x.shape[0], len(self.heads)), dtype=y.dtype, device=x.device)
            weights[:, int(expert)] = 1.0
            return finish_output(y, xn, scale, self.cfg), weights
        weights = torch.softmax(self.gater(feats.bottleneck), dim=1)
        ys = torch.stack([head(skips, feats.bottleneck) for head in self.heads], dim=1)  # (B, K, 1, ...)
        y = (weights.view(weights.shape + (1,) * (ys.ndim - 2)) * ys).sum(dim=1)
        return finish_output(y, xn, scale, self.cfg), weights
