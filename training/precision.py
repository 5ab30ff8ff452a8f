"""Mixed precision of a training phase: autocast and, for fp16, a gradient scaler.

Modes (:data:`AMP_MODES`): ``"none"`` (float32, the CPU default), ``"bf16"``
(bfloat16 autocast, no scaling: the CUDA default where the GPU supports it) and
``"fp16"`` (float16 autocast with :class:`torch.amp.GradScaler`, CUDA only).
Losses are computed in float32 on the autocast outputs.  The scaler's state is
plain numbers, saved with the phase state (:meth:`Precision.state_dict`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from SuperResMoELib.core.errors import ConfigError

#: ``--amp`` choices; ``"auto"`` resolves with :func:`resolve_amp`.
AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(choice: str | None, device: torch.device) -> str:
    """The mode for ``choice`` (``"auto"``/None, or one of :data:`AMP_MODES`) on ``device``.

    ``auto``: bf16 on a CUDA device that supports it, else fp16 on CUDA, none on the CPU.

    Raises:
        ConfigError: an unknown mode, or fp16 asked for on the CPU.
    """
    text = (choice or "auto").strip().lower()
    if text == "auto":
        if device.type != "cuda":
            return "none"
        with torch.cuda.device(device):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if text not in AMP_MODES:
        raise ConfigError(f"unknown --amp {choice!r}; choose auto, {', '.join(AMP_MODES)}")
    if text == "fp16" and device.type != "cuda":
        raise ConfigError(f"--amp fp16 needs a CUDA device, not {device}; use bf16 or none")
    return text


class Precision:
    """Autocast and the optimiser step of one phase.

    Args:
        mode: one of :data:`AMP_MODES` (already resolved).
        device: the training device.
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP_MODES:
            raise ConfigError(f"unknown AMP mode {mode!r}; choose {', '.join(AMP_MODES)}")
        self.mode = mode
        self.device = torch.device(device)
        self.scaler = torch.amp.GradScaler(self.device.type) if mode == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context of the forward pass (a no-op for ``"none"``)."""
        if self.mode == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.mode])

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
             sync: Callable[[], None] | None = None) -> None:
        """Zero the gradients, back-propagate ``loss`` (scaled for fp16), call
        ``sync`` (e.g. average the gradients over ranks), step ``optimizer``."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            if sync is not None:
                sync()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if sync is not None:
            sync()  # scaled gradients: every rank has the same scale, the mean stays scaled
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state (JSON numbers), None without a scaler."""
        return None if self.scaler is None else dict(self.scaler.state_dict())

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict` (ignored when either side has no scaler)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
