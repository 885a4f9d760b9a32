r"""Result B checked numerically: softmax LMs with a fixed Φ and conditional-mean features (chapter 5).

A :class:`~lmdownstream.synthetic.ContextLanguage` with four planted classes and four groups of
indicative words :math:`W_0, \dots, W_3` carries two binary tasks (:data:`TASKS`): the
**natural** task "odd class", read off by :math:`u_A = \mathbf 1_{W_1 \cup W_3} - \mathbf 1_{W_0 \cup W_2}`,
and the **contrast** task "upper class" (:math:`u_B = \mathbf 1_{W_2 \cup W_3} - \mathbf 1_{W_0 \cup W_1}`).
The fixed embeddings Φ (:func:`planted_setup`) have first row :math:`u_A` and Gaussian rows that
vanish on the indicative words: task A is natural w.r.t. Φ, task B only in :math:`\mathbb{R}^V`.

:func:`run` places softmax LMs at many ε w.r.t. Φ (:meth:`~lmdownstream.lm.TableLM.at_eps`) and
returns, for both tasks and both features (:data:`FEATURES`), the task loss and the bound
:math:`\tau_\Phi + \sqrt{2B^2\varepsilon/\gamma}`, with :math:`\tau_\Phi` =
``theory.task_tau(p_star, y, B, Phi=Phi)`` (v in the row span of Φ, :math:`\|\Phi^\top\lambda\|_\infty \le B`).
"""
from __future__ import annotations

import numpy as np

from .. import config, features, lm, losses, synthetic, theory
from .._checks import as_array, check_distributions, check_int, check_positive

__all__ = ["planted_setup", "run", "TASKS", "FEATURES", "DEFAULTS"]

TASKS = ("natural w.r.t. Phi", "natural only in R^V")
FEATURES = ("p_f", "Phi p_f")
#: The settings of :func:`run` besides the sizes (``config.sizes("ch05")``).
DEFAULTS = dict(B=4.0, eps_lo=1e-4, eps_hi=1e-1, task_weights=None)


def planted_setup(n_contexts: int = 300, vocab_size: int = 64, d: int = 8, seed: int = 0) -> dict:
    r"""The language, the two binary tasks and the fixed Φ of chapter 5.

    n_contexts : >= 8; vocab_size : V >= 4 d; d : >= 2; seed : of the language and of Φ.
    Returns a dict with ``lang``, ``Phi`` (d, V), ``labels`` (task name -> (n,) 0/1),
    ``u`` (task name -> (V,) indicative direction in {-1, 0, 1}), ``p_star`` (n, V), ``p_L`` (n,).
    """
    n, V = check_int(n_contexts, "n_contexts", low=8), check_int(vocab_size, "vocab_size", low=8)
    d = check_int(d, "d", low=2)
    if V < 4 * d:
        raise ValueError(f"need 4 d <= V (a low-dimensional Phi) but d={d}, V={V}; lower d or raise V.")
    lang = synthetic.ContextLanguage.random(n_contexts=n, vocab_size=V, n_classes=4, seed=seed)
    c = lang.labels
    u_A, u_B = lang.word_direction([1, 3], [0, 2]), lang.word_direction([2, 3], [0, 1])
    Phi = synthetic.planted_phi(u_A, d, seed=[seed, 5], zero_on=lang.indicative_words)
    return dict(lang=lang, Phi=Phi, p_star=lang.p_next, p_L=lang.p_context,
                labels={TASKS[0]: (c % 2).astype(np.int64), TASKS[1]: (c // 2).astype(np.int64)},
                u={TASKS[0]: u_A, TASKS[1]: u_B})


def _phi_loss(p, y, Phi, B, w):
    """Best loss of lambda^T Phi p + b with ||Phi^T lambda||_inf <= B."""
    return theory.task_fit(p @ Phi.T, y, B=B, Phi=Phi, weights=w).loss


def run(*, sizes=None, seed=0, **overrides):
    r"""Softmax LMs at many ε w.r.t. the fixed Φ of :func:`planted_setup`, their losses and the bound.

    ``sizes`` (default ``config.sizes("ch05")``): ``n_contexts``, ``vocab_size``, ``d``, ``n_eps``
    (ε on a log grid from ``eps_lo`` to ``eps_hi``). ``overrides``: any size, ``eps`` (the grid
    itself), or a key of :data:`DEFAULTS` (``B``; ``task_weights``: (n,) :math:`p_T`, None = p_L).
    For each ε and task, the losses (weighted by :math:`p_T`) of the best bounded classifier on
    ``"p_f"`` (:math:`\|v\|_\infty \le B`, V-dimensional) and on ``"Phi p_f"`` (v in Φ's row span).

    Returns a long DataFrame, one row per (ε, task, feature): ``eps``, ``task``, ``feature``,
    ``loss``, ``bound``, ``tau`` (:math:`\tau_\Phi`), ``tau_V`` (τ with v free in
    :math:`\mathbb{R}^V`), ``loss_at_opt`` (the feature's loss at the Φ-optimal LM, the ε → 0
    limit), ``t`` (position on the segment, 1 = optimum). ``df.attrs``: the sizes, ``B``,
    ``seed``, ``gamma``, ``V``, ``eps``.
    """
    import pandas as pd

    setup = {**DEFAULTS, **(config.sizes("ch05") if sizes is None else dict(sizes)), **overrides}
    B = check_positive(setup["B"], "B")
    eps_grid = setup.get("eps")
    if eps_grid is None:
        n_eps = check_int(setup["n_eps"], "n_eps", low=1)
        eps_grid = np.logspace(np.log10(setup["eps_lo"]), np.log10(setup["eps_hi"]), n_eps)
    eps_grid = as_array(eps_grid, "eps", ndim=1)
    if not np.all(np.isfinite(eps_grid)) or np.any(eps_grid <= 0):
        raise ValueError("eps must be a non-empty 1-D array of positive excesses (nats).")
    s = planted_setup(setup["n_contexts"], setup["vocab_size"], setup["d"], seed)
    P, p_L, Phi = s["p_star"], s["p_L"], s["Phi"]
    n, V = P.shape
    p_T = p_L if setup["task_weights"] is None else check_distributions(
        as_array(setup["task_weights"], "task_weights", ndim=1), "task_weights")
    if p_T.shape != (n,):
        raise ValueError(f"task_weights must have shape ({n},) (one weight per context) but has {p_T.shape}.")
    g = theory.gamma(p_T, p_L)
    rows = []
    with config.threads(1):
        model = lm.TableLM(n, Phi=Phi, device="cpu")
        e_uniform = model.excess_xent(P, p_L, relative_to="Phi")
        if eps_grid.max() >= e_uniform:
            raise ValueError(f"eps reaches {eps_grid.max():g} but the uniform LM (f = 0) already has "
                             f"excess {e_uniform:.4g} w.r.t. Phi; pass eps below it.")
        p_opt = features.next_word_probs(losses.xent_optimum(Phi, P), Phi)  # the LM with eps = 0
        per_task = {}
        for task in TASKS:
            y = s["labels"][task]
            per_task[task] = dict(
                y=y, tau=theory.task_tau(P, y, B=B, Phi=Phi, weights=p_T),
                tau_V=theory.task_tau(P, y, B=B, weights=p_T),
                opt={"p_f": theory.task_fit(p_opt, y, B=B, weights=p_T).loss,
                     "Phi p_f": _phi_loss(p_opt, y, Phi, B, p_T)})
        for eps in eps_grid:
            model.at_eps(float(eps), P, p_L, relative_to="Phi", start=np.zeros((n, s["Phi"].shape[0])))
            p_f = model.probs()
            for task, info in per_task.items():
                loss = {"p_f": theory.task_fit(p_f, info["y"], B=B, weights=p_T).loss,
                        "Phi p_f": _phi_loss(p_f, info["y"], Phi, B, p_T)}
                bound = float(theory.xent_bound(info["tau"], model.eps_, B, gamma=g))
                rows += [dict(eps=float(model.eps_), task=task, feature=f, loss=float(loss[f]),
                              bound=bound, tau=float(info["tau"]), tau_V=float(info["tau_V"]),
                              loss_at_opt=float(info["opt"][f]), t=float(model.t_))
                         for f in FEATURES]
    df = pd.DataFrame(rows)
    df.attrs = dict(setup, seed=seed, gamma=g, V=V, eps=tuple(eps_grid.tolist()),  # no arrays in attrs
                    task_weights=None if setup["task_weights"] is None else tuple(p_T.tolist()))
    return df
