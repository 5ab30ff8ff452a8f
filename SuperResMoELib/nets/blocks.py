"""Small composable 3D blocks (tensors are ``(B, C, K, J, I)``).

Conventions follow the SS-MoE reference (Keras) where that matters for
reproducing it: convolutions use zero "same" padding and a bias, batch
normalisation uses Keras' defaults (``momentum 0.99`` = PyTorch ``0.01``,
``eps 1e-3``), and every block is conv -> ReLU -> BN.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: Keras BatchNormalization defaults expressed for PyTorch.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3

Size3 = int | tuple[int, int, int]


def _triple(v: Size3) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(int(x) for x in v)  # type: ignore[return-value]


def bn(channels: int) -> nn.BatchNorm3d:
    """Batch norm with the reference's Keras defaults."""
    return nn.BatchNorm3d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvReluBN(nn.Sequential):
    """``Conv3d(k, same padding) -> ReLU -> BN``; ``(B, C_in, ...) -> (B, C_out, ...)``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3) -> None:
        super().__init__(nn.Conv3d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU(inplace=True), bn(c_out))


class ResidualBlock(nn.Module):
    """Residual block of the SR U-Net variant.

    ``out = BN(ReLU(proj(x) + F(x)))`` with ``proj`` a 1x1x1 convolution and
    ``F`` = ``n_convs`` x [3x3x3 conv -> ReLU -> BN], the first reading ``x``.
    Shape: ``(B, c_in, K, J, I) -> (B, c_out, K, J, I)``.
    """

    def __init__(self, c_in: int, c_out: int, n_convs: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv3d(c_in, c_out, 1)
        self.body = nn.Sequential(*[ConvReluBN(c_in if n == 0 else c_out, c_out) for n in range(n_convs)])
        self.act = nn.ReLU(inplace=True)
        self.norm = bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.proj(x) + self.body(x)))


class FSRCNNSkip(nn.Module):
    """FSRCNN-style skip block: shrink -> map -> expand, residual, then a
    transposed convolution with ``kernel = stride = scale`` (no overlap).

    Shrink ``1x1x1 (C -> C/2)``, ``n_map`` x ``3x3x3 (C/2)``, expand
    ``1x1x1 (C/2 -> C)``, each conv -> ReLU -> BN; ``y = x + expand``; then
    ``ConvTranspose3d(C, C, scale, stride=scale)``.
    Shape: ``(B, C, K, J, I) -> (B, C, K*sk, J*sj, I*si)``.
    """

    def __init__(self, channels: int, scale: Size3 = 1, n_map: int = 2) -> None:
        super().__init__()
        half = max(1, channels // 2)
        self.shrink = ConvReluBN(channels, half, 1)
        self.map = nn.Sequential(*[ConvReluBN(half, half) for _ in range(n_map)])
        self.expand = ConvReluBN(half, channels, 1)
        s = _triple(scale)
        self.up = nn.ConvTranspose3d(channels, channels, s, stride=s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x + self.expand(self.map(self.shrink(x))))


def up_conv(c_in: int, c_out: int, scale: Size3 = 2) -> nn.ConvTranspose3d:
    """Transposed convolution with ``kernel = stride = scale`` (no overlap)."""
    s = _triple(scale)
    return nn.ConvTranspose3d(c_in, c_out, s, stride=s)


def glorot_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every (transposed) convolution and
    linear layer, as Keras' defaults used by the SS-MoE reference."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def keras_style_parameter_count(module: nn.Module) -> int:
    """Parameters as Keras counts them: trainable weights plus the batch-norm
    moving mean and variance (not ``num_batches_tracked``)."""
    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None \
                and m.running_var is not None:
            n += m.running_mean.numel() + m.running_var.numel()
    return n


def mlp(sizes: Sequence[int], out: int) -> nn.Sequential:
    """``Linear -> ReLU -> BatchNorm1d`` for each hidden size, then ``Linear(out)``
    (logits). Shape ``(B, sizes[0]) -> (B, out)``."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.BatchNorm1d(b, eps=BN_EPS, momentum=BN_MOMENTUM)]
    layers.append(nn.Linear(sizes[-1], out))
    return nn.Sequential(*layers)
