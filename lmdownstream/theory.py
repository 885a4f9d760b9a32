r"""The quantities in the paper's guarantees, computed exactly on a language with known p*.

* :func:`excess_xent` -- excess cross-entropy :math:`\mathbb{E}_{s\sim p_L} \mathrm{KL}(p^*(\cdot|s)\,\|\,p(\cdot|s))`,
  the :math:`\varepsilon` of an :math:`\varepsilon`-optimal LM.
* :func:`task_loss`, :func:`task_fit` -- the best (weighted) logistic loss of a linear classifier
  on given features, optionally with :math:`\|v\|_\infty \le B`; :func:`task_tau` is the
  :math:`\tau` of a :math:`(\tau, B)`-natural task (features = p*).
* :func:`gamma` -- the distribution-shift coefficient :math:`\gamma(p_T)`.
* :func:`xent_bound` (results A and B) and :func:`quad_bound` (result D).

Numpy and scipy only.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, rel_entr

from .config import single_blas_thread
from ._checks import as_array, check_distributions, check_labels, check_nonnegative, check_positive, check_weights

__all__ = [
    "excess_xent",
    "TaskFit",
    "task_fit",
    "task_loss",
    "task_tau",
    "gamma",
    "xent_bound",
    "quad_bound",
]


# --------------------------------------------------------------------------- excess cross-entropy
def excess_xent(p_star, p, weights=None) -> float:
    r"""Excess cross-entropy of the LM ``p`` over the truth ``p_star``: a weighted mean KL.

    .. math::

        \varepsilon = \sum_s w_s\, \mathrm{KL}(p^*_s \,\|\, p_s)
        = \ell_{\mathrm{xent}}(\{p\}) - \ell_{\mathrm{xent}}(\{p^*\}),
        \qquad \mathrm{KL}(q\|p) = \sum_w q_w \log \frac{q_w}{p_w}

    with :math:`0 \log 0 = 0`. It is ``inf`` if some ``p`` puts zero mass on a word that
    ``p_star`` can emit.

    Parameters
    ----------
    p_star : (n, V) true next-word distributions (rows sum to 1); a (V,) vector is one row.
    p : (n, V) model next-word distributions, same shape.
    weights : (n,) context weights p_L(s), normalised to sum to 1; ``None`` means uniform.

    Returns
    -------
    float, >= 0.
    """
    p_star = check_distributions(p_star, "p_star")
    p = check_distributions(p, "p")
    if p_star.shape != p.shape:
        raise ValueError(
            f"p_star has shape {p_star.shape} but p has shape {p.shape}; pass the two distributions "
            "of the same contexts over the same vocabulary."
        )
    p_star, p = np.atleast_2d(p_star), np.atleast_2d(p)
    w = check_weights(weights, p_star.shape[0])
    kl = rel_entr(p_star, p).sum(axis=1)
    return float(max(np.dot(w, kl), 0.0)) if np.all(np.isfinite(kl)) else float("inf")


# --------------------------------------------------------------------------- best linear classifier
@dataclass
class TaskFit:
    """Result of :func:`task_fit`.

    Attributes
    ----------
    loss : the minimised weighted mean logistic loss (nats).
    coef : (D,) for two classes, (D, K) for K > 2 classes.
    intercept : float for two classes, (K,) for K > 2.
    converged : whether L-BFGS-B met its tolerance.
    n_iter : L-BFGS-B iterations used.
    classes : (K,) the label values (``np.unique(y)``); column k of ``coef`` belongs to
        ``classes[k]``; for K = 2 a positive score means ``classes[1]``.
    """

    loss: float
    coef: np.ndarray
    intercept: object
    converged: bool
    n_iter: int
    classes: np.ndarray


def _binary_objective(params, X, s, w):
    D = X.shape[1]
    v, b = params[:D], params[D]
    m = s * (X @ v + b)
    loss = np.dot(w, np.logaddexp(0.0, -m))
    # d/dm log(1 + e^{-m}) = -sigmoid(-m)
    r = -w * s * np.exp(-np.logaddexp(0.0, m))
    return loss, np.concatenate([X.T @ r, [r.sum()]])


def _multi_objective(params, X, Y, w):
    D, K = X.shape[1], Y.shape[1]
    W, b = params[: D * K].reshape(D, K), params[D * K :]
    logp = log_softmax(X @ W + b, axis=1)
    loss = -np.dot(w, (logp * Y).sum(1))
    r = w[:, None] * (np.exp(logp) - Y)
    return loss, np.concatenate([(X.T @ r).ravel(), r.sum(0)])


def task_fit(X, y, B=None, weights=None, tol: float = 1e-8, max_iter: int = 10_000) -> TaskFit:
    r"""The best linear classifier (with a free bias) on features ``X`` under the logistic loss.

    Two classes: labels are mapped to :math:`\pm1` (``classes[0] -> -1``, ``classes[1] -> +1``,
    with ``classes = np.unique(y)``; 0/1 labels give :math:`2y-1`) and

    .. math::

        \min_{\|v\|_\infty \le B,\ b \in \mathbb{R}} \ \sum_i w_i \log\!\big(1 + e^{-y_i (v^\top x_i + b)}\big).

    K > 2 classes (any K distinct label values, coded 0..K-1 in ``np.unique`` order):
    multinomial loss :math:`\sum_i w_i [\log\sum_k e^{z_{ik}} - z_{i y_i}]`, :math:`z_i = W^\top x_i + b`,
    one coefficient column per class, with the box :math:`|W_{jk}| \le B` on every entry.
    (For K = 2 the binary form is used, which with box B equals the 2-column softmax with box B/2.)

    Solver: scipy L-BFGS-B with the analytic gradient, box bounds on the coefficients and the
    bias unbounded, started at coefficients 0 and the log-prior bias. It stops when the largest
    entry of the projected gradient is <= ``tol`` (scipy's ``gtol``; the objective is a mean,
    so ``tol`` is on the scale of the loss per unit of coefficient); a relative-decrease test at
    about 10x machine precision also counts as converged. For a convex smooth objective the loss
    is then within roughly ``tol * ||params - params*||`` of the minimum. With ``B=None`` on
    linearly separable data the infimum is 0 and is not attained: the returned loss is a small
    upper bound, with large coefficients.

    Parameters
    ----------
    X : (n, D) features.
    y : (n,) labels, at least two distinct values.
    B : ``None`` (no constraint) or > 0, the bound on :math:`\|v\|_\infty`.
    weights : (n,) non-negative example weights, normalised to sum to 1 (``None``: uniform).
    tol : projected-gradient tolerance (> 0).
    max_iter : L-BFGS-B iteration cap; if hit, a RuntimeWarning is raised and
        ``converged=False``.

    Returns
    -------
    :class:`TaskFit`.
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
    if B is not None:
        B = check_positive(B, "B")
    tol = check_positive(tol, "tol")
    # log-prior start for the bias (classes with zero weight get a finite, very negative bias)
    prior = np.log(np.maximum(present, 1e-12))
    if K == 2:
        s = 2.0 * codes - 1.0
        x0 = np.zeros(D + 1)
        x0[D] = prior[1] - prior[0]
        fun, args, n_coef = _binary_objective, (X, s, w), D
    else:
        Y = np.eye(K)[codes]
        x0 = np.zeros(D * K + K)
        x0[D * K :] = prior - prior.mean()
        fun, args, n_coef = _multi_objective, (X, Y, w), D * K
    bounds = [(-B, B)] * n_coef + [(None, None)] * (len(x0) - n_coef) if B is not None else None
    with single_blas_thread():
        res = minimize(
            fun,
            x0,
            args=args,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": int(max_iter), "gtol": tol, "ftol": 10 * np.finfo(float).eps, "maxcor": 20},
        )
    params = res.x
    loss, grad = fun(params, *args)
    # projected gradient: zero a component that pushes against an active bound
    pg = grad.copy()
    if B is not None:
        c = params[:n_coef]
        pg[:n_coef][(c >= B * (1 - 1e-12)) & (grad[:n_coef] < 0)] = 0.0
        pg[:n_coef][(c <= -B * (1 - 1e-12)) & (grad[:n_coef] > 0)] = 0.0
    converged = bool(res.success) or float(np.max(np.abs(pg))) <= 10 * tol
    if not converged:
        warnings.warn(
            f"task_fit did not converge ({res.message}; max projected gradient {np.max(np.abs(pg)):.2g} > "
            f"tol={tol:g}); raise max_iter or tol, or rescale X.",
            RuntimeWarning,
            stacklevel=2,
        )
    if K == 2:
        coef, intercept = params[:D].copy(), float(params[D])
    else:
        coef, intercept = params[: D * K].reshape(D, K).copy(), params[D * K :].copy()
    return TaskFit(float(loss), coef, intercept, converged, int(res.nit), classes)


def task_loss(X, y, B=None, weights=None, tol: float = 1e-8) -> float:
    r"""The smallest weighted mean logistic loss of a linear classifier on ``X``: ``task_fit(...).loss``.

    :math:`\ell_T(X) = \min_{\|v\|_\infty\le B,\, b} \sum_i w_i\, \ell(v^\top x_i + b, y_i)`;
    see :func:`task_fit` for the label coding, the multiclass loss and the meaning of ``tol``.

    Parameters
    ----------
    X : (n, D) features; y : (n,) labels; B : None or > 0; weights : (n,) or None; tol : > 0.

    Returns
    -------
    float (nats).
    """
    return task_fit(X, y, B=B, weights=weights, tol=tol).loss


def task_tau(p_star, y, B: float = 1.0, weights=None) -> float:
    r""":math:`\tau` of a :math:`(\tau, B)`-natural task: the best loss of a classifier
    :math:`v^\top p^*(\cdot|s) + b` with :math:`\|v\|_\infty \le B`.

    .. math::

        \tau = \min_{\|v\|_\infty \le B,\, b} \ \mathbb{E}_{(s,y)\sim p_T}\, \ell(v^\top p^*(\cdot|s) + b,\ y)

    Parameters
    ----------
    p_star : (n, V) next-word distributions of the task's contexts (rows sum to 1).
    y : (n,) labels.
    B : > 0, the bound on :math:`\|v\|_\infty` (``None``: no bound).
    weights : (n,) task weights p_T(s) (``None``: uniform).

    Returns
    -------
    float.
    """
    p_star = check_distributions(p_star, "p_star")
    if p_star.ndim != 2:
        raise ValueError(f"p_star must have shape (n, V) but has shape {p_star.shape}.")
    return task_loss(p_star, y, B=B, weights=weights)


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


# --------------------------------------------------------------------------- result C: log Z quadratic
from .fits import LogPartitionFit, fit_log_partition  # noqa: E402  (their home is fits; kept here for chapters)

__all__ += ["LogPartitionFit", "fit_log_partition"]
