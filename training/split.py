"""The one train/validation split of the trainers' patch libraries.

A split is a random permutation seeded by ``[seed, salt, *key]``: the first
``max(1, round(fraction * n))`` indices validate, the rest train (both sorted).
Each trainer has its own salt, so the two methods' splits are independent
draws; the values are the ones the trainers always used (changing one changes
every trained network).
"""

from __future__ import annotations

import numpy as np

#: Salt of the SS-MoE split of its patch library.
SSMOE_SPLIT_SALT = 0x5A
#: Salt of the REMIx split of each bin's library (the bin is the key).
REMIX_SPLIT_SALT = 0x56


def split_indices(n: int, fraction: float, seed: int, salt: int, *key: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)``: sorted int64 index arrays ``(n - n_val,)`` and ``(n_val,)``
    partitioning ``range(n)``, ``n_val = max(1, round(fraction * n))``.

    Args:
        n: number of items (>= 1).
        fraction: validation fraction in ``[0, 1]``.
        seed: the run's seed.
        salt: the trainer's salt (:data:`SSMOE_SPLIT_SALT`, :data:`REMIX_SPLIT_SALT`).
        key: further seed words (REMIx: the bin).
    """
    perm = np.random.default_rng([int(seed), int(salt), *(int(k) for k in key)]).permutation(int(n))
    n_val = max(1, int(round(fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
