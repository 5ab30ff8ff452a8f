"""A 2D VQ-VAE with an EMA codebook: the image autoencoder of MoEDiff-SR
(paper 003, section II: "The image encoder and decoder utilized in this study
are derived from the VQ-VAE architecture"; section III.C: base channels 128,
embedding dimension 512, codebook size 1024, latent scale factor 0.2).

Tensors are 2D slices ``(B, C, H, W)``. With ``L = len(channel_mults)`` levels
the encoder halves the resolution ``L - 1`` times, so the latent grid is
``(H / f, W / f)`` with ``f = 2 ** (L - 1)`` (:attr:`VQVAE2DConfig.downsample`);
``H`` and ``W`` must be multiples of ``f`` (:attr:`VQVAE2DConfig.multiple`).

Architecture (``c_l = base_channels * channel_mults[l]``, ``R = num_res_blocks``)::

    Encoder  Conv3(in -> base)
             level l = 0..L-1: R x ResBlock(-> c_l); Conv4 stride 2 (c_l -> c_l) unless l = L-1
             middle: 2 x ResBlock(c_top)
             Norm -> SiLU -> Conv1(c_top -> latent_channels)                    = z_e
    Quantise nearest codeword (squared distance), EMA codebook, straight-through
    Decoder  Conv3(latent_channels -> c_top); middle: 2 x ResBlock(c_top)
             level l = L-1..0: R x ResBlock(-> c_l); nearest x2 + Conv3 unless l = 0
             Norm -> SiLU -> Conv3(c_0 -> in_channels)   (no output activation)

``ResBlock`` is ``Norm -> SiLU -> Conv3 -> Norm -> SiLU -> Conv3`` plus a skip (a
1x1 convolution when the channel count changes). The norm is GroupNorm
(``norm="group"``) or none. There is no attention block (the LDM autoencoders
have one in the middle); the paper does not say which variant it used.

The codebook follows van den Oord et al. (2017, appendix A.1) and VQ-VAE-2: it is
a buffer, updated in training mode (and only there) by exponential moving
averages of the per-code cluster sizes and sums of the assigned encoder
outputs, with Laplace smoothing of the sizes; the only loss is the commitment
``commitment_cost * mse(z_e, sg(z_q))``. Codes whose EMA cluster size falls
below ``dead_code_threshold`` can be re-seeded with random encoder outputs of
the batch (off by default, as in the original).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from SuperResMoELib.core.checks import is_int as _is_int
from SuperResMoELib.core.checks import is_real as _is_real
from SuperResMoELib.core.checks import require_positive_ints

#: Normalisation layers a config may name.
NORMS: tuple[str, ...] = ("group", "none")
#: GroupNorm epsilon (as the LDM / taming autoencoders).
GROUP_NORM_EPS: float = 1e-6
#: Residual blocks in the middle of the encoder and of the decoder.
MIDDLE_BLOCKS: int = 2


@dataclass(frozen=True)
class VQVAE2DConfig:
    """Shape and codebook of a :class:`VQVAE2D`. The defaults are the paper's
    (III.C); :meth:`compact` gives a small CPU-sized one.

    Attributes:
        in_channels: image channels in and out (1 for MRI slices).
        base_channels: channels of the first level (paper 128).
        channel_mults: channel multiplier of each level; ``len - 1`` stride-2
            downsamplings, so the downsampling factor is ``2 ** (len - 1)``. The
            paper does not state it; the default ``(1, 2, 4)`` is factor 4
            (256 x 256 slices -> 64 x 64 latents, as LDM's VQ-f4).
        num_res_blocks: residual blocks per level (encoder and decoder).
        latent_channels: embedding dimension ``D`` of the codewords and of the
            latent (paper 512).
        codebook_size: number of codewords ``K`` (paper 1024).
        commitment_cost: weight ``beta`` of the commitment loss.
        ema_decay: decay ``gamma`` of the codebook moving averages, in (0, 1).
        epsilon: Laplace smoothing of the EMA cluster sizes.
        latent_scale: the paper's latent scale factor (0.2); not used here, stored
            for the diffusion model that works on ``latent_scale * z``.
        norm: ``"group"`` (GroupNorm) or ``"none"``.
        norm_groups: GroupNorm groups; must divide every level's channel count.
        dead_code_threshold: re-seed codes whose EMA cluster size is below this
            (0 disables it).
    """

    in_channels: int = 1
    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    latent_channels: int = 512
    codebook_size: int = 1024
    commitment_cost: float = 0.25
    ema_decay: float = 0.99
    epsilon: float = 1e-5
    latent_scale: float = 0.2
    norm: str = "group"
    norm_groups: int = 32
    dead_code_threshold: float = 0.0

    def __post_init__(self) -> None:
        mults = self.channel_mults
        if isinstance(mults, (str, bytes)) or not hasattr(mults, "__iter__"):
            raise ValueError(f"channel_mults must be a sequence of positive ints, got {mults!r}")
        mults = tuple(mults)
        if not mults or not all(_is_int(m) and m >= 1 for m in mults):
            raise ValueError(f"channel_mults must be a non-empty sequence of positive ints, got {mults!r}")
        object.__setattr__(self, "channel_mults", mults)  # lists (from JSON) become tuples
        require_positive_ints(self, ("in_channels", "base_channels", "num_res_blocks", "latent_channels",
                                     "codebook_size", "norm_groups"), "VQ-VAE ")
        for name in ("commitment_cost", "dead_code_threshold"):
            v = getattr(self, name)
            if not _is_real(v) or v < 0:
                raise ValueError(f"VQ-VAE {name} must be a finite number >= 0, got {v!r}")
        for name in ("epsilon", "latent_scale"):
            v = getattr(self, name)
            if not _is_real(v) or v <= 0:
                raise ValueError(f"VQ-VAE {name} must be a finite number > 0, got {v!r}")
        if not _is_real(self.ema_decay) or not 0 < self.ema_decay < 1:
            raise ValueError(f"VQ-VAE ema_decay must be in (0, 1), got {self.ema_decay!r}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.norm == "group":
            bad = [c for c in self.level_channels if c % self.norm_groups]
            if bad:
                raise ValueError(f"norm_groups={self.norm_groups} must divide every level's channels "
                                 f"{self.level_channels}")

    @classmethod
    def compact(cls, **overrides: Any) -> VQVAE2DConfig:
        """A small config for CPU work and tests: base 16, mults ``(1, 2, 2)``
        (factor 4), one residual block per level, ``D = 4``, ``K = 128``,
        GroupNorm with 8 groups; ``overrides`` replace any field."""
        kw: dict[str, Any] = dict(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
                                  latent_channels=4, codebook_size=128, norm_groups=8)
        kw.update(overrides)
        return cls(**kw)

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of each level, ``base_channels * channel_mults[l]``."""
        return tuple(self.base_channels * m for m in self.channel_mults)

    @property
    def downsample(self) -> int:
        """Total downsampling factor ``f = 2 ** (len(channel_mults) - 1)``."""
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def multiple(self) -> int:
        """Image sizes ``H`` and ``W`` must be multiples of this (``= downsample``)."""
        return self.downsample

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norm(cfg: VQVAE2DConfig, channels: int) -> nn.Module:
    if cfg.norm == "group":
        return nn.GroupNorm(cfg.norm_groups, channels, eps=GROUP_NORM_EPS)
    return nn.Identity()


class ResBlock2D(nn.Module):
    """``x -> skip(x) + Conv3(SiLU(Norm(Conv3(SiLU(Norm(x))))))``; ``skip`` is a
    1x1 convolution when ``c_in != c_out``, else the identity.
    Shape: ``(B, c_in, H, W) -> (B, c_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int, cfg: VQVAE2DConfig) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(cfg, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(cfg, c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip: nn.Module = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Encoder2D(nn.Module):
    """``(B, in_channels, H, W) -> z_e (B, latent_channels, H/f, W/f)`` (see the
    module docstring); does not check the shape (:class:`VQVAE2D` does)."""

    def __init__(self, cfg: VQVAE2DConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)]
        c = cfg.base_channels
        chans = cfg.level_channels
        for level, w in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock2D(c, w, cfg))
                c = w
            if level < len(chans) - 1:
                layers.append(nn.Conv2d(c, c, 4, stride=2, padding=1))
        layers += [ResBlock2D(c, c, cfg) for _ in range(MIDDLE_BLOCKS)]
        layers += [_norm(cfg, c), nn.SiLU(), nn.Conv2d(c, cfg.latent_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution; ``(B, C, h, w) -> (B, C, 2h, 2w)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder2D(nn.Module):
    """``(B, latent_channels, h, w) -> x_hat (B, in_channels, h*f, w*f)``,
    mirroring :class:`Encoder2D`; no output activation."""

    def __init__(self, cfg: VQVAE2DConfig) -> None:
        super().__init__()
        chans = cfg.level_channels
        c = chans[-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, c, 3, padding=1)]
        layers += [ResBlock2D(c, c, cfg) for _ in range(MIDDLE_BLOCKS)]
        for level in reversed(range(len(chans))):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock2D(c, chans[level], cfg))
                c = chans[level]
            if level > 0:
                layers.append(Upsample2D(c))
        layers += [_norm(cfg, c), nn.SiLU(), nn.Conv2d(c, cfg.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class EMAQuantizer(nn.Module):
    """Vector quantiser with an exponential-moving-average codebook.

    ``forward(z_e)``: ``(B, D, h, w) -> (z_q (B, D, h, w), loss (), indices (B, h, w) long)``.
    Each of the ``B*h*w`` vectors is replaced by its nearest codeword (squared
    Euclidean distance; ties go to the lowest index). ``z_q`` carries the
    straight-through gradient (``z_e + sg(z_q - z_e)``: the decoder's gradient
    is copied to the encoder), ``loss = commitment_cost * mse(z_e, sg(z_q))``.

    In training mode, after the lookup (``z_q`` uses the codebook as it was) and
    under ``torch.no_grad``, with counts ``n_k`` and sums
    ``s_k`` of the vectors assigned to code ``k``::

        N_k <- gamma N_k + (1 - gamma) n_k           (cluster_size)
        m_k <- gamma m_k + (1 - gamma) s_k           (embed_avg)
        e_k  = m_k / ((N_k + eps) / (sum N + K eps) * sum N)   (Laplace smoothing)

    ``N`` starts at 1 and ``m`` at the initial codebook (uniform in
    ``(-1/K, 1/K)``), so an unused code stays where it was (until ``gamma ** t``
    nears ``eps``, then it shrinks toward 0) instead of blowing up as it does when
    ``N`` starts at 0. Codes with ``N_k < dead_code_threshold`` are then re-seeded
    with random vectors of the batch (when the threshold is > 0). Eval mode never
    changes the codebook buffers. ``perplexity`` (a 0-d buffer) is ``exp(entropy)`` of the code usage of
    the last batch, in either mode.
    """

    embedding: torch.Tensor
    cluster_size: torch.Tensor
    embed_avg: torch.Tensor
    perplexity: torch.Tensor

    def __init__(self, codebook_size: int, dim: int, commitment_cost: float = 0.25, decay: float = 0.99,
                 epsilon: float = 1e-5, dead_code_threshold: float = 0.0) -> None:
        super().__init__()
        if codebook_size < 1 or dim < 1 or not 0 < decay < 1 or epsilon <= 0 or commitment_cost < 0 \
                or dead_code_threshold < 0:
            raise ValueError(f"bad quantiser settings: K={codebook_size}, D={dim}, beta={commitment_cost}, "
                             f"decay={decay}, eps={epsilon}, dead={dead_code_threshold}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.commitment_cost = float(commitment_cost)
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.dead_code_threshold = float(dead_code_threshold)
        embed = torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        self.register_buffer("embedding", embed)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("perplexity", torch.zeros(()), persistent=False)

    @classmethod
    def from_config(cls, cfg: VQVAE2DConfig) -> EMAQuantizer:
        return cls(cfg.codebook_size, cfg.latent_channels, cfg.commitment_cost, cfg.ema_decay, cfg.epsilon,
                   cfg.dead_code_threshold)

    def assign(self, flat: torch.Tensor) -> torch.Tensor:
        """Nearest-codeword indices ``(N,)`` of the vectors ``flat (N, D)``."""
        e = self.embedding
        d = (flat * flat).sum(1, keepdim=True) - 2.0 * flat @ e.t() + (e * e).sum(1)[None, :]
        return d.argmin(dim=1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codewords of ``indices (B, h, w)`` as a latent ``(B, D, h, w)``."""
        return self.embedding[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if z_e.dim() != 4 or z_e.shape[1] != self.dim:
            raise ValueError(f"EMAQuantizer needs (B, {self.dim}, h, w), got {tuple(z_e.shape)}")
        b, d, h, w = z_e.shape
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, d).to(self.embedding.dtype)
        with torch.no_grad():
            indices = self.assign(flat)
            counts = torch.bincount(indices, minlength=self.codebook_size).to(flat.dtype)
            p = counts / counts.sum().clamp_min(1.0)
            self.perplexity.copy_(torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum()))
            z_q = self.embedding[indices].view(b, h, w, d).permute(0, 3, 1, 2).to(z_e.dtype)  # a copy
            if self.training:
                self._ema_update(flat, indices, counts)  # after the lookup: z_q uses the codebook as it was
        loss = self.commitment_cost * F.mse_loss(z_e, z_q.detach())
        z_q = z_e + (z_q - z_e).detach()
        return z_q, loss, indices.view(b, h, w)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        sums = torch.zeros_like(self.embed_avg).index_add_(0, indices, flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (n + self.codebook_size * self.epsilon) * n
        self.embedding.copy_(self.embed_avg / smoothed[:, None])
        if self.dead_code_threshold > 0:
            dead = self.cluster_size < self.dead_code_threshold
            n_dead = int(dead.sum())
            if n_dead:
                pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
                self.embedding[dead] = flat[pick]
                self.embed_avg[dead] = flat[pick] * smoothed[dead][:, None]


class VQVAE2D(nn.Module):
    """The 2D VQ-VAE (see the module docstring).

    * :meth:`encode`: ``x (B, in_channels, H, W) -> z_e (B, latent_channels, H/f, W/f)``
      (continuous, before quantisation);
    * :meth:`quantize`: ``z_e -> (z_q, commitment loss, indices (B, H/f, W/f))``;
    * :meth:`decode`: ``z (B, latent_channels, h, w) -> x_hat (B, in_channels, h*f, w*f)``;
    * ``forward(x) -> (x_hat, vq_loss, indices)``.

    ``H`` and ``W`` must be multiples of ``cfg.multiple`` (``ValueError`` otherwise).
    """

    def __init__(self, cfg: VQVAE2DConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder2D(cfg)
        self.quantizer = EMAQuantizer.from_config(cfg)
        self.decoder = Decoder2D(cfg)

    def check_shape(self, shape: torch.Size | tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless ``shape`` is ``(B, in_channels, H, W)`` with
        ``H, W`` positive multiples of ``cfg.multiple``."""
        m, c = self.cfg.multiple, self.cfg.in_channels
        if len(shape) != 4 or shape[1] != c or any(int(s) < 1 or int(s) % m for s in shape[2:]):
            raise ValueError(f"VQVAE2D needs (B, {c}, H, W) with H, W multiples of {m}, got {tuple(shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_shape(x.shape)
        return self.encoder(x)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.quantizer(z_e)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 4 or z.shape[1] != self.cfg.latent_channels:
            raise ValueError(f"VQVAE2D.decode needs (B, {self.cfg.latent_channels}, h, w), got {tuple(z.shape)}")
        return self.decoder(z)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Decode code indices ``(B, h, w)`` to ``(B, in_channels, h*f, w*f)``."""
        return self.decode(self.quantizer.lookup(indices))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_q, loss, indices = self.quantize(self.encode(x))
        return self.decode(z_q), loss, indices
