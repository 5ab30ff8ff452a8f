"""The condition branch of MoEDiff-SR (paper 003, section II.A-B, Fig. 2):
the condition encoder ``E2`` (Eq. 1) and the token-aware gating network ``G``
(Eq. 2-4).

Tensors: the LR slice ``y`` is ``(B, C, H, W)`` (``C = in_channels``, usually
1), already resampled onto the output grid; ``H`` and ``W`` must be multiples
of the largest patch size (:attr:`ConditionConfig.multiple`).

Condition encoder (``S = len(patch_sizes)`` scales, ``d = dim``)::

    scale s, patch p_s:  Conv2d(C -> d, kernel = stride = p_s)    (B, d, H/p_s, W/p_s)
                         flatten row-major + pos(s) + scale_embed[s]  (B, N_s, d)
    concatenate the scales in config order        F_multi-scale   (B, N, d)
    depth x pre-norm transformer block            (LN -> MHSA -> +, LN -> MLP -> +)
    LayerNorm                                     z_c             (B, N, d)

with ``N_s = (H / p_s)(W / p_s)`` and ``N = sum_s N_s`` (``patch_sizes=(16, 8, 4)``
on 64 x 64: 16 + 64 + 256 = 336 tokens; the paper's 64/32/16 on 256 x 256 gives
the same count).  :meth:`ConditionEncoder.token_slices` and
:meth:`ConditionEncoder.grid` locate each scale's tokens in ``z_c``.

Design choices:

* **Position embedding: fixed 2D sine-cosine**, evaluated at each token's
  *patch centre* measured in units of the finest patch, so a coarse token sits
  at the centre of the fine tokens it covers and all scales share one frame.
  It is defined for any slice size (a learned table would be tied to one grid
  and need interpolation); half the channels encode the row, half the column
  (``dim / 4`` frequencies ``10000 ** (-k / (dim / 4))`` each, sin and cos).
  The **scale embedding** ``(S, d)`` is learned (the paper says neither).
* **Transformer: plain global pre-norm self-attention** over all ``N`` tokens
  of all scales, not the Swin encoder the paper names.  At the compact sizes
  ``N`` is a few hundred, where full attention is cheap, exact, and lets every
  token see every scale directly; windowed attention only pays for large
  ``N``, and windows are awkward over a set mixing three grids.

Gating network (Eq. 2-3, ``K = n_experts`` learnable queries ``q (K, d)``)::

    z~_c = MLP(z_c)                        Linear(d -> h) -> GELU -> Linear(h -> d)
    s_in = tau * cos(q_i, z~_c^n)          (B, K, N)   (:meth:`GatingNetwork.token_scores`)
    Att_n(i) = softmax_n(s_in)             Eq. 2
    Score_i  = sum_n Att_n(i) s_in         Eq. 3       (B, K)    (forward)
    G = softmax(Score - gamma * usage)     Eq. 4, renormalised (gating.frequency_aware_gates)

``tau`` is a cosine **scale** (inverse temperature): with the printed ``tau = 1``
the scores lie in ``[-1, 1]``, so the global gates of 3 experts can never exceed
``e / (e + 2 / e) = 0.79`` and the token softmax of Eq. 2 is nearly uniform over
a few hundred tokens.  ``tau`` is learned by default (as ``log tau``, clamped to
``[1, max_scale]``, CLIP-style) and starts at ``scale_init = 4``: untrained gates
are then still near uniform (every expert gets trained at first; at ``tau = 10``
random slices were already routed with gates up to 0.8), while ``e ** (2 tau)``
leaves room for sharp routing.  ``learn_scale=False, scale_init=1`` reproduces
the equations exactly as printed.  ``gamma`` acts on the scaled scores, so a
large ``tau`` weakens the usage regulariser relative to the scores.

Spatial gating (the paper's "token-level" routing): the per-token scores of the
*finest* scale, ``(B, K, gh, gw)``, are normalised per position by Eq. 4
(:meth:`GatingNetwork.gates` with ``spatial=True``).  The usage EMA ``c`` is a
buffer ``usage (K,)`` starting at ``1 / K``, updated only in training mode by
:meth:`GatingNetwork.update_usage` (decay 0.99); it stays a distribution since
the gates are one.  :meth:`GatingNetwork.gates` never updates it: the caller
decides when a batch counts (once per optimisation step).
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
from SuperResMoELib.methods.moediff.gating import (
    DEFAULT_GAMMA,
    DEFAULT_USAGE_DECAY,
    frequency_aware_gates,
    update_usage,
)

#: Base of the sine-cosine position embedding's geometric frequencies.
POS_BASE: float = 10000.0
#: LayerNorm epsilon of the transformer.
LN_EPS: float = 1e-6


@dataclass(frozen=True)
class ConditionConfig:
    """Shape of a :class:`ConditionEncoder`.

    Attributes:
        patch_sizes: patch edge of each scale, in pixels (default for 64 x 64
            slices; the paper uses ``(64, 32, 16)`` on 256 x 256).  Distinct,
            each dividing the largest (so a slice that fits the largest fits all).
        dim: token dimension ``d`` (a multiple of 4 and of ``heads``).
        depth: transformer blocks.
        heads: attention heads.
        mlp_ratio: hidden width of the transformer MLP, in multiples of ``dim``.
        dropout: dropout of attention weights and MLPs (0 = none).
        in_channels: channels of the condition slice.
    """

    patch_sizes: tuple[int, ...] = (16, 8, 4)
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    in_channels: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.patch_sizes, list):  # from JSON / to_dict()
            object.__setattr__(self, "patch_sizes", tuple(self.patch_sizes))
        ps = self.patch_sizes
        if not isinstance(ps, tuple) or not ps or not all(_is_int(p) and p >= 1 for p in ps):
            raise ValueError(f"patch_sizes must be a non-empty tuple of ints >= 1, got {ps!r}")
        if len(set(ps)) != len(ps):
            raise ValueError(f"patch_sizes must be distinct, got {ps}")
        if any(max(ps) % p for p in ps):
            raise ValueError(f"every patch size must divide the largest ({max(ps)}), got {ps}")
        require_positive_ints(self, ("dim", "depth", "heads", "in_channels"))
        if self.dim % 4:
            raise ValueError(f"dim must be a multiple of 4 (2D sine-cosine embedding), got {self.dim}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if not _is_real(self.mlp_ratio) or self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a finite number > 0, got {self.mlp_ratio!r}")
        if not _is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def multiple(self) -> int:
        """``H`` and ``W`` must be multiples of this (the largest patch size)."""
        return max(self.patch_sizes)

    @property
    def finest(self) -> int:
        """Index of the finest scale (the smallest patch) in ``patch_sizes``."""
        return self.patch_sizes.index(min(self.patch_sizes))

    @property
    def mlp_hidden(self) -> int:
        return max(1, int(round(self.dim * self.mlp_ratio)))

    def num_tokens(self, height: int, width: int) -> int:
        """``N = sum_s (H / p_s)(W / p_s)`` (sizes are not checked here)."""
        return sum((height // p) * (width // p) for p in self.patch_sizes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["patch_sizes"] = list(self.patch_sizes)
        return d


def sincos_position_embedding(rows: torch.Tensor, cols: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine embedding ``(len(rows) * len(cols), dim)`` of the
    grid ``rows x cols`` (row-major): channels ``[sin(r w), cos(r w), sin(c w), cos(c w)]``
    with ``dim / 4`` frequencies ``w_k = POS_BASE ** (-k / (dim / 4))``."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = POS_BASE ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    r = rows.to(torch.float64)[:, None, None] * omega  # (gh, 1, q)
    c = cols.to(torch.float64)[None, :, None] * omega  # (1, gw, q)
    gh, gw = r.shape[0], c.shape[1]
    emb = torch.cat([r.sin().expand(gh, gw, quarter), r.cos().expand(gh, gw, quarter),
                     c.sin().expand(gh, gw, quarter), c.cos().expand(gh, gw, quarter)], dim=-1)
    return emb.reshape(gh * gw, dim).to(torch.float32)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block ``(B, N, d) -> (B, N, d)``:
    ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))`` (MLP: Linear -> GELU -> Linear)."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ConditionEncoder(nn.Module):
    """``E2`` of Eq. 1: ``y (B, C, H, W) -> z_c (B, N, dim)`` (see the module docstring).

    Tokens are ordered scale by scale in ``cfg.patch_sizes`` order, each scale
    row-major over its ``(H / p, W / p)`` grid.
    """

    def __init__(self, cfg: ConditionConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else ConditionConfig()
        self.embeds = nn.ModuleList(
            nn.Conv2d(cfg.in_channels, cfg.dim, kernel_size=p, stride=p) for p in cfg.patch_sizes
        )
        self.scale_embed = nn.Parameter(torch.empty(len(cfg.patch_sizes), cfg.dim))
        nn.init.normal_(self.scale_embed, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.heads, cfg.mlp_hidden, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=LN_EPS)
        #: ``(H, W)`` of the most recent forward (the default of :meth:`grid`).
        self.last_size: tuple[int, int] | None = None
        self._pos_cache: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    # ---- geometry -------------------------------------------------------------------------------

    def check_shape(self, shape: torch.Size | tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless ``shape`` is ``(B, C, H, W)`` with
        ``C = in_channels`` and ``H``, ``W`` positive multiples of ``cfg.multiple``."""
        m, c = self.cfg.multiple, self.cfg.in_channels
        if len(shape) != 4 or shape[1] != c or any(int(s) < m or int(s) % m for s in shape[2:]):
            raise ValueError(
                f"ConditionEncoder needs (B, {c}, H, W) with H, W multiples of the largest patch size {m}, "
                f"got {tuple(shape)}"
            )

    def _size(self, height: int | None, width: int | None) -> tuple[int, int]:
        if height is None and width is None:
            if self.last_size is None:
                raise RuntimeError("no slice size given and no forward pass run yet")
            return self.last_size
        if height is None or width is None:
            raise ValueError("give both height and width, or neither")
        self.check_shape((1, self.cfg.in_channels, height, width))
        return height, width

    def _scale(self, scale_index: int) -> int:
        n = len(self.cfg.patch_sizes)
        if not -n <= scale_index < n:
            raise IndexError(f"scale_index {scale_index} out of range for {n} scales")
        return scale_index % n

    def grid(self, scale_index: int, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """``(gh, gw) = (H / p, W / p)`` of scale ``scale_index`` (for the given
        slice size, or that of the most recent forward)."""
        h, w = self._size(height, width)
        p = self.cfg.patch_sizes[self._scale(scale_index)]
        return h // p, w // p

    def token_slices(self, height: int | None = None, width: int | None = None) -> list[slice]:
        """Where each scale's tokens lie along ``z_c``'s token axis (config order)."""
        h, w = self._size(height, width)
        out, start = [], 0
        for p in self.cfg.patch_sizes:
            n = (h // p) * (w // p)
            out.append(slice(start, start + n))
            start += n
        return out

    def num_tokens(self, height: int | None = None, width: int | None = None) -> int:
        h, w = self._size(height, width)
        return self.cfg.num_tokens(h, w)

    def scale_tokens_map(self, z_c: torch.Tensor, scale_index: int,
                         height: int | None = None, width: int | None = None) -> torch.Tensor:
        """The tokens of one scale as a map: ``(B, N, d) -> (B, d, gh, gw)``."""
        s = self._scale(scale_index)
        h, w = self._size(height, width)
        if z_c.ndim != 3 or z_c.shape[1] != self.cfg.num_tokens(h, w):
            raise ValueError(f"z_c must be (B, {self.cfg.num_tokens(h, w)}, d) for a {h} x {w} slice, "
                             f"got {tuple(z_c.shape)}")
        return self.tokens_to_map(z_c.transpose(1, 2), s, h, w)

    def tokens_to_map(self, values: torch.Tensor, scale_index: int,
                      height: int | None = None, width: int | None = None) -> torch.Tensor:
        """``(B, X, N)`` per-token values (tokens last) -> ``(B, X, gh, gw)`` of one scale."""
        s = self._scale(scale_index)
        h, w = self._size(height, width)
        if values.ndim != 3 or values.shape[2] != self.cfg.num_tokens(h, w):
            raise ValueError(f"values must be (B, X, {self.cfg.num_tokens(h, w)}) for a {h} x {w} slice, "
                             f"got {tuple(values.shape)}")
        gh, gw = self.grid(s, h, w)
        part = values[:, :, self.token_slices(h, w)[s]]
        return part.reshape(values.shape[0], values.shape[1], gh, gw)

    def finest_tokens_map(self, z_c: torch.Tensor, height: int | None = None,
                          width: int | None = None) -> torch.Tensor:
        """The finest scale's tokens as a map: ``(B, N, d) -> (B, d, gh, gw)``."""
        return self.scale_tokens_map(z_c, self.cfg.finest, height, width)

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """``(N, d)`` fixed position embedding of every token (config order): the
        sine-cosine code of its patch centre in finest-patch units."""
        self.check_shape((1, self.cfg.in_channels, height, width))
        unit = float(min(self.cfg.patch_sizes))
        parts = []
        for p in self.cfg.patch_sizes:
            rows = (torch.arange(height // p, dtype=torch.float64) + 0.5) * (p / unit)
            cols = (torch.arange(width // p, dtype=torch.float64) + 0.5) * (p / unit)
            parts.append(sincos_position_embedding(rows, cols, self.cfg.dim))
        return torch.cat(parts, dim=0)

    # ---- forward --------------------------------------------------------------------------------

    def embed(self, y: torch.Tensor) -> torch.Tensor:
        """``F_multi-scale``: ``(B, C, H, W) -> (B, N, d)`` (patch + position + scale embeddings)."""
        self.check_shape(y.shape)
        h, w = int(y.shape[2]), int(y.shape[3])
        tokens = [proj(y).flatten(2).transpose(1, 2) + self.scale_embed[s]
                  for s, proj in enumerate(self.embeds)]
        key = (h, w, y.device, tokens[0].dtype)
        pos = self._pos_cache.get(key)
        if pos is None:  # fixed, so computed once per slice size, device and dtype
            pos = self._pos_cache[key] = self.position_embedding(h, w).to(device=y.device, dtype=tokens[0].dtype)
        return torch.cat(tokens, dim=1) + pos

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``y (B, C, H, W) -> z_c (B, N, d)``."""
        x = self.embed(y)
        self.last_size = (int(y.shape[2]), int(y.shape[3]))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


@dataclass(frozen=True)
class GatingConfig:
    """Shape of a :class:`GatingNetwork`.

    Attributes:
        dim: token dimension (the encoder's ``dim``).
        n_experts: ``K`` (3 in the paper).
        mlp_ratio: hidden width of the refining MLP, in multiples of ``dim``.
        scale_init: initial cosine scale ``tau`` (1 = Eq. 2-3 as printed).
        learn_scale: learn ``log tau`` (else it stays ``scale_init``).
        max_scale: upper clamp of a learned ``tau`` (the lower clamp is 1).
        gamma: frequency-regularisation strength of Eq. 4.
        usage_decay: decay of the usage EMA.
    """

    dim: int = 64
    n_experts: int = 3
    mlp_ratio: float = 2.0
    scale_init: float = 4.0
    learn_scale: bool = True
    max_scale: float = 100.0
    gamma: float = DEFAULT_GAMMA
    usage_decay: float = DEFAULT_USAGE_DECAY

    def __post_init__(self) -> None:
        require_positive_ints(self, ("dim", "n_experts"))
        if not _is_real(self.mlp_ratio) or self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be a finite number > 0, got {self.mlp_ratio!r}")
        if not isinstance(self.learn_scale, bool):
            raise ValueError(f"learn_scale must be a bool, got {self.learn_scale!r}")
        if not _is_real(self.max_scale) or self.max_scale < 1:
            raise ValueError(f"max_scale must be a finite number >= 1, got {self.max_scale!r}")
        if not _is_real(self.scale_init) or self.scale_init <= 0:
            raise ValueError(f"scale_init must be a finite number > 0, got {self.scale_init!r}")
        if self.learn_scale and not 1 <= self.scale_init <= self.max_scale:
            raise ValueError(f"a learned scale_init must lie in [1, max_scale={self.max_scale}], "
                             f"got {self.scale_init}")
        if not _is_real(self.gamma) or self.gamma < 0:
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if not _is_real(self.usage_decay) or not 0.0 <= self.usage_decay < 1.0:
            raise ValueError(f"usage_decay must be in [0, 1), got {self.usage_decay!r}")

    @property
    def mlp_hidden(self) -> int:
        return max(1, int(round(self.dim * self.mlp_ratio)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GatingNetwork(nn.Module):
    """``G`` of Eq. 2-4 on ``z_c (B, N, d)`` (see the module docstring).

    ``forward`` gives the global scores ``(B, K)``; :meth:`gates` the
    normalised gates; :meth:`token_scores` / :meth:`spatial_scores` the
    per-token scores.
    """

    usage: torch.Tensor

    def __init__(self, cfg: GatingConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else GatingConfig()
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_hidden), nn.GELU(), nn.Linear(cfg.mlp_hidden, cfg.dim))
        self.queries = nn.Parameter(torch.empty(cfg.n_experts, cfg.dim))
        # orthogonal rows (when K <= d): the experts start maximally distinct
        nn.init.orthogonal_(self.queries)
        log_scale = torch.tensor(math.log(cfg.scale_init))
        if cfg.learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.register_buffer("usage", torch.full((cfg.n_experts,), 1.0 / cfg.n_experts))

    @property
    def scale(self) -> torch.Tensor:
        """The cosine scale ``tau`` (a 0-d tensor; clamped to ``[1, max_scale]`` when learned)."""
        if self.cfg.learn_scale:
            return self.log_scale.clamp(0.0, math.log(self.cfg.max_scale)).exp()
        return self.log_scale.exp()

    def _check(self, z_c: torch.Tensor) -> None:
        if z_c.ndim != 3 or z_c.shape[2] != self.cfg.dim or z_c.shape[1] < 1:
            raise ValueError(f"z_c must be (B, N, {self.cfg.dim}) with N >= 1, got {tuple(z_c.shape)}")

    def refine(self, z_c: torch.Tensor) -> torch.Tensor:
        """``z~_c = MLP(z_c)``: ``(B, N, d) -> (B, N, d)``."""
        self._check(z_c)
        return self.mlp(z_c)

    def cosine(self, z_c: torch.Tensor) -> torch.Tensor:
        """``cos(q_i, z~_c^n)``: ``(B, N, d) -> (B, K, N)`` (unscaled, in [-1, 1])."""
        z = F.normalize(self.refine(z_c), dim=-1)
        q = F.normalize(self.queries, dim=-1)
        return torch.einsum("kd,bnd->bkn", q, z)

    def token_scores(self, z_c: torch.Tensor) -> torch.Tensor:
        """Per-token scores ``tau * cos(q_i, z~_c^n)``: ``(B, N, d) -> (B, K, N)``."""
        return self.scale * self.cosine(z_c)

    def forward(self, z_c: torch.Tensor) -> torch.Tensor:
        """Global scores (Eq. 2-3 on the scaled cosine): ``(B, N, d) -> (B, K)``."""
        s = self.token_scores(z_c)
        att = torch.softmax(s, dim=2)  # Eq. 2, over the tokens
        return (att * s).sum(dim=2)  # Eq. 3

    def spatial_scores(self, z_c: torch.Tensor, encoder: ConditionEncoder,
                       height: int | None = None, width: int | None = None) -> torch.Tensor:
        """Per-token scores of the encoder's finest scale as a map: ``(B, K, gh, gw)``
        (slice size ``height x width``, default the encoder's most recent forward)."""
        return encoder.tokens_to_map(self.token_scores(z_c), encoder.cfg.finest, height, width)

    def gates(self, z_c: torch.Tensor, spatial: bool = False, encoder: ConditionEncoder | None = None,
              height: int | None = None, width: int | None = None) -> torch.Tensor:
        """Eq. 4 gates, summing to 1 over the experts: global ``(B, K)``, or with
        ``spatial=True`` (needs the ``encoder`` that produced ``z_c``) per
        finest-scale position ``(B, K, gh, gw)``.  Does not touch ``usage``."""
        if not spatial:
            return frequency_aware_gates(self(z_c), self.usage, self.cfg.gamma)
        if encoder is None:
            raise ValueError("spatial gates need the ConditionEncoder that produced z_c (its finest grid)")
        s = self.spatial_scores(z_c, encoder, height, width)
        b, k, gh, gw = s.shape
        return frequency_aware_gates(s.reshape(b, k, gh * gw), self.usage, self.cfg.gamma).reshape(b, k, gh, gw)

    @torch.no_grad()
    def update_usage(self, gates: torch.Tensor) -> torch.Tensor:
        """In training mode, fold a batch's gates (``(B, K)`` or ``(B, K, ...)``)
        into the usage EMA (decay ``cfg.usage_decay``); in eval mode leave it.
        Returns the (possibly updated) ``usage``."""
        if gates.ndim < 2 or gates.shape[1] != self.cfg.n_experts:
            raise ValueError(f"gates must be (B, {self.cfg.n_experts}, ...), got {tuple(gates.shape)}")
        if self.training:
            self.usage.copy_(update_usage(self.usage, gates, self.cfg.usage_decay))
        return self.usage
