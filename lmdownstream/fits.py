r"""Regression helpers of the book: R², log-log slopes, ridge with a validation split, log Z quadratics.

* :func:`r2` -- the coefficient of determination, pooled over all outputs;
* :func:`loglog_slope` -- the least-squares slope of :math:`\log y` on :math:`\log x` (the rates
  :math:`\varepsilon^{1/2}` of chapters 4, 5, 6 and 8);
* :func:`split_indices` -- a seeded split of ``range(n)``, optionally keeping groups whole;
* :func:`ridge_fit` -- ridge regression on standardised columns, the ridge chosen on a
  validation split from :data:`RIDGE_GRID`; :func:`fit_linear_map` -- the same, as (W, w0, info);
* :func:`fit_log_partition` (least squares) and :func:`fit_pc_quadratic` (quadratic in the top-k
  principal directions) -- quadratic models :class:`LogPartitionFit` of
  :math:`\log Z_\theta` (result C); :func:`gaussian_log_partition` -- the Gaussian prediction of it.

Numpy only; the many mid-sized BLAS calls run under ``config.threads(1)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import config
from ._checks import as_array, check_fraction, check_int, check_nonnegative, check_weights

__all__ = [
    "RIDGE_GRID",
    "r2",
    "loglog_slope",
    "split_indices",
    "RidgeFit",
    "ridge_fit",
    "fit_linear_map",
    "LogPartitionFit",
    "fit_log_partition",
    "fit_pc_quadratic",
    "gaussian_log_partition",
]

#: Candidate ridge penalties (relative: per standardised column and per training point) tried on
#: a validation split when ``ridge=None``.
RIDGE_GRID = tuple(10.0 ** e for e in range(-8, 3))


# --------------------------------------------------------------------------- R^2 and slopes
def r2(y_true, y_pred) -> float:
    r"""Coefficient of determination, pooled over all coordinates of a vector target.

    .. math::

        R^2 = 1 - \frac{\sum_{i,j} (y_{ij} - \hat y_{ij})^2}{\sum_{i,j} (y_{ij} - \bar y_j)^2}

    with :math:`\bar y_j` the mean of coordinate j over the rows given. 1-D: the usual
    ``sklearn.metrics.r2_score``; 2-D: ``r2_score(..., multioutput="variance_weighted")``, not the
    mean of the per-coordinate :math:`R^2`. Negative (without bound) for predictions worse than the mean.

    y_true, y_pred : (n,) or (n, m), the same shape, n >= 2. Returns a float (for constant
    targets: 1.0 if the prediction hits them, -inf if not).
    """
    y = as_array(y_true, "y_true", ndim=(1, 2))
    p = as_array(y_pred, "y_pred", ndim=(1, 2))
    if y.shape != p.shape:
        raise ValueError(f"y_true has shape {y.shape} but y_pred has shape {p.shape}; they must match.")
    if y.shape[0] < 2:
        raise ValueError(f"R^2 needs at least 2 rows, got shape {y.shape}.")
    sse = float(np.sum((y - p) ** 2))
    sst = float(np.sum((y - y.mean(axis=0)) ** 2))
    if sst == 0.0:
        return 1.0 if sse == 0.0 else float("-inf")
    return 1.0 - sse / sst


def loglog_slope(x, y, where=None, drop_nonpositive: bool = False) -> float:
    r"""Least-squares slope a of :math:`\log y \approx a \log x + c` (``np.polyfit`` of degree 1).

    The rate of a power law :math:`y \propto x^a`: ``loglog_slope(eps, bound - tau)`` is 1/2.

    x, y : (n,); where : optional (n,) bool mask of the points to use (e.g. ``eps <= 1e-2``);
    drop_nonpositive : skip points with x <= 0 or y <= 0 (e.g. a model at least as good as tau)
    instead of raising. Returns a float; ValueError if fewer than 2 points with distinct x remain.
    """
    x = as_array(x, "x", ndim=1)
    y = as_array(y, "y", ndim=1)
    if x.shape != y.shape:
        raise ValueError(f"x has {x.shape[0]} points but y has {y.shape[0]}; pass one y per x.")
    keep = np.ones(x.shape[0], dtype=bool)
    if where is not None:
        keep = np.asarray(where, dtype=bool)
        if keep.shape != x.shape:
            raise ValueError(f"where must be a bool mask of shape {x.shape} but has shape {keep.shape}.")
    positive = (x > 0) & (y > 0)
    if not drop_nonpositive and np.any(keep & ~positive):
        raise ValueError(
            f"{int(np.sum(keep & ~positive))} selected point(s) have x <= 0 or y <= 0, which have no "
            "logarithm; pass drop_nonpositive=True to skip them (or a where= mask)."
        )
    keep &= positive
    if keep.sum() < 2 or np.ptp(x[keep]) == 0:
        raise ValueError(
            f"a log-log slope needs at least 2 points with positive x, y and distinct x; "
            f"{int(keep.sum())} remain."
        )
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


# --------------------------------------------------------------------------- ridge regression
def split_indices(n: int, fraction: float, seed=0, groups=None):
    r"""A seeded split of ``range(n)`` into sorted index arrays (kept, held), ``fraction`` held.

    With ``groups`` ((n,) labels, e.g. the text of each context) whole groups are held out,
    shuffled and taken until the held rows reach ``fraction * n`` (at least one group each side).
    """
    n = check_int(n, "n")
    fraction = check_fraction(fraction, "fraction", open_low=True, open_high=True)
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_held = int(round(fraction * n))
        return np.sort(perm[n_held:]), np.sort(perm[:n_held])
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) (one label per row) but has shape {groups.shape}.")
    uniq = np.unique(groups)
    if uniq.shape[0] < 2:
        raise ValueError("groups has a single group; a grouped split needs at least two groups.")
    order = rng.permutation(uniq)
    counts = np.array([np.count_nonzero(groups == g) for g in order])
    k = int(np.searchsorted(np.cumsum(counts), fraction * n) + 1)
    k = min(max(k, 1), len(uniq) - 1)
    held = np.isin(groups, order[:k])
    return np.flatnonzero(~held), np.flatnonzero(held)


def _standardizer(X):
    """Column means and scales of X (constant columns are left unscaled)."""
    sd = X.std(axis=0)
    return X.mean(axis=0), np.where(sd > 0, sd, 1.0)


def _ridge_path(X, Y, Xv, lambdas):
    """Validation predictions of centred ridge regressions, one per lambda > 0, from one SVD of X."""
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    UtY = U.T @ Y
    XvV = Xv @ Vt.T
    for lam in lambdas:
        shrink = S / (S * S + lam)
        yield lam, XvV @ (shrink[:, None] * UtY if UtY.ndim == 2 else shrink * UtY)


@dataclass
class RidgeFit:
    """Result of :func:`ridge_fit`: ``coef`` (p,) or (p, m) for the raw columns, ``intercept``
    (float or (m,)), ``ridge`` (the relative penalty used) and ``val_r2`` (the validation R² of the
    chosen ridge; NaN for a fixed ridge). ``predict(X)`` is ``X @ coef + intercept``."""

    coef: np.ndarray
    intercept: object
    ridge: float
    val_r2: float

    def predict(self, X) -> np.ndarray:
        """(n, p) -> (n,) or (n, m)."""
        X = as_array(X, "X", ndim=2)
        if X.shape[1] != self.coef.shape[0]:
            raise ValueError(f"X has {X.shape[1]} columns but the fit has {self.coef.shape[0]}.")
        return X @ self.coef + self.intercept


def _ridge(X, Y, ridge, val_fraction, seed, groups) -> RidgeFit:
    """:func:`ridge_fit` on validated float64 arrays (no thread limit)."""
    n = X.shape[0]
    val_r2 = float("nan")
    if ridge is None:
        fit, val = split_indices(n, val_fraction, seed, groups)
        if len(fit) < 2 or len(val) < 2:
            raise ValueError(f"{n} rows are too few to choose the ridge on a validation split; "
                             "pass more rows or a fixed ridge.")
        mean, sd = _standardizer(X[fit])
        ym = Y[fit].mean(axis=0)
        best = (np.inf, None)
        lambdas = [r * len(fit) for r in RIDGE_GRID]
        for lam, pred in _ridge_path((X[fit] - mean) / sd, Y[fit] - ym, (X[val] - mean) / sd, lambdas):
            err = float(np.sum((Y[val] - ym - pred) ** 2))
            if err < best[0]:
                best = (err, lam / len(fit))
        ridge = best[1]
        sst = float(np.sum((Y[val] - Y[val].mean(axis=0)) ** 2))
        val_r2 = 1.0 - best[0] / sst if sst > 0 else float("nan")
    mean, sd = _standardizer(X)
    ym = Y.mean(axis=0)
    Xs = (X - mean) / sd
    if ridge == 0.0:
        coef_s = np.linalg.lstsq(Xs, Y - ym, rcond=None)[0]
    else:
        p, lam = Xs.shape[1], ridge * n
        if p <= n:
            coef_s = np.linalg.solve(Xs.T @ Xs + lam * np.eye(p), Xs.T @ (Y - ym))
        else:  # dual form: p x p would be larger than n x n
            coef_s = Xs.T @ np.linalg.solve(Xs @ Xs.T + lam * np.eye(n), Y - ym)
    coef = coef_s / (sd[:, None] if coef_s.ndim == 2 else sd)
    intercept = ym - mean @ coef
    return RidgeFit(coef, float(intercept) if np.ndim(intercept) == 0 else intercept, float(ridge), val_r2)


def _check_xy(X, Y):
    X = as_array(X, "X", ndim=2)
    Y = as_array(Y, "Y", ndim=(1, 2))
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have shape ({X.shape[0]},) or ({X.shape[0]}, m) but has shape {Y.shape}.")
    return X, Y


def _check_ridge(ridge):
    return None if ridge is None else check_nonnegative(ridge, "ridge (or None, to choose it on a validation split)")


def ridge_fit(X, Y, ridge=None, val_fraction: float = 0.2, seed=0, groups=None) -> RidgeFit:
    r"""Ridge regression :math:`Y \approx X W + w_0` with an unpenalised intercept, all outputs at once.

    Columns of X are standardised on the fitting rows and the penalty is ``ridge * n`` on the
    standardised coefficients: ``make_pipeline(StandardScaler(), Ridge(alpha=ridge * n))``;
    ``ridge=0`` is least squares (minimum norm). ``ridge=None`` picks it from :data:`RIDGE_GRID` by
    the pooled squared error on a validation split of ``val_fraction`` of the rows
    (:func:`split_indices` with ``seed`` and ``groups``), then refits on all rows.

    X : (n, p); Y : (n,) or (n, m). Returns a :class:`RidgeFit`.
    """
    X, Y = _check_xy(X, Y)
    val_fraction = check_fraction(val_fraction, "val_fraction", open_low=True, open_high=True)
    with config.threads(1, torch_threads=False):
        return _ridge(X, Y, _check_ridge(ridge), val_fraction, seed, groups)


def fit_linear_map(X, Y, ridge=None, val_fraction: float = 0.2, seed=0, groups=None):
    r"""The affine map :math:`Y \approx X W + w_0` of :func:`ridge_fit` (e.g. :math:`\Phi p_f \approx W f + w_0`).

    Returns (W (d, m) or (d,), w0 (m,) or float, info dict with ``ridge`` and ``val_r2``).
    """
    fit = ridge_fit(X, Y, ridge=ridge, val_fraction=val_fraction, seed=seed, groups=groups)
    return fit.coef, fit.intercept, dict(ridge=fit.ridge, val_r2=fit.val_r2)


# --------------------------------------------------------------------------- log Z quadratics
@dataclass
class LogPartitionFit:
    r"""A quadratic model of the log-partition function, from :func:`fit_log_partition` or
    :func:`fit_pc_quadratic`.

    .. math::

        \log Z_\theta \approx q(\theta) = \tfrac12 \theta^\top A \theta + b^\top \theta + c,
        \qquad \nabla q(\theta) = A\theta + b.

    Attributes: ``A`` (d, d) symmetric, ``b`` (d,), ``c`` float.
    """

    A: np.ndarray
    b: np.ndarray
    c: float

    def _theta(self, theta):
        theta = as_array(theta, "theta", ndim=(1, 2))
        squeeze = theta.ndim == 1
        theta = np.atleast_2d(theta)
        d = self.A.shape[0]
        if theta.shape[1] != d:
            raise ValueError(f"theta has {theta.shape[1]} columns but the fit is in d={d} dimensions; pass (n, {d}).")
        return theta, squeeze

    def predict(self, theta):
        r""":math:`q(\theta)`: theta (n, d) -> (n,) (a (d,) theta gives a float)."""
        theta, squeeze = self._theta(theta)
        out = 0.5 * np.einsum("ni,ij,nj->n", theta, self.A, theta) + theta @ self.b + self.c
        return float(out[0]) if squeeze else out

    def grad(self, theta):
        r""":math:`\nabla q(\theta) = A\theta + b`: theta (n, d) -> (n, d) (a (d,) theta gives (d,)).

        Under the quadratic assumption this is :math:`\Phi p_\theta = \nabla_\theta \log Z_\theta`.
        """
        theta, squeeze = self._theta(theta)
        out = theta @ self.A + self.b  # A is symmetric
        return out[0] if squeeze else out

    def r2(self, theta, log_Z) -> float:
        r""":func:`r2` of the fit on (held-out) points: theta (n, d), log_Z (n,) the true values."""
        theta, _ = self._theta(theta)
        y = as_array(log_Z, "log_Z", ndim=1)
        if y.shape[0] != theta.shape[0]:
            raise ValueError(f"log_Z has {y.shape[0]} values but theta has {theta.shape[0]} rows; pass one per row.")
        return r2(y, self.predict(theta))


def _quadratic_design(z):
    """Monomials [z_i z_j / (2 if i == j else 1) for i <= j]: (n, k(k+1)/2), and (iu, ju)."""
    iu, ju = np.triu_indices(z.shape[1])
    return z[:, iu] * z[:, ju] * np.where(iu == ju, 0.5, 1.0), (iu, ju)


def _symmetric(coef, iu, ju, k):
    A = np.zeros((k, k))
    A[iu, ju] = coef
    A[ju, iu] = coef
    return A


def fit_log_partition(theta, log_Z, ridge: float = 0.0, weights=None) -> LogPartitionFit:
    r"""Least-squares fit of :math:`\log Z_\theta \approx \tfrac12\theta^\top A\theta + b^\top\theta + c` with A symmetric.

    Result C assumes the log-partition function is quadratic over the :math:`\theta = f(s)` that
    matter; then :math:`\Phi p_{f(s)} = \nabla \log Z_{f(s)} = A f(s) + b`. The unknowns are the
    :math:`d(d+1)/2` entries of A on and above the diagonal, b and c, and the problem is linear:

    .. math::

        \min_{A = A^\top,\, b,\, c}\ \sum_i w_i \big(\log Z_{\theta_i} - \tfrac12\theta_i^\top A\theta_i - b^\top\theta_i - c\big)^2
        + \rho\,\big(\|A\|_F^2 + \|b\|^2\big)

    (:math:`\rho` = ``ridge``; c is never penalised). With ``ridge=0``: ``numpy.linalg.lstsq`` (the
    minimum-norm solution when there are fewer points than unknowns); a quadratic is recovered
    exactly from :math:`n \ge (d+1)(d+2)/2` points in general position.

    theta : (n, d) points; log_Z : (n,) :math:`\log Z_\theta` there; ridge : >= 0, :math:`\rho` (in
    units of the weighted mean squared error); weights : (n,) >= 0, normalised (``None``: uniform).
    Returns a :class:`LogPartitionFit`; ``fit.r2(theta_test, log_Z_test)`` is the held-out :math:`R^2`.
    """
    theta = as_array(theta, "theta", ndim=2)
    y = as_array(log_Z, "log_Z", ndim=1)
    n, d = theta.shape
    if y.shape[0] != n:
        raise ValueError(f"log_Z has {y.shape[0]} values but theta has {n} rows; pass one log Z per row of theta.")
    ridge = check_nonnegative(ridge, "ridge")
    sw = np.sqrt(check_weights(weights, n))
    quad, (iu, ju) = _quadratic_design(theta)
    X = np.hstack([quad, theta, np.ones((n, 1))])
    Xw, yw = X * sw[:, None], y * sw
    if ridge == 0.0:
        coef = np.linalg.lstsq(Xw, yw, rcond=None)[0]
    else:
        # off-diagonal monomials carry A_ij once but ||A||_F^2 counts it twice
        pen = np.concatenate([np.where(iu == ju, 1.0, 2.0), np.ones(d), [0.0]])
        coef = np.linalg.solve(Xw.T @ Xw + ridge * np.diag(pen), Xw.T @ yw)
    m = iu.shape[0]
    return LogPartitionFit(A=_symmetric(coef[:m], iu, ju, d), b=coef[m : m + d].copy(), c=float(coef[-1]))


def fit_pc_quadratic(theta, y, k: int = 16, ridge=None, val_fraction: float = 0.2, seed=0, groups=None):
    r"""Fit :math:`y \approx \tfrac12 z^\top A_k z + w^\top(\theta - m) + c_0` with :math:`z = U_k^\top(\theta - m)`.

    A general quadratic in d dimensions has :math:`(d+1)(d+2)/2` unknowns (166,753 at d = 576), far
    more than there are contexts. This keeps the quadratic part to the top-``k`` principal
    directions :math:`U_k` of ``theta`` (about its mean m) and the linear part in all d
    coordinates: :math:`k(k+1)/2 + d + 1` unknowns, fitted by :func:`ridge_fit`. ``k=0`` is a
    linear fit; ``k=d`` with ``ridge=0`` is :func:`fit_log_partition`.

    The result is in :math:`\theta` coordinates: :math:`A = U_k A_k U_k^\top` (rank <= k),
    :math:`b = w - A m`, :math:`c = c_0 + \tfrac12 m^\top A m - w^\top m`.

    theta : (n, d) training points; y : (n,) values (e.g. :math:`\log Z_\theta`); k : int,
    0 <= k <= min(d, n - 1); ridge, val_fraction, seed, groups : as in :func:`ridge_fit`.
    Returns (fit, info): a :class:`LogPartitionFit` and a dict with ``ridge`` (used), ``val_r2``
    (NaN for a fixed ridge), ``k``, ``n_params``.
    """
    theta = as_array(theta, "theta", ndim=2)
    n, d = theta.shape
    y = as_array(y, "y", ndim=1)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},) (one value per row of theta) but has shape {y.shape}.")
    k = check_int(k, "k", low=0)
    if k > min(d, n - 1):
        raise ValueError(f"k={k} must be <= min(d, n - 1) = {min(d, n - 1)} (d={d}, n={n}); lower k.")
    ridge = _check_ridge(ridge)
    val_fraction = check_fraction(val_fraction, "val_fraction", open_low=True, open_high=True)
    with config.threads(1, torch_threads=False):  # many mid-sized BLAS calls: faster on one thread
        m = theta.mean(axis=0)
        tc = theta - m
        U = np.linalg.eigh(tc.T @ tc)[1][:, ::-1][:, :k]
        quad, (iu, ju) = _quadratic_design(tc @ U)
        res = _ridge(np.hstack([quad, tc]), y, ridge, val_fraction, seed, groups)
    nq = iu.shape[0]
    w = res.coef[nq:]
    A = U @ _symmetric(res.coef[:nq], iu, ju, k) @ U.T
    A = 0.5 * (A + A.T)
    Am = A @ m
    fit = LogPartitionFit(A=A, b=w - Am, c=float(res.intercept + 0.5 * m @ Am - w @ m))
    return fit, dict(ridge=res.ridge, val_r2=res.val_r2, k=k, n_params=nq + d + 1)


def gaussian_log_partition(theta, mu, Sigma, vocab_size: int) -> np.ndarray:
    r"""The Gaussian prediction :math:`\log V + \theta^\top\mu + \tfrac12\theta^\top\Sigma\theta` of :math:`\log Z_\theta`.

    It is the log of :math:`V\,\mathbb{E}_{\phi\sim N(\mu,\Sigma)} e^{\theta^\top\phi}`: exact in
    expectation inside the log, and close to :math:`\log Z_\theta` when the V terms of the sum
    average well, i.e. when no handful of words dominates it (:math:`\theta^\top\Sigma\theta \ll \log V`).

    theta : (n, d); mu : (d,); Sigma : (d, d); vocab_size : int V >= 1. Returns (n,).
    """
    theta = as_array(theta, "theta", ndim=2)
    mu = as_array(mu, "mu", ndim=1)
    Sigma = as_array(Sigma, "Sigma", ndim=2)
    d = theta.shape[1]
    if mu.shape != (d,) or Sigma.shape != (d, d):
        raise ValueError(f"mu must be ({d},) and Sigma ({d}, {d}) for theta with d={d}; got {mu.shape}, {Sigma.shape}.")
    V = check_int(vocab_size, "vocab_size")
    return np.log(V) + theta @ mu + 0.5 * np.einsum("ni,ij,nj->n", theta, Sigma, theta)
