"""The SR U-Net variant used as SS-MoE's backbone, split into an encoder and
a decoder so that a mixture of experts can share the encoder.

Tensors are ``(B, C, K, J, I)``; the through-plane axis of the anisotropic task
is ``K`` (the slice axis, first in KJI order).

* ``iso`` (x2 on every axis): LR ``8^3`` -> HR ``16^3``. Encoder:
  ``E1 = Res(1 -> 2w)`` at 8^3, max-pool 2, ``E2 = Res(2w -> 4w)`` and the
  bottleneck ``B = Res(4w -> 4w)`` at 4^3. Decoder: FSRCNN skip on E1
  (transposed conv of scale 1), ``ConvT2(4w -> 2w)`` to 8^3, concat skip,
  ``D1 = Res(4w -> 2w)``, ``ConvT2(2w -> w)`` to 16^3 (the only x2),
  ``D0 = Res(w -> w)``, ``Conv1(w -> 1)``.
* ``aniso`` (x2 along K): LR ``8 x 16 x 16`` -> HR ``16^3``. Encoder:
  ``E1 = Res(1 -> w)`` at 8x16x16, max-pool (1,2,2), ``E2 = Res(w -> 2w)`` at
  8^3, max-pool 2, ``E3 = Res(2w -> 4w)`` and ``B = Res(4w -> 4w)`` at 4^3.
  Decoder: skip1 = FSRCNN on E1 with ``ConvT k = s = (2,1,1)`` (the through-plane
  x2), skip2 = FSRCNN on E2 (scale 1), ``ConvT2(4w -> 2w)`` + skip2,
  ``D2 = Res(4w -> 2w)``, ``ConvT2(2w -> w)`` + skip1, ``D1 = Res(2w -> w)``,
  ``Conv1(w -> 1)``.

With the reference width ``w = 64`` the parameter counts (Keras-style, batch-norm
moving statistics included) are 8,918,657 (iso) and 9,440,929 (aniso).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from SuperResMoELib.core.tasks import SR_TASKS
from SuperResMoELib.nets.blocks import FSRCNNSkip, ResidualBlock, glorot_init, up_conv

#: Tasks -> (LR patch, HR patch, SR factors along (K, J, I)), from :data:`SR_TASKS`.
TASKS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]] = {
    name: (t.lr_patch, t.hr_patch, t.zoom) for name, t in SR_TASKS.items()
}


#: Global residual options of the SR U-Net.
RESIDUALS: tuple[str, ...] = ("none", "linear")


def residual_upsample(x: torch.Tensor, cfg: "SRUNetConfig") -> torch.Tensor | None:
    """The global residual added to the output: ``None`` or the trilinear
    upsampling of ``x`` by the task's zoom (``align_corners=False``: voxel
    edges aligned, as :func:`SuperResMoELib.core.geometry.scaled_grid`)."""
    if cfg.residual == "none":
        return None
    return F.interpolate(x, scale_factor=cfg.zoom, mode="trilinear", align_corners=False)


def add_residual(y: torch.Tensor, x: torch.Tensor, cfg: "SRUNetConfig") -> torch.Tensor:
    """``y`` plus the configured global residual of the input ``x``."""
    r = residual_upsample(x, cfg)
    return y if r is None else y + r


#: Input normalisation options (beyond the paper): ``"none"`` or ``"patch"``.
NORMALIZATIONS: tuple[str, ...] = ("none", "patch")
#: Added to a patch's mean absolute intensity (network units) before dividing
#: by it, so that an empty background patch is not blown up from noise alone.
SCALE_FLOOR = 0.01


def patch_scale(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 1, 1, 1)`` scale of each patch of ``x (B, C, K, J, I)``: its
    mean absolute intensity plus :data:`SCALE_FLOOR`."""
    return x.abs().mean(dim=tuple(range(1, x.ndim)), keepdim=True) + SCALE_FLOOR


def normalise_input(x: torch.Tensor, cfg: "SRUNetConfig") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x / s, s)`` with ``s`` = :func:`patch_scale` under ``normalize:
    "patch"``, else ``(x, None)``. The network then sees every patch at unit
    brightness whatever the contrast, b-value or scanner gain."""
    if cfg.normalize == "none":
        return x, None
    s = patch_scale(x)
    return x / s, s


def finish_output(y: torch.Tensor, xn: torch.Tensor, scale: torch.Tensor | None,
                  cfg: "SRUNetConfig") -> torch.Tensor:
    """A decoder output ``y`` (normalised units) plus the global residual of
    the normalised input ``xn``, back in the input's units (times ``scale``).
    The network as a whole is then equivariant to the patch's brightness:
    ``f(c x) = c f(x)`` for ``c > 0`` up to :data:`SCALE_FLOOR`."""
    out = add_residual(y, xn, cfg)
    return out if scale is None else out * scale


@dataclass(frozen=True)
class SRUNetConfig:
    """Architecture of the SR U-Net variant.

    Attributes:
        task: ``"iso"`` or ``"aniso"`` (see the module docstring).
        width: base width ``w`` (reference 64; compact checkpoints use less).
        n_convs: 3x3x3 convolutions per residual block (reference 2).
        n_map: mapping layers in each FSRCNN skip block (reference 2).
        channels: input/output channels (1: one volume at a time).
        residual: ``"none"`` (the reference: the network outputs the HR patch)
            or ``"linear"``: the network adds a correction to the trilinear
            upsampling of its input (edge-aligned, as the SR grid), which
            trains far faster (the compact CPU configuration uses it).
        normalize: ``"none"`` (the reference) or ``"patch"`` (beyond the
            paper): each input patch is divided by its mean absolute
            intensity (:func:`patch_scale`) and the output multiplied back,
            so the network does not depend on the data's brightness.
    """

    task: str = "iso"
    width: int = 64
    n_convs: int = 2
    n_map: int = 2
    channels: int = 1
    residual: str = "none"
    normalize: str = "none"

    def __post_init__(self) -> None:
        if self.residual not in RESIDUALS:
            raise ValueError(f"unknown residual {self.residual!r}; choose one of {RESIDUALS}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize {self.normalize!r}; choose one of {NORMALIZATIONS}")
        if self.task not in TASKS:
            raise ValueError(f"unknown SR U-Net task {self.task!r}; choose one of {sorted(TASKS)}")
        if self.width < 2:
            raise ValueError(f"width must be at least 2, got {self.width}")

    @property
    def lr_patch(self) -> tuple[int, int, int]:
        return TASKS[self.task][0]

    @property
    def hr_patch(self) -> tuple[int, int, int]:
        return TASKS[self.task][1]

    @property
    def zoom(self) -> tuple[int, int, int]:
        """SR factors along ``(K, J, I)``."""
        return TASKS[self.task][2]

    @property
    def bottleneck_channels(self) -> int:
        return 4 * self.width

    def to_dict(self) -> dict:
        return asdict(self)


def zero_output(up: "UpPath") -> None:
    """Zero the output convolution: a residual network then starts as the plain
    interpolation and learns a correction."""
    nn.init.zeros_(up.out.weight)
    if up.out.bias is not None:
        nn.init.zeros_(up.out.bias)


class Features(NamedTuple):
    """Encoder output: skip activations (shallow first) and the bottleneck
    ``(B, 4w, 4, 4, 4)``."""

    skips: tuple[torch.Tensor, ...]
    bottleneck: torch.Tensor


class SREncoder(nn.Module):
    """``(B, C, *lr_patch) -> Features``."""

    def __init__(self, cfg: SRUNetConfig) -> None:
        super().__init__()
        w, n = cfg.width, cfg.n_convs
        if cfg.task == "iso":
            self.levels = nn.ModuleList([ResidualBlock(cfg.channels, 2 * w, n), ResidualBlock(2 * w, 4 * w, n)])
            self.pools = nn.ModuleList([nn.MaxPool3d(2)])
        else:
            self.levels = nn.ModuleList([ResidualBlock(cfg.channels, w, n), ResidualBlock(w, 2 * w, n),
                                         ResidualBlock(2 * w, 4 * w, n)])
            self.pools = nn.ModuleList([nn.MaxPool3d((1, 2, 2)), nn.MaxPool3d(2)])
        self.bottleneck = ResidualBlock(4 * w, 4 * w, n)

    def forward(self, x: torch.Tensor) -> Features:
        skips = []
        for n, level in enumerate(self.levels):
            x = level(x)
            if n < len(self.pools):
                skips.append(x)
                x = self.pools[n](x)
        return Features(tuple(skips), self.bottleneck(x))


def encode_normalised(encoder: SREncoder, x: torch.Tensor,
                      cfg: SRUNetConfig) -> tuple[Features, torch.Tensor, torch.Tensor | None]:
    """``(features, normalised input, scale)`` of ``x (B, 1, *lr_patch)``
    (:func:`normalise_input`; ``normalize: "none"``: ``x`` itself and
    ``None``); finish a decoder output with :func:`finish_output`."""
    xn, scale = normalise_input(x, cfg)
    return encoder(xn), xn, scale


class SkipPath(nn.Module):
    """FSRCNN skip blocks applied to the encoder's skip activations."""

    def __init__(self, cfg: SRUNetConfig) -> None:
        super().__init__()
        w, m = cfg.width, cfg.n_map
        if cfg.task == "iso":
            self.blocks = nn.ModuleList([FSRCNNSkip(2 * w, 1, m)])
        else:
            self.blocks = nn.ModuleList([FSRCNNSkip(w, (2, 1, 1), m), FSRCNNSkip(2 * w, 1, m)])

    def forward(self, skips: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(block(s) for block, s in zip(self.blocks, skips))


class UpPath(nn.Module):
    """Expanding path: transposed convolutions, residual blocks, the 1x1x1 output."""

    def __init__(self, cfg: SRUNetConfig) -> None:
        super().__init__()
        w, n = cfg.width, cfg.n_convs
        self.task = cfg.task
        if cfg.task == "iso":
            self.ups = nn.ModuleList([up_conv(4 * w, 2 * w), up_conv(2 * w, w)])
            self.blocks = nn.ModuleList([ResidualBlock(4 * w, 2 * w, n), ResidualBlock(w, w, n)])
        else:
            self.ups = nn.ModuleList([up_conv(4 * w, 2 * w), up_conv(2 * w, w)])
            self.blocks = nn.ModuleList([ResidualBlock(4 * w, 2 * w, n), ResidualBlock(2 * w, w, n)])
        self.out = nn.Conv3d(w, cfg.channels, 1)

    def forward(self, skips: tuple[torch.Tensor, ...], bottleneck: torch.Tensor) -> torch.Tensor:
        x = bottleneck
        # deepest skip first; iso has one skip (used at the first level only)
        pending = list(reversed(skips))
        for up, block in zip(self.ups, self.blocks):
            x = up(x)
            if pending:
                x = torch.cat([x, pending.pop(0)], dim=1)
            x = block(x)
        return self.out(x)


class SRDecoder(nn.Module):
    """Skip blocks + expanding path: ``Features -> (B, C, *hr_patch)``."""

    def __init__(self, cfg: SRUNetConfig) -> None:
        super().__init__()
        self.skips = SkipPath(cfg)
        self.up = UpPath(cfg)

    def forward(self, features: Features) -> torch.Tensor:
        return self.up(self.skips(features.skips), features.bottleneck)


class SRUNet(nn.Module):
    """Encoder + decoder: ``(B, C, *lr_patch) -> (B, C, *hr_patch)``.

    Works on any input whose ``K, J, I`` sizes are multiples of the pooling
    (iso: 2; aniso: K any, J and I multiples of 4... in practice the task's
    patch); outputs are ``zoom`` times larger.
    """

    def __init__(self, cfg: SRUNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SREncoder(cfg)
        self.decoder = SRDecoder(cfg)
        glorot_init(self)
        if cfg.residual != "none":
            zero_output(self.decoder.up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, xn, scale = encode_normalised(self.encoder, x, self.cfg)
        return finish_output(self.decoder(feats), xn, scale, self.cfg)
