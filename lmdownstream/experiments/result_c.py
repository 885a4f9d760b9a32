r"""Result C: why the features :math:`f(s)` themselves work (chapter 6).

If the log-partition function is quadratic over the :math:`\theta` that matter,
:math:`\log Z_\theta = \tfrac12\theta^\top A\theta + b^\top\theta + c`, then
:math:`\Phi p_{f(s)} = \nabla\log Z_{f(s)} = A f(s) + b` is an affine image of :math:`f(s)`, and a
linear classifier on :math:`\Phi p_f` (result B) is one on :math:`f`. The functions here check
this on softmax table LMs trained on an exact synthetic language:

* :func:`gaussian_embeddings`, :func:`gaussian_log_partition`, :func:`gaussian_check` -- the
  motivation: for columns :math:`\phi_w \sim N(\mu, \Sigma)`,
  :math:`\log Z_\theta \approx \log V + \theta^\top\mu + \tfrac12\theta^\top\Sigma\theta`, and how
  that degrades as :math:`\|\theta\|` grows;
* :func:`natural_fit` -- the best classifier :math:`\lambda^\top x + c` with
  :math:`\|\Phi^\top\lambda\|_\infty \le B` (the classifiers of a task natural w.r.t. :math:`\Phi`);
* :func:`run` -- LMs at many :math:`\varepsilon`, the quadratic fit of :math:`\log Z` and its
  held-out :math:`R^2`, the gradient check :math:`\Phi p_f \approx A f + b`, task losses on
  :math:`f`, :math:`A f + b` and :math:`\Phi p_f`, the bound, and linear probes.

Every function returns plain numbers or a list of dict rows (one per model).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..config import single_threaded
from .. import features, lm, probes, synthetic, theory
from .._checks import as_array, check_labels, check_positive, check_weights

__all__ = ["gaussian_embeddings", "gaussian_log_partition", "gaussian_check", "NaturalFit", "natural_fit", "run"]

PHI_KINDS = ("gaussian", "learned")


_one_thread = single_threaded  # torch and BLAS on one thread for these small problems


def _check_int(x, name, low=1):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < low:
        raise ValueError(f"{name} must be an int >= {low}, got {x!r}.")
    return int(x)


# --------------------------------------------------------------------------- Gaussian embeddings
def gaussian_embeddings(d: int, vocab_size: int, seed=0, mean_norm: float = 1.0, spectrum=(0.25, 1.0)):
    r"""Word embeddings with i.i.d. Gaussian columns :math:`\phi_w \sim N(\mu, \Sigma)`.

    :math:`\mu` is a random direction scaled to norm ``mean_norm``; :math:`\Sigma = Q\,\mathrm{diag}(\sigma^2)\,Q^\top`
    with a random rotation Q and eigenvalues :math:`\sigma^2` evenly spaced over ``spectrum``.

    Parameters
    ----------
    d : int >= 1, embedding dimension; vocab_size : int >= 1, V.
    seed : seed of ``np.random.default_rng``.
    mean_norm : >= 0, :math:`\|\mu\|`.
    spectrum : (low, high), 0 < low <= high, the range of the eigenvalues of :math:`\Sigma`.

    Returns
    -------
    (Phi (d, V), mu (d,), Sigma (d, d)).
    """
    d, V = _check_int(d, "d"), _check_int(vocab_size, "vocab_size")
    mean_norm = float(mean_norm)
    if not np.isfinite(mean_norm) or mean_norm < 0:
        raise ValueError(f"mean_norm must be a finite number >= 0, got {mean_norm!r}.")
    lo, hi = (check_positive(s, "spectrum entries") for s in spectrum)
    if lo > hi:
        raise ValueError(f"spectrum must be (low, high) with low <= high, got {spectrum!r}.")
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    mu = mean_norm * u / np.linalg.norm(u)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    ev = np.linspace(lo, hi, d)
    Sigma = (Q * ev) @ Q.T
    Phi = mu[:, None] + (Q * np.sqrt(ev)) @ rng.normal(size=(d, V))
    return Phi, mu, Sigma


def gaussian_log_partition(theta, mu, Sigma, vocab_size: int):
    r"""The Gaussian prediction :math:`\log V + \theta^\top\mu + \tfrac12\theta^\top\Sigma\theta` of :math:`\log Z_\theta`.

    It is the log of :math:`V\,\mathbb{E}_{\phi\sim N(\mu,\Sigma)} e^{\theta^\top\phi}`: exact in
    expectation inside the log, and close to :math:`\log Z_\theta` when the V terms of the sum
    average well, i.e. when no handful of words dominates it (:math:`\theta^\top\Sigma\theta \ll \log V`).

    Parameters
    ----------
    theta : (n, d); mu : (d,); Sigma : (d, d); vocab_size : int V.

    Returns
    -------
    (n,) array.
    """
    theta = as_array(theta, "theta", ndim=2)
    mu = as_array(mu, "mu", ndim=1)
    Sigma = as_array(Sigma, "Sigma", ndim=2)
    d = theta.shape[1]
    if mu.shape != (d,) or Sigma.shape != (d, d):
        raise ValueError(f"mu must be ({d},) and Sigma ({d}, {d}) for theta with d={d}; got {mu.shape}, {Sigma.shape}.")
    V = _check_int(vocab_size, "vocab_size")
    return np.log(V) + theta @ mu + 0.5 * np.einsum("ni,ij,nj->n", theta, Sigma, theta)


def gaussian_check(d: int = 8, vocab_sizes=(100, 1_000, 10_000), radii=None, n_directions: int = 64, seed=0):
    r"""How good is :math:`\log Z_\theta \approx \log V + \theta^\top\mu + \tfrac12\theta^\top\Sigma\theta` as :math:`\|\theta\|` grows?

    For each V a fresh Gaussian :math:`\Phi` (:func:`gaussian_embeddings`, seed ``seed``) and
    ``n_directions`` random unit directions u; at each radius r, :math:`\theta = r u` and the
    error :math:`\log Z_\theta - \text{prediction}` (exact :math:`\log Z` by
    :func:`lmdownstream.features.log_partition`).

    Parameters
    ----------
    d : int
        Dimension of the embeddings.
    vocab_sizes : sequence of int
        Vocabulary sizes V to try.
    radii : sequence of float, optional
        Radii r > 0; default ``np.geomspace(0.1, 6, 12)``.
    n_directions : int
        Random unit directions per radius.
    seed : int
        Seed of the embeddings and directions.

    Returns
    -------
    list of dict rows, one per (V, r): ``V``, ``radius``, ``logit_sd`` (mean over directions of
    :math:`\sqrt{\theta^\top\Sigma\theta}`, the spread of the logits), ``err_mean`` (mean
    absolute error, nats), ``err_max``, ``bias`` (mean signed error; Jensen makes it <= 0 on
    average), ``log_Z_mean`` (mean :math:`|\log Z - \log V|`, the scale the error is compared with).
    """
    d, n_directions = _check_int(d, "d"), _check_int(n_directions, "n_directions")
    radii = np.geomspace(0.1, 6.0, 12) if radii is None else as_array(radii, "radii", ndim=1)
    if np.any(radii <= 0):
        raise ValueError("radii must be > 0.")
    rows = []
    for V in vocab_sizes:
        V = _check_int(V, "every entry of vocab_sizes")
        Phi, mu, Sigma = gaussian_embeddings(d, V, seed=seed)
        u = np.random.default_rng(seed + 1).normal(size=(n_directions, d))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        for r in radii:
            theta = r * u
            exact = features.log_partition(theta, Phi)
            err = exact - gaussian_log_partition(theta, mu, Sigma, V)
            rows.append(dict(V=V, radius=float(r),
                             logit_sd=float(np.mean(np.sqrt(np.einsum("ni,ij,nj->n", theta, Sigma, theta)))),
                             err_mean=float(np.mean(np.abs(err))), err_max=float(np.max(np.abs(err))),
                             bias=float(np.mean(err)), log_Z_mean=float(np.mean(np.abs(exact - np.log(V))))))
    return rows


# --------------------------------------------------------------------------- natural classifiers
@dataclass
class NaturalFit:
    """Result of :func:`natural_fit`: ``loss`` (weighted mean logistic loss), ``lam`` (D,), ``bias``
    (float), ``gap`` (bound on the suboptimality of ``loss``, nats)."""

    loss: float
    lam: np.ndarray
    bias: float
    gap: float


def natural_fit(X, y, Phi, B: float, weights=None, gap: float = 1e-9, max_newton: int = 200) -> NaturalFit:
    r"""Best binary classifier :math:`\lambda^\top x + c` on features X whose word-space weights
    :math:`v = \Phi^\top\lambda` satisfy :math:`\|v\|_\infty \le B`.

    .. math::

        \min_{\lambda,\,c}\ \sum_i w_i \log\big(1 + e^{-y_i(\lambda^\top x_i + c)}\big)
        \quad\text{s.t.}\quad |\phi_w^\top\lambda| \le B\ \text{for every word } w,

    labels mapped to :math:`\pm 1` as in :func:`lmdownstream.theory.task_fit`. With
    :math:`X = \Phi p^*` this is :math:`\tau` of a task natural w.r.t. :math:`\Phi`; with
    :math:`X = \Phi p_f` it is the loss result B bounds. (With :math:`\Phi = I` it is
    :func:`lmdownstream.theory.task_tau`.) Solved by a log-barrier interior-point method with
    damped Newton steps: barrier weight multiplied by 10 until the duality gap :math:`2V/t`
    is below ``gap``.

    Parameters
    ----------
    X : (n, D) features; y : (n,) two classes; Phi : (D, V) (its columns give the constraints);
    B : > 0; weights : (n,) task weights p_T, normalised (None: uniform); gap : > 0;
    max_newton : Newton steps per barrier weight.

    Returns
    -------
    :class:`NaturalFit`.
    """
    X = as_array(X, "X", ndim=2)
    Phi = as_array(Phi, "Phi", ndim=2)
    n, D = X.shape
    if Phi.shape[0] != D:
        raise ValueError(f"Phi must have shape (D, V) with D = {D} (X's columns) but has shape {Phi.shape}.")
    codes, classes = check_labels(y, n, "y")
    if classes.shape[0] != 2:
        raise ValueError(f"natural_fit is for two classes but y has {classes.shape[0]}.")
    w = check_weights(weights, n)
    B, gap = check_positive(B, "B"), check_positive(gap, "gap")
    s = 2.0 * codes - 1.0
    Xa = np.hstack([X, np.ones((n, 1))])
    G = np.vstack([Phi, np.zeros((1, Phi.shape[1]))])  # constraints act on lambda only
    V = Phi.shape[1]
    pos = np.clip(w[s > 0].sum(), 1e-12, 1 - 1e-12)
    p = np.zeros(D + 1)
    p[D] = np.log(pos / (1 - pos))

    def barrier_obj(p, t):
        g = G.T @ p
        if np.any(np.abs(g) >= B):
            return np.inf
        return t * np.dot(w, np.logaddexp(0.0, -s * (Xa @ p))) - np.log(B - g).sum() - np.log(B + g).sum()

    t = 1.0
    while True:
        for _ in range(max_newton):
            m = s * (Xa @ p)
            sg = np.exp(-np.logaddexp(0.0, m))  # sigmoid(-m)
            g = G.T @ p
            a, b = 1.0 / (B - g), 1.0 / (B + g)
            grad = t * (Xa.T @ (-w * s * sg)) + G @ (a - b)
            H = t * (Xa.T * (w * sg * (1 - sg))) @ Xa + (G * (a * a + b * b)) @ G.T
            H[np.diag_indices_from(H)] += 1e-14 * np.abs(H.diagonal()).max()
            step = -np.linalg.solve(H, grad)
            dec = -grad @ step
            if dec / 2 <= 1e-12:
                break
            f0, al = barrier_obj(p, t), 1.0
            while barrier_obj(p + al * step, t) > f0 - 0.25 * al * dec and al > 1e-12:
                al *= 0.5
            p = p + al * step
        if 2 * V / t < gap:
            break
        t *= 10.0
    loss = float(np.dot(w, np.logaddexp(0.0, -s * (Xa @ p))))
    return NaturalFit(loss=loss, lam=p[:D].copy(), bias=float(p[D]), gap=2 * V / t)


# --------------------------------------------------------------------------- the experiment
def _free_loss(X, y, w):
    """Best unconstrained linear classifier (theory.task_loss); separable data gives ~0 (warning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return theory.task_loss(X, y, weights=w, tol=1e-9)


def _r2(y, pred):
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def _rel(err, ref):
    """||err||_F / ||ref - mean(ref)||_F (error relative to the spread of ref)."""
    return float(np.linalg.norm(err) / np.linalg.norm(ref - ref.mean(0)))


def _phi(kind, lang, d, seed, pretrain_steps):
    V = lang.vocab_size
    Phi, _, _ = gaussian_embeddings(d, V, seed=seed)
    if kind == "gaussian":
        return Phi
    pre = lm.TableLM(lang.n_contexts, Phi=Phi, learn_Phi=True, device="cpu")
    pre.fit(lang.p_next, lang.p_context, max_steps=pretrain_steps, lr=0.05)
    return pre.embeddings()


def run(n_contexts: int = 400, vocab_size: int = 100, d: int = 8, eps_grid=None, B: float = 5.0,
        phi_kinds=PHI_KINDS, label_strength: float = 0.5, heldout: float = 0.25, pretrain_steps: int = 300,
        probe: bool = True, seed=0, max_steps: int = 50_000):
    r"""Result C on softmax table LMs: quadratic fit of :math:`\log Z`, gradient check, losses and bound.

    A :class:`~lmdownstream.synthetic.ContextLanguage` (``n_contexts`` contexts, V = ``vocab_size``
    words, planted binary task with ``label_strength``; task distribution :math:`p_T = p_L`, so
    :math:`\gamma = 1`). For each kind of :math:`\Phi` (d x V, d < V, kept fixed while f trains):

    * ``"gaussian"``: :func:`gaussian_embeddings` (columns :math:`N(\mu,\Sigma)`, ``mean_norm=1``);
    * ``"learned"``: that Gaussian :math:`\Phi` trained jointly with f for ``pretrain_steps`` Adam
      steps on the cross-entropy, then frozen.

    A :class:`~lmdownstream.lm.TableLM` starts at f = 0 and is trained (:meth:`~lmdownstream.lm.TableLM.fit`,
    ``relative_to="Phi"``) down the decreasing ``eps_grid`` (default ``np.geomspace(0.1, 3e-4, 8)``);
    grid values above the uniform model's excess are skipped. At each :math:`\varepsilon`
    (excess cross-entropy w.r.t. :math:`\Phi`) the features f (n, d) are snapshotted and:

    * :math:`\log Z_{f(s)}` is fitted by :func:`lmdownstream.theory.fit_log_partition` on a random
      ``1 - heldout`` fraction of the contexts; ``r2`` is its :math:`R^2` on the others;
      ``r2_gauss`` is the :math:`R^2` there of the unfitted Gaussian prediction with :math:`\Phi`'s
      empirical column mean and covariance;
    * ``grad_err``: :math:`\|\Phi p_f - (A f + b)\|_F / \|\Phi p_f - \overline{\Phi p_f}\|_F` on held-out
      contexts; ``affine_err``: the same for the best affine map f -> :math:`\Phi p_f` (least squares
      on the training contexts), a reference for how affine :math:`\Phi p_f` is in f at all;
    * losses (weighted by :math:`p_T`): ``loss_f``, ``loss_afb_free``, ``loss_phip_free``: best
      unconstrained linear classifier on f, on :math:`A f + b` and on :math:`\Phi p_f`;
      ``loss_phip``, ``loss_afb``: best classifier :math:`\lambda^\top x + c` with
      :math:`\|\Phi^\top\lambda\|_\infty \le B` (:func:`natural_fit`) on :math:`\Phi p_f` and on
      :math:`A f + b` (i.e. the classifier :math:`A\lambda` on f);
    * ``tau``: :func:`natural_fit` on :math:`\Phi p^*`, minimiser :math:`\lambda^*`; ``bound`` =
      :math:`\tau + \sqrt{2B^2\varepsilon/\gamma}` (result B, and result C if log Z were exactly
      quadratic); ``delta`` = :math:`\mathbb{E}_{p_T}|\lambda^{*\top}(\Phi p_f - A f - b)|`, the price of the
      fit's error; ``bound_fit`` = ``bound + delta``, which bounds ``loss_afb`` and hence
      ``loss_f`` with no assumption;
    * ``probe_f``, ``probe_phip``: cross-validated accuracy of :func:`lmdownstream.probes.probe_cv`
      (5 folds, unweighted contexts) on f and on :math:`\Phi p_f` (NaN if ``probe=False``).

    Parameters
    ----------
    n_contexts, vocab_size, d : ints with 1 <= d < vocab_size.
    eps_grid : decreasing positive values (>= 2).
    B : > 0, the task's bound on :math:`\|v\|_\infty`.
    phi_kinds : subset of ``("gaussian", "learned")``.
    label_strength : in [0, 1], see :meth:`~lmdownstream.synthetic.ContextLanguage.random`.
    heldout : in (0, 1), fraction of contexts held out of the quadratic fit.
    pretrain_steps : int, Adam steps that learn :math:`\Phi` (``"learned"`` only).
    probe : run the probes.
    seed : seed of the language, the Gaussian :math:`\Phi` and the split.
    max_steps : cap on Adam steps per :math:`\varepsilon`.

    Returns
    -------
    list of dict rows, one per (kind, :math:`\varepsilon`), with the keys above and ``phi``,
    ``eps``, ``gamma`` (1.0), ``B``, ``feature`` (``"f"``), ``loss`` (= ``loss_f``), ``n_steps``,
    ``f_norm`` (mean :math:`\|f(s)\|`), ``A_norm`` (:math:`\|A\|_2`), ``cond_A``,
    ``lam_norm`` (:math:`\|\lambda^*\|_2`), ``A_lam_norm`` (:math:`\|A\lambda^*\|_2`, the norm of the
    classifier on f that the proof builds), and arrays ``log_Z_heldout``, ``log_Z_fit_heldout`` (n_test,).
    """
    n, V, d = _check_int(n_contexts, "n_contexts", 4), _check_int(vocab_size, "vocab_size", 2), _check_int(d, "d")
    if d >= V:
        raise ValueError(f"d={d} must be smaller than vocab_size={V}: result C is about low-dimensional features.")
    eps_grid = np.geomspace(0.1, 3e-4, 8) if eps_grid is None else as_array(eps_grid, "eps_grid", ndim=1)
    if eps_grid.shape[0] < 2 or np.any(eps_grid <= 0) or np.any(np.diff(eps_grid) >= 0):
        raise ValueError("eps_grid must hold at least two positive, strictly decreasing values.")
    B = check_positive(B, "B")
    heldout = float(heldout)
    if not 0 < heldout < 1:
        raise ValueError(f"heldout must lie in (0, 1), got {heldout}.")
    kinds = (phi_kinds,) if isinstance(phi_kinds, str) else tuple(phi_kinds)
    bad = [k for k in kinds if k not in PHI_KINDS]
    if bad or not kinds:
        raise ValueError(f"phi_kinds must be a non-empty subset of {PHI_KINDS}, got {phi_kinds!r}.")
    n_train = int(round((1 - heldout) * n))
    n_params = d * (d + 1) // 2 + d + 1
    if n_train < n_params or n - n_train < 2:
        raise ValueError(
            f"{n_train} training contexts cannot fit the {n_params} parameters of a quadratic in d={d} "
            f"(and at least 2 must be held out); raise n_contexts or lower d."
        )
    pretrain_steps = _check_int(pretrain_steps, "pretrain_steps", 0)

    lang = synthetic.ContextLanguage.random(n_contexts=n, vocab_size=V, seed=seed, label_strength=label_strength)
    P, w, y = lang.p_next, lang.p_context, lang.labels
    perm = np.random.default_rng(seed + 1).permutation(n)
    tr, te = perm[:n_train], perm[n_train:]
    rows = []
    with _one_thread():
        for kind in kinds:
            Phi = _phi(kind, lang, d, seed, pretrain_steps)
            mu_hat, Sigma_hat = Phi.mean(axis=1), np.cov(Phi, bias=True)
            nat = natural_fit(P @ Phi.T, y, Phi, B, weights=w)
            tau, lam = nat.loss, nat.lam
            model = lm.TableLM(n, Phi=Phi, device="cpu")
            e0 = model.excess_xent(P, w, relative_to="Phi")
            for eps_target in eps_grid:
                if eps_target >= e0:
                    continue
                model.fit(P, w, target_eps=float(eps_target), relative_to="Phi", max_steps=max_steps, lr=0.05)
                eps = model.eps_
                f = model.features()
                logz = features.log_partition(f, Phi)
                phip = features.conditional_mean(f, Phi)
                fit = theory.fit_log_partition(f[tr], logz[tr])
                afb = fit.grad(f)
                Xa = np.hstack([f, np.ones((n, 1))])
                M = np.linalg.lstsq(Xa[tr], phip[tr], rcond=None)[0]
                bound = theory.xent_bound(tau, eps, B, gamma=1.0)
                delta = float(np.dot(w, np.abs((phip - afb) @ lam)))
                row = dict(
                    phi=kind, eps=float(eps), n_steps=int(model.n_steps_), B=B, gamma=1.0, tau=tau,
                    bound=bound, delta=delta, bound_fit=bound + delta, feature="f",
                    r2=fit.r2(f[te], logz[te]),
                    r2_gauss=_r2(logz[te], gaussian_log_partition(f[te], mu_hat, Sigma_hat, V)),
                    grad_err=_rel(phip[te] - afb[te], phip[te]),
                    affine_err=_rel(phip[te] - Xa[te] @ M, phip[te]),
                    loss_f=_free_loss(f, y, w), loss_afb_free=_free_loss(afb, y, w),
                    loss_phip_free=_free_loss(phip, y, w),
                    loss_phip=natural_fit(phip, y, Phi, B, weights=w).loss,
                    loss_afb=natural_fit(afb, y, Phi, B, weights=w).loss,
                    f_norm=float(np.linalg.norm(f, axis=1).mean()),
                    A_norm=float(np.linalg.norm(fit.A, 2)), cond_A=float(np.linalg.cond(fit.A)),
                    lam_norm=float(np.linalg.norm(lam)), A_lam_norm=float(np.linalg.norm(fit.A @ lam)),
                    probe_f=np.nan, probe_phip=np.nan,
                    log_Z_heldout=logz[te], log_Z_fit_heldout=fit.predict(f[te]),
                )
                row["loss"] = row["loss_f"]
                if probe:
                    for name, X in (("probe_f", f), ("probe_phip", phip)):
                        pr = probes.probe_cv(X, y, Cs=np.logspace(-2, 4, 7), folds=5, seed=seed,
                                             device="cpu", dtype=torch.float64)
                        row[name] = float(pr.cv_scores_.mean(axis=1).max())
                rows.append(row)
    return rows
