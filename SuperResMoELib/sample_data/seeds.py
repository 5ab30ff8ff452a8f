"""Seeds, subject indices and the independent random streams of the sample data.

Every random quantity comes from its own
``numpy.random.SeedSequence([seed, subject, stream, *extra])`` (the stream
number from :data:`RANDOM_STREAMS`), so one quantity does not depend on which
others were generated before it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from SuperResMoELib.core.errors import InputError

#: Independent random streams (third SeedSequence word).
RANDOM_STREAMS: dict[str, int] = {
    "t1_warp": 1,
    "t1_bias": 2,
    "t1_contrast": 3,
    "t1_pair": 4,
    "mudi_warp": 11,
    "mudi_params": 12,
    "mudi_noise": 13,
    "mudi_table": 14,
    "mudi_variation": 15,
}


def _check_index(value: Any, what: str) -> int:
    """``value`` (a subject number, seed or count) as a non-negative ``int``; ``InputError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise InputError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _rng(seed: int, subject: int, stream: str, *extra: int) -> np.random.Generator:
    """The generator of one random quantity: ``SeedSequence([seed, subject, RANDOM_STREAMS[stream], *extra])``."""
    words = [int(seed), int(subject), RANDOM_STREAMS[stream], *[int(x) for x in extra]]
    return np.random.default_rng(np.random.SeedSequence(words))
