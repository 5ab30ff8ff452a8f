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


#: How a library is split into training and validation rows: ``subjects``
#: (whole subjects validate), ``patches`` (random rows of every subject), or
#: ``auto`` (``subjects`` for the user's own data with at least two usable
#: subjects, ``patches`` for the embedded sample, whose shipped configs use it).
SPLIT_UNITS: tuple[str, ...] = ("auto", "subjects", "patches")


def split_unit(unit: str, source: str, n_subjects: int) -> str:
    """The unit ``auto`` means for ``source`` with ``n_subjects`` usable subjects."""
    if unit != "auto":
        return unit
    return "subjects" if source != "sample" and n_subjects >= 2 else "patches"


def validation_subjects(used: list[int], given: tuple[int, ...], fraction: float, seed: int,
                        salt: int) -> tuple[int, ...]:
    """The subjects that validate: ``given`` (each must be among ``used``), else
    ``max(1, round(fraction * len(used)))`` of ``used`` drawn by the seeded
    permutation of :func:`split_indices`.

    Raises:
        ValueError: fewer than two usable subjects, a given subject that is not
            used (unknown or skipped), or every subject given.
    """
    if len(used) < 2:
        raise ValueError(f"a split by subject needs at least two usable training subjects, got {used}")
    if given:
        missing = sorted(set(given) - set(used))
        if missing:
            raise ValueError(f"validation subjects {missing} are not among the usable training subjects {used}")
        if set(given) >= set(used):
            raise ValueError(f"validation subjects {list(given)} leave no subject to train on")
        return tuple(sorted(given))
    _, val = split_indices(len(used), fraction, seed, salt)
    return tuple(sorted(used[i] for i in val))


def library_split(subject: np.ndarray, unit: str, source: str, given: tuple[int, ...], fraction: float,
                  seed: int, salt: int, *key: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(train rows, validation rows, statement)`` of a library whose rows
    belong to the subjects ``subject (N,)``.

    ``statement`` is what the manifests record: ``{"unit", "training_subjects",
    "validation_subjects"}`` (by subject both lists are disjoint; by patch every
    subject contributes to both).

    Raises:
        ValueError: see :func:`validation_subjects`; ``given`` with a patch split.
    """
    used = sorted(int(s) for s in np.unique(subject))
    unit = split_unit(unit, source, len(used))
    if unit == "patches":
        if given:
            raise ValueError("library.validation_subjects needs library.split 'subjects' (or 'auto' on your own data)")
        train, val = split_indices(len(subject), fraction, seed, salt, *key)
        return train, val, {"unit": "patches", "training_subjects": used, "validation_subjects": used}
    val_subjects = validation_subjects(used, given, fraction, seed, salt)
    is_val = np.isin(subject, val_subjects)
    return (np.flatnonzero(~is_val), np.flatnonzero(is_val),
            {"unit": "subjects", "training_subjects": [s for s in used if s not in val_subjects],
             "validation_subjects": list(val_subjects)})
