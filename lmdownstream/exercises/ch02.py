"""Checkers for chapter 2 (language modelling and cross-entropy)."""
from __future__ import annotations

import numpy as np

from .. import losses
from ._core import call, compare, exercise, passed, random_distributions


def _reference_sample_xent(p, pairs):
    return float(-np.log(p[pairs[:, 0], pairs[:, 1]]).mean())


@exercise("ex-ch02-sample-xent", reference=_reference_sample_xent, wrong=[
    lambda p, pairs: float(np.log(p[pairs[:, 0], pairs[:, 1]]).mean()),
    lambda p, pairs: float(-np.log(p[pairs[:, 0], pairs[:, 1]]).sum()),
    lambda p, pairs: float(-np.log2(p[pairs[:, 0], pairs[:, 1]]).mean()),
])
def check_sample_xent(sample_xent, n_cases: int = 5, seed: int = 0) -> None:
    """Check ``sample_xent(p, pairs) -> float``: the mean of ``-log p[s, w]`` over the (s, w) rows of ``pairs``."""
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        n_ctx, V, n = rng.integers(2, 30), rng.integers(2, 50), rng.integers(1, 200)
        p = random_distributions(rng, n_ctx, V)
        pairs = np.stack([rng.integers(0, n_ctx, n), rng.integers(0, V, n)], axis=1)
        want = _reference_sample_xent(p, pairs)
        got = call(sample_xent, p.copy(), pairs.copy(), what="sample_xent")
        nll = -np.log(p[pairs[:, 0], pairs[:, 1]])
        compare(got, want, "sample_xent(p, pairs)", hints=[
            (lambda g, w: np.isclose(g, -w), "it has the wrong sign: cross-entropy is the mean of -log p(w|s), which is positive."),
            (lambda g, w: np.isclose(g, nll.sum()), "you summed over the pairs; the sample form is the mean."),
            (lambda g, w: np.isclose(g, w / np.log(2)), "you used log base 2; the book measures losses in nats (natural log)."),
            (lambda g, w: np.isclose(g, float(-np.log(p[pairs[:, 1] % n_ctx, pairs[:, 0] % V]).mean())),
             "rows of p are contexts and columns are words: index p[pairs[:, 0], pairs[:, 1]]."),
        ])
    return passed("ex-ch02-sample-xent", n_cases)


def _reference_blur(q, alpha):
    u = np.full(len(q), 1.0 / len(q))
    return alpha**2 / 2 * float(((u - q) ** 2 / q).sum())


@exercise("ex-ch02-blur", reference=_reference_blur, wrong=[
    lambda q, a: a**2 * float(((1 / len(q) - q) ** 2 / q).sum()),
    lambda q, a: a**2 / 2 * float(((1 / len(q) - q) ** 2 * len(q)).sum()),
    lambda q, a: float((q * np.log(q / ((1 - a) * q + a / len(q)))).sum()),
])
def check_blur_excess(blur_excess_approx, n_cases: int = 5, seed: int = 0) -> None:
    """Check ``blur_excess_approx(q, alpha) -> float``: the small-alpha value alpha²/2 · chi²(u‖q) of KL(q‖(1-alpha)q + alpha u)."""
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        V = int(rng.integers(2, 40))
        q = random_distributions(rng, 1, V, concentration=2.0)[0]
        alpha = float(10 ** rng.uniform(-5, -2))
        u = np.full(V, 1.0 / V)
        want = _reference_blur(q, alpha)
        exact_kl = float(losses.kl(q[None], ((1 - alpha) * q + alpha * u)[None])[0])
        got = call(blur_excess_approx, q.copy(), alpha, what="blur_excess_approx")
        compare(got, want, "blur_excess_approx(q, alpha)", rtol=1e-6, hints=[
            (lambda g, w: np.isclose(g, alpha**2 / 2 * float(((u - q) ** 2 / u).sum()), rtol=1e-6),
             "you divided by u; the chi-square divergence chi²(u‖q) divides by q."),
            (lambda g, w: np.isclose(g, 2 * w, rtol=1e-6), "you are missing the factor 1/2 from the second-order Taylor term."),
            (lambda g, w: np.isclose(g, exact_kl, rtol=1e-3), "that is the exact KL divergence; the exercise asks for its second-order approximation."),
            (lambda g, w: np.isclose(g, alpha * np.abs(q - u).sum(), rtol=1e-6), "that is the l1 distance, which is first order in alpha."),
        ])
    return passed("ex-ch02-blur", n_cases)
