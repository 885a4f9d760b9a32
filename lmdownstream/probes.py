r"""Linear probes: L2-regularised logistic regression in torch, as scikit-learn estimators.

* :class:`LogisticProbe` -- binary or multinomial logistic regression at a given C;
* :class:`LogisticProbeCV` -- C chosen on a grid by cross-validation (stratified k-fold by
  default, as the paper's scikit-learn ``LogisticRegressionCV``), then refit on all the data;
* :func:`probe_cv` -- ``LogisticProbeCV(...).fit(X, y)`` in one call.

Both inherit scikit-learn's ``BaseEstimator`` and ``ClassifierMixin`` and pass its
``check_estimator``: ``clone``, ``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` work.
``X`` may also be a torch tensor: the fit then runs on its device (the GPU when there is one)
and ``predict_proba`` / ``decision_function`` return tensors there.

The objective is scikit-learn's, so that a probe here and ``LogisticRegression(C=C)`` there
have the same minimiser: for features :math:`x_i \in \mathbb{R}^D` and labels :math:`y_i`,

.. math::

    \min_{W, b}\; C \sum_{i=1}^n \ell(W^\top x_i + b,\, y_i) + \tfrac12 \|W\|_F^2,

with the intercept :math:`b` not penalised. Two classes: one logit :math:`z`,
:math:`\ell(z, y) = \log(1 + e^{-(2y-1)z})` with :math:`y \in \{0, 1\}` the index in
``classes_``. :math:`K > 2` classes: :math:`K` logits, :math:`\ell(z, y) = -\log
\mathrm{softmax}(z)_y` (multinomial). The solver minimises the same objective divided by
:math:`Cn` (mean loss plus :math:`\|W\|^2 / (2Cn)`), like scikit-learn's ``lbfgs``, and ``tol``
bounds the largest gradient entry of that scaled objective, as scikit-learn's ``tol`` does.

With an intercept, the solver works on centred features :math:`x_i - \bar x` and maps the
intercept back (:math:`b = b_c - W^\top \bar x`): an exact change of variables, since the
penalty ignores :math:`b`, that conditions LM features (which share a large mean vector) far
better. ``tol`` applies to the gradient in these centred coordinates.

The solver is a small batched L-BFGS (two-loop recursion, memory 10, backtracking line
search with an approximate-Wolfe fallback for float32): several independent problems (the CV
folds) are solved in lockstep as one tensor of shape ``(folds, P)``, so one matrix product
serves all folds. :class:`LogisticProbeCV` walks the C grid from small to large C,
warm-starting every fold from its solution at the previous C.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import check_cv
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import config
from ._checks import as_array, as_tensor, check_choice, check_int, check_labels, check_positive

__all__ = ["LogisticProbe", "LogisticProbeCV", "probe_cv"]

_MEMORY = 10  # L-BFGS memory (scipy's default maxcor)
_MAX_LS = 25  # line-search trials per iteration
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------- objective
class _Objective:
    r"""B independent scaled logistic objectives sharing one design matrix.

    Problem ``j`` weights sample ``i`` by ``weights[i, j]`` (``1/n_j`` on its training rows,
    0 elsewhere) and penalises by ``lam[j] = 1/(C_j n_j)``:
    :math:`f_j = \sum_i w_{ij}\,\ell_i + \tfrac{\lambda_j}{2}\|W_j\|^2`. Parameters are rows of
    ``theta`` (B, P): the (K', D) weights flattened, then K' intercepts (K' = 1 for two
    classes, else K). One product ``X @ W^T`` and one ``G^T @ X`` serve all B problems.
    """

    def __init__(self, X, codes, n_classes, weights, fit_intercept):
        self.X = X  # (N, D)
        self.N, self.D = X.shape
        self.K = 1 if n_classes == 2 else n_classes  # logits per sample
        self.weights = weights  # (N, B)
        self.B = weights.shape[1]
        self.fit_intercept = fit_intercept
        self.P = (self.D + int(fit_intercept)) * self.K
        codes_t = torch.as_tensor(codes, device=X.device)
        if self.K == 1:
            self.target = codes_t.to(X.dtype)[:, None]  # (N, 1), broadcasts over B
        else:
            self.target = torch.nn.functional.one_hot(codes_t, self.K).to(X.dtype)[:, None, :]
        self.lam = None  # (B,), set per C

    def split(self, theta):
        """Weights (B, K', D) and intercepts (B, K') or None."""
        B = theta.shape[0]
        W = theta[:, : self.D * self.K].reshape(B, self.K, self.D)
        b = theta[:, self.D * self.K :] if self.fit_intercept else None
        return W, b

    def logits(self, theta):
        """(N, B, K') logits of every sample under every problem's parameters."""
        W, b = self.split(theta)
        B = theta.shape[0]
        Z = torch.nn.functional.linear(self.X, W.reshape(B * self.K, self.D)).reshape(self.N, B, self.K)
        if b is not None:
            Z = Z + b
        return Z

    def __call__(self, theta):
        """Values (B,) and gradients (B, P)."""
        W, _ = self.split(theta)
        B = theta.shape[0]
        Z = self.logits(theta)
        if self.K == 1:
            z = Z[..., 0]
            y = self.target  # (N, 1)
            loss = torch.nn.functional.softplus(z) - y * z  # (N, B)
            G = ((torch.sigmoid(z) - y) * self.weights)[..., None]
        else:
            lse = torch.logsumexp(Z, dim=-1)
            loss = lse - (Z * self.target).sum(-1)
            G = (torch.exp(Z - lse[..., None]) - self.target) * self.weights[..., None]
        f = (loss * self.weights).sum(0) + 0.5 * self.lam * (W * W).sum(dim=(1, 2))
        gW = G.reshape(self.N, B * self.K).T @ self.X  # (B K', D)
        gW = gW.reshape(B, self.K, self.D) + self.lam[:, None, None] * W
        parts = [gW.reshape(B, -1)]
        if self.fit_intercept:
            parts.append(G.sum(0))
        return f, torch.cat(parts, dim=1)


def _centre(Xt, fit_intercept):
    r"""Columns centred when there is an intercept: exact, since the penalty ignores b and
    :math:`W^\top x + b = W^\top (x - \mu) + (b + W^\top \mu)`. Much better conditioned for
    LM features, which share a large mean vector. Returns ``(X - mu, mu)``, mu (D,) or None."""
    if not fit_intercept:
        return Xt, None
    mu = Xt.mean(0)
    return Xt - mu, mu


# --------------------------------------------------------------------------- batched L-BFGS
class _Memory:
    """L-BFGS curvature pairs for B problems; a pair with ``rho = 0`` is a no-op."""

    def __init__(self, B, device, dtype):
        self.S, self.Y, self.rho = [], [], []
        self.gamma = torch.ones(B, device=device, dtype=dtype)
        self.ready = torch.zeros(B, device=device, dtype=torch.bool)
        self.eps = torch.finfo(dtype).eps

    def push(self, s, y, active):
        """Add the pair (s, y) = (step, change of gradient) for the ``active`` problems."""
        sy = (s * y).sum(1)
        yy = (y * y).sum(1)
        ok = active & (sy > self.eps * yy) & (yy > 0)  # curvature condition
        one = torch.ones_like(sy)
        self.rho.append(torch.where(ok, 1.0 / torch.where(ok, sy, one), torch.zeros_like(sy)))
        self.gamma = torch.where(ok, sy / torch.where(ok, yy, one), self.gamma)  # H0 = gamma I
        self.ready |= ok
        self.S.append(s)
        self.Y.append(y)
        if len(self.S) > _MEMORY:
            del self.S[0], self.Y[0], self.rho[0]

    def direction(self, g):
        q = g.clone()
        alphas = []
        for s, y, rho in zip(reversed(self.S), reversed(self.Y), reversed(self.rho)):
            a = rho * (s * q).sum(1)
            q -= a[:, None] * y
            alphas.append(a)
        q *= self.gamma[:, None]
        for s, y, rho, a in zip(self.S, self.Y, self.rho, reversed(alphas)):
            b = rho * (y * q).sum(1)
            q += (a - b)[:, None] * s
        return -q


def _lbfgs(fun, x, *, tol, max_iter):
    """Minimise B independent smooth convex functions in lockstep.

    ``fun(x)`` maps ``x`` (B, P) to values (B,) and gradients (B, P). Problem ``j`` stops when
    ``max|grad_j| <= tol`` (converged), when no step decreases it (the precision floor of the
    dtype) or after ``max_iter`` iterations. Returns ``x, n_iter (B,), converged (B,)``.
    """
    B = x.shape[0]
    c1 = 1e-4
    eps = torch.finfo(x.dtype).eps
    memory = _Memory(B, x.device, x.dtype)
    f, g = fun(x)
    converged = g.abs().amax(1) <= tol
    active = torch.ones_like(converged)  # at least one iteration each, so n_iter >= 1
    n_iter = torch.zeros(B, dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        d = memory.direction(g)
        gtd = (g * d).sum(1)
        uphill = gtd >= 0  # lost curvature information: restart along -g
        if bool(uphill.any()):
            d = torch.where(uphill[:, None], -g, d)
            gtd = (g * d).sum(1)
        # unit step once curvature is known; before, a step of length <= 1 (as scipy)
        t0 = torch.clamp(1.0 / d.norm(dim=1).clamp_min(1e-30), max=1.0)
        t = torch.where(memory.ready & ~uphill, torch.ones_like(gtd), t0)
        # backtracking line search, every problem on its own step
        searching = active.clone()
        x_new, f_new, g_new = x, f, g
        f_slack = 10 * eps * f.abs()
        for _ in range(_MAX_LS):
            x_try = torch.where(searching[:, None], x + t[:, None] * d, x_new)
            f_try, g_try = fun(x_try)
            armijo = f_try <= f + c1 * t * gtd
            # approximate Wolfe (Hager & Zhang): decisive when f differences drown in rounding
            approx = (f_try <= f + f_slack) & ((g_try * d).sum(1) <= (1 - 2 * c1) * gtd.abs())
            ok = searching & torch.isfinite(f_try) & (armijo | approx)
            x_new = torch.where(ok[:, None], x_try, x_new)
            f_new = torch.where(ok, f_try, f_new)
            g_new = torch.where(ok[:, None], g_try, g_new)
            searching &= ~ok
            if not bool(searching.any()):
                break
            denom = 2 * (f_try - f - gtd * t)
            t_quad = -gtd * t * t / torch.where(denom > 0, denom, torch.ones_like(denom))
            t_quad = torch.where((denom > 0) & torch.isfinite(t_quad), t_quad, 0.5 * t)
            t = torch.where(searching, torch.minimum(torch.maximum(t_quad, 0.1 * t), 0.5 * t), t)
        stalled = searching  # no acceptable step: stop these problems
        moved = active & ~stalled
        memory.push(x_new - x, g_new - g, moved)
        n_iter += active.long()
        x, f, g = x_new, f_new, g_new
        converged = converged | (moved & (g.abs().amax(1) <= tol))
        active = active & ~stalled & ~converged
    return x, n_iter, converged


# --------------------------------------------------------------------------- the probes
def _labels(y, n):
    """Codes (n,) in 0..K-1 and the sorted classes (K,) of class labels ``y`` (n,)."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = column_or_1d(y, warn=True)  # a column vector warns (DataConversionWarning) and is used
    check_classification_targets(y)  # continuous targets: "Unknown label type"
    return check_labels(y, n)


class LogisticProbe(ClassifierMixin, BaseEstimator):
    r"""L2-regularised logistic regression (binary or multinomial), fitted by L-BFGS in torch.

    Minimises :math:`C \sum_i \ell(W^\top x_i + b, y_i) + \frac12\|W\|_F^2` (intercept not
    penalised; see the module docstring), the objective of scikit-learn's
    ``LogisticRegression(C=C)``: same minimiser, so the same predictions up to ``tol``.

    ``X`` (n, D) is array-like (numpy, pandas, lists) or a torch tensor. ``predict`` returns a
    numpy array of labels; ``predict_proba`` and ``decision_function`` return torch tensors on
    the input's device for torch input and float64 numpy arrays otherwise.

    Parameters
    ----------
    C : float
        Inverse penalty strength, > 0 (larger C = weaker penalty).
    fit_intercept : bool
        Learn an unpenalised intercept per logit.
    max_iter : int
        L-BFGS iterations at most (scikit-learn's default, 100).
    tol : float
        Stop when the largest gradient entry of the objective divided by :math:`Cn` is
        ``<= tol`` (scikit-learn's ``lbfgs`` criterion and default, 1e-4).
    device : torch.device, str or None
        Where to fit; default: the device of a torch ``X``, else
        :func:`lmdownstream.config.device`.
    dtype : {"float32", "float64"} or torch.float32 / torch.float64
        Precision of the fit: float32 (default, fast) or float64.

    Attributes
    ----------
    classes_ : (K,) array
        The sorted distinct labels; ``predict`` returns values from it.
    coef_ : (1, D) or (K, D) float64 array
        Weights; one row (the logit of ``classes_[1]``) for two classes.
    intercept_ : (1,) or (K,) float64 array
        Zeros when ``fit_intercept=False``. Multinomial intercepts are centred to sum to 0
        (they are defined up to a common shift).
    n_iter_ : int
        L-BFGS iterations run.
    converged_ : bool
        Whether ``tol`` was reached (a ``RuntimeWarning`` says so when not).
    n_features_in_ : int
        D. ``feature_names_in_`` too when ``X`` was a DataFrame with string column names.
    device_ : torch.device
        The device it was fitted on.
    """

    def __init__(self, C=1.0, *, fit_intercept=True, max_iter=100, tol=1e-4, device=None, dtype="float32"):
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype

    def fit(self, X, y):
        """Fit on features ``X`` (n, D) and labels ``y`` (n,) of any sortable type; returns self."""
        C = check_positive(self.C, "C")
        Xt, codes, classes, tol, max_iter = self._fit_inputs(X, y)
        Xc, mu = _centre(Xt, self.fit_intercept)
        self.n_iter_ = self._solve(Xc, mu, codes, classes, C, tol, max_iter)
        return self

    def _features(self, X, reset):
        """``X`` (n, D) validated once: a tensor stays a tensor (floating dtypes kept), anything
        else becomes a float numpy array (scikit-learn's ``validate_data``); sets (``reset``)
        or checks ``n_features_in_``."""
        if not sp.issparse(X) and (X.ndim if isinstance(X, torch.Tensor) else np.asarray(X).ndim) != 2:
            try:
                as_array(X, "X", ndim=2, dtype=None)
            except ValueError as exc:  # scikit-learn's checks look for "Reshape your data"
                raise ValueError(f"Reshape your data: {exc}") from None
        if isinstance(X, torch.Tensor):
            X = as_tensor(X, "X", ndim=2)
            if reset:
                self.n_features_in_ = X.shape[1]
                self.__dict__.pop("feature_names_in_", None)
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input; pass features of the kind used in fit."
                )
            return X
        return validate_data(self, X, reset=reset, dtype=(np.float64, np.float32))

    def _fit_inputs(self, X, y):
        """Validated ``X`` as a tensor on the fitting device, label codes, classes, tol, max_iter."""
        tol = check_positive(self.tol, "tol")
        max_iter = check_int(self.max_iter, "max_iter")
        dtype = _DTYPES[check_choice(str(self.dtype).removeprefix("torch."), "dtype", tuple(_DTYPES))]
        X = self._features(X, reset=True)
        codes, classes = _labels(y, X.shape[0])
        if isinstance(X, torch.Tensor):
            Xt = X.to(device=X.device if self.device is None else self.device, dtype=dtype)
        else:
            Xt = torch.tensor(X, dtype=dtype, device=config.device() if self.device is None else self.device)
        return Xt, codes, classes, tol, max_iter

    def _solve(self, Xc, mu, codes, classes, C, tol, max_iter, init=None):
        """Fit at one C on features ``Xc`` (n, D) centred at ``mu`` (D,) (None: no intercept),
        from ``init`` (1, P) or zeros; sets the fitted attributes, returns the iterations."""
        n, like = Xc.shape[0], dict(device=Xc.device, dtype=Xc.dtype)
        obj = _Objective(Xc, codes, len(classes), torch.full((n, 1), 1.0 / n, **like), self.fit_intercept)
        obj.lam = torch.full((1,), 1.0 / (C * n), **like)
        x0 = torch.zeros(1, obj.P, **like) if init is None else init
        theta, n_iter, converged = _lbfgs(obj, x0, tol=tol, max_iter=max_iter)
        W, b = obj.split(theta)
        W, b = W[0], (b[0] if b is not None else torch.zeros(obj.K, **like))
        if mu is not None:
            b = b - W @ mu
        if obj.K > 1:
            b = b - b.mean()
        self.classes_ = classes
        self.coef_ = W.detach().cpu().double().numpy()
        self.intercept_ = b.detach().cpu().double().numpy()
        self.converged_ = bool(converged[0])
        self.device_ = Xc.device
        if not self.converged_:
            _, g = obj(theta)
            warnings.warn(
                f"LogisticProbe(C={C:g}) stopped after {int(n_iter[0])} iterations with max|grad| = "
                f"{float(g.abs().max()):.2g} > tol = {tol:g}; increase max_iter, use a smaller C, "
                "or fit in dtype='float64' if float32 precision is the limit.",
                RuntimeWarning,
                stacklevel=3,
            )
        return int(n_iter[0])

    def decision_function(self, X):
        """Logits of ``X`` (n, D): (n,) for two classes (of ``classes_[1]``), (n, K) otherwise."""
        check_is_fitted(self)
        X = self._features(X, reset=False)
        if isinstance(X, torch.Tensor):
            W, b = (torch.as_tensor(a, dtype=X.dtype, device=X.device) for a in (self.coef_, self.intercept_))
            Z = torch.nn.functional.linear(X, W, b)
        else:
            Z = X @ self.coef_.T + self.intercept_
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict_proba(self, X):
        """Class probabilities (n, K) of ``X`` (n, D), columns in the order of ``classes_``."""
        Z = self.decision_function(X)
        if isinstance(Z, torch.Tensor):
            return torch.softmax(torch.stack([torch.zeros_like(Z), Z], 1) if Z.ndim == 1 else Z, 1)
        return softmax(np.stack([np.zeros_like(Z), Z], 1) if Z.ndim == 1 else Z, axis=1)

    def predict(self, X):
        """Predicted labels (n,) of ``X`` (n, D), a numpy array of values from ``classes_``."""
        Z = self.decision_function(X)
        Z = Z.detach().cpu().numpy() if isinstance(Z, torch.Tensor) else Z
        return self.classes_[(Z > 0).astype(np.int64) if Z.ndim == 1 else Z.argmax(1)]

    def score(self, X, y, sample_weight=None):
        """Accuracy: the (weighted) fraction of rows of ``X`` (n, D) predicted as ``y`` (n,)."""
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        return float(super().score(X, y, sample_weight))


# --------------------------------------------------------------------------- cross-validation
def _stratified_folds(codes, n_folds, seed):
    """Fold id (n,) per row: each class shuffled and dealt round-robin, so every fold gets
    ``n_c / n_folds`` rows of class c (up to one) and folds differ in size by at most one."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(codes == c)) for c in range(codes.max() + 1)])
    fold = np.empty(codes.shape[0], dtype=np.int64)
    fold[order] = np.arange(codes.shape[0]) % n_folds
    return fold


class LogisticProbeCV(LogisticProbe):
    r""":class:`LogisticProbe` with C chosen by cross-validation, then refit on all rows.

    Like scikit-learn's ``LogisticRegressionCV`` (the paper's probe) with the lbfgs solver:
    for every C of the grid and every split, fit on the training rows and score accuracy on
    the held-out rows; pick the C with the best mean accuracy (ties: the smallest C, as
    scikit-learn with an ascending grid); refit on all rows with that C, starting from the
    mean of the split solutions. Fast because the splits are solved together as one batched
    L-BFGS problem (one matrix product per step serves all of them) and each C warm-starts
    from the solutions at the previous one.

    Parameters
    ----------
    Cs : int or sequence of float
        Grid of C values (> 0), visited in ascending order; an int k means
        ``np.logspace(-4, 4, k)`` (scikit-learn's convention).
    cv : int, cross-validation splitter or iterable of (train, test) index arrays
        An int k (2 <= k <= n): stratified k folds, each class shuffled (``random_state``) and
        dealt round-robin; otherwise as scikit-learn's ``cv`` (e.g. ``PredefinedSplit(folds_)``
        to reproduce given folds).
    fit_intercept, max_iter, tol, device, dtype
        As :class:`LogisticProbe`, for every fit.
    random_state : int
        Seed of the stratified shuffle (int ``cv`` only).
    progress : bool
        Show a tqdm bar over the C grid.

    Attributes
    ----------
    C_ : float
        The chosen C; ``coef_``, ``intercept_``, ``classes_``, ``converged_``, ``device_``,
        ``n_features_in_`` are those of the refit, as in :class:`LogisticProbe`.
    Cs_ : (n_Cs,) array
        The sorted grid.
    scores_ : (k, n_Cs) array
        Held-out accuracy per split and C (scikit-learn's layout); ``cv_scores_`` is its
        transpose (n_Cs, k), the layout of the first ``probe_cv``.
    n_iter_ : (k, n_Cs) int array
        L-BFGS iterations per split and C.
    folds_ : (n,) int array
        The fold of each row (int ``cv`` only).
    """

    def __init__(self, Cs=10, *, cv=5, fit_intercept=True, max_iter=100, tol=1e-4, device=None,
                 dtype="float32", random_state=0, progress=False):
        self.Cs, self.cv, self.random_state, self.progress = Cs, cv, random_state, progress
        self.fit_intercept, self.max_iter, self.tol = fit_intercept, max_iter, tol
        self.device, self.dtype = device, dtype

    def _splits(self, codes, classes):
        """Boolean masks ``train`` and ``test`` (n, k) of the k cross-validation splits."""
        n = codes.shape[0]
        self.__dict__.pop("folds_", None)
        if not isinstance(self.cv, (int, np.integer)) or isinstance(self.cv, (bool, np.bool_)):
            splits = list(check_cv(self.cv, codes, classifier=True).split(np.zeros((n, 1)), codes))
            train, test = np.zeros((2, n, len(splits)), dtype=bool)
            for j, (tr, te) in enumerate(splits):
                train[tr, j], test[te, j] = True, True
            return train, test
        k = check_int(self.cv, "cv", low=2, high=n)
        counts = np.bincount(codes)
        if k > counts.min():
            warnings.warn(
                f"cv={k} but class {classes[int(np.argmin(counts))]!r} has only {counts.min()} "
                f"example(s), so some folds have none of it; use cv <= {counts.min()} or collect "
                "more examples of that class.",
                UserWarning,
                stacklevel=3,
            )
        self.folds_ = _stratified_folds(codes, k, self.random_state)
        test = self.folds_[:, None] == np.arange(k)
        return ~test, test

    def fit(self, X, y):
        """Choose C by cross-validation on ``X`` (n, D) and ``y`` (n,), refit on all rows; returns self."""
        Cs = self.Cs
        if isinstance(Cs, (int, np.integer)) and not isinstance(Cs, (bool, np.bool_)):
            Cs = np.logspace(-4, 4, check_int(Cs, "Cs"))
        Cs = np.sort([check_positive(c, "every C in Cs") for c in as_array(Cs, "Cs", ndim=(0, 1)).reshape(-1)])
        Xt, codes, classes, tol, max_iter = self._fit_inputs(X, y)
        dev, dtype = Xt.device, Xt.dtype
        train, test = (torch.as_tensor(m, device=dev) for m in self._splits(codes, classes))
        n_train, n_test = train.sum(0).to(dtype), test.sum(0).to(dtype)  # (k,)
        Xc, mu = _centre(Xt, self.fit_intercept)
        obj = _Objective(Xc, codes, len(classes), train.to(dtype) / n_train, self.fit_intercept)
        codes_t = torch.as_tensor(codes, device=dev)

        theta = torch.zeros(train.shape[1], obj.P, device=dev, dtype=dtype)
        scores = np.zeros((train.shape[1], len(Cs)))
        n_iter = np.zeros((train.shape[1], len(Cs)), dtype=np.int64)
        solutions = []
        steps = range(len(Cs))
        if config.progress(self.progress):
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="LogisticProbeCV", unit="C")
        for j in steps:
            obj.lam = 1.0 / (float(Cs[j]) * n_train)
            theta, it, _ = _lbfgs(obj, theta, tol=tol, max_iter=max_iter)  # warm start
            Z = obj.logits(theta)  # (n, k, K')
            pred = (Z[..., 0] > 0).long() if obj.K == 1 else Z.argmax(-1)
            correct = ((pred == codes_t[:, None]) & test).sum(0).to(dtype)
            scores[:, j] = (correct / n_test).cpu().numpy()
            n_iter[:, j] = it.cpu().numpy()
            solutions.append(theta)

        best = int(np.argmax(scores.mean(axis=0)))  # first maximum: the smallest C among ties
        self.C_, self.Cs_, self.scores_, self.n_iter_ = float(Cs[best]), Cs, scores, n_iter
        self.cv_scores_ = scores.T
        self._solve(Xc, mu, codes, classes, self.C_, tol, max_iter, init=solutions[best].mean(0, keepdim=True))
        return self


def probe_cv(X, y, Cs=10, cv=5, seed=0, *, folds=None, **params):
    """``LogisticProbeCV(Cs=Cs, cv=cv, random_state=seed, **params).fit(X, y)``: the probe of
    the paper's experiments on features ``X`` (n, D) and labels ``y`` (n,), fitted.

    ``params`` are the other arguments of :class:`LogisticProbeCV`; ``folds`` is the older
    name of ``cv`` (deprecated).
    """
    if folds is not None:
        warnings.warn("probe_cv(folds=...) is deprecated; pass cv=... instead.", DeprecationWarning, stacklevel=2)
        cv = folds
    return LogisticProbeCV(Cs=Cs, cv=cv, random_state=seed, **params).fit(X, y)
