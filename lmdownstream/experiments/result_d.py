r"""Result D (the Quad objective): the experiments behind chapter 8's checks.

The Quad loss of a softmax LM with features :math:`\theta = f(s)` and embeddings
:math:`\Phi \in \mathbb{R}^{d\times V}` is
:math:`\ell_{\mathrm{quad},s}(\theta, \Phi) = -\theta^\top \Phi p^*(\cdot|s) + \tfrac12 \|\Phi^\top\theta\|^2`,
minimised at :math:`\theta^*_s = (\Phi\Phi^\top)^{-1}\Phi p^*(\cdot|s)` with excess
:math:`\tfrac12\|\Phi^\top(\theta - \theta^*_s)\|^2`. Result D: for a task natural w.r.t.
:math:`\Phi` with classifier :math:`v = \Phi^\top\lambda`, a linear classifier on :math:`f(s)`
reaches :math:`\tau + \|v\|_2 \sqrt{2\varepsilon/\gamma}`.

* :func:`planted_setup` -- a planted-label language, a fixed :math:`\Phi` whose row span holds
  the indicative-word classifier, the Quad-optimal features and the task's :math:`\tau` and
  :math:`\|v\|_2`.
* :func:`quad_rows` -- Quad LMs at many excess losses :math:`\varepsilon` (trained, worst case, or
  on the straight segment from 0), the task loss of the best linear classifier on :math:`f(s)`
  and the bound; one dict per model.
* :func:`topic_language` -- a language whose second-moment matrix
  :math:`\Omega = \mathbb{E}_{s\sim p_L}[p^*(\cdot|s)p^*(\cdot|s)^\top]` has a clear eigengap.
* :func:`adam_quad_joint` -- the Quad objective minimised jointly in :math:`(f, \Phi)` by Adam.
* :func:`learned_phi_angles` -- :math:`\Phi` learned with the Quad objective against the top-d
  eigenvectors of :math:`\Omega` (principal angles), with a random :math:`\Phi` for contrast.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .. import lm, synthetic, theory

__all__ = ["planted_setup", "quad_rows", "topic_language", "omega", "adam_quad_joint", "learned_phi_angles"]

PATHS = ("adam", "worst", "segment")


def _int(x, name, low=1):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or int(x) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {x!r}.")
    return int(x)


def planted_setup(n_contexts: int = 400, vocab_size: int = 60, d: int = 8, label_strength: float = 0.3,
                  seed: int = 0, tol: float = 1e-11) -> dict:
    r"""A planted-label language and a fixed :math:`\Phi` for which the planted task is natural.

    The language is :meth:`lmdownstream.synthetic.ContextLanguage.random` (two classes). The
    embeddings :math:`\Phi` (d, V) have i.i.d. N(0, 1) entries except row 0, which is the
    indicative-word classifier :math:`\mathbf 1_{W_1} - \mathbf 1_{W_0}`; so the task is natural
    w.r.t. :math:`\Phi` (its classifier lies in the row span).

    The natural classifier used by the bound is the *best* one in the row span:
    :math:`\hat v = \Phi^\top\hat\lambda` minimising the :math:`p_L`-weighted logistic loss of
    :math:`v^\top p^*(\cdot|s) + b` without a norm constraint. Its loss :math:`\tau` equals the
    best loss of a linear classifier on the Quad-optimal features :math:`\theta^*_s` (an
    invertible linear map of :math:`\Phi p^*`), i.e. the :math:`\varepsilon \to 0` limit of the
    task loss of Quad LMs. The task distribution is :math:`p_T = p_L`, so :math:`\gamma = 1`.

    Parameters
    ----------
    n_contexts, vocab_size : sizes of the language (n, V); d : feature dimension, 2 <= d < V.
    label_strength : in (0, 1), see ``ContextLanguage.random`` (0.3: a noisy, non-separable task).
    seed : seeds the language and :math:`\Phi`.
    tol : tolerance of ``theory.task_fit`` for :math:`\tau` (tight: differences of order
        :math:`10^{-7}` nats are compared with it).

    Returns
    -------
    dict with ``lang`` (the language), ``p_star`` (n, V), ``weights`` (n,) = :math:`p_L`,
    ``y`` (n,), ``Phi`` (d, V), ``theta_star`` (n, d), ``tau`` (float), ``v`` (V,) the natural
    classifier, ``lam`` (d,) with ``v = Phi.T @ lam``, ``v_norm2`` (float), ``gamma`` (1.0).
    """
    n, V, d = _int(n_contexts, "n_contexts", 2), _int(vocab_size, "vocab_size", 2), _int(d, "d", 2)
    if d >= V:
        raise ValueError(f"d={d} must be smaller than vocab_size={V} (a d-dimensional LM with d < V).")
    lang = synthetic.ContextLanguage.random(n_contexts=n, vocab_size=V, seed=seed, label_strength=label_strength)
    P, pL, y = lang.p_next, lang.p_context, lang.labels
    W = lang.indicative_words
    Phi = np.random.default_rng([seed, 1]).normal(size=(d, V))
    Phi[0] = 0.0
    Phi[0, W[1]] = 1.0
    Phi[0, W[0]] = -1.0
    theta_star = lm.quad_optimal_f(Phi, P)
    fit = theory.task_fit(theta_star, y, B=None, weights=pL, tol=tol)
    lam = np.linalg.solve(Phi @ Phi.T, fit.coef)  # c^T theta* = c^T G^-1 Phi p* = (Phi^T G^-1 c)^T p*
    v = Phi.T @ lam
    return dict(lang=lang, p_star=P, weights=pL, y=y, Phi=Phi, theta_star=theta_star, tau=fit.loss,
                v=v, lam=lam, v_norm2=float(np.linalg.norm(v)), gamma=theory.gamma(pL, pL))


def _worst_features(setup, eps):
    """theta* moved by sqrt(2 eps) along -y * lam/||v||: Cauchy-Schwarz and Jensen hold with equality."""
    sign = np.where(setup["y"] == setup["y"].max(), 1.0, -1.0)
    step = np.sqrt(2.0 * eps) * setup["lam"] / setup["v_norm2"]
    return setup["theta_star"] - sign[:, None] * step[None, :]


def quad_rows(eps_grid, path: str = "adam", setup=None, max_steps: int = 20_000, device=None,
              tol: float = 1e-11, **setup_kwargs) -> list:
    r"""Quad LMs at each excess loss in ``eps_grid``: their task loss on :math:`f(s)` and result D's bound.

    For every target :math:`\varepsilon` a :class:`lmdownstream.lm.TableLM` with the fixed
    :math:`\Phi` of :func:`planted_setup` gets features :math:`f(s)` whose excess Quad loss
    relative to :math:`\Phi`, :math:`\sum_s p_L(s)\,\tfrac12\|\Phi^\top(f(s)-\theta^*_s)\|^2`, is
    :math:`\varepsilon`:

    * ``path="adam"`` -- trained from :math:`f = 0` by ``TableLM.fit(loss="quad", relative_to="Phi",
      target_eps=eps)`` (full-batch Adam);
    * ``path="worst"`` -- the adversarial features :math:`\theta^*_s - y_s\sqrt{2\varepsilon}\,\hat\lambda/\|\hat v\|_2`
      (:math:`y_s = \pm 1`), for which every inequality of the proof but Lipschitz is tight;
    * ``path="segment"`` -- ``TableLM.at_eps(eps, loss="quad")`` from :math:`f = 0`: features
      :math:`t\,\theta^*_s`, a linear image of :math:`\theta^*`, so the task loss is exactly :math:`\tau`.

    The task loss is that of the best linear classifier with a bias and *no* norm constraint on
    :math:`f(s)` (``theory.task_loss(f, y, B=None, weights=p_L)``): the left side of result D.

    Parameters
    ----------
    eps_grid : (m,) positive excess Quad losses.
    path : ``"adam"``, ``"worst"`` or ``"segment"``.
    setup : the dict of :func:`planted_setup` (built from ``setup_kwargs`` if None).
    max_steps : Adam step cap per model (``path="adam"``).
    device : torch device of the models (default :func:`lmdownstream.config.device`).
    tol : tolerance of ``theory.task_fit`` for the task loss (as in :func:`planted_setup`).
    **setup_kwargs : passed to :func:`planted_setup`.

    Returns
    -------
    list of m dicts with keys ``eps`` (achieved excess), ``loss``, ``tau``, ``bound``
    (``theory.quad_bound``), ``v_norm2``, ``gamma``, ``feature`` ("f"), ``path``, ``n_steps``.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}.")
    eps_grid = np.asarray(eps_grid, dtype=float).reshape(-1)
    if eps_grid.size == 0 or not np.all(np.isfinite(eps_grid)) or np.any(eps_grid <= 0):
        raise ValueError("eps_grid must be a non-empty array of positive, finite excess losses.")
    if setup is None:
        setup = planted_setup(**setup_kwargs)
    elif setup_kwargs:
        raise ValueError("pass either setup or the planted_setup keyword arguments, not both.")
    P, pL, y, Phi = setup["p_star"], setup["weights"], setup["y"], setup["Phi"]
    n = P.shape[0]
    rows = []
    for eps in eps_grid:
        if path == "worst":
            f, n_steps = _worst_features(setup, eps), 0
            model = lm.TableLM(n, Phi=Phi, device=device)
            model.f.data.copy_(model.f.new_tensor(f))
            achieved = model.excess_quad(P, weights=pL, relative_to="Phi")
        else:
            model = lm.TableLM(n, Phi=Phi, device=device)
            if path == "adam":
                model.fit(P, weights=pL, loss="quad", target_eps=float(eps), relative_to="Phi", max_steps=max_steps)
            else:
                model.at_eps(float(eps), P, weights=pL, loss="quad", relative_to="Phi")
            f, achieved, n_steps = model.features(), model.eps_, model.n_steps_
        loss = theory.task_loss(f, y, B=None, weights=pL, tol=tol)
        rows.append(dict(eps=float(achieved), loss=float(loss), tau=setup["tau"],
                         bound=float(theory.quad_bound(setup["tau"], achieved, setup["v_norm2"], setup["gamma"])),
                         v_norm2=setup["v_norm2"], gamma=setup["gamma"], feature="f", path=path,
                         n_steps=int(n_steps)))
    return rows


def topic_language(n_contexts: int = 400, vocab_size: int = 60, n_topics: int = 6, noise: float = 0.1,
                   seed: int = 0) -> synthetic.ContextLanguage:
    r"""A language of topic mixtures: :math:`p^*(\cdot|s) = (1-\rho)\sum_k \pi_{sk} T_k + \rho\, q_s`.

    Topics :math:`T_k \sim \mathrm{Dir}(0.5\cdot\mathbf 1_V)`, mixing weights
    :math:`\pi_s \sim \mathrm{Dir}(0.3\cdot\mathbf 1_K)`, full-rank noise rows
    :math:`q_s \sim \mathrm{Dir}(\mathbf 1_V)` with weight :math:`\rho` = ``noise``,
    :math:`p_L \sim \mathrm{Dir}(5\cdot\mathbf 1)`. :math:`\Omega` is then close to rank K: a large
    gap after its K-th eigenvalue when ``noise`` is small.

    Parameters
    ----------
    n_contexts, vocab_size : n, V; n_topics : K, 1 <= K < V; noise : rho in [0, 1); seed.

    Returns
    -------
    :class:`lmdownstream.synthetic.ContextLanguage` without labels.
    """
    n, V, K = _int(n_contexts, "n_contexts"), _int(vocab_size, "vocab_size", 2), _int(n_topics, "n_topics")
    if K >= V:
        raise ValueError(f"n_topics={K} must be smaller than vocab_size={V}.")
    if not 0.0 <= float(noise) < 1.0:
        raise ValueError(f"noise must lie in [0, 1), got {noise!r}.")
    rng = np.random.default_rng(seed)
    T = rng.dirichlet(np.full(V, 0.5), size=K)
    pi = rng.dirichlet(np.full(K, 0.3), size=n)
    Q = rng.dirichlet(np.ones(V), size=n)
    P = (1 - noise) * pi @ T + noise * Q
    return synthetic.ContextLanguage(rng.dirichlet(np.full(n, 5.0)), P / P.sum(1, keepdims=True))


def omega(p_star, weights):
    r""":math:`\Omega = \sum_s p_L(s)\, p^*(\cdot|s)\, p^*(\cdot|s)^\top` and its eigen-decomposition.

    Parameters
    ----------
    p_star : (n, V); weights : (n,) :math:`p_L`, normalised here.

    Returns
    -------
    (Omega (V, V), eigenvalues (V,) in decreasing order, eigenvectors (V, V) as columns in the same order).
    """
    P = np.asarray(p_star, dtype=float)
    w = np.asarray(weights, dtype=float)
    if P.ndim != 2 or w.shape != (P.shape[0],) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("p_star must be (n, V) and weights (n,) non-negative with a positive sum.")
    Om = (P * (w / w.sum())[:, None]).T @ P
    lam, U = np.linalg.eigh(Om)
    return Om, lam[::-1].copy(), U[:, ::-1].copy()


def adam_quad_joint(p_star, weights, d: int, steps: int = 4000, lr: float = 0.03, seed: int = 0, device=None):
    r"""Minimise the population Quad loss jointly in :math:`(f, \Phi)` by full-batch Adam.

    :math:`\min_{f,\Phi} \sum_s p_L(s)\,[-f(s)^\top\Phi p^*_s + \tfrac12\|\Phi^\top f(s)\|^2]` from
    :math:`f = 0` and :math:`\Phi` with i.i.d. N(0, 1) entries (torch generator ``seed``), for a fixed
    number of steps with a cosine-decayed learning rate (no early stop). ``TableLM.fit`` with
    ``learn_Phi=True`` halves its learning rate when the excess stops falling by 0.1% in 20
    steps; measured against p* that excess includes the irreducible
    :math:`\tfrac12\sum_{i>d}\lambda_i(\Omega)`, so it stalls early on larger languages. This
    loop does not.

    Parameters
    ----------
    p_star : (n, V); weights : (n,) :math:`p_L`; d : feature dimension; steps : >= 1;
    lr : > 0, the initial learning rate; seed : int; device : torch device (default cpu).

    Returns
    -------
    (f (n, d), Phi (d, V)) numpy float64 arrays.
    """
    import torch

    steps = _int(steps, "steps")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}.")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    P = torch.as_tensor(np.asarray(p_star, dtype=float), device=dev)
    w = torch.as_tensor(np.asarray(weights, dtype=float), device=dev)
    w = w / w.sum()
    n, V = P.shape
    gen = torch.Generator().manual_seed(int(seed))
    Phi = torch.randn(_int(d, "d"), V, generator=gen, dtype=torch.float64).to(dev).requires_grad_()
    f = torch.zeros(n, d, dtype=torch.float64, device=dev, requires_grad=True)
    params = [f, Phi]
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k in range(steps):
            for p in params:
                p.grad = None
            L = f @ Phi
            (w * (0.5 * (L * L).sum(1) - (L * P).sum(1))).sum().backward()
            step_lr = lr * 0.5 * (1 + np.cos(np.pi * k / steps))
            with torch.no_grad():
                for p, a, b in zip(params, m1, m2):
                    a.mul_(0.9).add_(p.grad, alpha=0.1)
                    b.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                    denom = (b / (1 - 0.999 ** (k + 1))).sqrt_().add_(1e-8)
                    p.addcdiv_(a, denom, value=-step_lr / (1 - 0.9 ** (k + 1)))
    finally:
        torch.set_num_threads(threads)
    return f.detach().cpu().numpy(), Phi.detach().cpu().numpy()


def learned_phi_angles(lang=None, d: int = 6, steps: int = 4000, lr: float = 0.03, als_iters: int = 50,
                       seed: int = 0, device=None) -> dict:
    r"""Learn :math:`\Phi` with the Quad objective and compare its row space with the top-d eigenspace of :math:`\Omega`.

    Jointly over :math:`\Phi` (d, V) and :math:`f`, :math:`\sum_s p_L(s)\,\ell_{\mathrm{quad},s}(f(s), \Phi)
    = \tfrac12\sum_s p_L(s)\|\Phi^\top f(s) - p^*_s\|^2 - \tfrac12\sum_s p_L(s)\|p^*_s\|^2`, whose minimum
    puts the row span of :math:`\Phi` on the top-d eigenspace of :math:`\Omega`. Two minimisers:

    * :func:`adam_quad_joint` -- full-batch Adam from a random :math:`\Phi` and :math:`f = 0`
      (``steps``, ``lr``);
    * alternating minimisation (``als_iters`` rounds): :math:`f(s) = (\Phi\Phi^\top)^{-1}\Phi p^*_s`,
      then :math:`\Phi = (\sum_s p_L f f^\top)^{-1}\sum_s p_L f\, p^{*\top}_s`, each the exact
      minimiser over one block (a subspace iteration on :math:`\Omega`).

    A random Gaussian :math:`\Phi` (seed ``seed + 1``) gives the contrast.

    Parameters
    ----------
    lang : a :class:`lmdownstream.synthetic.ContextLanguage` (default :func:`topic_language`).
    d : 1 <= d < V; steps, lr : Adam settings; als_iters : >= 1; seed : seeds the initial Phi;
    device : torch device of the Adam run (default cpu).

    Returns
    -------
    dict with ``eigenvalues`` (V,) of Omega (decreasing), ``tail`` (half the sum of the
    eigenvalues after the d-th: the smallest excess any d-dimensional Quad LM can reach relative
    to p*), ``gap`` (lambda_d - lambda_{d+1}), and for each of ``"adam"``, ``"als"``, ``"random"``
    a dict with ``angles`` (d,) principal angles in radians (increasing), ``excess`` (the excess
    Quad loss relative to p* with the best f for that Phi), ``sin2_bound`` (2 (excess - tail) / gap,
    an upper bound on the sum of squared sines), and ``Phi`` (d, V).
    """
    if lang is None:
        lang = topic_language()
    d = _int(d, "d")
    steps, als_iters = _int(steps, "steps"), _int(als_iters, "als_iters")
    P, pL = lang.p_next, lang.p_context
    n, V = P.shape
    if d >= V:
        raise ValueError(f"d={d} must be smaller than the vocabulary size {V}.")
    _, lam, U = omega(P, pL)
    top = U[:, :d]
    tail = 0.5 * float(lam[d:].sum())
    gap = float(lam[d - 1] - lam[d])

    def summary(Phi):
        theta = np.linalg.solve(Phi @ Phi.T, Phi @ P.T).T
        excess = 0.5 * float(pL @ ((theta @ Phi - P) ** 2).sum(1))
        return dict(angles=scipy.linalg.subspace_angles(Phi.T, top)[::-1].copy(), excess=excess,
                    sin2_bound=2 * max(excess - tail, 0.0) / gap if gap > 0 else np.inf, Phi=Phi)

    _, Phi_adam = adam_quad_joint(P, pL, d, steps=steps, lr=lr, seed=seed, device=device)
    Phi = np.random.default_rng(seed).normal(size=(d, V))
    for _ in range(als_iters):
        theta = np.linalg.solve(Phi @ Phi.T, Phi @ P.T).T
        Fw = theta * pL[:, None]
        Phi = np.linalg.solve(theta.T @ Fw, Fw.T @ P)
        Phi /= np.linalg.norm(Phi, axis=1, keepdims=True)  # rescaling rows leaves the objective unchanged
    return dict(eigenvalues=lam, tail=tail, gap=gap, adam=summary(Phi_adam), als=summary(Phi),
                random=summary(np.random.default_rng(seed + 1).normal(size=(d, V))))
