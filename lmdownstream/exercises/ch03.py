"""Checkers for chapter 3 (natural tasks: the prior entropy bound and the shape of tau(B))."""
from __future__ import annotations

import numpy as np

from ._core import ExerciseFailed, as_float_array, call, compare, exercise, passed


def _class_prior(y, weights):
    weights = np.asarray(weights, dtype=float)
    return np.array([weights[y == c].sum() for c in (0, 1)]) / weights.sum()


def _reference_prior_entropy(y, weights):
    pi = _class_prior(y, weights)
    pi = pi[pi > 0]
    return float(-(pi * np.log(pi)).sum())


def _entropy(q, log=np.log):
    q = np.asarray(q, dtype=float)
    q = q[q > 0]
    return float(-(q * log(q)).sum())


@exercise("ex-ch03-prior-entropy", reference=_reference_prior_entropy, wrong=[
    # log base 2 (bits instead of nats)
    lambda y, w: _entropy(_class_prior(y, w), np.log2),
    # class frequencies counted, the weights ignored
    lambda y, w: _entropy([np.mean(y == 0), np.mean(y == 1)]),
    # entropy of the weights themselves, not of the class distribution
    lambda y, w: _entropy(np.asarray(w) / np.sum(w)),
])
def check_prior_entropy(prior_entropy, n_cases: int = 6, seed: int = 0) -> None:
    """Check ``prior_entropy(y, weights) -> float``: the entropy in nats of pi_c = sum of the weights w_s with y_s = c.

    ``y`` holds labels in {0, 1} and ``weights`` a distribution over the contexts (it sums to 1). The last
    case has a single class, whose entropy is 0 (with the convention 0 log 0 = 0).
    """
    rng = np.random.default_rng(seed)
    what = "prior_entropy(y, weights)"
    for case in range(n_cases):
        n = int(rng.integers(5, 60))
        y = rng.integers(0, 2, n)
        y[:2] = (0, 1)                                   # both classes present ...
        if case == n_cases - 1:
            y[:] = int(rng.integers(0, 2))               # ... except in the last case
        rng.shuffle(y)
        w = rng.dirichlet(np.full(n, 0.5)) + 1e-6
        w /= w.sum()
        want = _reference_prior_entropy(y, w)
        with np.errstate(divide="ignore", invalid="ignore"):
            got = call(prior_entropy, y.copy(), w.copy(), what="prior_entropy")
        got_arr = as_float_array(got, what)
        if got_arr.ndim == 0 and not np.isfinite(got_arr) and case == n_cases - 1:
            raise ExerciseFailed(f"{what} is {float(got_arr)} for a task with a single class (pi = (1, 0) or (0, 1)): "
                                 "0 log 0 is 0 by convention, so skip the classes with pi_c = 0 (its entropy is 0).")
        pi = _class_prior(y, w)
        compare(got, want, what, rtol=1e-7, atol=1e-10, hints=[
            (lambda g, v: np.isclose(g, v / np.log(2), rtol=1e-7),
             "you used log base 2 (bits); the book measures losses in nats, like tau: use np.log."),
            (lambda g, v: np.isclose(g, -v, rtol=1e-7),
             "it has the wrong sign: the entropy -sum_c pi_c log pi_c is non-negative."),
            (lambda g, v: np.isclose(g, _entropy([np.mean(y == 0), np.mean(y == 1)]), rtol=1e-7),
             "you used the fraction of contexts in each class; pi_c sums the weights p_T(s) of the contexts of class c."),
            (lambda g, v: np.isclose(g, _entropy(w), rtol=1e-7),
             "that is the entropy of the weights over contexts; first sum the weights per class, pi_c = w[y == c].sum()."),
            (lambda g, v: any(np.isclose(g, -q * np.log(q), rtol=1e-7) for q in pi if q > 0),
             "you kept only one class's term; the entropy sums -pi_c log pi_c over both classes."),
        ])
    return passed("ex-ch03-prior-entropy", n_cases)


def _reference_is_convex_decreasing(Bs, taus, tol):
    Bs, taus = np.asarray(Bs, dtype=float), np.asarray(taus, dtype=float)
    d = np.diff(taus) / np.diff(Bs)
    return bool(np.all(np.diff(taus) <= tol) and np.all(np.diff(d) / np.diff(Bs)[1:] >= -tol))


def _cases(rng):
    """(kind, Bs, taus, tol, expected); each expected answer holds for any positive scaling of the divided differences."""
    tol = float(10 ** rng.uniform(-7, -5))
    a, c = rng.uniform(0.2, 1.0), rng.uniform(0.3, 2.0)
    n = int(rng.integers(8, 16))
    lin = np.linspace(0.0, rng.uniform(5, 10), n)
    log = np.logspace(-1, np.log10(rng.uniform(5, 10)), n)
    top = log[-1]
    return [
        # a tau-like curve: convex and decreasing towards a floor
        ("convex", lin, a + c * np.exp(-lin / rng.uniform(1, 3)), tol, True),
        # convex and decreasing on an uneven grid, but concave as a function of the index
        ("uneven", log, a + c * (log - top) ** 2 / top**2, tol, True),
        # convex, decreasing, then flat up to solver noise well below tol
        ("noise", lin, np.maximum(a + c * (1 - lin / lin[n // 2]) ** 2 * (lin < lin[n // 2]), a)
         + rng.uniform(-tol / 500, tol / 500, n), tol, True),
        # decreasing but concave
        ("concave", lin, a + c * (1 - (lin / lin[-1]) ** 2), tol, False),
        # convex but it rises at the end
        ("rises", lin, a + c * (lin / lin[-1] - 0.6) ** 2, tol, False),
        # convex but increasing
        ("increasing", log, a + c * (log / top) ** 2, tol, False),
    ]


_HINTS = {
    ("convex", False): "you rejected a convex, decreasing sequence (a + c·exp(-B/s) on an even grid); check the signs "
                       "of your two conditions: first differences <= tol, second divided differences >= -tol.",
    ("uneven", False): "you rejected a convex, decreasing sequence on an uneven grid (np.logspace, like Bs): "
                       "divide the differences of taus by the differences of Bs before taking second differences; "
                       "the plain second differences of the values need not be >= 0 when the spacing grows.",
    ("noise", False): "you rejected a convex, non-increasing sequence whose flat part wiggles by much less than tol "
                      "(solver noise): compare with tol, np.diff(taus) <= tol and ... >= -tol, not with 0.",
    ("concave", True): "you accepted a decreasing but concave sequence: also check convexity, "
                       "the second divided differences np.diff(np.diff(taus) / np.diff(Bs)) must be >= -tol.",
    ("rises", True): "you accepted a convex sequence that goes back up: also check that it is non-increasing, "
                     "np.all(np.diff(taus) <= tol).",
    ("increasing", True): "you accepted an increasing sequence: check that the first differences are <= tol "
                          "(non-increasing), not >= -tol.",
}


@exercise("ex-ch03-convex-tau", reference=_reference_is_convex_decreasing, wrong=[
    # only non-increasing: convexity forgotten
    lambda Bs, taus, tol: bool(np.all(np.diff(taus) <= tol)),
    # tol ignored: exact comparisons with 0 fail on solver noise
    lambda Bs, taus, tol: bool(np.all(np.diff(taus) <= 0)
                               and np.all(np.diff(np.diff(taus) / np.diff(Bs)) >= 0)),
    # second differences of the values, not divided by the grid spacing
    lambda Bs, taus, tol: bool(np.all(np.diff(taus) <= tol) and np.all(np.diff(taus, n=2) >= -tol)),
])
def check_is_convex_decreasing(is_convex_decreasing, n_rounds: int = 3, seed: int = 0) -> None:
    """Check ``is_convex_decreasing(Bs, taus, tol) -> bool`` on convex/non-convex, increasing/decreasing grids.

    Each round has six sequences: three convex non-increasing ones (an even grid, an uneven
    ``np.logspace`` grid, one with a flat tail carrying noise far below ``tol``) and three that are not
    (concave, convex but rising at the end, increasing).
    """
    rng = np.random.default_rng(seed)
    n_cases = 0
    for _ in range(n_rounds):
        for kind, Bs, taus, tol, expected in _cases(rng):
            got = call(is_convex_decreasing, Bs.copy(), taus.copy(), tol, what="is_convex_decreasing")
            if np.ndim(got) != 0 or not isinstance(got, (bool, np.bool_)):
                raise ExerciseFailed(f"is_convex_decreasing(Bs, taus, tol) returned {type(got).__name__} "
                                     f"{np.shape(got) if np.ndim(got) else ''}; return a single True or False "
                                     "(combine the checks with np.all(...) and `and`).")
            if bool(got) != expected:
                raise ExerciseFailed(f"is_convex_decreasing(Bs, taus, tol) is not right: {_HINTS[(kind, bool(got))]}")
            n_cases += 1
    return passed("ex-ch03-convex-tau", n_cases)
