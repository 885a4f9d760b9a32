"""Checkers for chapter 6 (result C: the log-partition function and the features f(s))."""
from __future__ import annotations

import numpy as np

from ._core import ExerciseFailed, as_float_array, call, compare, exercise, passed


def _moments(Phi):
    """Empirical mean and biased (divide-by-V) covariance of the columns of Phi."""
    V = Phi.shape[1]
    mu = Phi.sum(axis=1) / V
    centred = Phi - mu[:, None]
    return mu, centred @ centred.T / V


def _reference_gaussian_log_z(theta, Phi):
    mu, Sigma = _moments(Phi)
    return np.log(Phi.shape[1]) + theta @ mu + 0.5 * ((theta @ Sigma) * theta).sum(axis=1)


def _log_z(theta, Phi):
    logits = theta @ Phi
    top = logits.max(axis=1)
    return top + np.log(np.exp(logits - top[:, None]).sum(axis=1))


@exercise("ex-ch06-gaussian", reference=_reference_gaussian_log_z, wrong=[
    # np.cov's default divides by V - 1
    lambda theta, Phi: (np.log(Phi.shape[1]) + theta @ Phi.mean(axis=1)
                        + 0.5 * np.einsum("ni,ij,nj->n", theta, np.cov(Phi), theta)),
    # forgot the 1/2 of the quadratic term
    lambda theta, Phi: (np.log(Phi.shape[1]) + theta @ Phi.mean(axis=1)
                        + np.einsum("ni,ij,nj->n", theta, np.cov(Phi, bias=True), theta)),
    # forgot log V
    lambda theta, Phi: theta @ Phi.mean(axis=1) + 0.5 * np.einsum("ni,ij,nj->n", theta, np.cov(Phi, bias=True), theta),
    # second moment Phi Phi^T / V instead of the covariance
    lambda theta, Phi: (np.log(Phi.shape[1]) + theta @ Phi.mean(axis=1)
                        + 0.5 * np.einsum("ni,ij,nj->n", theta, Phi @ Phi.T / Phi.shape[1], theta)),
    # all pairs theta_i^T Sigma theta_j, shape (n, n)
    lambda theta, Phi: (np.log(Phi.shape[1]) + theta @ Phi.mean(axis=1)
                        + 0.5 * theta @ np.cov(Phi, bias=True) @ theta.T),
])
def check_gaussian_log_z(gaussian_log_z, n_cases: int = 5, seed: int = 0) -> None:
    """Check ``gaussian_log_z(theta, Phi) -> (n,)``: log V + θᵀμ̂ + ½ θᵀΣ̂θ, with μ̂, Σ̂ the mean and
    biased covariance of the columns of Phi."""
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        d = int(rng.integers(2, 6))
        n = d + int(rng.integers(1, 8))
        V = int(rng.integers(3, 25))
        Phi = rng.normal(loc=rng.normal(size=(d, 1)), size=(d, V))
        theta = rng.normal(size=(n, d))
        what = "gaussian_log_z(theta, Phi)"
        got = as_float_array(call(gaussian_log_z, theta.copy(), Phi.copy(), what="gaussian_log_z"), what)
        if got.shape == (n, n):
            raise ExerciseFailed(f"{what} has shape {got.shape}: theta @ Sigma @ theta.T pairs every context with every "
                                 f"other. Keep one quadratic form per row, shape ({n},): "
                                 "np.einsum('ni,ij,nj->n', theta, Sigma, theta).")
        want = _reference_gaussian_log_z(theta, Phi)
        mu, Sigma = _moments(Phi)
        quad = 0.5 * ((theta @ Sigma) * theta).sum(axis=1)
        quad_second = 0.5 * ((theta @ (Phi @ Phi.T / V)) * theta).sum(axis=1)
        compare(got, want, what, rtol=1e-7, atol=1e-9, hints=[
            (lambda g, w: np.allclose(g, w - quad + quad * V / (V - 1), rtol=1e-6),
             "the covariance was divided by V - 1 (np.cov's default). Use the biased covariance, "
             "np.cov(Phi, bias=True): Σ̂ is the covariance of φ_w under the uniform distribution on the words, "
             "which is the Hessian of log Z at θ = 0."),
            (lambda g, w: np.allclose(g, w + quad, rtol=1e-6),
             "the quadratic term is twice too large: the moment generating function of N(μ, Σ) is exp(θᵀμ + ½θᵀΣθ)."),
            (lambda g, w: np.allclose(g, w - np.log(V), rtol=1e-6, atol=1e-9),
             "the constant is missing: log Z = log V + log(mean of exp(θᵀφ_w)), so add log V (the value at θ = 0)."),
            (lambda g, w: np.allclose(g, w - quad + quad_second, rtol=1e-6),
             "you used the second moment Φ Φᵀ / V; Σ̂ is the covariance: subtract the mean column μ̂ first."),
            (lambda g, w: np.allclose(g, _log_z(theta, Phi), rtol=1e-6),
             "that is the exact log Z_θ; the exercise asks for its Gaussian (second-order) prediction."),
            (lambda g, w: np.allclose(g, w - theta @ mu, rtol=1e-6, atol=1e-9),
             "the linear term θᵀμ̂ is missing."),
        ])
    return passed("ex-ch06-gaussian", n_cases)


def _reference_fit_quadratic(theta, log_Z):
    # Design on the monomials theta_i theta_j (i <= j) without the 1/2, then read A off the coefficients:
    # 1/2 A_ii theta_i^2 has coefficient A_ii / 2, and A_ij theta_i theta_j + A_ji theta_j theta_i has A_ij.
    n, d = theta.shape
    pairs = [(i, j) for i in range(d) for j in range(i, d)]
    X = np.column_stack([theta[:, i] * theta[:, j] for i, j in pairs] + [theta, np.ones(n)])
    coef, *_ = np.linalg.lstsq(X, log_Z, rcond=None)
    A = np.zeros((d, d))
    for k, (i, j) in enumerate(pairs):
        A[i, j] = A[j, i] = 2 * coef[k] if i == j else coef[k]
    m = len(pairs)
    return A, coef[m:m + d], float(coef[-1])


def _fit_with(theta, log_Z, diag_weight=0.5, off_weight=1.0, symmetric=True, constant=True):
    """A (possibly wrong) variant of the fit, for the registered wrong answers."""
    n, d = theta.shape
    iu, ju = np.triu_indices(d)
    cols = [theta[:, iu] * theta[:, ju] * np.where(iu == ju, diag_weight, off_weight), theta]
    if constant:
        cols.append(np.ones((n, 1)))
    coef = np.linalg.lstsq(np.hstack(cols), log_Z, rcond=None)[0]
    m = len(iu)
    A = np.zeros((d, d))
    A[iu, ju] = coef[:m]
    if symmetric:
        A[ju, iu] = coef[:m]
    return A, coef[m:m + d], float(coef[-1]) if constant else 0.0


@exercise("ex-ch06-fit", reference=_reference_fit_quadratic, wrong=[
    lambda theta, log_Z: _fit_with(theta, log_Z, diag_weight=1.0),        # no 1/2 on theta_i^2
    lambda theta, log_Z: _fit_with(theta, log_Z, off_weight=0.5),         # 1/2 on the cross terms too
    lambda theta, log_Z: _fit_with(theta, log_Z, symmetric=False),        # only the upper triangle of A
    lambda theta, log_Z: _fit_with(theta, log_Z, constant=False),         # no column of ones
])
def check_fit_quadratic_log_z(fit_quadratic_log_z, n_cases: int = 4, seed: int = 0) -> None:
    """Check ``fit_quadratic_log_z(theta, log_Z) -> (A, b, c)``: the least-squares quadratic
    ½θᵀAθ + bᵀθ + c through the points, with A symmetric.

    Case 0 is an exact quadratic (the fit must recover it); the others are log-partition functions
    of random embeddings, as in the chapter.
    """
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        d = int(rng.integers(2, 5))
        n = 3 * (d + 1) * (d + 2) // 2 + int(rng.integers(0, 20))
        theta = rng.normal(scale=0.7, size=(n, d))
        if case == 0:
            M = rng.normal(size=(d, d))
            A0, b0, c0 = M + M.T, rng.normal(size=d), float(rng.normal()) + 3.0
            log_Z = 0.5 * ((theta @ A0) * theta).sum(axis=1) + theta @ b0 + c0
        else:
            V = int(rng.integers(20, 80))
            log_Z = _log_z(theta, rng.normal(size=(d, V)))
        A_want, b_want, c_want = _reference_fit_quadratic(theta, log_Z)
        what = "fit_quadratic_log_z(theta, log_Z)"
        out = call(fit_quadratic_log_z, theta.copy(), log_Z.copy(), what="fit_quadratic_log_z")
        if hasattr(out, "A") and hasattr(out, "b") and hasattr(out, "c") and not isinstance(out, tuple):
            raise ExerciseFailed(f"{what} returned a fit object; return the tuple (A, b, c) itself.")
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise ExerciseFailed(f"{what} should return a tuple (A, b, c), got {type(out).__name__}"
                                 + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "") + ".")
        A, b, c = (as_float_array(x, f"{name} returned by {what}") for x, name in zip(out, "Abc"))
        b, c = (x.reshape(()) if x.size == 1 and x.ndim <= 1 else x for x in (b, c))
        if A.shape != (d, d):
            raise ExerciseFailed(f"A returned by {what} has shape {A.shape} but should be ({d}, {d}).")
        if c.shape == () and abs(float(c)) < 1e-12 and abs(c_want) > 1e-6:
            raise ExerciseFailed(f"{what}: c is 0; the design matrix needs a column of ones for the constant c.")
        iu = np.triu_indices(d, 1)
        if not np.allclose(A, A.T, rtol=1e-6, atol=1e-9):
            if np.allclose(A[np.tril_indices(d, -1)], 0):
                raise ExerciseFailed(f"{what}: A is upper triangular; write each fitted A_ij into both A[i, j] "
                                     "and A[j, i] (A must be symmetric).")
            raise ExerciseFailed(f"{what}: A is not symmetric; A_ij and A_ji are one unknown, fill both entries.")
        diag = np.diag_indices(d)
        compare(A, A_want, f"A returned by {what}", rtol=1e-6, atol=1e-8, hints=[
            (lambda g, w: np.allclose(g[diag], w[diag] / 2, rtol=1e-6, atol=1e-8) and np.allclose(g[iu], w[iu], rtol=1e-6, atol=1e-8),
             "its diagonal is half the right one: ½θᵀAθ contains ½A_ii θ_i², so the design column of A_ii is ½θ_i², not θ_i²."),
            (lambda g, w: np.allclose(g[iu], 2 * w[iu], rtol=1e-6, atol=1e-8) and np.allclose(g[diag], w[diag], rtol=1e-6, atol=1e-8),
             "its off-diagonal entries are twice the right ones: ½θᵀAθ contains ½(A_ij + A_ji)θ_iθ_j = A_ij θ_iθ_j "
             "for i < j, so the design column of A_ij is θ_iθ_j, without the ½."),
            (lambda g, w: np.allclose(g, 2 * w, rtol=1e-6, atol=1e-8),
             "it is twice the right A: the model is ½θᵀAθ, mind the ½."),
        ])
        compare(b, b_want, f"b returned by {what}", rtol=1e-6, atol=1e-8)
        compare(c, c_want, f"c returned by {what}", rtol=1e-6, atol=1e-8)
    return passed("ex-ch06-fit", n_cases)
