"""The gating terms of MoEDiff-SR's joint training (paper 003, Eq. 14-18).

* :func:`mad_temperature` (Eq. 14): ``1.4826 * MAD`` of the experts' cosine
  similarities to the ground-truth latent, the softmax temperature of the
  supervised gate targets :func:`gate_targets` (Eq. 15);
* :func:`gating_loss` (Eq. 16): the supervised cross-entropy
  ``-(1/K) sum_i G*_i log G_i`` plus the diversity term
  ``log(1 + (1/K) sum_i max_{j != i} cos(z0_i, z0_j))`` on the most similar
  expert pairs;
* :class:`UncertaintyWeight` (Eq. 17): ``w = 1 / sigma^2`` of the gating loss,
  its variance estimated by an EMA (decay 0.99);
* :func:`warmup_gates`: gates fixed to uniform for the first part of training
  (paper: 1000 of 5000 epochs).

Shapes: expert clean-latent estimates ``(K, B, C, h, w)``; the ground truth
``(B, C, h, w)``; gates and targets ``(B, K)``.  Cosine similarities are per
sample, over the flattened latent.
"""

from __future__ import annotations

import math

import torch

#: MAD -> standard deviation of a normal distribution.
MAD_TO_SIGMA: float = 1.4826
#: Smallest temperature (identical similarities would give a zero MAD).
MIN_TEMPERATURE: float = 1e-4
#: EMA decay of the gating loss's variance (Eq. 17).
VARIANCE_DECAY: float = 0.99
#: Fraction of training with uniform gates (paper: 1000 of 5000 epochs).
UNIFORM_FRACTION: float = 0.2


def cosine_to_truth(z0_experts: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` cosine similarity of each expert's estimate to the ground truth, per sample."""
    k, b = z0_experts.shape[:2]
    e = z0_experts.reshape(k, b, -1)
    t = z0.reshape(1, b, -1).expand_as(e)
    return torch.nn.functional.cosine_similarity(e, t, dim=2, eps=1e-8).transpose(0, 1)


def mad_temperature(similarity: torch.Tensor) -> torch.Tensor:
    """Eq. 14: ``1.4826 * median(|s - median(s)|)`` over all the similarities
    of the batch (a scalar; at least :data:`MIN_TEMPERATURE`)."""
    s = similarity.detach().reshape(-1)
    mad = (s - s.median()).abs().median()
    return (MAD_TO_SIGMA * mad).clamp_min(MIN_TEMPERATURE)


def gate_targets(similarity: torch.Tensor) -> torch.Tensor:
    """Eq. 15: ``softmax(cos / T)`` over the experts with the MAD temperature ``(B, K)``."""
    return torch.softmax(similarity.detach() / mad_temperature(similarity), dim=1)


def diversity_term(z0_experts: torch.Tensor) -> torch.Tensor:
    """``log(1 + (1/K) sum_i max_{j != i} cos(z0_i, z0_j))``, averaged over the batch."""
    k, b = z0_experts.shape[:2]
    if k < 2:
        raise ValueError("the diversity term needs at least two experts")
    e = torch.nn.functional.normalize(z0_experts.reshape(k, b, -1), dim=2, eps=1e-8)
    cos = torch.einsum("ibn,jbn->bij", e, e)  # (B, K, K)
    eye = torch.eye(k, dtype=torch.bool, device=cos.device)
    most_similar = cos.masked_fill(eye, -math.inf).amax(dim=2)  # (B, K)
    return torch.log1p(most_similar.mean(dim=1)).mean()


def gating_loss(gates: torch.Tensor, z0_experts: torch.Tensor, z0: torch.Tensor,
                diversity_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 16 for ``gates (B, K)``: ``(loss, {"gate_ce", "diversity", "temperature"})``;
    ``diversity_weight`` scales the diversity term (1: as printed)."""
    sim = cosine_to_truth(z0_experts, z0)
    targets = gate_targets(sim)
    k = gates.shape[1]
    ce = -(targets * torch.log(gates.clamp_min(1e-12))).sum(dim=1).mean() / k
    div = diversity_term(z0_experts)
    return ce + diversity_weight * div, {"gate_ce": float(ce.detach()), "diversity": float(div.detach()),
                      "temperature": float(mad_temperature(sim))}


class UncertaintyWeight:
    """Eq. 17: ``w = 1 / sigma^2`` with ``sigma^2`` the EMA variance of the
    gating loss (mean and second moment tracked with decay 0.99; the weight
    is 1 until the variance is known)."""

    def __init__(self, decay: float = VARIANCE_DECAY, floor: float = 1e-6) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay, self.floor = decay, floor
        self.mean: float | None = None
        self.second: float | None = None

    @property
    def variance(self) -> float | None:
        if self.mean is None or self.second is None:
            return None
        return max(self.second - self.mean ** 2, 0.0)

    def update(self, loss: float) -> float:
        """Fold in this step's gating loss; return the weight to apply to it."""
        x = float(loss)
        if self.mean is None or self.second is None:
            self.mean, self.second = x, x * x
        else:
            self.mean = self.decay * self.mean + (1 - self.decay) * x
            self.second = self.decay * self.second + (1 - self.decay) * x * x
        var = self.variance
        return 1.0 if not var else 1.0 / max(var, self.floor)

    def state_dict(self) -> dict[str, float | None]:
        return {"mean": self.mean, "second": self.second}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.mean, self.second = state["mean"], state["second"]


def warmup_gates(gates: torch.Tensor, step: int, total_steps: int,
                 uniform_fraction: float = UNIFORM_FRACTION) -> torch.Tensor:
    """``gates`` (``(B, K, ...)``), or uniform ``1/K`` during the first
    ``uniform_fraction`` of the training steps."""
    if step < uniform_fraction * total_steps:
        return torch.full_like(gates, 1.0 / gates.shape[1])
    return gates
