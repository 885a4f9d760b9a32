r"""Linear probes: L2-regularised logistic regression in torch, with a cross-validated C.

* :class:`LogisticProbe` -- binary or multinomial logistic regression, scikit-learn style
  (``fit`` returns self, ``predict``, ``predict_proba``, ``decision_function``, ``score``;
  fitted attributes end in ``_``), on the GPU when there is one.
* :func:`probe_cv` -- choose C on a grid by stratified k-fold cross-validation (as the paper's
  scikit-learn ``LogisticRegressionCV`` does), then refit on all the data.

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
serves all folds. :func:`probe_cv` walks the C grid from small to large C, warm-starting every
fold from its solution at the previous C.

Numpy and torch only.
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import torch

from . import config
from ._checks import as_array, check_labels, check_positive

__all__ = ["LogisticProbe", "probe_cv"]

_MEMORY = 10  # L-BFGS memory (scipy's default maxcor)
_MAX_LS = 25  # line-search trials per iteration


# --------------------------------------------------------------------------- input handling
def _resolve_device(device, X):
    if device is not None:
        return torch.device(device)
    if isinstance(X, torch.Tensor):
        return X.device
    return config.device()


def _as_features(X, device, dtype, name="X") -> torch.Tensor:
    """``X`` as a finite 2-D tensor of ``dtype`` on ``device`` (checked on its own device)."""
    if isinstance(X, torch.Tensor):
        if X.ndim != 2:
            raise ValueError(
                f"{name} must have 2 dimension(s) (n_samples, n_features) but has shape "
                f"{tuple(X.shape)}; reshape it (e.g. x[None, :] for one sample)."
            )
        if X.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(X.shape)}); pass at least one element.")
        if X.is_complex() or X.dtype == torch.bool:
            raise ValueError(f"{name} must be a real numeric tensor, got dtype {X.dtype}.")
        X = X.detach().to(device=device, dtype=dtype)
        finite = torch.isfinite(X)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(
                f"{name} has {bad} non-finite value(s) (NaN or inf); remove or impute them first."
            )
        return X
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    arr = as_array(X, name, ndim=2, dtype=np_dtype)
    return torch.as_tensor(arr, device=device, dtype=dtype)


def _check_int(x, name, low):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {x!r}.")
    return int(x)


def _check_dtype(dtype):
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}.")
    return dtype


def _as_output(t: torch.Tensor, like):
    """Torch in, torch out (on the input's device); numpy in, float64 numpy out."""
    if isinstance(like, torch.Tensor):
        return t
    return t.detach().cpu().double().numpy()


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
    active = ~converged
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


# --------------------------------------------------------------------------- the probe
class LogisticProbe:
    r"""L2-regularised logistic regression (binary or multinomial), fitted by L-BFGS in torch.

    Minimises :math:`C \sum_i \ell(W^\top x_i + b, y_i) + \frac12\|W\|_F^2` (intercept not
    penalised; see the module docstring), the objective of scikit-learn's
    ``LogisticRegression(C=C)``: same minimiser, so the same predictions up to ``tol``.

    ``X`` (n, D) may be numpy or torch. ``predict`` returns a numpy array of labels;
    ``predict_proba`` and ``decision_function`` return torch tensors on the input's device for
    torch input and float64 numpy arrays for numpy input.

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
    dtype : torch.dtype
        ``torch.float32`` (default, fast) or ``torch.float64``.

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
        D.
    device_ : torch.device
        The device it was fitted on.
    """

    def __init__(self, C=1.0, fit_intercept=True, max_iter=100, tol=1e-4, device=None, dtype=torch.float32):
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype

    # scikit-learn's estimator protocol (clone, grid search) without importing it
    def get_params(self, deep=True):
        """The constructor arguments as a dict."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params):
        """Set constructor arguments; returns self."""
        valid = self.get_params()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"{key!r} is not a parameter of LogisticProbe; valid: {sorted(valid)}.")
            setattr(self, key, value)
        return self

    def __repr__(self):
        defaults = {k: p.default for k, p in inspect.signature(type(self).__init__).parameters.items()}
        args = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults[k])]
        return f"LogisticProbe({', '.join(args)})"

    def _validated(self):
        C = check_positive(self.C, "C")
        tol = check_positive(self.tol, "tol")
        max_iter = _check_int(self.max_iter, "max_iter", 1)
        return C, tol, max_iter, _check_dtype(self.dtype)

    def fit(self, X, y):
        """Fit on features ``X`` (n, D) and labels ``y`` (n,) of any sortable type; returns self."""
        C, tol, max_iter, dtype = self._validated()
        device = _resolve_device(self.device, X)
        Xt = _as_features(X, device, dtype)
        codes, classes = check_labels(y, Xt.shape[0])
        return self._fit(Xt, codes, classes, C, tol, max_iter, init=None)

    def _fit(self, Xt, codes, classes, C, tol, max_iter, init=None, centred=None):
        n = Xt.shape[0]
        Xc, mu = centred if centred is not None else _centre(Xt, self.fit_intercept)
        weights = torch.full((n, 1), 1.0 / n, device=Xt.device, dtype=Xt.dtype)
        obj = _Objective(Xc, codes, len(classes), weights, self.fit_intercept)
        obj.lam = torch.full((1,), 1.0 / (C * n), device=Xt.device, dtype=Xt.dtype)
        x0 = torch.zeros(1, obj.P, device=Xt.device, dtype=Xt.dtype) if init is None else init
        theta, n_iter, converged = _lbfgs(obj, x0, tol=tol, max_iter=max_iter)
        W, b = obj.split(theta)
        W, b = W[0], (b[0] if b is not None else torch.zeros(obj.K, device=Xt.device, dtype=Xt.dtype))
        if mu is not None:
            b = b - W @ mu
        if obj.K > 1:
            b = b - b.mean()
        self._W, self._b = W, b  # (K', D), (K',) on the fitting device
        self.classes_ = classes
        self.coef_ = W.detach().cpu().double().numpy()
        self.intercept_ = b.detach().cpu().double().numpy()
        self.n_iter_ = int(n_iter[0])
        self.converged_ = bool(converged[0])
        self.n_features_in_ = Xt.shape[1]
        self.device_ = Xt.device
        if not self.converged_:
            _, g = obj(theta)
            warnings.warn(
                f"LogisticProbe(C={C:g}) stopped after {self.n_iter_} iterations with max|grad| = "
                f"{float(g.abs().max()):.2g} > tol = {tol:g}; increase max_iter, use a smaller C, "
                "or fit in dtype=torch.float64 if float32 precision is the limit.",
                RuntimeWarning,
                stacklevel=3,
            )
        return self

    def _check_fitted(self, X):
        if not hasattr(self, "coef_"):
            raise ValueError("This LogisticProbe is not fitted yet; call fit(X, y) (or probe_cv) first.")
        device = X.device if isinstance(X, torch.Tensor) else self.device_
        Xt = _as_features(X, device, self._W.dtype)
        if Xt.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xt.shape[1]} features but the probe was fitted on {self.n_features_in_}; "
                "pass features of the same kind (and dimension) as in fit."
            )
        return Xt

    def _logits(self, X):
        Xt = self._check_fitted(X)
        W, b = self._W.to(Xt.device), self._b.to(Xt.device)
        return torch.nn.functional.linear(Xt, W, b)  # (n, K')

    def decision_function(self, X):
        """Logits: (n,) for two classes (of ``classes_[1]``), (n, K) otherwise."""
        Z = self._logits(X)
        return _as_output(Z[:, 0] if Z.shape[1] == 1 else Z, X)

    def predict_proba(self, X):
        """Class probabilities (n, K), columns in the order of ``classes_``."""
        Z = self._logits(X)
        if Z.shape[1] == 1:
            p = torch.sigmoid(Z[:, 0])
            P = torch.stack([1 - p, p], dim=1)
        else:
            P = torch.softmax(Z, dim=1)
        return _as_output(P, X)

    def predict(self, X):
        """Predicted labels (n,), a numpy array of values from ``classes_``."""
        Z = self._logits(X)
        idx = (Z[:, 0] > 0).long() if Z.shape[1] == 1 else Z.argmax(dim=1)
        return self.classes_[idx.cpu().numpy()]

    def score(self, X, y):
        """Accuracy: the fraction of rows whose predicted label equals ``y`` (n,)."""
        pred = self.predict(X)
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        y = np.asarray(y)
        if y.shape != pred.shape:
            raise ValueError(f"y has shape {y.shape} but X has {pred.shape[0]} rows; pass one label per row.")
        return float(np.mean(pred == y))


def _same(a, b):
    try:
        return bool(a == b)
    except Exception:
        return a is b


# --------------------------------------------------------------------------- cross-validation
def _stratified_folds(codes, n_folds, seed):
    """Fold id (n,) per row: each class shuffled and dealt round-robin, so every fold gets
    ``n_c / n_folds`` rows of class c (up to one) and folds differ in size by at most one."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(codes == c)) for c in range(codes.max() + 1)])
    fold = np.empty(codes.shape[0], dtype=np.int64)
    fold[order] = np.arange(codes.shape[0]) % n_folds
    return fold


def probe_cv(
    X,
    y,
    Cs=np.logspace(-4, 4, 10),
    folds=5,
    seed=0,
    *,
    fit_intercept=True,
    max_iter=100,
    tol=1e-4,
    device=None,
    dtype=torch.float32,
    progress=False,
):
    r"""Choose C by stratified k-fold cross-validation, then refit on all of ``X``.

    Like scikit-learn's ``LogisticRegressionCV`` (the paper's probe) with the lbfgs solver:
    for every C of the grid and every fold, fit :class:`LogisticProbe` on the other folds and
    score accuracy on the held-out fold; pick the C with the best mean accuracy (ties: the
    smallest C, as scikit-learn with an ascending grid); refit on all rows with that C,
    starting from the mean of the fold solutions. Fast because the folds are solved together
    as one batched L-BFGS problem (one matrix product per step serves all folds) and each C
    warm-starts from the solutions at the previous one.

    Parameters
    ----------
    X : (n, D) array or tensor
        Features, numpy or torch.
    y : (n,) array
        Labels of any sortable type.
    Cs : sequence of float or int
        Grid of C values (> 0), visited in ascending order; an int k means
        ``np.logspace(-4, 4, k)`` (scikit-learn's convention).
    folds : int or (n,) int array
        Number of folds k (2 <= k <= the smallest class count), or each row's fold id (at
        least two distinct values; e.g. to reproduce given splits).
    seed : int
        Seed of the stratified shuffle that deals rows to folds (int ``folds`` only).
    fit_intercept, max_iter, tol, device, dtype
        As :class:`LogisticProbe`, for every fit.
    progress : bool
        Show a tqdm bar over the C grid.

    Returns
    -------
    LogisticProbe
        Fitted on all rows with the chosen C (its ``C`` set to it), with extra attributes
        ``C_`` (float, the chosen C), ``Cs_`` (len(Cs),) the sorted grid, ``cv_scores_``
        (len(Cs), k) held-out accuracy per C and fold, ``cv_n_iter_`` (len(Cs), k) L-BFGS
        iterations per fit, and ``folds_`` (n,) the fold id of each row.
    """
    dtype = _check_dtype(dtype)
    tol = check_positive(tol, "tol")
    max_iter = _check_int(max_iter, "max_iter", 1)
    if isinstance(Cs, (int, np.integer)) and not isinstance(Cs, (bool, np.bool_)):
        Cs = np.logspace(-4, 4, _check_int(Cs, "Cs", 1))
    Cs = as_array(Cs, "Cs", ndim=(0, 1))
    Cs = np.sort(np.array([check_positive(c, "every C in Cs") for c in Cs.reshape(-1)]))
    dev = _resolve_device(device, X)
    Xt = _as_features(X, dev, dtype)
    n = Xt.shape[0]
    codes, classes = check_labels(y, n)

    if isinstance(folds, (int, np.integer)) and not isinstance(folds, (bool, np.bool_)):
        k = int(folds)
        if k < 2:
            raise ValueError(f"folds must be >= 2 (got {k}); use folds=5 as scikit-learn does.")
        counts = np.bincount(codes)
        if k > counts.min():
            small = classes[int(np.argmin(counts))]
            raise ValueError(
                f"folds={k} but class {small!r} has only {counts.min()} example(s), so some fold "
                f"would have none of it; use folds <= {counts.min()} or collect more examples of that class."
            )
        fold = _stratified_folds(codes, k, seed)
    else:
        fold = as_array(folds, "folds", ndim=1, dtype=None)
        if fold.shape[0] != n:
            raise ValueError(f"folds has {fold.shape[0]} entries but X has {n} rows; pass one fold id per row.")
        _, fold = np.unique(fold, return_inverse=True)
        k = int(fold.max()) + 1
        if k < 2:
            raise ValueError("folds assigns every row to the same fold; give at least two distinct fold ids.")

    fold_t = torch.as_tensor(fold, device=dev)
    held_out = fold_t[:, None] == torch.arange(k, device=dev)[None, :]  # (n, k)
    n_train = (~held_out).sum(0).to(dtype)  # (k,)
    weights = (~held_out).to(dtype) / n_train
    Xc, mu = _centre(Xt, fit_intercept)
    obj = _Objective(Xc, codes, len(classes), weights, fit_intercept)
    codes_t = torch.as_tensor(codes, device=dev)
    n_held = held_out.sum(0).to(dtype)

    theta = torch.zeros(k, obj.P, device=dev, dtype=dtype)
    scores = np.zeros((len(Cs), k))
    n_iters = np.zeros((len(Cs), k), dtype=np.int64)
    solutions = []
    steps = range(len(Cs))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="probe_cv", unit="C")
    for j in steps:
        obj.lam = 1.0 / (float(Cs[j]) * n_train)
        theta, it, _ = _lbfgs(obj, theta, tol=tol, max_iter=max_iter)  # warm start
        Z = obj.logits(theta)  # (n, k, K')
        pred = (Z[..., 0] > 0).long() if obj.K == 1 else Z.argmax(-1)
        correct = ((pred == codes_t[:, None]) & held_out).sum(0).to(dtype)
        scores[j] = (correct / n_held).cpu().numpy()
        n_iters[j] = it.cpu().numpy()
        solutions.append(theta)

    best = int(np.argmax(scores.mean(axis=1)))  # first maximum: the smallest C among ties
    probe = LogisticProbe(C=float(Cs[best]), fit_intercept=fit_intercept, max_iter=max_iter, tol=tol, device=device, dtype=dtype)
    init = solutions[best].mean(0, keepdim=True)
    probe._fit(Xt, codes, classes, float(Cs[best]), tol, max_iter, init=init, centred=(Xc, mu))
    probe.C_ = float(Cs[best])
    probe.Cs_ = Cs
    probe.cv_scores_ = scores
    probe.cv_n_iter_ = n_iters
    probe.folds_ = fold
    return probe
