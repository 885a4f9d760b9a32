r"""Result B checked numerically: softmax LMs with a fixed :math:`\Phi`, conditional-mean features.

The setting (chapter 5). A :class:`~lmdownstream.synthetic.ContextLanguage` with four planted
classes :math:`c(s) \in \{0,1,2,3\}` and four groups of indicative words :math:`W_0, \dots, W_3`
carries two binary tasks:

* the **natural** task :math:`y_A = c \bmod 2` ("odd class"), read off by
  :math:`u_A = \mathbf 1_{W_1} + \mathbf 1_{W_3} - \mathbf 1_{W_0} - \mathbf 1_{W_2}`;
* the **contrast** task :math:`y_B = \lfloor c/2 \rfloor` ("upper class"), read off by
  :math:`u_B = \mathbf 1_{W_2} + \mathbf 1_{W_3} - \mathbf 1_{W_0} - \mathbf 1_{W_1}`.

The word embeddings :math:`\Phi \in \mathbb{R}^{d\times V}` (:func:`planted_setup`) have first row
:math:`u_A` and :math:`d-1` Gaussian rows that vanish on the indicative words. So
:math:`B u_A = \Phi^\top (B e_1)` lies in the row span of :math:`\Phi` (task A is natural
w.r.t. :math:`\Phi`), while :math:`\Phi` cannot tell :math:`W_0` from :math:`W_2` or
:math:`W_1` from :math:`W_3`: task B is natural in :math:`\mathbb{R}^V` only.

* :func:`phi_task_fit` -- the best logistic classifier :math:`\lambda^\top x + b` on features
  :math:`x = \Phi p` under the constraint :math:`\|\Phi^\top\lambda\|_\infty \le B` (a small
  constrained solver, scipy SLSQP with the 2V linear constraints);
* :func:`phi_tau` -- :math:`\tau_\Phi`, the same on :math:`x = \Phi p^*`;
* :func:`run` -- softmax LMs ε-optimal w.r.t. :math:`\Phi` at many ε
  (:meth:`~lmdownstream.lm.TableLM.at_eps`), with task losses on :math:`p_f` and
  :math:`\Phi p_f` and the bound :math:`\tau_\Phi + \sqrt{2B^2\varepsilon/\gamma}`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from .. import features, lm, synthetic, theory
from .._checks import as_array, check_distributions, check_labels, check_positive, check_weights

__all__ = ["PhiFit", "phi_task_fit", "phi_tau", "planted_setup", "run", "TASKS", "FEATURES"]

TASKS = ("natural w.r.t. Phi", "natural only in R^V")
FEATURES = ("p_f", "Phi p_f")


# --------------------------------------------------------------------------- constrained classifier
@dataclass
class PhiFit:
    """Result of :func:`phi_task_fit`.

    Attributes
    ----------
    loss : the minimised weighted mean logistic loss (nats).
    lam : (d,) the coefficients :math:`\\lambda` on the d-dimensional features.
    intercept : float, the bias b.
    v_inf : float, :math:`\\|\\Phi^\\top\\lambda\\|_\\infty` (at most B up to rounding).
    converged : whether SLSQP reported success.
    n_iter : SLSQP iterations used.
    """

    loss: float
    lam: np.ndarray
    intercept: float
    v_inf: float
    converged: bool
    n_iter: int


def _objective(params, X, s, w):
    lam, b = params[:-1], params[-1]
    m = s * (X @ lam + b)
    loss = np.dot(w, np.logaddexp(0.0, -m))
    r = -w * s * np.exp(-np.logaddexp(0.0, m))  # d/dm log(1 + e^{-m}) = -sigmoid(-m)
    return loss, np.concatenate([X.T @ r, [r.sum()]])


def phi_task_fit(X, y, Phi, B, weights=None, start=None, tol: float = 1e-13, max_iter: int = 1000) -> PhiFit:
    r"""Best binary logistic classifier on d-dimensional features with :math:`\|\Phi^\top\lambda\|_\infty \le B`.

    .. math::

        \min_{\lambda \in \mathbb{R}^d,\ b\in\mathbb{R}}\ \sum_i w_i \log\!\big(1 + e^{-y_i(\lambda^\top x_i + b)}\big)
        \quad\text{subject to}\quad -B \le \phi_w^\top \lambda \le B \ \ (w = 1, \dots, V).

    With :math:`x_i = \Phi p_i` this is the best classifier :math:`v^\top p_i + b` over the
    :math:`v = \Phi^\top\lambda` in the row span of :math:`\Phi` with :math:`\|v\|_\infty \le B`, because
    :math:`v^\top p = \lambda^\top \Phi p`. A convex problem with 2V linear constraints, solved by
    scipy's SLSQP with the analytic gradient, started at ``start`` (default :math:`\lambda = 0`
    and the log-prior bias, which is feasible). Labels are coded as in
    :func:`lmdownstream.theory.task_fit`: ``classes = np.unique(y)``, ``classes[1]`` is +1.
    With :math:`\Phi = I` (d = V) it is :func:`~lmdownstream.theory.task_loss` with the box B.

    Parameters
    ----------
    X : (n, d) features, e.g. ``p @ Phi.T``.
    y : (n,) labels with exactly two distinct values.
    Phi : (d, V) word embeddings.
    B : > 0, the bound on :math:`\|\Phi^\top\lambda\|_\infty`.
    weights : (n,) non-negative task weights, normalised (``None``: uniform).
    start : optional (d + 1,) starting point (lambda, b); it should be feasible.
    tol : SLSQP's ``ftol`` (> 0).
    max_iter : iteration cap; a RuntimeWarning is raised if SLSQP does not report success.

    Returns
    -------
    :class:`PhiFit`.
    """
    X = as_array(X, "X", ndim=2)
    Phi = as_array(Phi, "Phi", ndim=2)
    n, d = X.shape
    if Phi.shape[0] != d:
        raise ValueError(
            f"X has d={d} columns but Phi has {Phi.shape[0]} rows; pass X = p @ Phi.T with Phi of shape (d, V)."
        )
    codes, classes = check_labels(y, n, "y")
    if classes.shape[0] != 2:
        raise ValueError(f"y has {classes.shape[0]} classes; phi_task_fit handles binary tasks only.")
    B = check_positive(B, "B")
    w = check_weights(weights, n)
    s = 2.0 * codes - 1.0
    if start is None:
        pos = np.clip(np.dot(w, codes), 1e-12, 1 - 1e-12)
        x0 = np.zeros(d + 1)
        x0[d] = np.log(pos / (1 - pos))
    else:
        x0 = as_array(start, "start", ndim=1).copy()
        if x0.shape != (d + 1,):
            raise ValueError(f"start must have shape ({d + 1},) (lambda then b) but has shape {x0.shape}.")
    A = np.hstack([Phi.T, np.zeros((Phi.shape[1], 1))])  # (V, d + 1): phi_w^T lambda
    cons = [
        {"type": "ineq", "fun": lambda p: B - A @ p, "jac": lambda p: -A},
        {"type": "ineq", "fun": lambda p: B + A @ p, "jac": lambda p: A},
    ]
    res = minimize(
        _objective, x0, args=(X, s, w), jac=True, method="SLSQP", constraints=cons,
        options={"ftol": check_positive(tol, "tol"), "maxiter": int(max_iter)},
    )
    lam, b = res.x[:d].copy(), float(res.x[d])
    v_inf = float(np.max(np.abs(Phi.T @ lam)))
    if v_inf > B * (1 + 1e-6):  # SLSQP may end marginally infeasible: scale back into the box
        lam *= B / v_inf
        v_inf = B
    loss = float(_objective(np.append(lam, b), X, s, w)[0])
    if not res.success:
        warnings.warn(f"phi_task_fit: SLSQP did not converge ({res.message}); raise max_iter or rescale X.",
                      RuntimeWarning, stacklevel=2)
    return PhiFit(loss, lam, b, v_inf, bool(res.success), int(res.nit))


def phi_tau(p_star, y, Phi, B, weights=None) -> float:
    r""":math:`\tau_\Phi`: the best loss of :math:`v^\top p^*(\cdot|s) + b` over :math:`v = \Phi^\top\lambda`, :math:`\|v\|_\infty \le B`.

    A task is :math:`(\tau, B)`-natural w.r.t. :math:`\Phi` exactly when :math:`\tau_\Phi \le \tau`.

    Parameters
    ----------
    p_star : (n, V) next-word distributions of the task's contexts; y : (n,) binary labels;
    Phi : (d, V); B : > 0; weights : (n,) task weights p_T (``None``: uniform).

    Returns
    -------
    float (nats).
    """
    P = check_distributions(p_star, "p_star")
    Phi = as_array(Phi, "Phi", ndim=2)
    if P.ndim != 2 or P.shape[1] != Phi.shape[1]:
        raise ValueError(f"p_star must have shape (n, V) with V = {Phi.shape[1]} (Phi's columns) but has {P.shape}.")
    return phi_task_fit(P @ Phi.T, y, Phi, B, weights=weights).loss


# --------------------------------------------------------------------------- the planted setting
def _check_int(x, name, low):
    if isinstance(x, bool) or int(x) != x or x < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {x!r}.")
    return int(x)


def planted_setup(n_contexts: int = 300, vocab_size: int = 64, d: int = 8, seed: int = 0) -> dict:
    r"""The language, the two binary tasks and the fixed :math:`\Phi` of chapter 5.

    Parameters
    ----------
    n_contexts : >= 8, contexts of the :class:`~lmdownstream.synthetic.ContextLanguage`
        (four planted classes, default label strength).
    vocab_size : V >= 4 d, words (the four indicative groups take V // 4 of them).
    d : 2 <= d < V, the embedding dimension.
    seed : seed of the language and of :math:`\Phi`.

    Returns
    -------
    dict with ``lang`` (the language), ``Phi`` (d, V), ``labels`` (a dict: task name in
    :data:`TASKS` -> (n,) 0/1 labels), ``u`` (a dict: task name -> (V,) indicative direction with
    entries in {-1, 0, 1}), ``p_star`` (n, V) and ``p_L`` (n,).
    """
    n = _check_int(n_contexts, "n_contexts", 8)
    V = _check_int(vocab_size, "vocab_size", 8)
    d = _check_int(d, "d", 2)
    if d >= V or V < 4 * d:
        raise ValueError(f"need 2 <= d and 4 d <= V (a low-dimensional Phi) but d={d}, V={V}; lower d or raise V.")
    lang = synthetic.ContextLanguage.random(n_contexts=n, vocab_size=V, n_classes=4, seed=seed)
    W = lang.indicative_words  # (4, k)
    c = lang.labels
    u_A, u_B = np.zeros(V), np.zeros(V)
    u_A[W[[1, 3]].ravel()], u_A[W[[0, 2]].ravel()] = 1.0, -1.0
    u_B[W[[2, 3]].ravel()], u_B[W[[0, 1]].ravel()] = 1.0, -1.0
    Phi = np.random.default_rng([seed, 5]).normal(size=(d, V))
    Phi[0] = u_A
    Phi[1:, W.ravel()] = 0.0
    return {
        "lang": lang,
        "Phi": Phi,
        "labels": {TASKS[0]: (c % 2).astype(np.int64), TASKS[1]: (c // 2).astype(np.int64)},
        "u": {TASKS[0]: u_A, TASKS[1]: u_B},
        "p_star": lang.p_next,
        "p_L": lang.p_context,
    }


# --------------------------------------------------------------------------- the experiment
def run(n_contexts: int = 300, vocab_size: int = 64, d: int = 8, B: float = 4.0, eps_values=None,
        seed: int = 0, task_weights=None) -> list[dict]:
    r"""Softmax LMs at many ε w.r.t. a fixed :math:`\Phi`, their task losses and result B's bound.

    For each ε in ``eps_values`` a :class:`~lmdownstream.lm.TableLM` with the fixed
    :math:`\Phi` of :func:`planted_setup` is placed by
    :meth:`~lmdownstream.lm.TableLM.at_eps` at excess cross-entropy exactly ε relative to
    :math:`\Phi` (on the segment from the uniform LM f = 0 to the optimum
    :math:`\theta^*`), and for both tasks of :data:`TASKS` and both features of :data:`FEATURES`:

    * ``"p_f"``: :math:`\min_{\|v\|_\infty\le B,\, b}` of the task loss of :math:`v^\top p_f + b`
      (:func:`~lmdownstream.theory.task_loss`, V-dimensional);
    * ``"Phi p_f"``: :math:`\min_{\|\Phi^\top\lambda\|_\infty\le B,\, b}` of the task loss of
      :math:`\lambda^\top \Phi p_f + b` (:func:`phi_task_fit`, d-dimensional);

    and the bound :math:`\tau_\Phi + \sqrt{2B^2\varepsilon/\gamma}` with
    :math:`\tau_\Phi` = :func:`phi_tau` of the task. Every loss is the logistic loss weighted by
    the task distribution :math:`p_T` (``task_weights``, default :math:`p_L`, so γ = 1).

    Parameters
    ----------
    n_contexts, vocab_size, d, seed : passed to :func:`planted_setup`.
    B : > 0, the bound on :math:`\|v\|_\infty`.
    eps_values : increasing positive excesses (default ``np.logspace(-4, -1, 10)``); each must be
        below the excess of the uniform LM.
    task_weights : (n_contexts,) distribution :math:`p_T` over contexts (``None``: :math:`p_L`).

    Returns
    -------
    list of dicts, one per (ε, task, feature), with keys ``eps``, ``task``, ``feature``, ``loss``,
    ``bound``, ``tau`` (:math:`\tau_\Phi`), ``tau_V`` (τ of the same task with v free in
    :math:`\mathbb{R}^V`, :func:`~lmdownstream.theory.task_tau`), ``loss_at_opt`` (the same
    feature's loss at the Φ-optimal LM θ*, the ε → 0 limit), ``B``, ``gamma``, ``d``, ``V``,
    ``t`` (the position on the segment, 1 = optimum).
    """
    B = check_positive(B, "B")
    eps_values = np.asarray(np.logspace(-4, -1, 10) if eps_values is None else eps_values, dtype=float)
    if eps_values.ndim != 1 or eps_values.size == 0 or not np.all(np.isfinite(eps_values)) or np.any(eps_values <= 0):
        raise ValueError("eps_values must be a non-empty 1-D array of positive excesses (nats).")
    setup = planted_setup(n_contexts, vocab_size, d, seed)
    P, p_L, Phi = setup["p_star"], setup["p_L"], setup["Phi"]
    n, V = P.shape
    p_T = p_L if task_weights is None else check_distributions(as_array(task_weights, "task_weights", ndim=1),
                                                                "task_weights")
    if p_T.shape != (n,):
        raise ValueError(f"task_weights must have shape ({n},) (one weight per context) but has {p_T.shape}.")
    g = theory.gamma(p_T, p_L)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = lm.TableLM(n, Phi=Phi, device="cpu")
        e_uniform = model.excess_xent(P, p_L, relative_to="Phi")
        if eps_values.max() >= e_uniform:
            raise ValueError(
                f"eps_values reach {eps_values.max():g} but the uniform LM (f = 0) already has excess "
                f"{e_uniform:.4g} w.r.t. Phi; pass eps_values below it."
            )
        theta_star = lm.optimal_f(Phi, P)
        p_opt = features.next_word_probs(theta_star, Phi)  # (n, V), the LM with eps = 0

        per_task = {}
        for task in TASKS:
            y = setup["labels"][task]
            fit_star = phi_task_fit(P @ Phi.T, y, Phi, B, weights=p_T)
            start = np.append(fit_star.lam, fit_star.intercept)
            per_task[task] = dict(
                y=y, tau=fit_star.loss, start=start, tau_V=theory.task_tau(P, y, B=B, weights=p_T),
                opt={"p_f": theory.task_loss(p_opt, y, B=B, weights=p_T),
                     "Phi p_f": phi_task_fit(p_opt @ Phi.T, y, Phi, B, weights=p_T, start=start).loss},
            )

        rows = []
        for eps in eps_values:
            model.at_eps(float(eps), P, p_L, relative_to="Phi", start=np.zeros((n, d)))
            p_f = model.probs()
            X = p_f @ Phi.T
            for task in TASKS:
                info = per_task[task]
                losses = {
                    "p_f": theory.task_loss(p_f, info["y"], B=B, weights=p_T),
                    "Phi p_f": phi_task_fit(X, info["y"], Phi, B, weights=p_T, start=info["start"]).loss,
                }
                bound = theory.xent_bound(info["tau"], model.eps_, B, gamma=g)
                for feature in FEATURES:
                    rows.append(dict(
                        eps=float(model.eps_), task=task, feature=feature, loss=float(losses[feature]),
                        bound=float(bound), tau=float(info["tau"]), tau_V=float(info["tau_V"]),
                        loss_at_opt=float(info["opt"][feature]), B=B, gamma=g, d=d, V=V, t=float(model.t_),
                    ))
    finally:
        torch.set_num_threads(before)
    return rows
