"""The REMIx network: a volumetric U-Net with a final residual connection
(paper 002, section 2: "a modified version of the volumetric U-net ...
incorporating a residual connection at the end of the network").

Input and output live on the same (target) grid: the input is the LR scan
already resampled onto it, the output is ``input + correction``.  Tensors are
``(B, C, K, J, I)``; each spatial size must be a multiple of
``2 ** (levels - 1)`` (:attr:`UNet3DConfig.multiple`).

Architecture (``w`` = width, ``L`` = levels)::

    level l = 0..L-1:  block(w * 2**l)   (convs x [Conv3 -> norm -> LeakyReLU])
    down:   MaxPool 2                    up: ConvTranspose k = s = 2, concat skip
    out:    Conv1(w -> C), initialised to zero, added to the input

The zero-initialised output makes an untrained network the identity: training
starts from the interpolated input, as the residual design intends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

#: Normalisation layers a config may name.
NORMS: tuple[str, ...] = ("none", "instance", "batch")
#: Negative slope of the LeakyReLU activations.
LEAKY_SLOPE: float = 0.1


@dataclass(frozen=True)
class UNet3DConfig:
    """Shape of a :class:`ResidualUNet3D`.

    Attributes:
        width: channels of the first level (doubles per level).
        levels: resolution levels (``levels - 1`` poolings).
        convs: convolutions per block.
        norm: ``"none"``, ``"instance"`` or ``"batch"``.
        channels: image channels in and out.
    """

    width: int = 16
    levels: int = 3
    convs: int = 2
    norm: str = "none"
    channels: int = 1

    def __post_init__(self) -> None:
        if self.width < 1 or self.levels < 1 or self.convs < 1 or self.channels < 1:
            raise ValueError(f"U-Net width, levels, convs and channels must be >= 1, got {self}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")

    @property
    def multiple(self) -> int:
        """Spatial sizes must be multiples of this."""
        return 2 ** (self.levels - 1)

    @property
    def reach(self) -> int:
        """Input voxels on each side that one output voxel can depend on: the
        receptive field's half-width, counting every pooling cell and
        transposed-convolution cell at its worst alignment (an upper bound,
        checked against the gradients' support in the tests)."""
        r = self.convs  # level 0: 3^3 convolutions
        for level in range(1, self.levels):
            r += 2 ** (level - 1) + self.convs * 2 ** level  # pooling cell, then the level's convolutions
        for level in range(self.levels - 1, 0, -1):
            r += 2 ** (level - 1) * (1 + self.convs)  # transposed-conv cell, then the merge block
        return r

    @property
    def halo(self) -> int:
        """:attr:`reach` rounded up to :attr:`multiple`: the halo of a
        halo-crop tile whose interior equals a whole-volume pass.  An
        instance-normalised network has none (its output depends on the
        whole tile): ``-1``."""
        if self.norm == "instance":
            return -1
        m = self.multiple
        return -(-self.reach // m) * m

    def bytes_per_voxel(self, channels_last: bool = True) -> float:
        """Upper estimate of inference memory per input voxel of one item
        (measured on the CPU: width 8, 3 levels, channels-last 171 B; contiguous 244 B)."""
        floats = 24 + 4 * self.width if channels_last else 40 + 6 * self.width
        return 4.0 * floats * self.channels

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """``convs`` x (Conv3d 3^3 same padding -> norm -> LeakyReLU); ``(B, c_in) -> (B, c_out)``."""

    def __init__(self, c_in: int, c_out: int, convs: int, norm: str) -> None:
        layers: list[nn.Module] = []
        for n in range(convs):
            layers += [nn.Conv3d(c_in if n == 0 else c_out, c_out, 3, padding=1), _norm(norm, c_out),
                       nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
        super().__init__(*layers)


def _consume(layers: nn.Module, box: list[torch.Tensor]) -> torch.Tensor:
    """Run ``layers`` on the one tensor in ``box``, which is emptied first, so
    that no reference keeps the input alive while later layers run."""
    h = box.pop()
    for layer in layers.children():
        h = layer(h)
    return h


class ResidualUNet3D(nn.Module):
    """``(B, C, K, J, I) -> (B, C, K, J, I)``: ``x + unet(x)`` (see the module docstring)."""

    def __init__(self, cfg: UNet3DConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.width * 2 ** level for level in range(cfg.levels)]
        self.down = nn.ModuleList()
        c = cfg.channels
        for w in widths:
            self.down.append(ConvBlock(c, w, cfg.convs, cfg.norm))
            c = w
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose3d(c, w, kernel_size=2, stride=2))
            self.merge.append(ConvBlock(2 * w, w, cfg.convs, cfg.norm))
            c = w
        self.out = nn.Conv3d(c, cfg.channels, 1)
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def check_shape(self, shape: torch.Size | tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless ``shape`` is ``(B, C, K, J, I)`` with
        ``C = channels`` and spatial sizes multiples of ``cfg.multiple``."""
        m = self.cfg.multiple
        if len(shape) != 5 or shape[1] != self.cfg.channels or any(int(s) % m for s in shape[2:]):
            raise ValueError(
                f"ResidualUNet3D needs (B, {self.cfg.channels}, K, J, I) with K, J, I multiples of {m}, "
                f"got {tuple(shape)}"
            )

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        """The U-Net's output alone (what is added to ``x``)."""
        self.check_shape(x.shape)
        skips = []
        h = x
        for level, block in enumerate(self.down):
            h = block(h if level == 0 else self.pool(h))
            skips.append(h)
        h = skips.pop()
        for up, merge in zip(self.up, self.merge):
            # each skip is dropped as soon as it is merged and each input as soon as it
            # is consumed: inference holds about 4 full-resolution activations, not 6
            h = _consume(merge, [torch.cat([up(h), skips.pop()], dim=1)])
        return self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.correction(x)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))
