"""The fingerprint ranks compare of what a whole-set loader returned (learning/fingerprint.py): what
it covers, which loaders are checked, and the one line naming what differs."""

import numpy as np

from mpidecent import plugins
from mpidecent.learning import fingerprint
from mpidecent.learning.data import Dataset


def _set(features, targets, fixed_test=0):
    return Dataset("x", "binary", features, targets, 2, fixed_test)


def test_a_reordered_shape_changed_or_retyped_set_gets_another_fingerprint_and_its_words():
    x, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
    base = fingerprint.dataset_fingerprint(_set(x, y, fixed_test=5))
    assert base == fingerprint.dataset_fingerprint(_set(x.copy(), y.copy(), fixed_test=5))
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    line = fingerprint.mismatch("m:load", [base, base, fingerprint.dataset_fingerprint(
        _set(swapped, y, fixed_test=5))])
    assert line.startswith("[data] name = 'm:load': ranks 0 and 2 loaded different train features "
                           "(checksum ")
    assert "seed the shuffle" in line and "rank and world_size parameters" in line
    test_only = x.copy()
    test_only[-1, 0] += 1  # a row of the test set
    assert "different test features (checksum" in fingerprint.mismatch(
        "m:load", [base, fingerprint.dataset_fingerprint(_set(test_only, y, fixed_test=5))])
    assert "different train features (shape (15, 2) vs (14, 2))" in fingerprint.mismatch(
        "m:load", [base, fingerprint.dataset_fingerprint(_set(x[1:], y[1:], fixed_test=5))])
    assert "different train targets (dtype int64 vs float64)" in fingerprint.mismatch(
        "m:load", [base, fingerprint.dataset_fingerprint(_set(x, y.astype(float), fixed_test=5))])
    # a rank that loaded nothing (a run --resume skips) is left out; agreement gives None
    assert fingerprint.mismatch("m:load", [None, base, base]) is None


def test_a_large_array_is_checksummed_on_a_strided_sample_of_rows(monkeypatch):
    monkeypatch.setattr(fingerprint, "FULL_BYTES", 800)  # 100 float64: every 4th of 40 rows of 10
    x = np.arange(400.0).reshape(40, 10)
    shape, dtype, crc = fingerprint.array_fingerprint(x)
    assert (shape, dtype) == ((40, 10), "float64")
    changed = x.copy()
    changed[4, 0] = -1  # a sampled row
    assert fingerprint.array_fingerprint(changed)[2] != crc
    changed = x.copy()
    changed[5, 0] = -1  # between the sampled rows: not seen (the price of a bounded cost)
    assert fingerprint.array_fingerprint(changed)[2] == crc


def test_loaders_that_name_rank_or_world_size_are_not_checked():
    def whole(samples=10):
        return None

    def takes_rank(rank=0):
        return None

    def takes_world(world_size=1, **kwargs):
        return None

    def takes_all(**kwargs):
        return None

    checked = {f.__name__: fingerprint.is_checked_loader({"name": plugins.register(f)}, None)
               for f in (whole, takes_rank, takes_world, takes_all)}
    assert checked == {"whole": True, "takes_rank": False, "takes_world": False, "takes_all": True}
    assert not fingerprint.is_checked_loader({"name": "digits"}, None)  # a built-in set
