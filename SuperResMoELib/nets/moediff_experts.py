"""The three denoising experts of MoEDiff-SR (paper 003, section II.C,
"Expert specialization"): each is its own latent noise predictor ``E_i``.

Common interface (every expert)::

    forward(z_t (B, C, h, w), t (B,) long, cond (B, C_c, h, w), tokens (B, N, d) | None)
        -> eps (B, C, h, w)

* ``z_t``: the noisy VQ-VAE latent (``C = latent_channels``); ``h`` and ``w`` must be
  multiples of :data:`DOWNSAMPLE` (= 4, two stride-2 downsamplings in every expert),
  else ``ValueError``.
* ``cond``: the spatial condition (the VQ-VAE latent of the LR slice,
  ``C_c = cond_channels``), concatenated to ``z_t`` at the input: the first convolution
  reads ``C + C_c`` channels.
* ``t``: the expert's own timestep; a sinusoidal embedding (max period 10000) of
  ``time_embed_dim`` features goes through an MLP (Linear -> SiLU -> Linear).
* ``tokens``: optional Transformer tokens ``z_c`` of dim ``d = token_dim`` (Eq. 1).
  When given, a linear projection of their mean ``tokens.mean(1)`` is added to the
  timestep embedding. ``token_dim = 0`` means the expert takes no tokens.
* Conditioning by FiLM: every block with a normalisation (residual block, dense
  layer) applies ``h = GN(x) * (1 + scale) + shift`` right after its first
  normalisation, with ``(scale, shift) = Linear(SiLU(emb))`` per block. The paper's
  experts follow the CLDM base (concatenation / cross-attention); we keep the spatial
  concatenation of ``cond`` but replace cross-attention over the tokens by FiLM with
  the *pooled* tokens, which keeps the compact experts cheap (no ``h w x N``
  attention per block) at the cost of losing per-token spatial routing.
* Output head: ``GN -> SiLU -> Conv1x1(c_0 -> C)`` with the 1x1 convolution
  initialised to zero, so an untrained expert predicts ``eps = 0`` exactly (the
  "zero module" of the LDM/ADM U-Nets): training starts from a neutral prediction and
  the first gradient steps only move the head.

GroupNorm groups are adapted to each layer: the largest divisor of its channel count
that is ``<= cfg.groups`` (:func:`adapted_groups`), so any width is valid.

Widths: ``c_l = base_channels * channel_mults[l]`` for the levels ``l = 0, 1, 2``
(full resolution, ``/2``, ``/4`` = bottleneck). Architectures (``RB`` = :class:`FiLMResBlock`,
``Down`` = Conv 4x4 stride 2, ``Up`` = ConvTranspose 4x4 stride 2, ``[a, b]`` =
channel concatenation of the skip)::

    Expert1 (E1, smooth white matter; dilated bottleneck)
        Conv3(C+C_c -> c0) -> RB(c0) -> EdgeEnhance(c0)                      = s0
        Down(c0 -> c1) -> RB(c1)                                             = s1
        Down(c1 -> c2) -> RB(c2)
        bottleneck: Conv3 dilated (c2, dilation d) -> RB(c2)
        Up(c2 -> c1) -> RB([., s1] -> c1);  Up(c1 -> c0) -> RB([., s0] -> c0) -> head

    Expert2 (E2, cortex / high frequency; complex spectral bottleneck)
        Conv3(C+C_c -> c0)                                                   = s0
        Down(c0 -> c1) -> Dense(c1 -> c1)                                    = s1
        Down(c1 -> c2) -> Dense(c2 -> c2)
        bottleneck: ComplexSpectralBlock(c2)
        Up(c2 -> c1) -> Dense([., s1] -> c1);  Up(c1 -> c0) -> Dense([., s0] -> c0) -> head

    Expert3 (E3, grey-white junction; channel attention + non-local)
        Conv3(C+C_c -> c0)                                                   = s0
        Down(c0 -> c1) -> RB(c1) -> SE(c1)                                   = s1
        Down(c1 -> c2) -> RB(c2) -> SE(c2)
        bottleneck: Conv3(c2) -> RB(c2) -> NonLocal(c2)
        Up(c2 -> c1) -> RB([., s1] -> c1) -> SE;  Up(c1 -> c0) -> RB([., s0] -> c0) -> SE -> head

``Dense`` is a :class:`DenseBlock` (``dense_layers`` layers of growth ``growth_rate``,
then a 1x1 transition), ``SE`` a :class:`ChannelAttention` (squeeze-and-excitation),
``NonLocal`` a :class:`NonLocalBlock` (embedded Gaussian, Wang et al. 2018). The paper
places E3's non-local block in the decoder; here it closes the bottleneck, i.e. it is
the first stage the decoder sees, where all positions are few and attention is cheap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from SuperResMoELib.core.checks import is_int as _is_int
from SuperResMoELib.core.checks import is_real as _is_real
from SuperResMoELib.core.checks import require_positive_ints

#: Spatial downsampling factor of every expert (two stride-2 convolutions).
DOWNSAMPLE: int = 4
#: Max period of the sinusoidal timestep embedding.
MAX_PERIOD: float = 10000.0
#: GroupNorm epsilon.
GROUP_NORM_EPS: float = 1e-6
#: The 4-neighbour *negative* Laplacian: positive on the bright side of an edge,
#: zero on constant and linear images; ``x + gain * (L * x)`` sharpens for ``gain > 0``.
NEG_LAPLACIAN: tuple[tuple[float, float, float], ...] = ((0.0, -1.0, 0.0), (-1.0, 4.0, -1.0), (0.0, -1.0, 0.0))


@dataclass(frozen=True)
class ExpertConfig:
    """Shape of the three experts (one config shared by :class:`Expert1`,
    :class:`Expert2` and :class:`Expert3`; each reads the knobs it needs). The
    paper gives no widths; :meth:`compact` gives a small CPU-sized config.

    Attributes:
        latent_channels: ``C``, channels of ``z_t`` and of the predicted ``eps``.
        cond_channels: ``C_c``, channels of the spatial condition ``cond``.
        base_channels: width ``c_0`` of the full-resolution level.
        channel_mults: multipliers of the three levels (full, ``/2``, ``/4``).
        token_dim: dim ``d`` of the condition tokens; 0 = the expert takes no tokens.
        time_embed_dim: width of the timestep embedding (even; sinusoid and MLP).
        groups: upper bound of the GroupNorm groups (adapted per layer).
        dilation: dilation of E1's bottleneck 3x3 convolution (paper: "dilated").
        growth_rate: growth of E2's dense layers (paper 16).
        dense_layers: layers per DenseBlock of E2 (paper 4).
        se_reduction: channel reduction of E3's squeeze-and-excitation.
        nonlocal_reduction: ``c / c_inner`` of E3's non-local embeddings (Wang: 2).
        edge_gain_init: initial per-channel gain of E1's Laplacian edge enhancement.
    """

    latent_channels: int = 4
    cond_channels: int = 4
    base_channels: int = 64
    channel_mults: tuple[int, int, int] = (1, 2, 4)
    token_dim: int = 0
    time_embed_dim: int = 256
    groups: int = 32
    dilation: int = 2
    growth_rate: int = 16
    dense_layers: int = 4
    se_reduction: int = 4
    nonlocal_reduction: int = 2
    edge_gain_init: float = 0.1

    def __post_init__(self) -> None:
        raw: Any = self.channel_mults
        if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
            raise ValueError(f"channel_mults must be three positive ints, got {raw!r}")
        mults = tuple(raw)
        if len(mults) != 3 or not all(_is_int(m) and m >= 1 for m in mults):
            raise ValueError(f"channel_mults must be three positive ints (full, /2, /4), got {mults!r}")
        object.__setattr__(self, "channel_mults", mults)  # lists (from JSON) become tuples
        require_positive_ints(self, ("latent_channels", "cond_channels", "base_channels", "time_embed_dim", "groups",
                                     "dilation", "growth_rate", "dense_layers", "se_reduction",
                                     "nonlocal_reduction"), "expert ")
        if not _is_int(self.token_dim) or self.token_dim < 0:
            raise ValueError(f"expert token_dim must be an int >= 0 (0 = no tokens), got {self.token_dim!r}")
        if self.time_embed_dim % 2:
            raise ValueError(f"expert time_embed_dim must be even (cos and sin halves), got {self.time_embed_dim}")
        if not _is_real(self.edge_gain_init):
            raise ValueError(f"expert edge_gain_init must be a finite number, got {self.edge_gain_init!r}")

    @classmethod
    def compact(cls, **overrides: Any) -> ExpertConfig:
        """A small config for CPU work and tests: base 32 (levels 32 / 64 / 128),
        time embedding 128, GroupNorm with up to 8 groups; ``overrides`` replace any field."""
        kw: dict[str, Any] = dict(base_channels=32, time_embed_dim=128, groups=8)
        kw.update(overrides)
        return cls(**kw)

    @property
    def level_channels(self) -> tuple[int, int, int]:
        """``(c_0, c_1, c_2)``."""
        m0, m1, m2 = self.channel_mults
        b = self.base_channels
        return (b * m0, b * m1, b * m2)

    @property
    def multiple(self) -> int:
        """``h`` and ``w`` must be multiples of this."""
        return DOWNSAMPLE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return d


# --------------------------------------------------------------------------- building blocks


def adapted_groups(channels: int, max_groups: int) -> int:
    """The largest divisor of ``channels`` that is ``<= max_groups`` (at least 1)."""
    for g in range(min(channels, max_groups), 0, -1):
        if channels % g == 0:
            return g
    return 1


def group_norm(channels: int, max_groups: int) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with :func:`adapted_groups` groups."""
    return nn.GroupNorm(adapted_groups(channels, max_groups), channels, eps=GROUP_NORM_EPS)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = MAX_PERIOD) -> torch.Tensor:
    """Sinusoidal embedding ``(B,) -> (B, dim)`` (``dim`` even): ``[cos(t f_k), sin(t f_k)]``
    with ``f_k = max_period ** (-k / (dim / 2))``, ``k = 0 .. dim/2 - 1`` (as DDPM/ADM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ConditionEmbedding(nn.Module):
    """``(t (B,), tokens (B, N, d) | None) -> emb (B, E)``, ``E = time_embed_dim``:
    ``MLP(sinusoid(t)) + [Linear(tokens.mean(1)) if tokens is given]``."""

    def __init__(self, time_embed_dim: int, token_dim: int) -> None:
        super().__init__()
        self.dim = time_embed_dim
        self.token_dim = token_dim
        self.mlp = nn.Sequential(nn.Linear(time_embed_dim, time_embed_dim), nn.SiLU(),
                                 nn.Linear(time_embed_dim, time_embed_dim))
        self.token_proj: nn.Linear | None = nn.Linear(token_dim, time_embed_dim) if token_dim > 0 else None

    def forward(self, t: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        emb: torch.Tensor = self.mlp(timestep_embedding(t, self.dim))
        if tokens is not None:
            if self.token_proj is None:
                raise ValueError("tokens given but the expert has token_dim = 0")
            emb = emb + self.token_proj(tokens.mean(dim=1))
        return emb


class FiLM(nn.Module):
    """``(h (B, c, ...), emb (B, E)) -> h * (1 + scale) + shift`` with
    ``(scale, shift) = Linear(SiLU(emb))`` split in two ``(B, c)`` halves."""

    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, 2 * channels)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(F.silu(emb)).chunk(2, dim=1)
        return h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class FiLMResBlock(nn.Module):
    """``(x (B, c_in, h, w), emb (B, E)) -> (B, c_out, h, w)``::

        a = Conv3(SiLU(FiLM(GN(x), emb)))          (c_in -> c_out)
        out = skip(x) + Conv3(SiLU(GN(a)))        skip = identity or Conv1 when c_in != c_out
    """

    def __init__(self, c_in: int, c_out: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.film = FiLM(c_in, embed_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip: nn.Module = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.film(self.norm1(x), emb)))
        h = self.conv2(F.silu(self.norm2(h)))
        out: torch.Tensor = self.skip(x) + h
        return out


def down_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """Conv 4x4 stride 2 padding 1: ``(B, c_in, h, w) -> (B, c_out, h/2, w/2)`` (``h, w`` even)."""
    return nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)


def up_conv(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    """ConvTranspose 4x4 stride 2 padding 1: ``(B, c_in, h, w) -> (B, c_out, 2h, 2w)``."""
    return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)


class EdgeEnhanceBlock(nn.Module):
    """E1's lightweight Laplacian edge enhancement, ``(B, c, h, w) -> (B, c, h, w)``::

        out = x + gain_c * (L * x)_c        (depthwise, fixed kernel L = NEG_LAPLACIAN)

    with replicate padding, so a constant (or linear) image gives ``L * x = 0`` and is
    left unchanged, while an edge is sharpened (over/undershoot on both sides) for
    ``gain > 0``. ``L`` is a buffer (not trained); only the per-channel ``gain``
    (initialised to ``gain_init``) is learnt: ``c`` parameters.
    """

    def __init__(self, channels: int, gain_init: float = 0.1) -> None:
        super().__init__()
        self.channels = channels
        kernel = torch.tensor(NEG_LAPLACIAN, dtype=torch.float32)
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone())
        self.gain = nn.Parameter(torch.full((channels,), float(gain_init)))

    def laplacian(self, x: torch.Tensor) -> torch.Tensor:
        """``L * x`` per channel (replicate padding), same shape as ``x``."""
        kernel: torch.Tensor = self.kernel  # type: ignore[assignment]
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.to(x.dtype), groups=self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gain[None, :, None, None] * self.laplacian(x)


class DenseLayer(nn.Module):
    """``(x (B, c_in, h, w), emb) -> (B, growth, h, w)``: ``Conv3(SiLU(FiLM(GN(x), emb)))``
    (the DenseNet composite function, with GroupNorm, SiLU and the FiLM conditioning)."""

    def __init__(self, c_in: int, growth: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(c_in, groups)
        self.film = FiLM(c_in, embed_dim)
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(F.silu(self.film(self.norm(x), emb)))
        return out


class DenseBlock(nn.Module):
    """E2's DenseBlock, ``(x (B, c_in, h, w), emb) -> (B, c_out, h, w)``: layer ``k`` reads
    the concatenation of ``x`` and the outputs of layers ``0 .. k-1`` (``c_in + k * growth``
    channels) and adds ``growth`` channels; a 1x1 transition maps the final
    ``c_in + layers * growth`` channels to ``c_out``."""

    def __init__(self, c_in: int, c_out: int, layers: int, growth: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(c_in + k * growth, growth, embed_dim, groups) for k in range(layers))
        self.transition = nn.Conv2d(c_in + layers * growth, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, dim=1), emb))
        out: torch.Tensor = self.transition(torch.cat(feats, dim=1))
        return out


class ComplexSpectralBlock(nn.Module):
    """E2's complex-valued bottleneck, ``(B, c, h, w) -> (B, c, h, w)``, jointly
    modelling the magnitude and phase of the 2D spectrum::

        X   = rfft2(x)                                   (B, c, h, w/2 + 1) complex, "ortho"
        m   = log1p(|X|)                                 magnitude features
        g, theta = Conv1(SiLU(Conv1(m)))                 (B, c, ., .) each: log-gain, phase shift
        X'  = X * exp(g + i theta)                       |X'| = |X| e^g,  arg X' = arg X + theta
        out = x + irfft2(X' - X, s = (h, w))

    The 1x1 convolutions mix channels per frequency; the bias of the last one is a
    learnable per-channel complex weight ``exp(g_c + i theta_c)`` (per-channel gain and
    phase offset), its weights make the gain and the shift depend on the magnitude
    spectrum of all channels. The complex factor is written with ``exp`` of real
    tensors, so no ``angle`` (whose gradient is undefined at 0) is needed.

    Identity at init: the last 1x1 convolution (weight and bias) is zero-initialised,
    so ``g = theta = 0``, ``exp(0 + 0i) = 1`` exactly, ``X' - X = 0`` and
    ``irfft2(0) = 0``: the block returns ``x`` bit for bit (not merely up to FFT
    round-off, which is why the residual is formed in the spectral domain). Its
    gradients are non-zero (through the last convolution's weight and bias), so it
    leaves the identity as soon as it trains. The FFT runs in float32.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.mag_in = nn.Conv2d(channels, channels, 1)
        self.mag_out = nn.Conv2d(channels, 2 * channels, 1)
        nn.init.zeros_(self.mag_out.weight)
        if self.mag_out.bias is not None:
            nn.init.zeros_(self.mag_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spec = torch.fft.rfft2(x.float(), norm="ortho")
        mag = torch.log1p(spec.abs())
        log_gain, phase = self.mag_out(F.silu(self.mag_in(mag))).chunk(2, dim=1)
        factor = torch.polar(torch.exp(log_gain), phase)  # exp(g + i theta)
        delta = torch.fft.irfft2(spec * (factor - 1), s=(int(h), int(w)), norm="ortho")
        return x + delta.to(x.dtype)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018), ``(B, c, h, w) -> (B, c, h, w)``:
    ``x * sigmoid(W2 ReLU(W1 avgpool(x)))`` with a hidden width ``max(c // reduction, 4)``."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * s


class NonLocalBlock(nn.Module):
    """Non-local block, embedded Gaussian (Wang et al. 2018), ``(B, c, h, w) -> (B, c, h, w)``::

        theta, phi, g = Conv1(x)  (c -> c_i each),   positions n = h w
        f   = softmax_j(theta_i . phi_j / sqrt(c_i))    (B, n, n)
        out = x + W_z(f g)                               W_z: Conv1 (c_i -> c)

    Every output position depends on every input position. The ``1/sqrt(c_i)``
    temperature (the Transformer's scaled dot product, a special case Wang et al.
    discuss) keeps the softmax from saturating at wide bottlenecks. There is no
    normalisation inside the block, so its only long-range path is the attention.
    ``W_z`` keeps the default init (Wang zero-initialises it to insert the block into
    pretrained networks; here the expert's zero head already makes it start at 0).
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.inner = inner
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.w_z = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)          # (B, n, c_i)
        k = self.phi(x).flatten(2)                            # (B, c_i, n)
        v = self.g(x).flatten(2).transpose(1, 2)              # (B, n, c_i)
        attn = torch.softmax(torch.bmm(q, k) / math.sqrt(self.inner), dim=-1)
        y = torch.bmm(attn, v).transpose(1, 2).reshape(b, self.inner, h, w)
        out: torch.Tensor = x + self.w_z(y)
        return out


# --------------------------------------------------------------------------- experts


class _Expert(nn.Module):
    """Shared input checks, condition embedding and zero-initialised output head.

    Subclasses build ``self.in_conv`` (``C + C_c -> c_0``) and implement
    :meth:`features` (``(B, C + C_c, h, w), emb -> (B, c_0, h, w)``)."""

    def __init__(self, cfg: ExpertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0 = cfg.level_channels[0]
        self.embed = ConditionEmbedding(cfg.time_embed_dim, cfg.token_dim)
        self.in_conv = nn.Conv2d(cfg.latent_channels + cfg.cond_channels, c0, 3, padding=1)
        self.out_norm = group_norm(c0, cfg.groups)
        self.out = nn.Conv2d(c0, cfg.latent_channels, 1)
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def check_inputs(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                     tokens: torch.Tensor | None) -> None:
        """Raise ``ValueError`` unless the shapes follow the module docstring."""
        cfg = self.cfg
        m = cfg.multiple
        name = type(self).__name__
        if z_t.dim() != 4 or z_t.shape[1] != cfg.latent_channels or z_t.shape[2] % m or z_t.shape[3] % m:
            raise ValueError(f"{name} needs z_t (B, {cfg.latent_channels}, h, w) with h, w multiples of {m}, "
                             f"got {tuple(z_t.shape)}")
        b, _, h, w = z_t.shape
        if tuple(cond.shape) != (b, cfg.cond_channels, h, w):
            raise ValueError(f"{name} needs cond {(b, cfg.cond_channels, h, w)}, got {tuple(cond.shape)}")
        if tuple(t.shape) != (b,):
            raise ValueError(f"{name} needs t of shape ({b},), got {tuple(t.shape)}")
        if tokens is not None:
            if cfg.token_dim == 0:
                raise ValueError(f"{name} has token_dim = 0 but tokens were given")
            if tokens.dim() != 3 or tokens.shape[0] != b or tokens.shape[2] != cfg.token_dim or tokens.shape[1] < 1:
                raise ValueError(f"{name} needs tokens ({b}, N, {cfg.token_dim}) with N >= 1, "
                                 f"got {tuple(tokens.shape)}")

    def features(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                tokens: torch.Tensor | None = None) -> torch.Tensor:
        """``(z_t (B, C, h, w), t (B,), cond (B, C_c, h, w), tokens (B, N, d) | None) -> eps (B, C, h, w)``."""
        self.check_inputs(z_t, t, cond, tokens)
        emb = self.embed(t, tokens)
        h = self.features(torch.cat([z_t, cond], dim=1), emb)
        eps: torch.Tensor = self.out(F.silu(self.out_norm(h)))
        return eps


class Expert1(_Expert):
    """E1 (smooth white matter, centrum semiovale): residual U-Net with a Laplacian
    edge enhancement after the first block and a dilated bottleneck convolution
    (wider receptive field at no parameter cost). See the module docstring."""

    def __init__(self, cfg: ExpertConfig) -> None:
        super().__init__(cfg)
        c0, c1, c2 = cfg.level_channels
        e, g = cfg.time_embed_dim, cfg.groups
        self.enc0 = FiLMResBlock(c0, c0, e, g)
        self.edge = EdgeEnhanceBlock(c0, cfg.edge_gain_init)
        self.down1 = down_conv(c0, c1)
        self.enc1 = FiLMResBlock(c1, c1, e, g)
        self.down2 = down_conv(c1, c2)
        self.enc2 = FiLMResBlock(c2, c2, e, g)
        self.mid_conv = nn.Conv2d(c2, c2, 3, padding=cfg.dilation, dilation=cfg.dilation)
        self.mid = FiLMResBlock(c2, c2, e, g)
        self.up2 = up_conv(c2, c1)
        self.dec1 = FiLMResBlock(2 * c1, c1, e, g)
        self.up1 = up_conv(c1, c0)
        self.dec0 = FiLMResBlock(2 * c0, c0, e, g)

    def features(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        s0 = self.edge(self.enc0(self.in_conv(x), emb))
        s1 = self.enc1(self.down1(s0), emb)
        h = self.enc2(self.down2(s1), emb)
        h = self.mid(self.mid_conv(h), emb)
        h = self.dec1(torch.cat([self.up2(h), s1], dim=1), emb)
        out: torch.Tensor = self.dec0(torch.cat([self.up1(h), s0], dim=1), emb)
        return out


class Expert2(_Expert):
    """E2 (sulcal / gyral cortex, high frequencies): dense U-Net (DenseBlocks of
    ``dense_layers`` x ``growth_rate``) with a complex spectral bottleneck
    (:class:`ComplexSpectralBlock`). See the module docstring."""

    def __init__(self, cfg: ExpertConfig) -> None:
        super().__init__(cfg)
        c0, c1, c2 = cfg.level_channels
        n, k, e, g = cfg.dense_layers, cfg.growth_rate, cfg.time_embed_dim, cfg.groups
        self.down1 = down_conv(c0, c1)
        self.enc1 = DenseBlock(c1, c1, n, k, e, g)
        self.down2 = down_conv(c1, c2)
        self.enc2 = DenseBlock(c2, c2, n, k, e, g)
        self.mid = ComplexSpectralBlock(c2)
        self.up2 = up_conv(c2, c1)
        self.dec1 = DenseBlock(2 * c1, c1, n, k, e, g)
        self.up1 = up_conv(c1, c0)
        self.dec0 = DenseBlock(2 * c0, c0, n, k, e, g)

    def features(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        s0 = self.in_conv(x)
        s1 = self.enc1(self.down1(s0), emb)
        h = self.mid(self.enc2(self.down2(s1), emb))
        h = self.dec1(torch.cat([self.up2(h), s1], dim=1), emb)
        out: torch.Tensor = self.dec0(torch.cat([self.up1(h), s0], dim=1), emb)
        return out


class Expert3(_Expert):
    """E3 (grey-white matter junction): residual U-Net with squeeze-and-excitation
    channel attention after every residual block outside the bottleneck and a
    non-local (embedded Gaussian) block closing the bottleneck. See the module docstring."""

    def __init__(self, cfg: ExpertConfig) -> None:
        super().__init__(cfg)
        c0, c1, c2 = cfg.level_channels
        e, g, r = cfg.time_embed_dim, cfg.groups, cfg.se_reduction
        self.down1 = down_conv(c0, c1)
        self.enc1 = FiLMResBlock(c1, c1, e, g)
        self.se_enc1 = ChannelAttention(c1, r)
        self.down2 = down_conv(c1, c2)
        self.enc2 = FiLMResBlock(c2, c2, e, g)
        self.se_enc2 = ChannelAttention(c2, r)
        self.mid_conv = nn.Conv2d(c2, c2, 3, padding=1)
        self.mid = FiLMResBlock(c2, c2, e, g)
        self.nonlocal_block = NonLocalBlock(c2, cfg.nonlocal_reduction)
        self.up2 = up_conv(c2, c1)
        self.dec1 = FiLMResBlock(2 * c1, c1, e, g)
        self.se_dec1 = ChannelAttention(c1, r)
        self.up1 = up_conv(c1, c0)
        self.dec0 = FiLMResBlock(2 * c0, c0, e, g)
        self.se_dec0 = ChannelAttention(c0, r)

    def features(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        s0 = self.in_conv(x)
        s1 = self.se_enc1(self.enc1(self.down1(s0), emb))
        h = self.se_enc2(self.enc2(self.down2(s1), emb))
        h = self.nonlocal_block(self.mid(self.mid_conv(h), emb))
        h = self.se_dec1(self.dec1(torch.cat([self.up2(h), s1], dim=1), emb))
        out: torch.Tensor = self.se_dec0(self.dec0(torch.cat([self.up1(h), s0], dim=1), emb))
        return out


#: The expert classes in the paper's order (E1, E2, E3).
EXPERT_CLASSES: tuple[type[_Expert], ...] = (Expert1, Expert2, Expert3)


def build_expert(index: int, cfg: ExpertConfig) -> nn.Module:
    """Expert ``E_index`` of the paper: ``index`` is 1, 2 or 3 (``ValueError`` otherwise;
    for a 0-based position ``i`` use ``build_expert(i + 1, cfg)`` or :data:`EXPERT_CLASSES`)."""
    if not _is_int(index) or not 1 <= index <= len(EXPERT_CLASSES):
        raise ValueError(f"expert index must be 1, 2 or 3 (paper's E1..E3), got {index!r}")
    return EXPERT_CLASSES[index - 1](cfg)
