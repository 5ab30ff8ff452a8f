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


def test_split_by_subject_keeps_subjects_apart() -> None:
    from training.split import library_split

    subject = np.repeat([0, 3, 5, 8], 10)
    train, val, statement = library_split(subject, "subjects", "/data/own", (), 0.25, 0, REMIX_SPLIT_SALT, 2)
    assert statement["unit"] == "subjects" and len(statement["validation_subjects"]) == 1
    assert set(subject[val]) == set(statement["validation_subjects"])
    assert not set(subject[train]) & set(subject[val]) and len(train) + len(val) == 40
    # auto: subjects on your own data, patches (the shipped configs' split) on the sample
    assert library_split(subject, "auto", "/data/own", (), 0.25, 0, REMIX_SPLIT_SALT)[2]["unit"] == "subjects"
    t, v, st = library_split(subject, "auto", "sample", (), 0.25, 0, REMIX_SPLIT_SALT, 2)
    assert st["unit"] == "patches"
    np.testing.assert_array_equal(v, split_indices(40, 0.25, 0, REMIX_SPLIT_SALT, 2)[1])
    # given subjects
    _, val, st = library_split(subject, "subjects", "/d", (3, 8), 0.25, 0, REMIX_SPLIT_SALT)
    assert st["validation_subjects"] == [3, 8] and set(subject[val]) == {3, 8}
    for given, message in (((4,), "not among the usable"), ((0, 3, 5, 8), "leave no subject")):
        with pytest.raises(ValueError, match=message):
            library_split(subject, "subjects", "/d", given, 0.25, 0, REMIX_SPLIT_SALT)
    with pytest.raises(ValueError, match="at least two usable"):
        library_split(np.zeros(5, int), "subjects", "/d", (), 0.25, 0, REMIX_SPLIT_SALT)
    # one usable subject on your own data: auto falls back to patches
    assert library_split(np.zeros(5, int), "auto", "/d", (), 0.25, 0, REMIX_SPLIT_SALT)[2]["unit"] == "patches"


def test_config_checks_validation_subjects() -> None:
    from conftest import MOEDIFF_TINY
    from SuperResMoELib.core.errors import ConfigError
    from training.config import from_dict
    from training.moediff.config import MoEDiffConfig

    import copy

    cfg = copy.deepcopy(MOEDIFF_TINY)
    cfg["library"].update({"subjects": [0, 1, 2], "split": "subjects", "validation_subjects": [2]})
    assert from_dict(MoEDiffConfig, cfg, "ok").library.validation_subjects == (2,)
    for change, message in (({"validation_subjects": [7]}, "not in library.subjects"),
                            ({"validation_subjects": [0, 1, 2]}, "leave no subject"),
                            ({"split": "patches"}, "needs library.split"),
                            ({"split": "halves"}, "library.split must be")):
        bad = copy.deepcopy(cfg)
        bad["library"].update(change)
        with pytest.raises(ConfigError, match=message):
            from_dict(MoEDiffConfig, bad, "bad")
