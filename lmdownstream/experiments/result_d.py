r"""Result D (the Quad objective): the experiments behind chapter 8's checks.

The Quad loss :math:`\ell_{\mathrm{quad},s}(\theta, \Phi) = -\theta^\top \Phi p^*_s + \tfrac12 \|\Phi^\top\theta\|^2`
(:func:`lmdownstream.losses.quad_loss`) is minimised at :math:`\theta^*_s = (\Phi\Phi^\top)^{-1}\Phi p^*_s`
(:func:`lmdownstream.losses.quad_optimum`) with excess :math:`\tfrac12\|\Phi^\top(\theta - \theta^*_s)\|^2`.
Result D: for a task natural w.r.t. Φ with classifier :math:`v = \Phi^\top\lambda`, a linear
classifier on f(s) reaches :math:`\tau + \|v\|_2 \sqrt{2\varepsilon/\gamma}`.

* :func:`planted_setup` -- a planted-label language and a fixed Φ whose row span holds the
  indicative-word classifier, with the task's τ and :math:`\|v\|_2`.
* :func:`run` -- Quad LMs at many ε along each of :data:`PATHS`, the task loss on f(s) and the
  bound: one DataFrame row per model.
* :func:`learned_phi_angles` -- Φ learned with the Quad objective (Adam, and alternating
  minimisation) against the top-d eigenvectors of Ω (principal angles).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .. import config, lm, losses, synthetic, theory
from .._checks import as_array, check_choice, check_int, check_positive

__all__ = ["PATHS", "DEFAULTS", "planted_setup", "run", "adam_quad_joint", "learned_phi_angles"]

PATHS = ("adam", "worst", "segment")
#: The settings of :func:`run` besides the sizes (``config.sizes("ch08")``).
DEFAULTS = dict(paths=PATHS, label_strength=0.3, max_steps=20_000, tol=1e-11, device=None)


def planted_setup(n_contexts: int = 400, vocab_size: int = 60, d: int = 8, label_strength: float = 0.3,
                  seed: int = 0, tol: float = 1e-11) -> dict:
    r"""A planted-label language and a fixed Φ (d, V) for which the planted task is natural.

    Φ has N(0, 1) entries except row 0, the indicative-word classifier
    :math:`\mathbf 1_{W_1} - \mathbf 1_{W_0}`. The natural classifier of the bound is the best
    one in the row span, :math:`\hat v = \Phi^\top\hat\lambda` (no norm constraint); its loss τ is
    the best loss of a linear classifier on :math:`\theta^*` (the ε → 0 limit). :math:`p_T = p_L`.

    Returns a dict with ``lang``, ``p_star`` (n, V), ``weights`` (n,) = p_L, ``y`` (n,), ``Phi``,
    ``theta_star`` (n, d), ``tau``, ``v`` (V,), ``lam`` (d,) with v = Phi.T @ lam, ``v_norm2``,
    ``gamma`` (1.0).
    """
    n, V = check_int(n_contexts, "n_contexts", low=2), check_int(vocab_size, "vocab_size", low=2)
    d = check_int(d, "d", low=2)
    if d >= V:
        raise ValueError(f"d={d} must be smaller than vocab_size={V} (a d-dimensional LM with d < V).")
    lang = synthetic.ContextLanguage.random(n_contexts=n, vocab_size=V, seed=seed,
                                            label_strength=label_strength)
    P, pL, y = lang.p_next, lang.p_context, lang.labels
    Phi = synthetic.planted_phi(lang.word_direction([1], [0]), d, seed=[seed, 1])
    theta_star = losses.quad_optimum(Phi, P)
    fit = theory.task_fit(theta_star, y, B=None, weights=pL, tol=tol)
    lam = np.linalg.solve(Phi @ Phi.T, np.ravel(fit.coef_))  # c^T theta* = (Phi^T G^-1 c)^T p*
    v = Phi.T @ lam
    return dict(lang=lang, p_star=P, weights=pL, y=y, Phi=Phi, theta_star=theta_star, tau=fit.loss,
                v=v, lam=lam, v_norm2=float(np.linalg.norm(v)), gamma=theory.gamma(pL, pL))


def _model(setup, eps, path, max_steps, device):
    """(features f, achieved excess, steps) of one Quad LM at excess eps along path."""
    P, pL, Phi = setup["p_star"], setup["weights"], setup["Phi"]
    model = lm.TableLM(P.shape[0], Phi=Phi, device=device)
    if path == "worst":  # theta* moved by sqrt(2 eps) along -y lam/||v||: the proof is tight
        sign = np.where(setup["y"] == setup["y"].max(), 1.0, -1.0)
        step = np.sqrt(2.0 * eps) * setup["lam"] / setup["v_norm2"]
        f = setup["theta_star"] - sign[:, None] * step[None, :]
        model.f.data.copy_(model.f.new_tensor(f))
        return f, model.excess_quad(P, weights=pL, relative_to="Phi"), 0
    if path == "adam":
        model.fit(P, weights=pL, loss="quad", target_eps=float(eps), relative_to="Phi",
                  max_steps=max_steps)
    else:
        model.at_eps(float(eps), P, weights=pL, loss="quad", relative_to="Phi")
    return model.features(), model.eps_, model.n_steps_


def run(*, sizes=None, seed=0, setup=None, **overrides):
    r"""Quad LMs at each ε of a log grid along each path, their task loss on f(s) and the bound.

    ``sizes`` (default ``config.sizes("ch08")``): ``n_contexts``, ``vocab_size``, ``d``, and the
    grid ``eps_min``, ``eps_max``, ``n_eps`` (or ``eps``). ``setup``: a :func:`planted_setup`
    dict to reuse (default: built from the sizes). ``overrides``: any size or key of
    :data:`DEFAULTS`. Every model has excess Quad loss ε relative to Φ:

    * ``"adam"`` -- trained from f = 0 (``TableLM.fit(loss="quad", target_eps=eps)``);
    * ``"worst"`` -- :math:`\theta^*_s - y_s\sqrt{2\varepsilon}\,\hat\lambda/\|\hat v\|_2`: every
      inequality of the proof but Lipschitz is tight;
    * ``"segment"`` -- :math:`t\,\theta^*` (``TableLM.at_eps``): a linear image of θ*, loss = τ.

    The loss is that of the best linear classifier with no norm constraint on f(s).
    Returns a DataFrame, one row per (path, ε): ``path``, ``eps_target``, ``eps`` (achieved),
    ``loss``, ``tau``, ``bound`` (``theory.quad_bound``), ``n_steps``. ``df.attrs``: the sizes,
    ``seed``, ``tau``, ``v_norm2``, ``gamma``, ``eps`` (the grid).
    """
    import pandas as pd

    s = {**DEFAULTS, **(config.sizes("ch08") if sizes is None else dict(sizes)), **overrides}
    eps_grid = s.get("eps")
    if eps_grid is None:
        eps_grid = np.geomspace(s["eps_min"], s["eps_max"], check_int(s["n_eps"], "n_eps"))
    eps_grid = as_array(eps_grid, "eps", ndim=1)
    if not np.all(np.isfinite(eps_grid)) or np.any(eps_grid <= 0):
        raise ValueError("eps must be a non-empty array of positive, finite excess losses.")
    for path in s["paths"]:
        check_choice(path, "path", PATHS)
    if setup is not None and {"n_contexts", "vocab_size", "d", "label_strength"} & set(overrides):
        raise ValueError("pass either setup or the sizes of a new planted_setup, not both.")
    if setup is None:
        setup = planted_setup(s["n_contexts"], s["vocab_size"], s["d"], s["label_strength"], seed,
                              tol=s["tol"])
    rows = []
    for path in s["paths"]:
        for eps in eps_grid:
            f, achieved, steps = _model(setup, eps, path, s["max_steps"], s["device"])
            loss = theory.task_fit(f, setup["y"], B=None, weights=setup["weights"], tol=s["tol"]).loss
            bound = theory.quad_bound(setup["tau"], achieved, setup["v_norm2"], setup["gamma"])
            rows.append(dict(path=path, eps_target=float(eps), eps=float(achieved), loss=float(loss),
                             tau=setup["tau"], bound=float(bound), n_steps=int(steps)))
    df = pd.DataFrame(rows)
    df.attrs = dict(s, seed=seed, eps=tuple(eps_grid.tolist()), tau=setup["tau"], v_norm2=setup["v_norm2"],
                    gamma=setup["gamma"])
    return df


def adam_quad_joint(p_star, weights, d: int, steps: int = 4000, lr: float = 0.03, seed: int = 0,
                    device=None):
    r"""Minimise the population Quad loss jointly in (f, Φ) by full-batch ``torch.optim.Adam``.

    From f = 0 and Φ with N(0, 1) entries (torch generator ``seed``), ``steps`` steps with a
    cosine-decayed learning rate and no early stop (``TableLM.fit(learn_Phi=True)`` stops when
    the excess measured against p* stalls, which includes the irreducible
    :math:`\tfrac12\sum_{i>d}\lambda_i(\Omega)`).

    p_star : (n, V); weights : (n,) p_L; d : feature dimension; steps : >= 1; lr : > 0;
    seed : int; device : torch device (default cpu). Returns (f (n, d), Phi (d, V)) float64 numpy.
    """
    import torch

    steps, d, lr = check_int(steps, "steps"), check_int(d, "d"), check_positive(lr, "lr")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    P = torch.as_tensor(np.asarray(p_star, dtype=float), device=dev)
    w = torch.as_tensor(np.asarray(weights, dtype=float), device=dev)
    gen = torch.Generator().manual_seed(int(seed))
    Phi = torch.randn(d, P.shape[1], generator=gen, dtype=torch.float64).to(dev).requires_grad_()
    f = torch.zeros(P.shape[0], d, dtype=torch.float64, device=dev, requires_grad=True)
    opt = torch.optim.Adam([f, Phi], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    with config.threads(1):
        for _ in range(steps):
            opt.zero_grad()
            losses.quad_loss(f, Phi, P, weights=w).backward()
            opt.step()
            schedule.step()
    return f.detach().cpu().numpy(), Phi.detach().cpu().numpy()


def learned_phi_angles(lang=None, d: int = 6, steps: int = 4000, lr: float = 0.03, als_iters: int = 50,
                       seed: int = 0, device=None) -> dict:
    r"""Φ learned with the Quad objective against the top-d eigenspace of Ω (principal angles).

    The joint minimum of :math:`\sum_s p_L(s)\,\ell_{\mathrm{quad},s}(f(s), \Phi)` puts the row
    span of Φ on the top-d eigenspace of :math:`\Omega = \mathbb{E}\,p^*p^{*\top}`. Two minimisers:
    :func:`adam_quad_joint`, and ``als_iters`` rounds of alternating exact minimisation (f =
    the Quad optimum, then Φ by least squares: a subspace iteration on Ω); a random Φ
    (seed ``seed + 1``) gives the contrast.

    lang : a ContextLanguage (default ``synthetic.topic_language()``); d : 1 <= d < V.
    Returns a dict with ``eigenvalues`` (V,) of Ω (decreasing), ``tail`` (half the sum of the
    eigenvalues after the d-th: the least excess over p* of any d-dimensional Quad LM), ``gap``
    (λ_d - λ_{d+1}), and for each of ``"adam"``, ``"als"``, ``"random"`` a dict with ``angles``
    (d,) in radians (increasing), ``excess`` (over p*, best f for that Φ), ``sin2_bound``
    (2 (excess - tail) / gap, a bound on the sum of squared sines) and ``Phi``.
    """
    lang = synthetic.topic_language() if lang is None else lang
    d, steps, als_iters = check_int(d, "d"), check_int(steps, "steps"), check_int(als_iters, "als_iters")
    P, pL = lang.p_next, lang.p_context
    V = P.shape[1]
    if d >= V:
        raise ValueError(f"d={d} must be smaller than the vocabulary size {V}.")
    _, lam, U = theory.omega(P, pL)
    tail, gap = 0.5 * float(lam[d:].sum()), float(lam[d - 1] - lam[d])

    def summary(Phi):
        excess = 0.5 * float(pL @ ((losses.quad_optimum(Phi, P) @ Phi - P) ** 2).sum(1))
        return dict(angles=scipy.linalg.subspace_angles(Phi.T, U[:, :d])[::-1].copy(), excess=excess,
                    sin2_bound=2 * max(excess - tail, 0.0) / gap if gap > 0 else np.inf, Phi=Phi)

    _, Phi_adam = adam_quad_joint(P, pL, d, steps=steps, lr=lr, seed=seed, device=device)
    Phi = np.random.default_rng(seed).normal(size=(d, V))
    for _ in range(als_iters):
        theta = losses.quad_optimum(Phi, P)
        Fw = theta * pL[:, None]
        Phi = np.linalg.solve(theta.T @ Fw, Fw.T @ P)
        Phi /= np.linalg.norm(Phi, axis=1, keepdims=True)  # rescaling rows leaves the objective unchanged
    return dict(eigenvalues=lam, tail=tail, gap=gap, adam=summary(Phi_adam), als=summary(Phi),
                random=summary(np.random.default_rng(seed + 1).normal(size=(d, V))))
