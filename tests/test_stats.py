"""lmdownstream.stats against independent computations: exact binomial sums, hand-worked cases,
the normal approximation, and Holm's sequential procedure written out."""
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from lmdownstream import stats


def _pairs(b, c, both=0, neither=0):
    """Correctness vectors with b (A right, B wrong), c (A wrong, B right) discordant pairs."""
    a = [1] * b + [0] * c + [1] * both + [0] * neither
    bb = [0] * b + [1] * c + [1] * both + [0] * neither
    return np.array(a), np.array(bb)


def test_mcnemar_hand_worked():
    a, b = _pairs(1, 5, both=10, neither=4)
    out = stats.mcnemar(a, b)
    assert (out["b"], out["c"], out["n"]) == (1, 5, 20)
    assert out["p"] == pytest.approx(2 * (1 + 6) / 64)  # 2 P[Bin(6, 1/2) <= 1]
    assert out["diff"] == pytest.approx((1 - 5) / 20)


@pytest.mark.parametrize("b,c", [(0, 0), (3, 3), (0, 9), (12, 4), (40, 61)])
def test_mcnemar_matches_exact_binomial_sum_and_scipy(b, c):
    a, bb = _pairs(b, c, both=7, neither=2)
    p = stats.mcnemar(a, bb)["p"]
    m = b + c
    if m == 0:
        assert p == 1.0
        return
    brute = min(1.0, 2 * sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2**m)
    assert p == pytest.approx(brute, rel=1e-12)
    assert p == pytest.approx(binomtest(b, m, 0.5).pvalue, rel=1e-9)
    assert stats.mcnemar(bb, a)["p"] == pytest.approx(p)  # symmetric in A and B


def test_paired_bootstrap_agrees_with_normal_approximation():
    rng = np.random.default_rng(3)
    n = 2000
    a = rng.random(n) < 0.80
    b = np.where(rng.random(n) < 0.85, a, ~a)  # agrees with A on 85% of the examples
    diff, lo, hi = stats.paired_bootstrap(a, b, n_boot=4000, seed=1)
    d = a.astype(float) - b.astype(float)
    assert diff == pytest.approx(d.mean())
    half = 1.959964 * d.std(ddof=1) / math.sqrt(n)
    assert lo < diff < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(diff, abs=0.25 * half)


def test_paired_bootstrap_identical_models_and_reproducible():
    a = np.array([1, 0, 1, 1, 0, 1] * 10)
    assert stats.paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    b = np.roll(a, 1)
    assert stats.paired_bootstrap(a, b, seed=5) == stats.paired_bootstrap(a, b, seed=5)


def test_seed_summary_hand_worked():
    out = stats.seed_summary([1.0, 2.0, 3.0])
    assert out["mean"] == 2.0 and out["sd"] == pytest.approx(1.0)
    t_975_2 = 4.302652729911275  # Student t, 2 degrees of freedom, 97.5% quantile (tables)
    assert out["high"] - out["mean"] == pytest.approx(t_975_2 / math.sqrt(3), rel=1e-9)
    assert out["low"] == pytest.approx(2.0 - t_975_2 / math.sqrt(3), rel=1e-9)


def test_holm_hand_worked_and_against_sequential_procedure():
    adjusted, reject = stats.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 9))
        p = rng.random(m) ** 3
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        order = np.argsort(p)
        want = np.zeros(m, bool)
        for j, i in enumerate(order):  # reject in order while p_(j) <= alpha / (m - j)
            if p[i] > alpha / (m - j):
                break
            want[i] = True
        assert stats.holm(p, alpha)[1].tolist() == want.tolist()


def test_compare_row():
    a, b = _pairs(9, 2, both=30, neither=9)
    row = stats.compare(a, b, n_boot=500)
    assert row["acc_a"] == pytest.approx(39 / 50) and row["acc_b"] == pytest.approx(32 / 50)
    assert row["diff"] == pytest.approx(7 / 50) and row["low"] <= row["diff"] <= row["high"]
    assert row["p"] == stats.mcnemar(a, b)["p"]


@pytest.mark.parametrize("call,match", [
    (lambda: stats.mcnemar([1, 0, 1], [1, 0]), "same test set"),
    (lambda: stats.mcnemar([], []), "empty"),
    (lambda: stats.mcnemar([0.2, 1], [1, 0]), "only 0/1"),
    (lambda: stats.mcnemar(np.ones((3, 2)), np.ones((3, 2))), "shape"),
    (lambda: stats.mcnemar([np.nan, 1], [1, 0]), "non-finite"),
    (lambda: stats.seed_summary([0.5]), "at least 2"),
    (lambda: stats.holm([0.2, 1.5]), r"\[0, 1\]"),
    (lambda: stats.paired_bootstrap([1, 0], [0, 1], level=1.0), "level"),
])
def test_bad_input_says_what_to_do(call, match):
    with pytest.raises(ValueError, match=match):
        call()
