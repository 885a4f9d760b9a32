r"""Paired tests for claims about trained and real models: is A better than B on *this* test set?

Two classifiers scored on one test set make *paired* predictions: the right comparison looks at
the examples where they disagree, not at two accuracies with their own error bars.

* :func:`mcnemar` -- exact two-sided McNemar test (a binomial test on the discordant pairs);
* :func:`paired_bootstrap` -- the accuracy difference with a percentile bootstrap interval,
  resampling test examples (both models' predictions resampled together);
* :func:`seed_summary` -- mean of a quantity over seeds with a Student-t interval;
* :func:`holm` -- Holm's step-down correction of a family of p-values;
* :func:`compare` -- all of it for one comparison, as a dict (a row of a results table).

Built on scipy where scipy has the distribution (``scipy.stats.binom``, ``scipy.stats.t``).
"""
from __future__ import annotations

import numpy as np

from ._checks import as_array, check_fraction, check_int

__all__ = ["mcnemar", "paired_bootstrap", "seed_summary", "holm", "compare"]


def _correct(x, name: str, n=None) -> np.ndarray:
    """A 1-D array of 0/1 (or bool) "was this test example classified correctly"."""
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one 0/1 entry per test example, shape (n,), but has shape {arr.shape}; "
                         "pass (predictions == labels), not the predictions.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: pass one entry per test example.")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    else:
        arr = as_array(arr, name, ndim=1)
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name} must hold only 0/1 or True/False (correct or not); got values such as "
                             f"{np.unique(arr)[:5].tolist()}. Pass (predictions == labels).")
        arr = arr.astype(np.int64)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but the other model has {n}: both must be scored "
                         "on the same test set, in the same order.")
    return arr


def mcnemar(correct_a, correct_b) -> dict:
    r"""Exact two-sided McNemar test that models A and B have the same accuracy on one test set.

    Parameters
    ----------
    correct_a, correct_b : (n,) 0/1 or bool, whether each model got each test example right
        (same examples, same order).

    Returns
    -------
    dict with ``n``, ``b`` (A right, B wrong), ``c`` (A wrong, B right), ``diff`` (accuracy of A
    minus accuracy of B, ``(b - c) / n``) and ``p`` the exact two-sided p-value
    :math:`\min(1, 2 P[X \le \min(b, c)])`, :math:`X \sim \mathrm{Bin}(b + c, 1/2)`
    (1.0 when the models never disagree).
    """
    from scipy.stats import binom

    a = _correct(correct_a, "correct_a")
    b_arr = _correct(correct_b, "correct_b", n=a.shape[0])
    b = int(np.sum((a == 1) & (b_arr == 0)))
    c = int(np.sum((a == 0) & (b_arr == 1)))
    m = b + c
    p = 1.0 if m == 0 else float(min(1.0, 2.0 * binom.cdf(min(b, c), m, 0.5)))
    return dict(n=int(a.shape[0]), b=b, c=c, diff=(b - c) / a.shape[0], p=p)


def paired_bootstrap(correct_a, correct_b, n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    r"""Accuracy of A minus accuracy of B, with a percentile bootstrap interval.

    Test examples are resampled with replacement ``n_boot`` times, the two models' entries
    together (the pairing is kept), and the interval is the ``(1 - level)/2`` and
    ``(1 + level)/2`` quantiles of the resampled differences.

    Returns
    -------
    (difference, low, high) : floats, the observed difference and the interval.
    """
    a = _correct(correct_a, "correct_a")
    b = _correct(correct_b, "correct_b", n=a.shape[0])
    n_boot = check_int(n_boot, "n_boot", low=10)
    level = check_fraction(level, "level", open_low=True, open_high=True)
    d = (a - b).astype(np.float64)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # blocks of resamples: memory n x 256 at most
        stop = min(n_boot, start + 256)
        idx = rng.integers(0, d.shape[0], size=(stop - start, d.shape[0]))
        diffs[start:stop] = d[idx].mean(axis=1)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(lo), float(hi)


def seed_summary(values, level: float = 0.95) -> dict:
    r"""Mean of a quantity over seeds with a Student-t interval: ``seed_summary([0.81, 0.79, 0.84])``.

    Returns
    -------
    dict with ``n``, ``mean``, ``sd`` (sample standard deviation, ``ddof=1``), ``sem``, ``low``,
    ``high`` (:math:`\bar x \pm t_{n-1, (1+\text{level})/2}\, s/\sqrt n`). With one value the
    interval is undefined: a ValueError says to run more seeds.
    """
    from scipy.stats import t

    x = as_array(values, "values", ndim=1)
    level = check_fraction(level, "level", open_low=True, open_high=True)
    if x.shape[0] < 2:
        raise ValueError(f"seed_summary needs at least 2 values (one per seed) for an interval, got {x.shape[0]}; "
                         "run more seeds.")
    n, mean, sd = x.shape[0], float(x.mean()), float(x.std(ddof=1))
    sem = sd / np.sqrt(n)
    half = float(t.ppf((1 + level) / 2, df=n - 1)) * sem
    return dict(n=n, mean=mean, sd=sd, sem=sem, low=mean - half, high=mean + half)


def holm(pvalues, alpha: float = 0.05):
    r"""Holm's step-down correction of a family of p-values.

    Returns
    -------
    (adjusted, reject) : arrays in the input order; ``adjusted[i]`` is Holm's adjusted p-value
    :math:`\max_{j \le r(i)} \min(1, (m - j + 1)\, p_{(j)})` and ``reject[i]`` is
    ``adjusted[i] <= alpha`` (the family-wise error rate is at most ``alpha``).
    """
    p = as_array(pvalues, "pvalues", ndim=1)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"pvalues must lie in [0, 1]; got min {p.min():.3g}, max {p.max():.3g}.")
    alpha = check_fraction(alpha, "alpha", open_low=True, open_high=True)
    m = p.shape[0]
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted_sorted = np.maximum.accumulate(scaled)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted, adjusted <= alpha


def compare(correct_a, correct_b, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """One paired comparison as a table row: accuracies, difference, bootstrap interval, McNemar p.

    Returns
    -------
    dict with ``n``, ``acc_a``, ``acc_b``, ``diff``, ``low``, ``high``, ``p``.
    """
    a = _correct(correct_a, "correct_a")
    b = _correct(correct_b, "correct_b", n=a.shape[0])
    diff, lo, hi = paired_bootstrap(a, b, n_boot=n_boot, level=level, seed=seed)
    return dict(n=int(a.shape[0]), acc_a=float(a.mean()), acc_b=float(b.mean()), diff=diff, low=lo, high=hi,
                p=mcnemar(a, b)["p"])
