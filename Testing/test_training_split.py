"""The one train/validation split of both trainers (training/split.py)."""

from __future__ import annotations

import numpy as np
import pytest

from training.split import REMIX_SPLIT_SALT, SSMOE_SPLIT_SALT, split_indices


def test_salts_keep_their_values() -> None:
    """Changing a salt would change every trained network: they are pinned."""
    assert (SSMOE_SPLIT_SALT, REMIX_SPLIT_SALT) == (0x5A, 0x56)


@pytest.mark.parametrize("n, fraction, seed, salt, key", [
    (48, 0.25, 0, SSMOE_SPLIT_SALT, ()), (3, 0.34, 0, REMIX_SPLIT_SALT, (4,)), (10, 0.0, 7, REMIX_SPLIT_SALT, (1,)),
])
def test_split_is_the_permutation_the_trainers_always_drew(n, fraction, seed, salt, key) -> None:
    train, val = split_indices(n, fraction, seed, salt, *key)
    perm = np.random.default_rng([seed, salt, *key]).permutation(n)  # the trainers' former inline code
    n_val = max(1, int(round(fraction * n)))
    np.testing.assert_array_equal(val, np.sort(perm[:n_val]))
    np.testing.assert_array_equal(train, np.sort(perm[n_val:]))
    assert len(val) >= 1 and sorted([*train, *val]) == list(range(n))


def test_salts_and_keys_give_independent_splits() -> None:
    a = split_indices(100, 0.2, 0, SSMOE_SPLIT_SALT)[1]
    b = split_indices(100, 0.2, 0, REMIX_SPLIT_SALT)[1]
    c = split_indices(100, 0.2, 0, REMIX_SPLIT_SALT, 2)[1]
    assert len(a) == len(b) == len(c) == 20
    assert not np.array_equal(a, b) and not np.array_equal(b, c)
