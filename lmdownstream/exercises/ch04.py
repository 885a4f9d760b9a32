"""Checkers for chapter 4 (result A: the bound for other Lipschitz losses, and the spread of v)."""
from __future__ import annotations

import numpy as np

from .. import theory
from ._core import call, compare, exercise, passed


def _reference_result_a_bound(tau, eps, B, gamma=1.0, lipschitz=1.0):
    # the L-Lipschitz loss scales the sqrt(eps) term by L: the bound of an L·B box
    return theory.xent_bound(tau, eps, lipschitz * B, gamma)


@exercise("ex-ch04-lipschitz", reference=_reference_result_a_bound, wrong=[
    # forgot gamma
    lambda tau, eps, B, gamma=1.0, lipschitz=1.0: tau + lipschitz * B * np.sqrt(2 * eps),
    # the Lipschitz constant inside the square root
    lambda tau, eps, B, gamma=1.0, lipschitz=1.0: tau + B * np.sqrt(2 * lipschitz * eps / gamma),
    # B not squared under the root
    lambda tau, eps, B, gamma=1.0, lipschitz=1.0: tau + lipschitz * np.sqrt(2 * B * eps / gamma),
])
def check_result_a_bound(result_a_bound, n_cases: int = 6, seed: int = 0) -> None:
    """Check ``result_a_bound(tau, eps, B, gamma=1.0, lipschitz=1.0) -> float``: tau + L·B·sqrt(2 eps / gamma).

    Each case calls it with all five arguments, then with the defaults (``gamma = lipschitz = 1``),
    where it must equal ``theory.xent_bound(tau, eps, B)``.
    """
    rng = np.random.default_rng(seed)
    what = "result_a_bound(tau, eps, B, gamma, lipschitz)"
    for case in range(n_cases):
        tau = float(rng.uniform(0.05, 0.7))
        eps = float(10 ** rng.uniform(-6, -1))
        B = float(rng.uniform(0.5, 10.0))
        gamma = float(rng.uniform(0.05, 0.9))
        L = float(rng.uniform(1.5, 4.0))
        want = _reference_result_a_bound(tau, eps, B, gamma, L)
        got = call(result_a_bound, tau, eps, B, gamma, L, what="result_a_bound")
        root = np.sqrt(2 * eps / gamma)
        compare(got, want, what, rtol=1e-9, atol=1e-12, hints=[
            (lambda g, w: np.isclose(g, tau + L * B * np.sqrt(2 * eps), rtol=1e-9),
             "you forgot gamma: the change of measure (step 5) divides eps by gamma under the square root."),
            (lambda g, w: np.isclose(g, tau + L * B * np.sqrt(2 * eps * gamma), rtol=1e-9),
             "you multiplied eps by gamma; the change of measure divides by it (a shifted task costs more)."),
            (lambda g, w: np.isclose(g, tau + B * np.sqrt(2 * L * eps / gamma), rtol=1e-9)
             or np.isclose(g, tau + np.sqrt(2 * L * B**2 * eps / gamma), rtol=1e-9),
             "the Lipschitz constant is inside the square root; step 1 multiplies the whole term by L: "
             "tau + L·B·sqrt(2 eps / gamma)."),
            (lambda g, w: np.isclose(g, tau + L * np.sqrt(2 * B * eps / gamma), rtol=1e-9),
             "B is not squared under the root: sqrt(2 B² eps / gamma) = B·sqrt(2 eps / gamma) (Hölder gives a factor B)."),
            (lambda g, w: np.isclose(g, tau + L * B * root / np.sqrt(2), rtol=1e-9)
             or np.isclose(g, tau + L * B * root * np.sqrt(2), rtol=1e-9),
             "the factor 2 is off: Pinsker gives ‖Δ‖₁ <= sqrt(2 KL), so the term is L·B·sqrt(2 eps / gamma)."),
            (lambda g, w: np.isclose(g, tau + L * B * 2 * eps / gamma, rtol=1e-9),
             "the square root is missing: Pinsker and Jensen turn eps into sqrt(2 eps / gamma)."),
            (lambda g, w: np.isclose(g, w + (L - 1) * tau, rtol=1e-9),
             "you multiplied tau by L as well; only the sqrt(eps) term comes from the Lipschitz step."),
            (lambda g, w: np.isclose(g, w - tau, rtol=1e-9),
             "you returned only the excess term; the bound is tau plus it."),
        ])
        got_default = call(result_a_bound, tau, eps, B, what="result_a_bound with its defaults")
        compare(got_default, theory.xent_bound(tau, eps, B), "result_a_bound(tau, eps, B) with the defaults",
                rtol=1e-9, atol=1e-12, hints=[
                    (lambda g, w: True, "with gamma = lipschitz = 1 it should equal theory.xent_bound(tau, eps, B); "
                                        "give gamma and lipschitz the default 1.0."),
                ])
    return passed("ex-ch04-lipschitz", n_cases)


def _reference_half_range(v):
    return 0.5 * (float(np.max(v)) - float(np.min(v)))


@exercise("ex-ch04-spread", reference=_reference_half_range, wrong=[
    # max - min without the 1/2
    lambda v: float(np.max(v) - np.min(v)),
    # the sup norm, as in Hölder's step without the shift
    lambda v: float(np.max(np.abs(v))),
    # the midpoint (the best shift c), not the half range
    lambda v: 0.5 * float(np.max(v) + np.min(v)),
])
def check_half_range(half_range, n_cases: int = 6, seed: int = 0) -> None:
    """Check ``half_range(v) -> float``: (max_w v_w - min_w v_w) / 2, for vectors of mixed, positive and negative signs."""
    rng = np.random.default_rng(seed)
    what = "half_range(v)"
    for case in range(n_cases):
        V = int(rng.integers(3, 60))
        v = rng.normal(size=V) * rng.uniform(0.5, 5.0)
        kind = case % 3
        if kind == 1:
            v = np.abs(v) + rng.uniform(0.1, 1.0)      # all positive
        elif kind == 2:
            v = -np.abs(v) - rng.uniform(0.1, 1.0)     # all negative
        want = _reference_half_range(v)
        got = call(half_range, v.copy(), what="half_range")
        compare(got, want, what, rtol=1e-9, atol=1e-12, hints=[
            (lambda g, w: np.isclose(g, 2 * w, rtol=1e-9),
             "that is max - min, the full range; Hölder's step with the best shift c uses half of it."),
            (lambda g, w: np.isclose(g, np.abs(v).max(), rtol=1e-9),
             "that is ‖v‖_∞ = max |v_w|; the point is to subtract the best constant c first: "
             "‖v - c·1‖_∞ is smallest at the midpoint c and equals (max v - min v) / 2."),
            (lambda g, w: np.isclose(g, 0.5 * (v.max() + v.min()), rtol=1e-9),
             "that is the midpoint (max v + min v) / 2, the best shift c; the half range is (max v - min v) / 2."),
            (lambda g, w: np.isclose(g, 0.5 * (np.abs(v).max() - np.abs(v).min()), rtol=1e-9),
             "you took absolute values first; the half range uses the signed entries, (max v - min v) / 2."),
            (lambda g, w: np.isclose(g, np.std(v), rtol=1e-9) or np.isclose(g, np.std(v) / 2, rtol=1e-9),
             "that is a standard deviation; the half range is (max v - min v) / 2."),
        ])
    return passed("ex-ch04-spread", n_cases)
