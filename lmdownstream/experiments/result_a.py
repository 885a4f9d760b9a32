r"""Result A checked numerically: any ε-optimal language model solves a natural task.

The setting (chapter 4). A :class:`~lmdownstream.synthetic.ContextLanguage` with a planted binary
label :math:`y_s` is a :math:`(\tau, B)`-natural task: :math:`\tau` = :func:`~lmdownstream.theory.task_tau`
is computed exactly. Language models :math:`\{p\}` are built at chosen excess cross-entropies
:math:`\varepsilon` by four *families* (:data:`FAMILIES`):

``"noise"``
    :math:`p = (1-\alpha)\,p^* + \alpha\, q` with random noise rows :math:`q_s \sim \mathrm{Dir}(\mathbf 1)`,
    :math:`\alpha` found by bisection so that :math:`\varepsilon` is the target.
``"trained"``
    a :class:`~lmdownstream.lm.TableLM` with a random orthogonal :math:`\Phi` (d = V, so it can reach
    :math:`p^*`) trained by :meth:`~lmdownstream.lm.TableLM.fit` down the list of targets: the path of
    one optimizer run, stopped at each target.
``"temperature"``
    :math:`p \propto (p^*)^t` with a temperature :math:`1/t > 1`, t found by bisection: the segment
    from the uniform LM (f = 0) to the optimum that :meth:`~lmdownstream.lm.TableLM.at_eps` follows
    when :math:`\Phi` can represent :math:`p^*`, computed here in closed form.
``"aligned"``
    a perturbation built against the task (:func:`aligned_family`): in every context, mass moves
    from the likeliest word that the classifier :math:`v` counts *for* the true label to the
    likeliest word it counts *against* it, so the classifier's score moves linearly in
    :math:`\|p - p^*\|_1` while :math:`\varepsilon` is quadratic in it: the family for which the
    :math:`\sqrt{\varepsilon}` rate is attained.

* :func:`family` -- the models of one family at a list of target ε.
* :func:`evaluate` -- for each model the task losses and the bound (one row per model).
* :func:`run` -- a language, its task, all families, all rows: the chapter's one call.
* :func:`shift`, :func:`tilt` -- the same model under task distributions :math:`p_T \ne p_L` (distribution shift).
* :func:`slope` -- the log-log slope of (loss − τ) against ε.

Binary tasks only (the theorem's logistic loss with labels :math:`\pm 1`).
"""
from __future__ import annotations

import functools
import numpy as np
from scipy.special import rel_entr

from ..config import single_threaded
from .. import lm, synthetic, theory
from .._checks import as_array, check_distributions, check_labels, check_positive, check_weights

__all__ = ["FAMILIES", "family", "aligned_family", "evaluate", "run", "shift", "slope", "fixed_loss", "tilt"]

#: The four ways :func:`family` builds language models at a chosen ε (see the module docstring).
FAMILIES = ("noise", "trained", "temperature", "aligned")


# --------------------------------------------------------------------------- helpers
_one_thread = single_threaded  # torch and BLAS on one thread for these small problems


def _single_threaded(fn):
    """Decorator: run ``fn`` inside :func:`_one_thread`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _one_thread():
            return fn(*args, **kwargs)

    return wrapper


def _kl_rows(p_star, p):
    """KL(p*_s || p_s) per row, (n,)."""
    return rel_entr(p_star, p).sum(axis=1)


def _check_eps_grid(eps):
    e = as_array(eps, "eps", ndim=1)
    if np.any(e <= 0):
        raise ValueError("eps must hold target excess cross-entropies > 0; drop the zeros or negatives.")
    return e


def _binary_signs(y, n):
    codes, classes = check_labels(y, n, "y")
    if classes.shape[0] != 2:
        raise ValueError(
            f"y has {classes.shape[0]} classes; result A's experiments handle two-class tasks "
            "(map the labels to two classes, e.g. one class against the rest)."
        )
    return 2.0 * codes - 1.0


def _bisect(fun, target, hi=1.0, iters=200):
    """t in (0, hi] with fun(t) = target (relative 1e-10), for fun increasing on [0, hi] with fun(0) = 0."""
    top = fun(hi)
    if top < target:
        raise ValueError(f"target eps={target:g} is above {top:.4g}, the largest this family reaches; "
                         "pass smaller targets.")
    lo = 0.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        e = fun(mid)
        if abs(e - target) <= 1e-10 * target:
            return mid
        if e < target:
            lo = mid
        else:
            hi = mid
    return hi


def fixed_loss(X, y, coef, intercept, weights=None) -> float:
    r"""Weighted logistic loss of a *fixed* binary classifier: :math:`\sum_i w_i \log(1 + e^{-y_i(v^\top x_i + b)})`.

    Parameters
    ----------
    X : (n, D) features (here next-word distributions, D = V).
    y : (n,) two-class labels (``np.unique`` order gives -1, +1, as in :func:`~lmdownstream.theory.task_fit`).
    coef : (D,) the vector v; intercept : float, the bias b.
    weights : (n,) non-negative, normalised here (None: uniform).

    Returns
    -------
    float (nats).
    """
    X = as_array(X, "X", ndim=2)
    s = _binary_signs(y, X.shape[0])
    v = as_array(coef, "coef", ndim=1)
    if v.shape[0] != X.shape[1]:
        raise ValueError(f"coef has {v.shape[0]} entries but X has {X.shape[1]} columns.")
    w = check_weights(weights, X.shape[0])
    return float(np.dot(w, np.logaddexp(0.0, -s * (X @ v + float(intercept)))))


# --------------------------------------------------------------------------- model families
@_single_threaded
def aligned_family(p_star, y, coef, eps, weights=None):
    r"""Perturbations of :math:`p^*` aligned against the classifier ``coef``, at excess ``eps``.

    In context s with label sign :math:`\sigma_s = \pm1`, let :math:`w^+_s` be the likeliest word with
    :math:`\sigma_s v_w > 0` and :math:`w^-_s` the likeliest word with :math:`\sigma_s v_w < 0`, and
    :math:`m_s = \min(p^*(w^+_s|s), p^*(w^-_s|s))`. The model is

    .. math::

        p_t(\cdot|s) = p^*(\cdot|s) + t\, m_s\, (e_{w^-_s} - e_{w^+_s}),\qquad t \in (0, 1],

    so :math:`\|p_t - p^*\|_1 = 2 t m_s` and the score :math:`\sigma_s v^\top p_t` drops by
    :math:`t m_s \sigma_s (v_{w^+} - v_{w^-})`, both linear in t, while
    :math:`\mathrm{KL}(p^*\|p_t) \approx \frac{t^2 m_s^2}{2}(1/p^*(w^+) + 1/p^*(w^-))` is quadratic:
    :math:`\ell_1`, and the task loss, move like :math:`\sqrt{\varepsilon}`. Contexts without words on
    both sides are left unchanged. t is found by bisection for every target.

    Parameters
    ----------
    p_star : (n, V) true next-word distributions.
    y : (n,) labels, two classes.
    coef : (V,) the classifier v (e.g. the one achieving tau).
    eps : (m,) target excess cross-entropies > 0.
    weights : (n,) p_L (None: uniform).

    Returns
    -------
    list of m arrays (n, V), the models in the order of ``eps``.
    """
    P = check_distributions(p_star, "p_star")
    if P.ndim != 2:
        raise ValueError(f"p_star must have shape (n, V) but has shape {P.shape}.")
    n, V = P.shape
    sign = _binary_signs(y, n)
    v = as_array(coef, "coef", ndim=1)
    if v.shape[0] != V:
        raise ValueError(f"coef has {v.shape[0]} entries but p_star has V={V} columns.")
    w = check_weights(weights, n)
    eps = _check_eps_grid(eps)
    side = sign[:, None] * v[None, :]  # (n, V): > 0 counts for the true label
    plus = np.where(side > 0, P, -1.0).argmax(1)
    minus = np.where(side < 0, P, -1.0).argmax(1)
    ok = (side[np.arange(n), plus] > 0) & (side[np.arange(n), minus] < 0)
    if not ok.any():
        raise ValueError("coef counts no word for and against the label in any context; pass a classifier "
                         "with entries of both signs (e.g. task_fit(p_star, y, B).coef).")
    rows = np.arange(n)
    m = np.where(ok, np.minimum(P[rows, plus], P[rows, minus]), 0.0)
    D = np.zeros_like(P)
    D[rows, minus] += m
    D[rows, plus] -= m

    def model(t):
        return np.clip(P + t * D, 0.0, None)

    def excess(t):
        return float(np.dot(w, _kl_rows(P, model(t))))

    return [model(_bisect(excess, e)) for e in eps]


@_single_threaded
def family(name, p_star, eps, weights=None, y=None, coef=None, seed=0, max_steps: int = 20_000):
    r"""Language models of one family (see the module docstring) at target excess cross-entropies.

    Parameters
    ----------
    name : one of :data:`FAMILIES`.
    p_star : (n, V) true next-word distributions.
    eps : (m,) target ε > 0, relative to ``p_star`` and ``weights``.
    weights : (n,) p_L (None: uniform).
    y, coef : (n,) labels and (V,) classifier, needed by ``"aligned"`` only.
    seed : seed of the noise rows (``"noise"``) or of the orthogonal Phi (``"trained"``).
    max_steps : optimizer steps per target for ``"trained"``.

    Returns
    -------
    list of m arrays (n, V) in the order of ``eps`` (``"trained"`` visits the targets from the
    largest to the smallest but returns them in the given order).
    """
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {name!r}.")
    P = check_distributions(p_star, "p_star")
    if P.ndim != 2:
        raise ValueError(f"p_star must have shape (n, V) but has shape {P.shape}.")
    n, V = P.shape
    w = check_weights(weights, n)
    eps = _check_eps_grid(eps)
    if name == "aligned":
        if y is None or coef is None:
            raise ValueError("the 'aligned' family needs y and coef (the classifier it is aligned against).")
        return aligned_family(P, y, coef, eps, w)
    if name == "noise":
        Q = np.random.default_rng(seed).dirichlet(np.ones(V), size=n)

        def excess(a):
            return float(np.dot(w, _kl_rows(P, (1 - a) * P + a * Q)))

        return [(1 - a) * P + a * Q for a in (_bisect(excess, e) for e in eps)]
    if name == "temperature":
        logP = np.log(P)

        def tempered(t):
            Z = t * logP
            Z -= Z.max(axis=1, keepdims=True)
            E = np.exp(Z)
            return E / E.sum(axis=1, keepdims=True)

        def excess_t(a):  # a = 1 - t: 0 is p*, 1 is the uniform LM
            return float(np.dot(w, _kl_rows(P, tempered(1.0 - a))))

        return [tempered(1.0 - _bisect(excess_t, e)) for e in eps]
    # trained: one optimizer run, stopped at each target (largest first)
    Phi, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(V, V)))
    out = [None] * len(eps)
    model = lm.TableLM(n, Phi=Phi, device="cpu")
    for i in np.argsort(-eps):
        model.fit(P, w, target_eps=float(eps[i]), max_steps=max_steps, lr=0.05)
        out[i] = model.probs()
    return out


# --------------------------------------------------------------------------- evaluation
@_single_threaded
def evaluate(p_star, y, models, B, p_lm=None, p_task=None, tau_fit=None, unconstrained: bool = False,
             family_name: str = ""):
    r"""Task losses and result A's bound for each model: one row per model.

    For a model :math:`\{p\}` with :math:`\varepsilon = \mathbb{E}_{s\sim p_L}\mathrm{KL}(p^*\|p)` the row holds

    * ``loss``: :math:`\min_{\|v\|_\infty\le B, b} \mathbb{E}_{p_T}\ell(v^\top p + b, y)`, the best classifier on p
      with the same B as :math:`\tau` (:func:`~lmdownstream.theory.task_loss`);
    * ``loss_v``: the loss on p of the classifier :math:`(v^*, b^*)` that achieves :math:`\tau` on :math:`p^*`
      (the classifier of the proof), so ``loss <= loss_v``;
    * ``loss_free``: the best classifier with no bound on v (NaN unless ``unconstrained``; solved to a
      gradient tolerance of 1e-6, since the unbounded problem is ill-conditioned and 10x slower at 1e-8);
    * ``l1``: :math:`\mathbb{E}_{p_T}\|p - p^*\|_1`; ``kl_task``: :math:`\mathbb{E}_{p_T}\mathrm{KL}(p^*\|p)`;
      ``score_shift``: :math:`\mathbb{E}_{p_T}|v^{*\top}(p - p^*)|`, how far the classifier's score moves
      (Lipschitz: ``loss_v - tau <= score_shift``; Hölder: ``score_shift <= B * l1``);
    * ``bound_l1`` = :math:`\tau + B\,\ell_1` (Lipschitz + Hölder), ``bound_kl`` =
      :math:`\tau + B\sqrt{2\,\mathrm{kl\_task}}` (+ Pinsker, Jensen) and ``bound`` =
      :math:`\tau + \sqrt{2B^2\varepsilon/\gamma}` (+ change of measure), the chain of the proof:
      ``loss <= loss_v <= bound_l1 <= bound_kl <= bound``;
    * ``eps``, ``tau``, ``B``, ``gamma``, ``family``.

    Parameters
    ----------
    p_star : (n, V) true next-word distributions.
    y : (n,) labels, two classes.
    models : list of (n, V) model distributions.
    B : > 0, the bound on the classifier.
    p_lm : (n,) p_L, the distribution ε is measured under (None: uniform).
    p_task : (n,) p_T, the task distribution (None: the same as p_lm).
    tau_fit : a precomputed ``theory.task_fit(p_star, y, B=B, weights=p_task)``, or None (computed here).
    unconstrained : also fit the unconstrained classifier.
    family_name : stored in each row.

    Returns
    -------
    list of dicts (one per model).
    """
    P = check_distributions(p_star, "p_star")
    if P.ndim != 2:
        raise ValueError(f"p_star must have shape (n, V) but has shape {P.shape}.")
    n, V = P.shape
    _binary_signs(y, n)
    B = check_positive(B, "B")
    w_lm = check_weights(p_lm, n, "p_lm")
    w_task = w_lm if p_task is None else check_weights(p_task, n, "p_task")
    g = theory.gamma(w_task, w_lm)
    fit = tau_fit if tau_fit is not None else theory.task_fit(P, y, B=B, weights=w_task)
    tau = float(fit.loss)
    rows = []
    for p in models:
        p = check_distributions(p, "model")
        if p.shape != P.shape:
            raise ValueError(f"a model has shape {p.shape} but p_star has shape {P.shape}.")
        eps = theory.excess_xent(P, p, w_lm)
        kl_task = float(np.dot(w_task, _kl_rows(P, p)))
        l1 = float(np.dot(w_task, np.abs(p - P).sum(1)))
        score_shift = float(np.dot(w_task, np.abs((p - P) @ fit.coef)))
        rows.append(dict(
            family=family_name, eps=eps, tau=tau, B=B, gamma=g,
            loss=theory.task_loss(p, y, B=B, weights=w_task),
            loss_v=fixed_loss(p, y, fit.coef, fit.intercept, w_task),
            loss_free=theory.task_loss(p, y, weights=w_task, tol=1e-6) if unconstrained else float("nan"),
            l1=l1, kl_task=kl_task, score_shift=score_shift,
            bound_l1=tau + B * l1,
            bound_kl=tau + B * np.sqrt(2 * kl_task),
            bound=theory.xent_bound(tau, eps, B, g),
        ))
    return rows


def _language(n_contexts, vocab_size, label_strength, seed):
    return synthetic.ContextLanguage.random(n_contexts=int(n_contexts), vocab_size=int(vocab_size), seed=seed,
                                            label_strength=label_strength)


@_single_threaded
def run(eps, B: float = 2.0, n_contexts: int = 400, vocab_size: int = 30, label_strength: float = 0.3,
        families=FAMILIES, aligned_eps=None, seed: int = 0, unconstrained=("trained",)):
    r"""Result A on a synthetic language: every family at every ε, one row per model.

    Builds ``ContextLanguage.random(n_contexts, vocab_size, seed, label_strength)``, its planted task
    with :math:`p_T = p_L`, :math:`\tau` = best :math:`\|v\|_\infty \le B` classifier on :math:`p^*`, and
    calls :func:`family` and :func:`evaluate` for each family.

    Parameters
    ----------
    eps : (m,) target excess cross-entropies > 0.
    B : > 0, the bound on :math:`\|v\|_\infty` in :math:`\tau` and in the task losses.
    n_contexts, vocab_size, label_strength, seed : the language (see ``ContextLanguage.random``).
    families : names from :data:`FAMILIES`.
    aligned_eps : (k,) targets for the ``"aligned"`` family (None: ``eps``). Its
        :math:`\sqrt{\varepsilon}` regime needs perturbations small relative to :math:`p^*`, i.e. small ε.
    unconstrained : names of the families whose rows also get the unconstrained best classifier
        (``loss_free``; slower to fit, NaN elsewhere).

    Returns
    -------
    (rows, info): rows is a list of dicts (see :func:`evaluate`, plus ``eps_target``); info a dict with
    ``lang`` (the language), ``tau``, ``tau_free`` (unconstrained best on p*), ``coef``, ``intercept``
    (the :math:`\tau`-achieving classifier).
    """
    eps = _check_eps_grid(eps)
    B = check_positive(B, "B")
    for f in tuple(families) + tuple(unconstrained):
        if f not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {f!r}.")
    lang = _language(n_contexts, vocab_size, label_strength, seed)
    P, p_lm, y = lang.p_next, lang.p_context, lang.labels
    fit = theory.task_fit(P, y, B=B, weights=p_lm)
    rows = []
    for name in families:
        targets = _check_eps_grid(aligned_eps) if (name == "aligned" and aligned_eps is not None) else eps
        models = family(name, P, targets, p_lm, y=y, coef=fit.coef, seed=seed)
        new = evaluate(P, y, models, B, p_lm=p_lm, tau_fit=fit, unconstrained=name in unconstrained,
                       family_name=name)
        for r, t in zip(new, targets):
            r["eps_target"] = float(t)
        rows += new
    info = dict(lang=lang, tau=float(fit.loss), coef=fit.coef, intercept=fit.intercept,
                tau_free=theory.task_loss(P, y, weights=p_lm) if unconstrained else float("nan"))
    return rows, info


# --------------------------------------------------------------------------- distribution shift
@_single_threaded
def shift(p_star, y, p, p_lm, B, p_tasks):
    r"""One model under several task distributions :math:`p_T \ne p_L` (distribution shift).

    For each :math:`p_T`: :math:`\gamma = \gamma(p_T)` (:func:`~lmdownstream.theory.gamma`), the task's
    own :math:`\tau_T` (best :math:`\|v\|_\infty\le B` classifier on :math:`p^*` under :math:`p_T`), the
    actual loss on p under :math:`p_T` and the bounds of :func:`evaluate`; :math:`\varepsilon` is always
    measured under :math:`p_L`, as the theorem has it.

    Parameters
    ----------
    p_star : (n, V) true next-word distributions.
    y : (n,) labels, two classes.
    p : (n, V) the model.
    p_lm : (n,) p_L, under which ε is measured.
    B : > 0, the bound on the classifier.
    p_tasks : (k, n) task distributions over the same contexts, one per row (normalised here).

    Returns
    -------
    list of k dicts: the keys of :func:`evaluate` plus ``tau_T`` (= ``tau``, the task's own).
    """
    P = check_distributions(p_star, "p_star")
    if P.ndim != 2:
        raise ValueError(f"p_star must have shape (n, V) but has shape {P.shape}.")
    n = P.shape[0]
    w_lm = check_weights(p_lm, n, "p_lm")
    T = as_array(p_tasks, "p_tasks", ndim=2)
    if T.shape[1] != n:
        raise ValueError(f"p_tasks has {T.shape[1]} columns but there are {n} contexts; pass (k, n), one "
                         "task distribution per row.")
    rows = []
    for p_task in T:
        (row,) = evaluate(P, y, [p], B, p_lm=w_lm, p_task=check_weights(p_task, n, "p_tasks row"),
                          family_name="shift")
        row["tau_T"] = row["tau"]
        rows.append(row)
    return rows


def tilt(p_lm, score, beta):
    r"""Task distributions that over-sample contexts with a high ``score``: :math:`p_T \propto p_L\, \mathrm{score}^\beta`.

    Parameters
    ----------
    p_lm : (n,) the language's context distribution p_L.
    score : (n,) positive scores, e.g. the model's KL per context.
    beta : (k,) exponents, each at least 0 (0 gives p_L itself).

    Returns
    -------
    (k, n) array, rows are distributions.
    """
    w = check_weights(p_lm, np.size(p_lm), "p_lm")
    sc = as_array(score, "score", ndim=1)
    if sc.shape != w.shape or np.any(sc <= 0):
        raise ValueError("score must be positive, one value per context.")
    beta = as_array(beta, "beta", ndim=1)
    if np.any(beta < 0):
        raise ValueError("beta must be >= 0.")
    T = w[None, :] * np.exp(beta[:, None] * np.log(sc / sc.max())[None, :])
    return T / T.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- rates
def slope(rows, key: str = "loss", family_name=None):
    r"""Least-squares slope of :math:`\log(\text{row[key]} - \tau)` against :math:`\log\varepsilon`.

    Rows with ``row[key] - tau <= 0`` (a model at least as good as :math:`p^*` on the task) cannot
    enter a log: they are skipped and counted.

    Parameters
    ----------
    rows : list of dicts with ``eps``, ``tau`` and ``key``.
    key : e.g. ``"loss"``, ``"loss_v"``, ``"bound"``.
    family_name : keep only rows of this family (None: all rows).

    Returns
    -------
    (slope, n_used, n_skipped). Raises ValueError with fewer than 3 usable rows.
    """
    sel = [r for r in rows if family_name is None or r["family"] == family_name]
    gap = np.array([r[key] - r["tau"] for r in sel], dtype=float)
    eps = np.array([r["eps"] for r in sel], dtype=float)
    ok = (gap > 0) & (eps > 0)
    if ok.sum() < 3:
        raise ValueError(f"only {int(ok.sum())} rows with {key} > tau and eps > 0; a slope needs at least 3.")
    return float(np.polyfit(np.log(eps[ok]), np.log(gap[ok]), 1)[0]), int(ok.sum()), int((~ok).sum())
