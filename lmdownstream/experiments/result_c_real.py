r"""Result C on real language models: is :math:`\log Z_\theta` quadratic at the features :math:`\theta = f(s)`?

Result C (chapter 6) assumes that the log-partition function
:math:`\log Z_\theta = \log\sum_w e^{\theta^\top\phi_w}` is quadratic,
:math:`\tfrac12\theta^\top A\theta + b^\top\theta + c`, over the :math:`\theta = f(s)` that matter; then
:math:`\Phi p_{f(s)} = \nabla\log Z_{f(s)} = A f(s) + b` is an affine image of :math:`f(s)`. The motivation
is Gaussian embeddings: for columns :math:`\phi_w \sim N(\mu, \Sigma)`,
:math:`\log Z_\theta \approx \log V + \theta^\top\mu + \tfrac12\theta^\top\Sigma\theta`. This module measures
both on a model's features, with held-out :math:`R^2` everywhere (orchestration only: the fits are
:mod:`lmdownstream.fits`', the features :func:`lmdownstream.features.contexts`'):

* :func:`study` -- on any features F (n, d) and embeddings :math:`\Phi` (d, V): a DataFrame with
  one row per method (held-out R², numbers fitted), the arrays in ``attrs``;
* :func:`run` -- :func:`lmdownstream.features.contexts` (every token position of some texts, the
  first :data:`DEFAULT_SKIP_FIRST` skipped) then :func:`study`, for any protocol model;
* :func:`r2_table` -- the held-out R² of several studies side by side; :func:`plot_log_z` --
  predicted against true :math:`\log Z` on the held-out contexts.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from .. import features, fits, plot
from .._checks import as_array, as_tensor, check_fraction, check_int

__all__ = ["DEFAULT_SKIP_FIRST", "RIDGE_GRID", "LABELS", "study", "run", "r2_table", "plot_log_z"]

#: Positions skipped at the start of every text by default. Measured on SmolLM2-135M-Instruct
#: (which adds no BOS token, so position 0 is the text's first token): at layer 15 of 30 the
#: residual stream at position 0 has a median norm of about 25,800 against about 160 at positions
#: 1-15 (8 tweets; a ratio of about 150, and 8-150x from layer 5 on, also on BBC news): the
#: attention-sink token. The final RMSNorm brings its f(s) back to the norm of the others (ratio
#: 0.8), but it stays atypical: a quadratic fitted to log Z on positions >= 1 misses log Z at
#: position 0 with a mean squared error 25-30x its held-out error on positions >= 1 (tweets and
#: BBC news, 2,000 contexts). Positions 1, 2, ... look like the rest. So 1.
DEFAULT_SKIP_FIRST = 1

#: The ridge grid of :func:`lmdownstream.fits.ridge_fit` (chosen on a validation split).
RIDGE_GRID = fits.RIDGE_GRID

#: Method -> (target, label) of the rows of :func:`study`, in order.
LABELS = {
    "gaussian": ("log Z", "Gaussian prediction (no fit)"),
    "gaussian_scaled": ("log Z", "Gaussian form, 3 fitted numbers"),
    "linear": ("log Z", "linear fit"),
    "quadratic": ("log Z", "quadratic fit"),
    "map_gaussian": ("Φp_f", "Σθ + μ (Gaussian, no fit)"),
    "map_gaussian_scaled": ("Φp_f", "αΣθ + βμ (scaled Gaussian)"),
    "map_quadratic_grad": ("Φp_f", "Aθ + b (gradient of the quadratic fit)"),
    "map_fitted": ("Φp_f", "W θ + w₀ (affine map fitted to Φp_f)"),
}


def _check_inputs(F, Phi, bias):
    F = as_array(F, "F", ndim=2)
    Phi = as_tensor(Phi, "Phi", ndim=2).detach()
    if Phi.shape[0] != F.shape[1]:
        raise ValueError(f"Phi must have shape (d, V) with d = {F.shape[1]} (F's columns) but has shape "
                         f"{tuple(Phi.shape)}; transpose it if you passed (V, d).")
    if Phi.shape[1] < 2:
        raise ValueError(f"Phi has V={Phi.shape[1]} column(s); a softmax needs at least 2 words.")
    if bias is not None:
        bias = as_tensor(bias, "bias", ndim=1).detach().to(Phi.device)
        if bias.shape[0] != Phi.shape[1]:
            raise ValueError(f"bias must have shape (V,) = ({Phi.shape[1]},) but has shape {tuple(bias.shape)}.")
    return F, Phi, bias


def _moments(Phi, bias):
    """Mean (D,) and population covariance (D, D) of the columns of [Phi; bias], float64 numpy."""
    P = Phi.double() if bias is None else torch.cat([Phi.double(), bias.double()[None]])
    return P.mean(1).cpu().numpy(), torch.cov(P, correction=0).cpu().numpy()


def study(F, Phi, bias=None, test_fraction: float = 0.3, k: int = 16, ridge=None, seed=0, groups=None,
          val_fraction: float = 0.2, chunk_size: int = 4096):
    r"""Is :math:`\log Z_\theta` quadratic, and :math:`\Phi p_\theta` affine, at the features :math:`\theta = f(s)`?

    With :math:`\theta_i` the rows of ``F`` and :math:`\phi_w` the columns of ``Phi``:

    1. the truth, :math:`\log Z_{\theta_i}` and :math:`\Phi p_{\theta_i}`, streamed over chunks of the
       vocabulary (:func:`lmdownstream.features.log_partition`, :func:`~lmdownstream.features.conditional_mean`);
    2. a seeded split into train and test (:func:`lmdownstream.fits.split_indices`, ``test_fraction``
       held out; by ``groups`` if given, e.g. the text of each context, so no text is on both sides);
    3. the **Gaussian prediction** (nothing fitted, :func:`lmdownstream.fits.gaussian_log_partition`):
       :math:`\mu`, :math:`\Sigma` = mean and population covariance of the columns, and its gradient
       :math:`\Sigma\theta + \mu` for :math:`\Phi p_\theta`. With a ``bias`` b the logits are
       :math:`\theta'^\top\phi'_w` with :math:`\theta' = (\theta, 1)`, :math:`\phi'_w = (\phi_w, b_w)`, and the formula
       is applied to the :math:`\phi'_w` (``mu``, ``Sigma`` are then (d+1)-dimensional);
    4. the **scaled Gaussian fit** :math:`c + \beta\,\theta'^\top\mu + \tfrac\alpha2\theta'^\top\Sigma\theta'`: three
       numbers by least squares on train (its gradient :math:`\alpha\Sigma\theta + \beta\mu` is the map);
    5. a **linear** and a **quadratic fit** of :math:`\log Z` (:func:`lmdownstream.fits.fit_pc_quadratic`
       with ``k=0`` and ``k``), and the gradient :math:`A\theta + b` of the quadratic as a map;
    6. the **best affine map** :math:`\Phi p_\theta \approx W\theta + w_0` (:func:`lmdownstream.fits.fit_linear_map`).

    Parameters
    ----------
    F : (n, d) context features; Phi : (d, V) output embeddings (a torch tensor stays on its
        device, e.g. a GPU); bias : None or (V,).
    test_fraction, val_fraction : in (0, 1). k : int >= 0, principal directions (capped at d).
    ridge : None (each fit chooses it on a validation split) or a number >= 0 for every fit.
    seed : seed of the splits. groups : optional (n,) labels. chunk_size : columns per chunk.

    Returns
    -------
    pandas DataFrame indexed by ``method`` (one row per method of :data:`LABELS`, so
    ``res["r2"]["quadratic"]`` is one number): ``target, what, r2`` (held out;
    pooled over coordinates for :math:`\Phi p_f`, :func:`lmdownstream.fits.r2`), ``n_fitted``,
    ``ridge``. ``attrs``: ``settings`` (n, d, V, k, seed, test_fraction, grouped), ``alpha``,
    ``beta``, ``c``, ``quad`` (the :class:`~lmdownstream.fits.LogPartitionFit`), ``mu``,
    ``Sigma``, ``log_Z`` (n,), ``Phi_p`` (n, d) float32, ``logit_sd`` (n,)
    :math:`\sqrt{\theta^\top\Sigma\theta}` (the Gaussian calculation needs it well below
    :math:`\sqrt{2\log V}`), ``train``, ``test`` (indices), ``pred_test`` (method -> (n_test,)
    predictions of :math:`\log Z`), ``log_Z_test``, ``W``, ``w0`` and ``timings`` (stage -> seconds).
    """
    import pandas as pd

    clock = {"start": time.perf_counter()}

    def lap(stage):
        now = time.perf_counter()
        timings[stage] = now - clock["start"]
        clock["start"] = now

    timings = {}
    Fa, Phi_t, bias_t = _check_inputs(F, Phi, bias)
    (n, d), V = Fa.shape, int(Phi_t.shape[1])
    test_fraction = check_fraction(test_fraction, "test_fraction", open_low=True, open_high=True)
    k, seed = min(check_int(k, "k", low=0), d), check_int(seed, "seed", low=0)
    chunk_size = check_int(chunk_size, "chunk_size")
    need = max(int(np.ceil(20 / (1 - test_fraction))), int(np.ceil(2 / test_fraction)))
    if n < need:
        raise ValueError(f"{n} contexts are too few: with test_fraction={test_fraction} the split needs at least "
                         f"{need} (20 to train, 2 to test); pass more contexts.")
    if groups is not None and np.unique(groups).shape[0] < 4:
        raise ValueError("groups must have at least 4 distinct values (test, validation and fit sides each need one).")
    train, test = fits.split_indices(n, test_fraction, seed, groups)
    if len(test) < 2 or len(train) < 20:
        raise ValueError(f"the split left {len(train)} training and {len(test)} test contexts; pass more contexts "
                         f"(or more groups), at least {need}.")
    k = min(k, len(train) - 1)
    if ridge == 0 and len(train) < k * (k + 1) // 2 + d + 1:
        warnings.warn(f"ridge=0 with {len(train)} training contexts and {k * (k + 1) // 2 + d + 1} unknowns: the "
                      "quadratic fit is underdetermined (minimum-norm solution); pass ridge=None.",
                      UserWarning, stacklevel=2)
    g_train = None if groups is None else np.asarray(groups)[train]
    fit_kw = dict(ridge=ridge, val_fraction=val_fraction, seed=seed + 1, groups=g_train)
    lap("validate")

    with torch.inference_mode():
        dtype = Phi_t.dtype if Phi_t.dtype in (torch.float32, torch.float64) else torch.float32
        th = torch.as_tensor(Fa, dtype=dtype, device=Phi_t.device)
        logz = features.log_partition(th, Phi_t, bias_t, chunk_size=chunk_size).double().cpu().numpy()
        phip = features.conditional_mean(th, Phi_t, bias_t, chunk_size=chunk_size).float().cpu().numpy()
    lap("log Z and Φp (softmax over V)")

    mu, Sigma = _moments(Phi_t, bias_t)
    Fp = Fa if bias_t is None else np.hstack([Fa, np.ones((n, 1))])
    lin_g, SF = Fp @ mu, Fp @ Sigma
    quad_g = 0.5 * np.einsum("ij,ij->i", SF, Fp)
    pred = {"gaussian": fits.gaussian_log_partition(Fp, mu, Sigma, V)}
    maps = {"map_gaussian": (SF + mu)[:, :d]}
    D3 = np.column_stack([np.ones(n), lin_g, quad_g])
    c3, beta, alpha = np.linalg.lstsq(D3[train], logz[train], rcond=None)[0]
    pred["gaussian_scaled"] = D3 @ np.array([c3, beta, alpha])
    maps["map_gaussian_scaled"] = (alpha * SF + beta * mu)[:, :d]
    lap("Gaussian prediction and 3-number fit")

    lin, lin_info = fits.fit_pc_quadratic(Fa[train], logz[train], k=0, **fit_kw)
    quad, quad_info = fits.fit_pc_quadratic(Fa[train], logz[train], k=k, **fit_kw)
    pred["linear"], pred["quadratic"], maps["map_quadratic_grad"] = lin.predict(Fa), quad.predict(Fa), quad.grad(Fa)
    lap("linear and quadratic fits")
    W, w0, map_info = fits.fit_linear_map(Fa[train], phip[train].astype(np.float64), **fit_kw)
    maps["map_fitted"] = Fa @ W + w0
    lap("affine map f → Φp")

    nq = k * (k + 1) // 2 + d + 1
    n_fitted = dict(gaussian=0, gaussian_scaled=3, linear=d + 1, quadratic=nq, map_gaussian=0,
                    map_gaussian_scaled=3, map_quadratic_grad=nq, map_fitted=d * d + d)
    ridges = dict(linear=lin_info["ridge"], quadratic=quad_info["ridge"], map_quadratic_grad=quad_info["ridge"],
                  map_fitted=map_info["ridge"])
    truth = {"log Z": logz, "Φp_f": phip}
    rows = [dict(method=m, target=t, what=what, r2=fits.r2(truth[t][test], {**pred, **maps}[m][test]),
                 n_fitted=n_fitted[m], ridge=ridges.get(m, np.nan)) for m, (t, what) in LABELS.items()]
    df = pd.DataFrame(rows).set_index("method")
    df.attrs.update(
        settings=dict(n=n, d=d, V=V, k=k, seed=seed, test_fraction=test_fraction, grouped=groups is not None),
        alpha=float(alpha), beta=float(beta), c=float(c3), quad=quad, mu=mu, Sigma=Sigma, log_Z=logz, Phi_p=phip,
        logit_sd=np.sqrt(np.maximum(2 * quad_g, 0.0)), train=train, test=test,
        pred_test={m: p[test] for m, p in pred.items()}, log_Z_test=logz[test], W=W, w0=np.asarray(w0), timings=timings)
    return df


def run(lm, texts, n_contexts=2000, max_tokens: int = 64, skip_first: int = DEFAULT_SKIP_FIRST, seed=0,
        batch_size: int = 16, split_by_text: bool = True, progress: bool = False, **study_kwargs):
    r""":func:`lmdownstream.features.contexts` of ``lm`` on ``texts``, then :func:`study` with its output embeddings.

    Parameters
    ----------
    lm : a protocol model (:class:`~lmdownstream.hf.HFLM` such as ``load_lm("smollm2")``, or a
        :class:`~lmdownstream.train.TinyLM` with token-id inputs).
    texts : its inputs. n_contexts, max_tokens, skip_first, batch_size, progress : see
        :func:`lmdownstream.features.contexts` (``seed`` seeds both the sample and the splits).
    split_by_text : split train/test (and validation) by text, so that no text has contexts on
        both sides (contexts of one text share a prefix); False splits contexts independently.
    **study_kwargs : passed to :func:`study` (``test_fraction``, ``k``, ``ridge``, ...).

    Returns
    -------
    :func:`study`'s DataFrame; ``attrs["settings"]`` also records the model's name, the number of
    texts, of texts used and of texts cut to ``max_tokens``, and the settings; ``timings`` has
    ``"forward passes"`` first.
    """
    t0 = time.perf_counter()
    F, groups, info = features.contexts(lm, texts, n_contexts=n_contexts, max_tokens=max_tokens,
                                        skip_first=skip_first, seed=seed, batch_size=batch_size, progress=progress,
                                        return_info=True)
    t_fwd = time.perf_counter() - t0
    df = study(F, lm.Phi, bias=lm.bias, seed=seed, groups=groups if split_by_text else None, **study_kwargs)
    df.attrs["timings"] = {"forward passes": t_fwd, **df.attrs["timings"]}
    df.attrs["settings"].update(model=lm.name, n_texts=info["n_texts"], n_texts_used=int(np.unique(groups).shape[0]),
                                n_truncated=info["n_truncated"], n_available=info["n_available"],
                                max_tokens=max_tokens, skip_first=skip_first, split_by_text=bool(split_by_text))
    return df


def r2_table(studies: dict):
    """The held-out R² of several :func:`study` results side by side: a DataFrame indexed by
    (target, what), one column per key of ``studies``, and ``fitted`` (numbers fitted)."""
    import pandas as pd

    first = next(iter(studies.values()))
    index = pd.MultiIndex.from_frame(first[["target", "what"]])  # every study has LABELS' rows, in order
    table = pd.DataFrame({name: res["r2"].to_numpy() for name, res in studies.items()}, index=index)
    return table.assign(fitted=first["n_fitted"].to_numpy())


def plot_log_z(res, ax=None, methods=("gaussian", "gaussian_scaled", "linear", "quadratic")):
    r"""Predicted against true :math:`\log Z` on the held-out contexts of a :func:`study`, one
    :func:`lmdownstream.plot.predicted_vs_true` per method (R² in the legend). Returns the axes."""
    for m in methods:
        if m not in res.attrs["pred_test"]:
            raise ValueError(f"unknown method {m!r}; choose from {tuple(res.attrs['pred_test'])}.")
        ax = plot.predicted_vs_true(res.attrs["log_Z_test"], res.attrs["pred_test"][m], r2=res["r2"][m],
                                    ax=ax, label=LABELS[m][1], xlabel="true log Z (held-out contexts)",
                                    ylabel="predicted log Z")
    legend = dict(zip(*reversed(ax.get_legend_handles_labels())))  # one "y = x", not one per method
    ax.legend(legend.values(), legend.keys(), fontsize=7, loc="upper left")
    return ax
