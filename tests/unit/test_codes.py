"""Gradient codes and straggler models (coding/): property 1 of docs/algorithms/gradient-coding.md.
"""

import itertools

import numpy as np
import pytest

from mpidecent.coding.codes import NotDecodable, crc, frc, sgc, uncoded
from mpidecent.coding.stragglers import StragglerModel


def _partition_gradients(n: int, d: int = 7) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, d))


@pytest.mark.parametrize("make, n, s", [(frc, 6, 1), (frc, 6, 2), (frc, 8, 1), (frc, 8, 3), (crc, 6, 2),
                                        (crc, 8, 3), (crc, 5, 1)])
def test_exact_decoding_over_every_admissible_straggler_set(make, n, s):
    """Property 1: Σ_{i∈F} a_i c_i = Σ_j g_j to 1e-10 relative for every straggler set with |S| ≤ s."""
    code = make(n, s)
    g = _partition_gradients(n)
    c = code.B @ g  # what each worker would send
    target = g.sum(axis=0)
    for size in range(s + 1):
        for stragglers in itertools.combinations(range(n), size):
            finished = np.ones(n, dtype=bool)
            finished[list(stragglers)] = False
            a = code.decode(finished)
            assert np.all(a[~finished] == 0)
            assert np.linalg.norm(a @ c - target) <= 1e-10 * np.linalg.norm(target), stragglers


@pytest.mark.parametrize("make, n, s", [(frc, 6, 2), (crc, 6, 2)])
def test_more_stragglers_than_tolerated_is_an_error_unless_approximate(make, n, s):
    code = make(n, s)
    finished = np.ones(n, dtype=bool)
    finished[: s + 1] = False  # FRC: a whole group; CRC: too few rows
    with pytest.raises(NotDecodable, match=f"more than s = {s} stragglers"):
        code.decode(finished)
    a = code.decode(finished, approximate=True)
    assert np.all(a[~finished] == 0) and np.any(a != 0)


def test_codes_hold_the_specified_partitions():
    assert frc(6, 2).partitions(4).tolist() == [1, 3, 5]  # group 1 of 2: a stride
    assert frc(8, 3).partitions(0).tolist() == [0, 2, 4, 6]
    assert crc(6, 2).partitions(5).tolist() == [0, 1, 5]
    assert sgc(6, 3, 0.2).partitions(5).tolist() == [0, 1, 5]
    np.testing.assert_array_equal(uncoded(4).B, np.eye(4))
    with pytest.raises(ValueError, match=r"FRC needs \(s \+ 1\) \| n"):
        frc(7, 2)


def test_sgc_and_uncoded_estimates_are_unbiased_under_their_straggler_models():
    n, p = 6, 0.3
    g = _partition_gradients(n)
    code = sgc(n, 2, p)
    model = StragglerModel("bernoulli", n, seed=1, p=p)
    estimates = []
    for t in range(20000):
        finished = ~model.stragglers(t)
        if finished.any():
            estimates.append(code.decode(finished) @ (code.B @ g))
    # E[ĝ] = Σ_j g_j (up to the rare all-straggle steps, probability p^n ≈ 7e-4)
    mean = np.mean(estimates, axis=0)
    assert np.linalg.norm(mean - g.sum(axis=0)) <= 0.03 * np.linalg.norm(g.sum(axis=0))
    unc = uncoded(n)
    finished = np.array([True, True, False, True, False, True])
    np.testing.assert_allclose(unc.decode(finished) @ g, 1.5 * g[finished].sum(axis=0))


def test_straggler_models_are_seeded():
    fixed = StragglerModel("fixed", 6, seed=3, count=2)
    sets = [fixed.stragglers(t) for t in range(50)]
    assert all(s.sum() == 2 for s in sets)
    assert [s.tolist() for s in sets] == [StragglerModel("fixed", 6, seed=3, count=2).stragglers(t).tolist()
                                          for t in range(50)]
    assert len({tuple(s) for s in sets}) > 5  # the set changes from step to step
    bern = StragglerModel("bernoulli", 1000, seed=3, p=0.25)
    assert abs(bern.stragglers(0).mean() - 0.25) < 0.05
    delay = StragglerModel("delay", 6, seed=3, shift_s=0.01, mean_s=0.02)
    assert not delay.logical and not delay.stragglers(0).any()
    waits = [delay.delay(w, t) for w in range(6) for t in range(200)]
    assert min(waits) >= 0.01 and abs(np.mean(waits) - 0.03) < 0.005
    assert delay.delay(2, 7) == delay.delay(2, 7) != delay.delay(3, 7)
