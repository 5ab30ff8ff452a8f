"""Gate normalisation of MoEDiff-SR (Eq. 4) and the usage EMA it relies on.

Eq. 4 multiplies the softmax of the experts' scores by the softmax of
``-gamma * c`` (``c``: the experts' exponentially smoothed usage
frequencies), which favours rarely used experts.  A product of two
distributions does not sum to one as printed; we renormalise, which is exactly
``softmax(score - gamma * c)``, so the gates are a distribution over the
experts (per slice for global gating, per token for spatial gating).

Shapes: scores ``(B, K)`` (global) or ``(B, K, N)`` (spatial: ``N`` tokens);
usage ``(K,)``; gates like the scores, summing to 1 over ``K`` (dim 1).
"""

from __future__ import annotations

import torch

#: The paper's frequency-regularisation strength and usage EMA decay.
DEFAULT_GAMMA: float = 0.1
DEFAULT_USAGE_DECAY: float = 0.99


def frequency_aware_gates(scores: torch.Tensor, usage: torch.Tensor, gamma: float = DEFAULT_GAMMA) -> torch.Tensor:
    """Eq. 4, renormalised: ``softmax(score - gamma * usage)`` over the experts (dim 1)."""
    if scores.ndim not in (2, 3):
        raise ValueError(f"scores must be (B, K) or (B, K, N), got {tuple(scores.shape)}")
    if usage.shape != (scores.shape[1],):
        raise ValueError(f"usage must be (K,) = ({scores.shape[1]},), got {tuple(usage.shape)}")
    bias = (gamma * usage.to(scores.dtype)).reshape((1, -1) + (1,) * (scores.ndim - 2))
    return torch.softmax(scores - bias, dim=1)


def update_usage(usage: torch.Tensor, gates: torch.Tensor, decay: float = DEFAULT_USAGE_DECAY) -> torch.Tensor:
    """The EMA of the experts' usage frequencies after a batch:
    ``decay * usage + (1 - decay) * mean(gates)`` (mean over every dim but the experts')."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"usage decay must be in [0, 1), got {decay}")
    dims = [d for d in range(gates.ndim) if d != 1]
    frequency = gates.detach().to(usage.dtype).mean(dim=dims)
    return decay * usage + (1.0 - decay) * frequency
