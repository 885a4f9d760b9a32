r"""Result C: why the features :math:`f(s)` themselves work (chapter 6), on synthetic languages.

If :math:`\log Z_\theta = \tfrac12\theta^\top A\theta + b^\top\theta + c` over the θ that matter,
then :math:`\Phi p_{f(s)} = \nabla\log Z_{f(s)} = A f(s) + b` is an affine image of f(s), and a
linear classifier on :math:`\Phi p_f` (result B) is one on f.

* :func:`gaussian_check` -- for Gaussian columns :math:`\phi_w \sim N(\mu, \Sigma)`, how good
  :math:`\log Z_\theta \approx \log V + \theta^\top\mu + \tfrac12\theta^\top\Sigma\theta`
  (:func:`lmdownstream.fits.gaussian_log_partition`) stays as :math:`\|\theta\|` grows;
* :func:`run` -- softmax table LMs at many ε: the quadratic fit of log Z and its held-out R²,
  the gradient check :math:`\Phi p_f \approx A f + b`, task losses on f, Af + b and
  :math:`\Phi p_f`, the bound, and linear probes.

Both return long DataFrames with their setup in ``df.attrs``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import config, features, fits, lm, probes, synthetic, theory
from .._checks import as_array, check_choice, check_fraction, check_int, check_positive

__all__ = ["PHI_KINDS", "DEFAULTS", "gaussian_check", "run"]

PHI_KINDS = ("gaussian", "learned")
#: The settings of :func:`run` besides the sizes (``config.sizes("ch06")``).
DEFAULTS = dict(B=5.0, eps_hi=0.1, eps_lo=1e-4, phi_kinds=PHI_KINDS, label_strength=0.5,
                heldout=0.25, pretrain_steps=300, probe=True, max_steps=50_000)


def gaussian_check(d: int = 8, vocab_sizes=(100, 1_000, 10_000), radii=None, n_directions: int = 64,
                   seed=0):
    r"""Error of the Gaussian prediction of :math:`\log Z_\theta` at :math:`\theta = r u` for growing r.

    For each V a Gaussian Φ (:func:`lmdownstream.synthetic.gaussian_embeddings`) and
    ``n_directions`` random unit directions u; radii default ``np.geomspace(0.1, 6, 12)``.

    Returns a DataFrame, one row per (V, r): ``V``, ``radius``, ``logit_sd`` (mean of
    :math:`\sqrt{\theta^\top\Sigma\theta}`), ``err_mean``, ``err_max`` (absolute error, nats),
    ``bias`` (mean signed error; Jensen makes it <= 0), ``log_Z_mean`` (mean
    :math:`|\log Z - \log V|`, the scale the error is compared with).
    """
    import pandas as pd

    d, n_directions = check_int(d, "d"), check_int(n_directions, "n_directions")
    radii = np.geomspace(0.1, 6.0, 12) if radii is None else as_array(radii, "radii", ndim=1)
    if np.any(radii <= 0):
        raise ValueError("radii must be > 0.")
    rows = []
    for V in vocab_sizes:
        V = check_int(V, "every entry of vocab_sizes")
        Phi, mu, Sigma = synthetic.gaussian_embeddings(d, V, seed=seed)
        u = np.random.default_rng(seed + 1).normal(size=(n_directions, d))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        for r in radii:
            theta = r * u
            exact = features.log_partition(theta, Phi)
            err = exact - fits.gaussian_log_partition(theta, mu, Sigma, V)
            sd = np.sqrt(np.einsum("ni,ij,nj->n", theta, Sigma, theta))
            rows.append(dict(V=V, radius=float(r), logit_sd=float(sd.mean()),
                             err_mean=float(np.abs(err).mean()), err_max=float(np.abs(err).max()),
                             bias=float(err.mean()), log_Z_mean=float(np.abs(exact - np.log(V)).mean())))
    df = pd.DataFrame(rows)
    df.attrs = dict(d=d, vocab_sizes=tuple(vocab_sizes), n_directions=n_directions, seed=seed)
    return df


def _free_loss(X, y, w):
    """Best unconstrained linear classifier; separable data gives ~0 (its warning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return theory.task_fit(X, y, weights=w, tol=1e-9).loss


def _rel(err, ref):
    """||err||_F / ||ref - mean(ref)||_F (error relative to the spread of ref)."""
    return float(np.linalg.norm(err) / np.linalg.norm(ref - ref.mean(0)))


def _phi(kind, lang, d, seed, pretrain_steps):
    Phi, _, _ = synthetic.gaussian_embeddings(d, lang.vocab_size, seed=seed)
    if kind == "gaussian":
        return Phi
    pre = lm.TableLM(lang.n_contexts, Phi=Phi, learn_Phi=True, device="cpu")
    pre.fit(lang.p_next, lang.p_context, max_steps=pretrain_steps, lr=0.05)
    return pre.embeddings()


def _probe(X, y, seed):
    probe = probes.LogisticProbeCV(Cs=np.logspace(-2, 4, 7), cv=5, random_state=seed, device="cpu",
                                   dtype="float64").fit(X, y)
    return float(probe.scores_.mean(axis=0).max())


def _measure(model, Phi, lam, tr, te, P_w_y, B, tau, probe, seed):
    """One row of :func:`run` for the current model."""
    w, y = P_w_y[1:]
    f, eps, n = model.features(), model.eps_, model.n_contexts
    logz, phip = features.log_partition(f, Phi), features.conditional_mean(f, Phi)
    fit = fits.fit_log_partition(f[tr], logz[tr])
    afb = fit.grad(f)
    Xa = np.hstack([f, np.ones((n, 1))])
    M = np.linalg.lstsq(Xa[tr], phip[tr], rcond=None)[0]
    mu, Sigma = Phi.mean(axis=1), np.cov(Phi, bias=True)
    bound = float(theory.xent_bound(tau, eps, B, gamma=1.0))
    delta = float(w @ np.abs((phip - afb) @ lam))
    natural = lambda X: theory.task_fit(X, y, B=B, Phi=Phi, weights=w).loss  # noqa: E731
    return dict(
        eps=float(eps), n_steps=int(model.n_steps_), tau=tau, bound=bound, delta=delta,
        bound_fit=bound + delta, r2=fit.r2(f[te], logz[te]),
        r2_gauss=fits.r2(logz[te], fits.gaussian_log_partition(f[te], mu, Sigma, Phi.shape[1])),
        grad_err=_rel(phip[te] - afb[te], phip[te]), affine_err=_rel(phip[te] - Xa[te] @ M, phip[te]),
        loss_f=_free_loss(f, y, w), loss_afb_free=_free_loss(afb, y, w),
        loss_phip_free=_free_loss(phip, y, w), loss_phip=natural(phip), loss_afb=natural(afb),
        f_norm=float(np.linalg.norm(f, axis=1).mean()), A_norm=float(np.linalg.norm(fit.A, 2)),
        cond_A=float(np.linalg.cond(fit.A)), lam_norm=float(np.linalg.norm(lam)),
        A_lam_norm=float(np.linalg.norm(fit.A @ lam)),
        probe_f=_probe(f, y, seed) if probe else np.nan,
        probe_phip=_probe(phip, y, seed) if probe else np.nan,
    ), (logz[te], fit.predict(f[te]))


def run(*, sizes=None, seed=0, **overrides):
    r"""Result C on softmax table LMs: quadratic fit of log Z, gradient check, losses and bound.

    ``sizes`` (default ``config.sizes("ch06")``): ``n_contexts``, ``vocab_size``, ``d`` (< V),
    ``n_eps`` (targets on a log grid from ``eps_hi`` down to ``eps_lo``; or pass ``eps``).
    ``overrides``: any size or key of :data:`DEFAULTS`. A ContextLanguage with a planted binary
    task (:math:`p_T = p_L`, γ = 1); for each kind of Φ (``"gaussian"``: Gaussian columns;
    ``"learned"``: that Φ trained with f for ``pretrain_steps``, then frozen) a TableLM is trained
    down the grid (values above the uniform model's excess are skipped). At each ε:

    * ``r2``: held-out R² of :func:`lmdownstream.fits.fit_log_partition` (fitted on a
      ``1 - heldout`` share of the contexts); ``r2_gauss``: of the unfitted Gaussian prediction;
    * ``grad_err``: :math:`\|\Phi p_f - (Af + b)\|_F / \|\Phi p_f - \overline{\Phi p_f}\|_F` held out;
      ``affine_err``: the same for the best affine map f -> Φp_f;
    * ``loss_f``, ``loss_afb_free``, ``loss_phip_free``: best unconstrained classifier on f,
      Af + b, Φp_f; ``loss_phip``, ``loss_afb``: with :math:`\|\Phi^\top\lambda\|_\infty \le B`;
    * ``tau`` (on Φp*, minimiser λ*), ``bound`` = τ + √(2B²ε), ``delta`` =
      :math:`\mathbb{E}|\lambda^{*\top}(\Phi p_f - Af - b)|`, ``bound_fit`` = bound + delta (bounds
      ``loss_afb`` with no assumption);
    * ``probe_f``, ``probe_phip``: 5-fold CV accuracy of a logistic probe (NaN without ``probe``);
      ``n_steps``, ``f_norm``, ``A_norm``, ``cond_A``, ``lam_norm``, ``A_lam_norm``.

    Returns a DataFrame, one row per (``phi``, ε). ``df.attrs``: the setup, ``seed``, and
    ``log_Z_heldout``: {kind: (true, fitted)}, the held-out log Z at the smallest ε (tuples).
    """
    import pandas as pd

    s = {**DEFAULTS, **(config.sizes("ch06") if sizes is None else dict(sizes)), **overrides}
    n, V, d = check_int(s["n_contexts"], "n_contexts", low=4), check_int(s["vocab_size"], "vocab_size"), \
        check_int(s["d"], "d")
    if d >= V:
        raise ValueError(f"d={d} must be smaller than vocab_size={V}: result C is about low-dimensional features.")
    eps_grid = s.get("eps")
    if eps_grid is None:
        eps_grid = np.geomspace(s["eps_hi"], s["eps_lo"], check_int(s["n_eps"], "n_eps", low=2))
    eps_grid = as_array(eps_grid, "eps", ndim=1)
    if eps_grid.shape[0] < 2 or np.any(eps_grid <= 0) or np.any(np.diff(eps_grid) >= 0):
        raise ValueError("eps must hold at least two positive, strictly decreasing values.")
    B, heldout = check_positive(s["B"], "B"), check_fraction(s["heldout"], "heldout", open_low=True,
                                                              open_high=True)
    kinds = (s["phi_kinds"],) if isinstance(s["phi_kinds"], str) else tuple(s["phi_kinds"])
    for k in kinds or (None,):
        check_choice(k, "phi_kinds", PHI_KINDS)
    n_train = int(round((1 - heldout) * n))
    n_params = d * (d + 1) // 2 + d + 1
    if n_train < n_params or n - n_train < 2:
        raise ValueError(f"{n_train} training contexts cannot fit the {n_params} parameters of a quadratic "
                         f"in d={d} (and at least 2 must be held out); raise n_contexts or lower d.")
    lang = synthetic.ContextLanguage.random(n_contexts=n, vocab_size=V, seed=seed,
                                            label_strength=s["label_strength"])
    P, w, y = lang.p_next, lang.p_context, lang.labels
    perm = np.random.default_rng(seed + 1).permutation(n)
    tr, te = perm[:n_train], perm[n_train:]
    rows, heldout_log_Z = [], {}
    with config.threads(1):
        for kind in kinds:
            Phi = _phi(kind, lang, d, seed, check_int(s["pretrain_steps"], "pretrain_steps", low=0))
            nat = theory.task_fit(P @ Phi.T, y, B=B, Phi=Phi, weights=w)
            model = lm.TableLM(n, Phi=Phi, device="cpu")
            e0 = model.excess_xent(P, w, relative_to="Phi")
            for target in eps_grid[eps_grid < e0]:
                model.fit(P, w, target_eps=float(target), relative_to="Phi", max_steps=s["max_steps"],
                          lr=0.05)
                row, (true, fit) = _measure(model, Phi, np.ravel(nat.coef_), tr, te, (P, w, y),
                                                    B, float(nat.loss), s["probe"], seed)
                rows.append(dict(phi=kind, **row))
                heldout_log_Z[kind] = (tuple(true.tolist()), tuple(fit.tolist()))
    df = pd.DataFrame(rows)
    # tuples, not arrays, in attrs: pandas compares attrs when it concatenates frames
    df.attrs = dict(s, seed=seed, eps=tuple(eps_grid.tolist()), log_Z_heldout=heldout_log_Z)
    return df
