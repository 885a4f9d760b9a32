r"""Features of a softmax LM, from its context features theta = f(s) and word embeddings Phi.

* :func:`conditional_mean` -- :math:`\Phi p_\theta = \mathbb{E}_{w\sim p_\theta}[\phi_w]`, (n, d),
  streamed over chunks of the vocabulary (never an n x V array);
* :func:`log_partition` -- :math:`\log Z_\theta`, (n,), streamed the same way;
* :func:`next_word_probs` -- :math:`p_\theta` (n, V) or some of its columns;
* :func:`subset_logits` -- :math:`\theta^\top \Phi_S`, the paper's "subset p_f" features.

Here :math:`p_\theta = \mathrm{softmax}(\Phi^\top\theta + b)`. Every function takes numpy or
torch: torch in, torch out (on theta's device, differentiable); numpy in, numpy out.
(Feature extraction from Hugging Face models will live here too and import transformers lazily.)
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["conditional_mean", "log_partition", "next_word_probs", "subset_logits"]


def _inputs(theta, Phi, bias):
    """theta (n, d), Phi (d, V), bias (V,) or None as tensors; returns (..., numpy_out, squeeze)."""
    numpy_out = not any(isinstance(x, torch.Tensor) for x in (theta, Phi, bias))
    ts = []
    for x, name in ((theta, "theta"), (Phi, "Phi"), (bias, "bias")):
        if x is None:
            ts.append(None)
            continue
        if not isinstance(x, torch.Tensor):
            arr = np.asarray(x)
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}.")
            x = torch.as_tensor(arr)
        if not torch.is_floating_point(x):
            x = x.double()
        ts.append(x)
    theta, Phi, bias = ts
    squeeze = theta.ndim == 1
    if squeeze:
        theta = theta[None]
    if theta.ndim != 2:
        raise ValueError(f"theta must have shape (n, d) (or (d,)) but has shape {tuple(theta.shape)}.")
    if Phi.ndim != 2 or Phi.shape[0] != theta.shape[1]:
        raise ValueError(
            f"Phi must have shape (d, V) with d = {theta.shape[1]} (theta's columns) but has shape "
            f"{tuple(Phi.shape)}; transpose it if you passed (V, d)."
        )
    if theta.shape[0] == 0 or Phi.shape[1] == 0:
        raise ValueError("theta and Phi must be non-empty (at least one context and one word).")
    V = Phi.shape[1]
    if bias is not None and tuple(bias.shape) != (V,):
        raise ValueError(f"bias must have shape (V,) = ({V},) but has shape {tuple(bias.shape)}.")
    for x, name in ((theta, "theta"), (Phi, "Phi"), (bias, "bias")):
        if x is not None and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} has NaN or inf entries; remove them first.")
    dtype = torch.promote_types(theta.dtype, Phi.dtype)
    if bias is not None:
        dtype = torch.promote_types(dtype, bias.dtype)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32  # accumulate in float32 at least
    dev = theta.device
    theta = theta.to(dtype)
    return theta, Phi, bias, dtype, dev, numpy_out, squeeze


def _finish(x, numpy_out, squeeze):
    if squeeze:
        x = x[0]
    return x.detach().cpu().numpy() if numpy_out else x


def _chunk_check(chunk_size):
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    return int(chunk_size)


def _stream(theta, Phi, bias, dtype, dev, chunk_size, want_mean):
    """Online softmax over V chunks: returns (log Z (n,), Phi p (n, d) or None)."""
    n, d = theta.shape
    V = Phi.shape[1]
    m = torch.full((n,), -torch.inf, dtype=dtype, device=dev)  # running max of the logits
    s = torch.zeros(n, dtype=dtype, device=dev)  # running sum of exp(logit - m)
    acc = torch.zeros(n, d, dtype=dtype, device=dev) if want_mean else None
    for start in range(0, V, chunk_size):
        P = Phi[:, start : start + chunk_size].to(device=dev, dtype=dtype)
        L = theta @ P
        if bias is not None:
            L = L + bias[start : start + chunk_size].to(device=dev, dtype=dtype)
        m_new = torch.maximum(m, L.max(dim=1).values)
        scale = torch.exp(m - m_new)
        E = torch.exp(L - m_new[:, None])
        s = s * scale + E.sum(dim=1)
        if want_mean:
            acc = acc * scale[:, None] + E @ P.T
        m = m_new
    return m + torch.log(s), (acc / s[:, None] if want_mean else None)


def conditional_mean(theta, Phi, bias=None, chunk_size: int = 4096):
    r"""Conditional-mean features :math:`\Phi p_\theta = \sum_w p_\theta(w)\, \phi_w`.

    .. math::

        \Phi\, \mathrm{softmax}(\Phi^\top \theta + b) \in \mathbb{R}^d

    computed by an online softmax over chunks of ``chunk_size`` vocabulary columns (running
    max, running normaliser, running weighted sum), so memory is O(n * chunk_size + n * d),
    never n x V; exact up to rounding for any chunk size and stable for huge logits. ``Phi``
    may live on another device than ``theta`` (chunks are moved to theta's device). Under
    autograd the backward pass still stores every chunk: wrap extraction in ``torch.no_grad()``.

    Parameters
    ----------
    theta : (n, d) context features f(s) (a (d,) vector gives a (d,) result).
    Phi : (d, V) word embeddings.
    bias : optional (V,) output bias.
    chunk_size : positive int, vocabulary columns per chunk.

    Returns
    -------
    (n, d) array (numpy in, numpy out) or tensor (torch in, torch out).
    """
    chunk_size = _chunk_check(chunk_size)
    theta, Phi, bias, dtype, dev, numpy_out, squeeze = _inputs(theta, Phi, bias)
    _, mean = _stream(theta, Phi, bias, dtype, dev, chunk_size, want_mean=True)
    return _finish(mean, numpy_out, squeeze)


def log_partition(theta, Phi, bias=None, chunk_size: int = 4096):
    r"""Log-partition function :math:`\log Z_\theta = \log \sum_w \exp(\theta^\top\phi_w + b_w)`, (n,).

    Streamed over vocabulary chunks like :func:`conditional_mean` (memory O(n * chunk_size)).
    Its gradient in theta is :math:`\Phi p_\theta` (result C fits it by a quadratic).

    Parameters
    ----------
    theta : (n, d); Phi : (d, V); bias : optional (V,); chunk_size : positive int.

    Returns
    -------
    (n,) array or tensor (a float-like 0-dim result for a (d,) theta).
    """
    chunk_size = _chunk_check(chunk_size)
    theta, Phi, bias, dtype, dev, numpy_out, squeeze = _inputs(theta, Phi, bias)
    logz, _ = _stream(theta, Phi, bias, dtype, dev, chunk_size, want_mean=False)
    return _finish(logz, numpy_out, squeeze)


def _words(words, V):
    if isinstance(words, torch.Tensor):
        words = words.detach().cpu().numpy()
    w = np.asarray(words)
    if w.ndim == 0:
        w = w[None]
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"words must be a non-empty 1-D list of word ids, got shape {w.shape}.")
    if w.dtype.kind not in "iu":
        if w.dtype.kind == "f" and np.all(np.isfinite(w)) and np.all(w == np.round(w)):
            w = w.astype(np.int64)
        else:
            raise ValueError(f"words must be integer word ids, got dtype {w.dtype}.")
    if w.min() < 0 or w.max() >= V:
        bad = w[(w < 0) | (w >= V)]
        raise ValueError(f"word ids must lie in 0..{V - 1} (V = {V}); got {bad[:5].tolist()}.")
    return torch.as_tensor(w.astype(np.int64))


def subset_logits(theta, Phi, words, bias=None):
    r"""Logits of a subset S of words: :math:`\theta^\top \Phi_S (+ b_S)`, shape (n, ``|S|``).

    The paper's "subset p_f" features are these logits (not probabilities) for a handful of
    indicative words.

    Parameters
    ----------
    theta : (n, d); Phi : (d, V); words : sequence of word ids in 0..V-1 (duplicates allowed);
    bias : optional (V,).

    Returns
    -------
    (n, ``|S|``) array or tensor.
    """
    theta, Phi, bias, dtype, dev, numpy_out, squeeze = _inputs(theta, Phi, bias)
    idx = _words(words, Phi.shape[1])
    P = Phi[:, idx.to(Phi.device)].to(device=dev, dtype=dtype)
    out = theta @ P
    if bias is not None:
        out = out + bias[idx.to(bias.device)].to(device=dev, dtype=dtype)
    return _finish(out, numpy_out, squeeze)


def next_word_probs(theta, Phi, bias=None, words=None, chunk_size: int = 4096):
    r"""Next-word probabilities :math:`p_\theta = \mathrm{softmax}(\Phi^\top\theta + b)`.

    With ``words`` given, only those columns are returned, normalised over the whole vocabulary
    (computed as :math:`\exp(\theta^\top\phi_w + b_w - \log Z_\theta)` with a streamed
    :math:`\log Z_\theta`, so memory stays O(n * (chunk_size + ``|S|``)).

    Parameters
    ----------
    theta : (n, d); Phi : (d, V); bias : optional (V,); words : optional word ids;
    chunk_size : positive int (used when ``words`` is given).

    Returns
    -------
    (n, V) or (n, ``len(words)``) array or tensor.
    """
    if words is None:
        theta_t, Phi_t, bias_t, dtype, dev, numpy_out, squeeze = _inputs(theta, Phi, bias)
        L = theta_t @ Phi_t.to(device=dev, dtype=dtype)
        if bias_t is not None:
            L = L + bias_t.to(device=dev, dtype=dtype)
        return _finish(torch.softmax(L, dim=1), numpy_out, squeeze)
    chunk_size = _chunk_check(chunk_size)
    theta_t, Phi_t, bias_t, dtype, dev, numpy_out, squeeze = _inputs(theta, Phi, bias)
    idx = _words(words, Phi_t.shape[1])
    logz, _ = _stream(theta_t, Phi_t, bias_t, dtype, dev, chunk_size, want_mean=False)
    L = theta_t @ Phi_t[:, idx.to(Phi_t.device)].to(device=dev, dtype=dtype)
    if bias_t is not None:
        L = L + bias_t[idx.to(bias_t.device)].to(device=dev, dtype=dtype)
    return _finish(torch.exp(L - logz[:, None]), numpy_out, squeeze)


def extract(lm, texts, kinds=("f", "Phi_p", "subset"), prompt=None, words=None, **kwargs):
    """Features of a real language model for a list of texts; see :func:`lmdownstream.hf.extract`.

    Imported lazily so that this module never pulls in transformers.
    """
    from .hf import extract as _extract

    return _extract(lm, texts, kinds=kinds, prompt=prompt, words=words, **kwargs)
