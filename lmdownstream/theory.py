r"""The quantities in the paper's guarantees, computed exactly on a language with known p*.

* :func:`excess_xent` -- excess cross-entropy :math:`\mathbb{E}_{s\sim p_L} \mathrm{KL}(p^*(\cdot|s)\,\|\,p(\cdot|s))`,
  the :math:`\varepsilon` of an :math:`\varepsilon`-optimal LM.
* :func:`task_fit`, :func:`task_loss` -- the one constrained logistic solver: the best (weighted)
  linear classifier on given features, with :math:`\|v\|_\infty \le B` (a box) or, given
  :math:`\Phi`, with :math:`v = \Phi^\top\lambda` and :math:`\|\Phi^\top\lambda\|_\infty \le B`;
  :func:`task_tau` is the :math:`\tau` of a :math:`(\tau, B)`-natural task (features p*).
* :func:`gamma` -- the distribution-shift coefficient :math:`\gamma(p_T)`.
* :func:`xent_bound` (results A and B) and :func:`quad_bound` (result D).
* :func:`omega` -- result D's :math:`\Omega = \mathbb{E}_s\, p^* p^{*\top}` and its eigenvectors.
* :func:`bisect` -- the one bisection (models placed at a chosen :math:`\varepsilon`).
* :func:`gaussian_log_partition`, :class:`LogPartitionFit`, :func:`fit_log_partition` (result C)
  live in :mod:`lmdownstream.fits` and are re-exported here.

Numpy and scipy (KL from :func:`lmdownstream.losses.kl`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax

from . import config
from .fits import LogPartitionFit, fit_log_partition, gaussian_log_partition
from .losses import kl
from ._checks import as_array, check_distributions, check_labels, check_positive, check_weights

__all__ = [
    "excess_xent",
    "TaskFit",
    "task_fit",
    "task_loss",
    "task_tau",
    "gamma",
    "xent_bound",
    "quad_bound",
    "omega",
    "bisect",
    "gaussian_log_partition",
    "LogPartitionFit",
    "fit_log_partition",
]


# --------------------------------------------------------------------------- excess cross-entropy
def excess_xent(p_star, p, weights=None) -> float:
    r"""Excess cross-entropy of the LM ``p`` over the truth ``p_star``: a weighted mean KL.

    .. math::

        \varepsilon = \sum_s w_s\, \mathrm{KL}(p^*_s \,\|\, p_s)
        = \ell_{\mathrm{xent}}(\{p\}) - \ell_{\mathrm{xent}}(\{p^*\}),
        \qquad \mathrm{KL}(q\|p) = \sum_w q_w \log \frac{q_w}{p_w}

    with :math:`0 \log 0 = 0` (:func:`lmdownstream.losses.kl`). It is ``inf`` if some ``p`` puts
    zero mass on a word that ``p_star`` can emit.

    Parameters
    ----------
    p_star : (n, V) true next-word distributions (rows sum to 1); a (V,) vector is one row.
    p : (n, V) model next-word distributions, same shape.
    weights : (n,) context weights p_L(s), normalised to sum to 1; ``None`` means uniform.

    Returns
    -------
    float, >= 0.
    """
    p_star, p = as_array(p_star, "p_star", ndim=(1, 2)), as_array(p, "p", ndim=(1, 2))
    if p_star.shape != p.shape:
        raise ValueError(
            f"p_star has shape {p_star.shape} but p has shape {p.shape}; pass the two distributions "
            "of the same contexts over the same vocabulary."
        )
    rows = np.atleast_1d(kl(np.atleast_2d(p_star), np.atleast_2d(p)))
    w = check_weights(weights, rows.shape[0])
    return float(max(np.dot(w, rows), 0.0)) if np.all(np.isfinite(rows)) else float("inf")


# --------------------------------------------------------------------------- the constrained logistic solver
@dataclass
class TaskFit:
    """Result of :func:`task_fit`, with scikit-learn's orientation.

    Attributes
    ----------
    loss : the minimised weighted mean logistic loss (nats).
    coef_ : (1, D) for two classes, (K, D) for K > 2 classes (rows are classes, as
        ``LogisticRegression.coef_``); with ``Phi`` the coefficients lambda on the d features.
    intercept_ : (1,) or (K,).
    classes_ : (K,) the label values (``np.unique(y)``); for K = 2 a positive score means ``classes_[1]``.
    converged : whether the solver met its tolerance.
    n_iter_ : iterations used (L-BFGS-B iterations, or Newton steps with ``Phi``).
    lam_ : (d,) the Phi-space coefficients lambda (``Phi`` given), else None.
    v_ : (V,) the word-space classifier :math:`v = \\Phi^\\top\\lambda` (``Phi`` given), else None.
    coef, intercept, classes : the same in the older orientation: ``coef`` (D,) for two classes,
        (D, K) for K > 2; ``intercept`` a float for two classes.
    """

    loss: float
    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray
    converged: bool
    n_iter_: int
    lam_: np.ndarray | None = None
    v_: np.ndarray | None = None

    @property
    def coef(self) -> np.ndarray:
        return self.coef_[0].copy() if self.coef_.shape[0] == 1 else self.coef_.T.copy()

    @property
    def intercept(self):
        return float(self.intercept_[0]) if self.intercept_.shape[0] == 1 else self.intercept_.copy()

    @property
    def classes(self) -> np.ndarray:
        return self.classes_


def _binary_objective(params, X, s, w):
    D = X.shape[1]
    v, b = params[:D], params[D]
    m = s * (X @ v + b)
    loss = np.dot(w, np.logaddexp(0.0, -m))
    r = -w * s * np.exp(-np.logaddexp(0.0, m))  # d/dm log(1 + e^{-m}) = -sigmoid(-m)
    return loss, np.concatenate([X.T @ r, [r.sum()]])


def _multi_objective(params, X, Y, w):
    D, K = X.shape[1], Y.shape[1]
    W, b = params[: D * K].reshape(D, K), params[D * K :]
    logp = log_softmax(X @ W + b, axis=1)
    loss = -np.dot(w, (logp * Y).sum(1))
    r = w[:, None] * (np.exp(logp) - Y)
    return loss, np.concatenate([(X.T @ r).ravel(), r.sum(0)])


def _box_fit(X, codes, K, w, prior, B, tol, max_iter):
    """L-BFGS-B with box bounds on the coefficients: (coef_ (1|K, D), intercept_, loss, converged, nit, msg)."""
    n, D = X.shape
    if K == 2:
        s = 2.0 * codes - 1.0
        x0 = np.zeros(D + 1)
        x0[D] = prior[1] - prior[0]
        fun, args, n_coef = _binary_objective, (X, s, w), D
    else:
        x0 = np.zeros(D * K + K)
        x0[D * K :] = prior - prior.mean()
        fun, args, n_coef = _multi_objective, (X, np.eye(K)[codes], w), D * K
    bounds = [(-B, B)] * n_coef + [(None, None)] * (len(x0) - n_coef) if B is not None else None
    res = minimize(fun, x0, args=args, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": int(max_iter), "gtol": tol, "ftol": 10 * np.finfo(float).eps, "maxcor": 20})
    params = res.x
    loss, grad = fun(params, *args)
    pg = grad.copy()  # projected gradient: zero a component that pushes against an active bound
    if B is not None:
        c = params[:n_coef]
        pg[:n_coef][(c >= B * (1 - 1e-12)) & (grad[:n_coef] < 0)] = 0.0
        pg[:n_coef][(c <= -B * (1 - 1e-12)) & (grad[:n_coef] > 0)] = 0.0
    worst = float(np.max(np.abs(pg)))
    converged = bool(res.success) or worst <= 10 * tol
    msg = f"{res.message}; max projected gradient {worst:.2g} > tol={tol:g}"
    if K == 2:
        coef, intercept = params[None, :D].copy(), params[D:].copy()
    else:
        coef, intercept = params[: D * K].reshape(D, K).T.copy(), params[D * K :].copy()
    return coef, intercept, float(loss), converged, int(res.nit), msg


def _phi_fit(X, s, w, Phi, B, b0, tol, max_iter):
    r"""Log-barrier Newton for min L(lam, b) s.t. |Phi^T lam| <= B, from lam = 0 (strictly feasible).

    Minimises :math:`L + \mu \sum_w [-\log(B - \phi_w^\top\lambda) - \log(B + \phi_w^\top\lambda)]` for
    :math:`\mu = 1, 0.1, \dots` (warm-started) until the duality gap :math:`2V\mu` is <= tol/2 and the
    Newton decrement of the last stage is <= tol/2: the loss is then within tol of the minimum.
    """
    n, d = X.shape
    V = Phi.shape[1]
    Xa = np.hstack([X, np.ones((n, 1))])
    G = np.vstack([Phi, np.zeros((1, V))])  # constraints act on lambda only
    p = np.zeros(d + 1)
    p[d] = b0

    def loss(p):
        return float(np.dot(w, np.logaddexp(0.0, -s * (Xa @ p))))

    def barrier(p, mu):
        g = G.T @ p
        if np.any(np.abs(g) >= B):
            return np.inf
        return loss(p) - mu * (np.log(B - g).sum() + np.log(B + g).sum())

    mu, steps, converged = 1.0, 0, False
    while steps < max_iter:
        stage_done = False
        while steps < max_iter:
            steps += 1
            sg = np.exp(-np.logaddexp(0.0, s * (Xa @ p)))  # sigmoid(-margin)
            g = G.T @ p
            a, c = 1.0 / (B - g), 1.0 / (B + g)
            grad = Xa.T @ (-w * s * sg) + mu * (G @ (a - c))
            H = (Xa.T * (w * sg * (1 - sg))) @ Xa + mu * (G * (a * a + c * c)) @ G.T
            H[np.diag_indices_from(H)] += 1e-13 * max(np.abs(H.diagonal()).max(), 1e-300)
            step = -np.linalg.solve(H, grad)
            dec = float(-grad @ step)  # squared Newton decrement: 2x the stage's suboptimality (estimate)
            if dec / 2 <= tol / 4:
                stage_done = True
                break
            f0, al = barrier(p, mu), 1.0
            slack = 8 * np.finfo(float).eps * abs(f0)
            while barrier(p + al * step, mu) > f0 - 0.25 * al * dec + slack and al > 1e-12:
                al *= 0.5
            p = p + al * step
        if stage_done and 2 * V * mu <= tol / 2:
            converged = True
            break
        mu *= 0.1
    return p[None, :d].copy(), p[d:].copy(), loss(p), converged, steps, f"duality gap {2 * V * mu:.2g}"


def task_fit(X, y, B=None, Phi=None, weights=None, tol: float = 1e-8, max_iter: int = 10_000) -> TaskFit:
    r"""The best linear classifier (with a free bias) on features ``X`` under the logistic loss.

    Two classes: labels are mapped to :math:`\pm1` (``classes_[0] -> -1``, ``classes_[1] -> +1``,
    with ``classes_ = np.unique(y)``) and

    .. math::

        \min_{\|v\|_\infty \le B,\ b \in \mathbb{R}} \ \sum_i w_i \log\!\big(1 + e^{-y_i (v^\top x_i + b)}\big).

    K > 2 classes: the multinomial loss :math:`\sum_i w_i [\log\sum_k e^{z_{ik}} - z_{i y_i}]`,
    :math:`z_i = W x_i + b`, with the box :math:`|W_{kj}| \le B` on every entry. (For K = 2 the
    binary form is used, which with box B equals the 2-class softmax with box B/2.)

    **Natural w.r.t.** :math:`\Phi` (``Phi`` (d, V) given, two classes): ``X`` (n, d) holds
    d-dimensional features (e.g. :math:`\Phi p_f` = ``p_f @ Phi.T``, or :math:`A f + b`) and the
    classifier :math:`\lambda^\top x + b` is constrained by :math:`\|\Phi^\top\lambda\|_\infty \le B`:

    .. math::

        \min_{\lambda,\ b}\ \sum_i w_i \log\!\big(1 + e^{-y_i(\lambda^\top x_i + b)}\big)
        \quad\text{s.t.}\quad |\phi_w^\top\lambda| \le B \ \ (w = 1..V).

    With :math:`x_i = \Phi p_i` this is the best :math:`v^\top p_i + b` over :math:`v = \Phi^\top\lambda`
    in the row span of :math:`\Phi` with :math:`\|v\|_\infty \le B` (since :math:`v^\top p = \lambda^\top\Phi p`);
    with :math:`\Phi = I` it is the box problem.

    Solvers. Box: scipy L-BFGS-B with the analytic gradient, started at 0 and the log-prior bias;
    it stops when the largest entry of the projected gradient is <= ``tol``. With ``B=None`` on
    separable data the infimum 0 is not attained: the loss returned is a small upper bound.
    ``Phi``: a log-barrier interior-point method with damped Newton steps, started at
    :math:`\lambda = 0` (strictly feasible); it stops when the duality gap plus the last Newton
    decrement certify the loss to within ``tol`` nats of the minimum (always feasible).

    Parameters
    ----------
    X : (n, D) features ((n, d) with ``Phi``).
    y : (n,) labels, at least two distinct values (exactly two with ``Phi``).
    B : ``None`` (no constraint) or > 0, the bound on :math:`\|v\|_\infty` (or :math:`\|\Phi^\top\lambda\|_\infty`).
    Phi : optional (d, V) word embeddings: constrain :math:`\Phi^\top\lambda` instead of the coefficients.
    weights : (n,) non-negative example weights, normalised to sum to 1 (``None``: uniform).
    tol : > 0, the tolerance above.
    max_iter : iteration cap (L-BFGS-B iterations or Newton steps); if hit, a RuntimeWarning is
        raised and ``converged=False``.

    Returns
    -------
    :class:`TaskFit` (``coef_`` (1, D) or (K, D), ``intercept_``, ``loss``, ``lam_`` and ``v_`` with Phi).
    """
    X = as_array(X, "X", ndim=2)
    n, D = X.shape
    if D == 0:
        raise ValueError("X has 0 feature columns; pass at least one feature.")
    codes, classes = check_labels(y, n, "y")
    w = check_weights(weights, n)
    K = classes.shape[0]
    present = np.bincount(codes, weights=w, minlength=K)
    if np.count_nonzero(present > 0) < 2:
        raise ValueError("only one class has positive weight; a classifier needs two weighted classes.")
    B = None if B is None else check_positive(B, "B")
    tol = check_positive(tol, "tol")
    max_iter = int(max_iter)
    if Phi is not None:
        Phi = as_array(Phi, "Phi", ndim=2)
        if Phi.shape[0] != D:
            raise ValueError(
                f"X has {D} columns but Phi has {Phi.shape[0]} rows; with Phi (d, V), pass d-dimensional "
                "features X = p @ Phi.T (or transpose Phi if you passed (V, d))."
            )
        if K != 2:
            raise ValueError(f"y has {K} classes; task_fit with Phi handles two classes (one against the rest).")
    prior = np.log(np.maximum(present, 1e-12))  # log-prior start (a zero-weight class gets a finite bias)
    with config.threads(1, torch_threads=False):
        if Phi is None or B is None:
            coef, intercept, loss, converged, nit, msg = _box_fit(X, codes, K, w, prior, B, tol, max_iter)
        else:
            coef, intercept, loss, converged, nit, msg = _phi_fit(
                X, 2.0 * codes - 1.0, w, Phi, B, prior[1] - prior[0], tol, max_iter)
    if not converged:
        warnings.warn(f"task_fit did not converge ({msg}); raise max_iter or tol, or rescale X.",
                      RuntimeWarning, stacklevel=2)
    fit = TaskFit(loss, coef, intercept, classes, converged, nit)
    if Phi is not None:
        fit.lam_, fit.v_ = coef[0].copy(), Phi.T @ coef[0]
    return fit


def task_loss(X, y, B=None, Phi=None, weights=None, tol: float = 1e-8) -> float:
    r"""The smallest weighted mean logistic loss of a linear classifier on ``X``: ``task_fit(...).loss``.

    :math:`\ell_T(X) = \min_{\|v\|_\infty\le B,\, b} \sum_i w_i\, \ell(v^\top x_i + b, y_i)` (with
    ``Phi``: over :math:`\lambda^\top x + b`, :math:`\|\Phi^\top\lambda\|_\infty \le B`); see :func:`task_fit`.

    Returns
    -------
    float (nats).
    """
    return task_fit(X, y, B=B, Phi=Phi, weights=weights, tol=tol).loss


def task_tau(p_star, y, B: float = 1.0, weights=None, Phi=None) -> float:
    r""":math:`\tau` of a :math:`(\tau, B)`-natural task: the best loss of :math:`v^\top p^*(\cdot|s) + b`.

    .. math::

        \tau = \min_{\|v\|_\infty \le B,\, b} \ \mathbb{E}_{(s,y)\sim p_T}\, \ell(v^\top p^*(\cdot|s) + b,\ y)

    With ``Phi`` (d, V): :math:`\tau_\Phi`, the same over :math:`v = \Phi^\top\lambda` in the row span of
    :math:`\Phi` (:func:`task_fit` on :math:`\Phi p^*`); a task is :math:`(\tau, B)`-natural w.r.t.
    :math:`\Phi` exactly when :math:`\tau_\Phi \le \tau`.

    Parameters
    ----------
    p_star : (n, V) next-word distributions of the task's contexts (rows sum to 1).
    y : (n,) labels. B : > 0 (``None``: no bound). weights : (n,) task weights p_T (``None``: uniform).
    Phi : optional (d, V) word embeddings.

    Returns
    -------
    float (nats).
    """
    p_star = check_distributions(p_star, "p_star")
    if p_star.ndim != 2:
        raise ValueError(f"p_star must have shape (n, V) but has shape {p_star.shape}.")
    if Phi is None:
        return task_loss(p_star, y, B=B, weights=weights)
    Phi = as_array(Phi, "Phi", ndim=2)
    if Phi.shape[1] != p_star.shape[1]:
        raise ValueError(f"p_star has V={p_star.shape[1]} columns but Phi has {Phi.shape[1]}; Phi must be (d, V).")
    return task_loss(p_star @ Phi.T, y, B=B, Phi=Phi, weights=weights)


# --------------------------------------------------------------------------- distribution shift
def gamma(p_task, p_lm) -> float:
    r"""Distribution-shift coefficient :math:`\gamma(p_T) = \sup\{g \in (0,1] : p_L(s) \ge g\, p_T(s)\ \forall s\}`.

    Equal to :math:`\min_{s:\,p_T(s)>0} p_L(s)/p_T(s)` (which is <= 1 for two distributions).

    Parameters
    ----------
    p_task : (n,) distribution p_T over the n contexts.
    p_lm : (n,) distribution p_L over the same contexts.

    Returns
    -------
    float in (0, 1]. Raises ValueError if p_T puts mass on a context that p_L never produces
    (then no g > 0 works and the bounds are vacuous).
    """
    p_task = check_distributions(p_task, "p_task")
    p_lm = check_distributions(p_lm, "p_lm")
    if p_task.ndim != 1 or p_lm.ndim != 1:
        raise ValueError("p_task and p_lm must be 1-D distributions over the same contexts.")
    if p_task.shape != p_lm.shape:
        raise ValueError(
            f"p_task has {p_task.shape[0]} contexts but p_lm has {p_lm.shape[0]}; index both by the same contexts."
        )
    support = p_task > 0
    if np.any(p_lm[support] <= 0):
        raise ValueError(
            "p_task puts mass on contexts where p_lm has none; gamma would be 0 and the bounds vacuous. "
            "Restrict the task to contexts the LM sees."
        )
    return float(min(1.0, np.min(p_lm[support] / p_task[support])))


# --------------------------------------------------------------------------- bounds
def _check_gamma(g):
    g = check_positive(g, "gamma")
    if g > 1:
        raise ValueError(f"gamma must lie in (0, 1], got {g}.")
    return g


def _eps(eps):
    e = as_array(eps, "eps")
    if np.any(e < 0):
        raise ValueError("eps must be >= 0 (an excess cross-entropy).")
    return e


def _out(x):
    return float(x) if np.ndim(x) == 0 else x


def xent_bound(tau, eps, B, gamma: float = 1.0):
    r"""Results A and B: :math:`\ell_T \le \tau + \sqrt{2 B^2 \varepsilon / \gamma}`.

    Parameters
    ----------
    tau : float, the task's natural loss; eps : float or array (vectorised), >= 0;
    B : > 0; gamma : in (0, 1].

    Returns
    -------
    float, or an array shaped like ``eps``.
    """
    tau = float(as_array(tau, "tau", ndim=0))
    B, g, e = check_positive(B, "B"), _check_gamma(gamma), _eps(eps)
    return _out(tau + np.sqrt(2.0 * B * B * e / g))


def quad_bound(tau, eps, v_norm2, gamma: float = 1.0):
    r"""Result D: :math:`\ell_T(f) \le \tau + \|v\|_2 \sqrt{2 \varepsilon / \gamma}` for a Quad LM.

    Parameters
    ----------
    tau : float; eps : float or array (excess Quad loss), >= 0; v_norm2 : > 0, the 2-norm of
    the natural classifier v = Phi^T lambda; gamma : in (0, 1].

    Returns
    -------
    float, or an array shaped like ``eps``.
    """
    tau = float(as_array(tau, "tau", ndim=0))
    v, g, e = check_positive(v_norm2, "v_norm2"), _check_gamma(gamma), _eps(eps)
    return _out(tau + v * np.sqrt(2.0 * e / g))


# --------------------------------------------------------------------------- result D: Omega
def omega(p_star, weights=None):
    r""":math:`\Omega = \sum_s p_L(s)\, p^*(\cdot|s)\, p^*(\cdot|s)^\top` and its eigen-decomposition.

    Parameters
    ----------
    p_star : (n, V) next-word distributions; weights : (n,) :math:`p_L`, normalised (None: uniform).

    Returns
    -------
    (Omega (V, V), eigenvalues (V,) in decreasing order, eigenvectors (V, V) as columns in the same order).
    """
    P = check_distributions(p_star, "p_star")
    if P.ndim != 2:
        raise ValueError(f"p_star must have shape (n, V) but has shape {P.shape}.")
    Om = (P * check_weights(weights, P.shape[0])[:, None]).T @ P
    lam, U = np.linalg.eigh(Om)
    return Om, lam[::-1].copy(), U[:, ::-1].copy()


# --------------------------------------------------------------------------- bisection
def bisect(fun, target, lo: float = 0.0, hi: float = 1.0, rtol: float = 1e-10, max_iter: int = 200,
           below: bool = False, f_lo=None, f_hi=None) -> float:
    r"""t in [lo, hi] with :math:`f(t) = ` ``target`` for a monotone (increasing or decreasing) ``fun``.

    Bisection keeps a bracket [a, b] with :math:`f(a) \le` target :math:`\le f(b)` and stops when an
    end is within ``rtol * |target|`` of the target (e.g. the ε of a model on a segment of models).
    With ``below=True`` the end returned always has :math:`f(t) \le` target, and the search stops
    once :math:`f(t) \ge (1 - \text{rtol})\,\text{target}` (a model at most, and nearly, ε away).

    Parameters
    ----------
    fun : callable float -> float, monotone on [lo, hi].
    target : the value to reach; it must lie between f(lo) and f(hi).
    lo, hi : the interval; rtol : >= 0 relative tolerance; max_iter : bisection steps.
    below : return an end with f(t) <= target.
    f_lo, f_hi : f(lo), f(hi) if already known (saves an evaluation each).

    Returns
    -------
    float t (call ``fun(t)`` for its value). Raises ValueError if the target is not bracketed.
    """
    target = float(target)
    f_lo = float(fun(lo) if f_lo is None else f_lo)
    f_hi = float(fun(hi) if f_hi is None else f_hi)
    a, b, fa, fb = (lo, hi, f_lo, f_hi) if f_hi >= f_lo else (hi, lo, f_hi, f_lo)  # fa <= fb
    tol = float(rtol) * abs(target)
    if not fa - tol <= target <= fb + tol:
        raise ValueError(f"target {target:g} is outside [{fa:.4g}, {fb:.4g}], the values of fun at the ends of "
                         f"[{lo:g}, {hi:g}]; pass a target in that range (or a wider interval).")
    for _ in range(max_iter):
        if fa >= target - tol:
            return a
        if not below and fb <= target + tol:
            return b
        mid = 0.5 * (a + b)
        if mid in (a, b):  # the bracket cannot shrink any more
            break
        fm = float(fun(mid))
        if fm <= target:
            a, fa = mid, fm
        else:
            b, fb = mid, fm
    return a if below or target - fa <= fb - target else b
