"""Checkers for chapter 5 (result B: softmax language models and conditional-mean features)."""
from __future__ import annotations

import numpy as np
from scipy.special import softmax

from .. import features
from ._core import ExerciseFailed, as_float_array, call, compare, exercise, passed


def _reference_conditional_mean(theta, Phi):
    return features.conditional_mean(theta, Phi)


def _naive_softmax(logits, axis=1):
    e = np.exp(logits)
    return e / e.sum(axis=axis, keepdims=True)


@exercise("ex-ch05-conditional-mean", reference=_reference_conditional_mean, wrong=[
    # forgot to subtract the row maximum: exp overflows for large logits
    lambda theta, Phi: _naive_softmax(theta @ Phi) @ Phi.T,
    # plain mean of the embeddings instead of the p_theta-weighted mean
    lambda theta, Phi: np.tile(Phi.mean(axis=1), (theta.shape[0], 1)),
    # softmax normalised over the contexts (axis 0) instead of over the words
    lambda theta, Phi: _naive_softmax(theta @ Phi - (theta @ Phi).max(axis=0), axis=0) @ Phi.T,
    # weights exp(logits - max) never normalised
    lambda theta, Phi: np.exp(theta @ Phi - (theta @ Phi).max(axis=1, keepdims=True)) @ Phi.T,
    # returned the transpose, (d, n)
    lambda theta, Phi: _reference_conditional_mean(theta, Phi).T,
])
def check_conditional_mean_features(conditional_mean_features, n_cases: int = 6, seed: int = 0) -> None:
    """Check ``conditional_mean_features(theta, Phi) -> (n, d)``: row i is Φ softmax(Φᵀθ_i), stable for large logits.

    The first cases have logits of order one; the last two have logits in the thousands, where
    ``np.exp`` overflows unless the row maximum is subtracted first.
    """
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        d = int(rng.integers(2, 6))
        n = d + int(rng.integers(1, 8))
        V = n + int(rng.integers(1, 30))
        Phi = rng.normal(size=(d, V)) / np.sqrt(d)
        large = case >= n_cases - 2
        theta = rng.normal(size=(n, d)) * (1_000.0 if large else 1.0)
        want = _reference_conditional_mean(theta, Phi)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            got = as_float_array(call(conditional_mean_features, theta.copy(), Phi.copy(),
                                      what="conditional_mean_features"), "conditional_mean_features(theta, Phi)")
        what = "conditional_mean_features(theta, Phi)"
        if got.shape == (d, n):
            raise ExerciseFailed(f"{what} has shape {got.shape}, the transpose of the expected ({n}, {d}): "
                                 "return one row per context (e.g. p @ Phi.T, not Phi @ p.T).")
        if got.shape == (n, V):
            raise ExerciseFailed(f"{what} has shape {got.shape}: that is the next-word distributions p_θ. "
                                 f"Return their mean embeddings Φ p_θ, shape ({n}, {d}): p @ Phi.T.")
        if got.shape == want.shape and not np.all(np.isfinite(got)):
            scale = float(np.abs(theta @ Phi).max())
            raise ExerciseFailed(
                f"{what} contains NaN or inf for logits up to {scale:.0f}: np.exp overflows above about 709. "
                "Subtract each row's maximum logit before exponentiating; the softmax does not change.")
        unnormalised = np.exp(theta @ Phi - (theta @ Phi).max(axis=1, keepdims=True)) @ Phi.T
        flipped = softmax(-(theta @ Phi), axis=1) @ Phi.T
        compare(got, want, what, rtol=1e-7, atol=1e-9, hints=[
            (lambda g, w: np.allclose(g, np.tile(Phi.mean(axis=1), (n, 1)), rtol=1e-6, atol=1e-9),
             "every row is the plain average of the embeddings (that is Φ p_θ at θ = 0); weight column w "
             "by p_θ(w) = softmax(Φᵀθ_i)_w."),
            (lambda g, w: np.allclose(g, unnormalised, rtol=1e-6, atol=1e-9),
             "the weights do not sum to 1: divide exp(logits) by its row sum before averaging the embeddings."),
            (lambda g, w: np.allclose(g, flipped, rtol=1e-6, atol=1e-9),
             "the logits have the wrong sign: p_θ(w) is proportional to exp(+θᵀφ_w)."),
            (lambda g, w: np.allclose(g, _col_softmax_mean(theta, Phi), rtol=1e-6, atol=1e-9),
             "the softmax must normalise over the words (axis 1 of theta @ Phi), one distribution per context, "
             "not over the contexts."),
        ])
    return passed("ex-ch05-conditional-mean", n_cases)


def _col_softmax_mean(theta, Phi):
    return softmax(theta @ Phi, axis=0) @ Phi.T
