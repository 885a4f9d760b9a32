r"""Result A checked numerically: any ε-optimal language model solves a natural task (chapter 4).

A :class:`~lmdownstream.synthetic.ContextLanguage` with a planted binary label is a
:math:`(\tau, B)`-natural task. Language models at chosen excess cross-entropies ε come from
four *families* (:data:`FAMILIES`):

``"noise"``
    :math:`p = (1-\alpha)\,p^* + \alpha\, q`, noise rows :math:`q_s \sim \mathrm{Dir}(\mathbf 1)`.
``"trained"``
    a :class:`~lmdownstream.lm.TableLM` with a random orthogonal Φ (d = V) trained down the
    targets: one optimizer run, stopped at each.
``"temperature"``
    :math:`p \propto (p^*)^t`, :math:`t < 1`: the segment from the uniform LM to :math:`p^*`.
``"aligned"``
    mass moved, in every context, between the likeliest words the classifier counts for and
    against the label (:func:`aligned_family`): the family that attains the √ε rate.

:func:`run` is the chapter's one call: a DataFrame with one row per model (family, eps, loss,
the links of the proof's chain and the bound). :func:`shift` does the same for one model under
task distributions :math:`p_T \ne p_L`; :func:`slope` fits the log-log rate. Binary tasks only.
"""
from __future__ import annotations

import numpy as np
from scipy.special import softmax

from .. import config, fits, losses, lm, synthetic, theory
from .._checks import as_array, check_distributions, check_labels, check_positive, check_weights

__all__ = ["FAMILIES", "language", "family", "aligned_family", "evaluate", "run", "shift", "tilt",
           "slope", "fixed_loss"]

#: The four ways :func:`family` builds language models at a chosen ε (see the module docstring).
FAMILIES = ("noise", "trained", "temperature", "aligned")
#: The settings of :func:`run` besides the sizes (``config.sizes("ch04")``); any can be overridden.
DEFAULTS = dict(B=2.0, label_strength=0.3, families=FAMILIES, unconstrained=("trained",))


def _eps_grid(eps):
    e = as_array(eps, "eps", ndim=1)
    if np.any(e <= 0):
        raise ValueError("eps must hold target excess cross-entropies > 0; drop the zeros or negatives.")
    return e


def _p_star(p_star):
    P = check_distributions(p_star, "p_star")
    if P.ndim != 2:
        raise ValueError(f"p_star must have shape (n, V) but has shape {P.shape}.")
    return P


def _signs(y, n):
    codes, classes = check_labels(y, n, "y")
    if classes.shape[0] != 2:
        raise ValueError(f"y has {classes.shape[0]} classes; result A's experiments handle two-class "
                         "tasks (map the labels to two classes, e.g. one class against the rest).")
    return 2.0 * codes - 1.0


def fixed_loss(X, y, coef, intercept, weights=None) -> float:
    r"""Weighted logistic loss :math:`\sum_i w_i \log(1 + e^{-y_i(v^\top x_i + b)})` of a fixed classifier.

    X : (n, D) features; y : (n,) two classes (``np.unique`` order gives -1, +1); coef : (D,) v;
    intercept : b; weights : (n,) normalised here (None: uniform). Returns nats.
    """
    X = as_array(X, "X", ndim=2)
    s = _signs(y, X.shape[0])
    v = as_array(coef, "coef", ndim=1)
    if v.shape[0] != X.shape[1]:
        raise ValueError(f"coef has {v.shape[0]} entries but X has {X.shape[1]} columns.")
    w = check_weights(weights, X.shape[0])
    return float(np.dot(w, np.logaddexp(0.0, -s * (X @ v + float(intercept)))))


def aligned_family(p_star, y, coef, eps, weights=None):
    r"""Perturbations :math:`p_t = p^* + t\, m_s (e_{w^-_s} - e_{w^+_s})` against the classifier ``coef``.

    :math:`w^\pm_s`: the likeliest word with :math:`\pm\sigma_s v_w > 0` (:math:`\sigma_s` the label
    sign), :math:`m_s` the smaller of their probabilities. The score and :math:`\|p_t - p^*\|_1`
    move linearly in t, ε quadratically: the loss moves like √ε. t is found by bisection.

    p_star : (n, V); y : (n,) two classes; coef : (V,) v; eps : (m,) targets > 0;
    weights : (n,) p_L (None: uniform). Returns a list of m arrays (n, V).
    """
    P = _p_star(p_star)
    n, V = P.shape
    v = as_array(coef, "coef", ndim=1)
    if v.shape[0] != V:
        raise ValueError(f"coef has {v.shape[0]} entries but p_star has V={V} columns.")
    side = _signs(y, n)[:, None] * v[None, :]  # (n, V): > 0 counts for the true label
    w, rows = check_weights(weights, n), np.arange(n)
    plus = np.where(side > 0, P, -1.0).argmax(1)
    minus = np.where(side < 0, P, -1.0).argmax(1)
    ok = (side[rows, plus] > 0) & (side[rows, minus] < 0)
    if not ok.any():
        raise ValueError("coef counts no word for and against the label in any context; pass a "
                         "classifier with entries of both signs (e.g. task_fit(p_star, y, B).coef_).")
    m = np.where(ok, np.minimum(P[rows, plus], P[rows, minus]), 0.0)
    D = np.zeros_like(P)
    D[rows, minus] += m
    D[rows, plus] -= m

    def model(t):
        return np.clip(P + t * D, 0.0, None)

    with config.threads(1):
        return [model(theory.bisect(lambda t: w @ losses.kl(P, model(t)), e)) for e in _eps_grid(eps)]


def family(name, p_star, eps, weights=None, y=None, coef=None, seed=0, max_steps: int = 20_000):
    r"""Language models of one of :data:`FAMILIES` at target excess cross-entropies ``eps``.

    p_star : (n, V); eps : (m,) targets > 0 under ``weights`` (n,) = p_L (None: uniform);
    y, coef : labels and classifier (``"aligned"`` only); seed : of the noise rows or of the
    orthogonal Φ; max_steps : optimizer steps per target (``"trained"``).
    Returns a list of m arrays (n, V) in the order of ``eps``.
    """
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {name!r}.")
    P = _p_star(p_star)
    n, V = P.shape
    w, eps = check_weights(weights, n), _eps_grid(eps)
    if name == "aligned":
        if y is None or coef is None:
            raise ValueError("the 'aligned' family needs y and coef (the classifier it is aligned against).")
        return aligned_family(P, y, coef, eps, w)
    with config.threads(1):
        if name == "noise":
            Q = np.random.default_rng(seed).dirichlet(np.ones(V), size=n)
            mix = lambda a: (1 - a) * P + a * Q  # noqa: E731
        elif name == "temperature":
            logP = np.log(P)
            mix = lambda a: softmax((1.0 - a) * logP, axis=1)  # noqa: E731  (a = 1: uniform)
        else:  # trained: one optimizer run, stopped at each target (largest first)
            Phi, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(V, V)))
            model, out = lm.TableLM(n, Phi=Phi, device="cpu"), [None] * len(eps)
            for i in np.argsort(-eps):
                model.fit(P, w, target_eps=float(eps[i]), max_steps=max_steps, lr=0.05)
                out[i] = model.probs()
            return out
        return [mix(theory.bisect(lambda a: w @ losses.kl(P, mix(a)), e)) for e in eps]


def evaluate(p_star, y, models, B, p_lm=None, p_task=None, tau_fit=None, unconstrained=False):
    r"""Task losses and the links of result A's proof for each model: a DataFrame, one row per model.

    Columns: ``eps`` (:math:`\mathbb{E}_{p_L}\mathrm{KL}(p^*\|p)`), ``tau``, ``B``, ``gamma``,
    ``loss`` (best :math:`\|v\|_\infty \le B` classifier on p), ``loss_v`` (the τ-achieving
    classifier :math:`(v^*, b^*)` of p* applied to p), ``loss_free`` (no bound on v; NaN unless
    ``unconstrained``), ``l1`` (:math:`\mathbb{E}_{p_T}\|p - p^*\|_1`), ``kl_task``
    (:math:`\mathbb{E}_{p_T}\mathrm{KL}`), ``score_shift`` (:math:`\mathbb{E}_{p_T}|v^{*\top}(p-p^*)|`),
    ``bound_l1`` = τ + B·l1, ``bound_kl`` = τ + B√(2 kl_task), ``bound`` = τ + √(2B²ε/γ): the chain
    ``loss <= loss_v <= tau + score_shift <= bound_l1 <= bound_kl <= bound``.

    p_star : (n, V); y : (n,) two classes; models : list of (n, V); B : > 0; p_lm : (n,) p_L
    (None: uniform); p_task : (n,) p_T (None: p_L); tau_fit : a precomputed
    ``theory.task_fit(p_star, y, B=B, weights=p_task)``; unconstrained : also fit ``loss_free``.
    """
    import pandas as pd

    P = _p_star(p_star)
    n = P.shape[0]
    _signs(y, n)
    B = check_positive(B, "B")
    w_lm = check_weights(p_lm, n, "p_lm")
    w_T = w_lm if p_task is None else check_weights(p_task, n, "p_task")
    g = theory.gamma(w_T, w_lm)
    rows = []
    with config.threads(1):
        fit = tau_fit if tau_fit is not None else theory.task_fit(P, y, B=B, weights=w_T)
        tau, v = float(fit.loss), np.ravel(fit.coef_)
        for p in models:
            p = check_distributions(p, "model")
            if p.shape != P.shape:
                raise ValueError(f"a model has shape {p.shape} but p_star has shape {P.shape}.")
            eps, kl_T = float(w_lm @ losses.kl(P, p)), float(w_T @ losses.kl(P, p))
            l1 = float(w_T @ np.abs(p - P).sum(1))
            free = theory.task_fit(p, y, weights=w_T, tol=1e-6).loss if unconstrained else np.nan
            rows.append(dict(
                eps=eps, tau=tau, B=B, gamma=g, loss=theory.task_fit(p, y, B=B, weights=w_T).loss,
                loss_v=fixed_loss(p, y, v, fit.intercept_[0], w_T), loss_free=free, l1=l1,
                kl_task=kl_T, score_shift=float(w_T @ np.abs((p - P) @ v)),
                bound_l1=tau + B * l1, bound_kl=tau + B * np.sqrt(2 * kl_T),
                bound=float(theory.xent_bound(tau, eps, B, g))))
    return pd.DataFrame(rows)


def language(*, n_contexts, vocab_size, label_strength=0.3, seed=0, **_):
    """The chapter's language: ``ContextLanguage.random`` with a planted binary label."""
    return synthetic.ContextLanguage.random(n_contexts=int(n_contexts), vocab_size=int(vocab_size),
                                            seed=seed, label_strength=label_strength)


def run(*, sizes=None, seed=0, **overrides):
    r"""Result A on a synthetic language: every family at every ε, one row per model.

    ``sizes`` (default ``config.sizes("ch04")``): ``n_contexts``, ``vocab_size``, ``eps`` (targets
    of every family) and ``aligned_eps`` (of ``"aligned"``: its √ε regime needs small ε).
    ``overrides``: any of those or of :data:`DEFAULTS` (``B``, ``label_strength``, ``families``,
    ``unconstrained``: families whose rows also get ``loss_free``). The task has
    :math:`p_T = p_L` and τ = the best :math:`\|v\|_\infty \le B` classifier on p*.

    Returns a DataFrame with the columns of :func:`evaluate` plus ``family`` and ``eps_target``;
    ``df.attrs`` holds the setup (the sizes, ``B``, ``label_strength``, ``seed``) and ``tau``,
    ``tau_free`` (best unconstrained classifier on p*), ``coef`` (V values) and ``intercept`` of the
    τ-achieving classifier. The language itself is ``language(**df.attrs)``.
    """
    import pandas as pd

    setup = {**DEFAULTS, **(config.sizes("ch04") if sizes is None else dict(sizes)), **overrides}
    for f in tuple(setup["families"]) + tuple(setup["unconstrained"]):
        if f not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {f!r}.")
    B = check_positive(setup["B"], "B")
    lang = language(seed=seed, **setup)
    P, p_L, y = lang.p_next, lang.p_context, lang.labels
    with config.threads(1):
        fit = theory.task_fit(P, y, B=B, weights=p_L)
        frames = []
        for name in setup["families"]:
            targets = _eps_grid(setup["aligned_eps" if name == "aligned" else "eps"])
            models = family(name, P, targets, p_L, y=y, coef=np.ravel(fit.coef_), seed=seed)
            df = evaluate(P, y, models, B, p_lm=p_L, tau_fit=fit,
                          unconstrained=name in setup["unconstrained"])
            frames.append(df.assign(family=name, eps_target=targets))
        tau_free = theory.task_fit(P, y, weights=p_L).loss
    out = pd.concat(frames, ignore_index=True)
    # tuples, not arrays, in attrs: pandas compares attrs when it concatenates frames
    out.attrs = dict(setup, seed=seed, tau=float(fit.loss), tau_free=float(tau_free),
                     eps=tuple(_eps_grid(setup["eps"]).tolist()),
                     aligned_eps=tuple(_eps_grid(setup["aligned_eps"]).tolist()),
                     coef=tuple(np.ravel(fit.coef_).tolist()), intercept=float(fit.intercept_[0]))
    return out


def shift(p_star, y, p, p_lm, B, p_tasks):
    r"""One model under several task distributions :math:`p_T \ne p_L`: one row per :math:`p_T`.

    Each row is :func:`evaluate` under that :math:`p_T` (with the task's own τ, also as
    ``tau_T``, and :math:`\gamma(p_T)`); ε is measured under :math:`p_L`, as the theorem has it.
    p_star, p : (n, V); y : (n,); p_lm : (n,); B : > 0; p_tasks : (k, n), one distribution per row.
    """
    import pandas as pd

    P = _p_star(p_star)
    n = P.shape[0]
    T = as_array(p_tasks, "p_tasks", ndim=2)
    if T.shape[1] != n:
        raise ValueError(f"p_tasks has {T.shape[1]} columns but there are {n} contexts; pass (k, n), "
                         "one task distribution per row.")
    w_lm = check_weights(p_lm, n, "p_lm")
    df = pd.concat([evaluate(P, y, [p], B, p_lm=w_lm, p_task=check_weights(t, n, "p_tasks row"))
                    for t in T], ignore_index=True)
    return df.assign(family="shift", tau_T=df["tau"])


def tilt(p_lm, score, beta):
    r"""Task distributions :math:`p_T \propto p_L\, \mathrm{score}^\beta` that over-sample high scores.

    p_lm : (n,); score : (n,) > 0, e.g. the model's KL per context; beta : (k,) >= 0 (0: p_L).
    Returns (k, n), rows are distributions.
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


def slope(df, key: str = "loss", family_name=None):
    r"""Log-log slope of ``df[key] - df.tau`` against ``df.eps`` (rows of one family, or all).

    Rows where ``key - tau <= 0`` cannot enter a log: they are skipped and counted.
    Returns (slope, n_used, n_skipped); fewer than 3 usable rows raise ValueError.
    """
    if family_name is not None:
        df = df[df["family"] == family_name]
    gap, eps = (df[key] - df["tau"]).to_numpy(float), df["eps"].to_numpy(float)
    ok = (gap > 0) & (eps > 0)
    if ok.sum() < 3:
        raise ValueError(f"only {int(ok.sum())} rows with {key} > tau and eps > 0; a slope needs at least 3.")
    return fits.loglog_slope(eps[ok], gap[ok]), int(ok.sum()), int((~ok).sum())
