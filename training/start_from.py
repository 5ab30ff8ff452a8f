"""``--start-from``: a finished run's exported checkpoint, read and matched to
the run that goes on from it before any work (one check for every trainer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from SuperResMoELib.checkpoints.store import Checkpoint, load_checkpoint
from SuperResMoELib.core.errors import CheckpointError, ConfigError

from .config import differing_keys


def matching_checkpoint(path: Path, method: str, task: str | None, cls: type, cfg: Any, data: str,
                        compared: Callable[[str], bool], hint: str) -> Checkpoint:
    """The checkpoint at ``path`` when it was trained on ``data`` with a config
    equal to ``cfg`` on the keys ``compared`` accepts (:func:`training.config.differing_keys`).

    Raises:
        ConfigError: the checkpoint is missing or unreadable, records no
            training config, differs on a compared key (``hint`` says which
            checkpoints to start from instead) or was trained on other data.
    """
    try:
        ck = load_checkpoint(path, method=method, task=task)
    except CheckpointError as exc:
        raise ConfigError(f"--start-from: {exc}") from None
    recorded = ck.manifest.extra.get("training_config")
    if not isinstance(recorded, dict):
        raise ConfigError(f"--start-from: {path} records no training config; it cannot be matched to this run")
    differ = differing_keys(cls, recorded, cfg, f"{path}.json training_config", compared)
    if differ:
        raise ConfigError(f"--start-from: {path} was trained with another config ({', '.join(differ[:8])} "
                          f"differ); {hint}")
    td = ck.manifest.training_data
    trained_on = td.get("data") if isinstance(td, dict) else None
    if trained_on != data:
        raise ConfigError(f"--start-from: {path} was trained on {trained_on!r}, this run reads {data!r}")
    return ck
