r"""Features of a softmax LM: from (theta = f(s), Phi), and from any model of the protocol.

From features and embeddings, :math:`p_\theta = \mathrm{softmax}(\Phi^\top\theta + b)`
(numpy in, numpy out; torch in, torch out on theta's device, differentiable):

* :func:`conditional_mean` -- :math:`\Phi p_\theta = \mathbb{E}_{w\sim p_\theta}[\phi_w]`, (n, d),
  streamed over chunks of the vocabulary (never an n x V array);
* :func:`log_partition` -- :math:`\log Z_\theta`, (n,), streamed the same way;
* :func:`next_word_probs` -- :math:`p_\theta` (n, V) or some of its columns;
* :func:`subset_logits` -- :math:`\theta^\top \Phi_S`, the paper's "subset p_f" features.

From a model (any :class:`lmdownstream.lm.SoftmaxLM`: ``TableLM``, ``train.TinyLM``,
``hf.HFLM``; only its ``encode``, ``hidden_states``, ``Phi``, ``bias`` and ``fingerprint``
are used, so this module imports neither ``lm`` nor ``hf``):

* :func:`hidden` -- THE batching loop: token-id lists through ``model.hidden_states`` in
  length-sorted, token-budgeted batches (:func:`batches`), with a progress bar;
* :func:`extract` -- f, :math:`\Phi p_f`, subset logits, p_f of many inputs, cached on disk;
* :func:`contexts` -- f(s) at every (or a sample of the) positions of many inputs;
* :func:`resolve_words` -- words as single tokens of a model's tokenizer.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import namedtuple

import numpy as np
import torch

from . import config
from ._checks import as_tensor, check_int

__all__ = ["conditional_mean", "log_partition", "next_word_probs", "subset_logits", "KINDS", "pad_batch",
           "batches", "hidden", "extract", "state_fingerprint", "contexts", "resolve_words", "WordSubset"]

KINDS = ("f", "Phi_p", "subset", "p_f")
_EXTRACT_VERSION = 2  # bump when extraction changes, to invalidate old cache entries


def _inputs(theta, Phi, bias):
    """theta (n, d), Phi (d, V), bias (V,) or None as tensors; returns (..., numpy_out, squeeze)."""
    numpy_out = not any(isinstance(x, torch.Tensor) for x in (theta, Phi, bias))
    theta, Phi = as_tensor(theta, "theta", ndim=(1, 2)), as_tensor(Phi, "Phi", ndim=2)
    bias = None if bias is None else as_tensor(bias, "bias", ndim=1)
    squeeze = theta.ndim == 1
    if squeeze:
        theta = theta[None]
    if Phi.shape[0] != theta.shape[1]:
        raise ValueError(f"Phi must have shape (d, V) with d = {theta.shape[1]} (theta's columns) but has shape "
                         f"{tuple(Phi.shape)}; transpose it if you passed (V, d).")
    if bias is not None and bias.shape[0] != Phi.shape[1]:
        raise ValueError(f"bias must have shape (V,) = ({Phi.shape[1]},) but has shape {tuple(bias.shape)}.")
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
    chunk_size = check_int(chunk_size, "chunk_size")
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
    chunk_size = check_int(chunk_size, "chunk_size")
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
    chunk_size = check_int(chunk_size, "chunk_size")
    theta_t, Phi_t, bias_t, dtype, dev, numpy_out, squeeze = _inputs(theta, Phi, bias)
    idx = _words(words, Phi_t.shape[1])
    logz, _ = _stream(theta_t, Phi_t, bias_t, dtype, dev, chunk_size, want_mean=False)
    L = theta_t @ Phi_t[:, idx.to(Phi_t.device)].to(device=dev, dtype=dtype)
    if bias_t is not None:
        L = L + bias_t[idx.to(bias_t.device)].to(device=dev, dtype=dtype)
    return _finish(torch.exp(L - logz[:, None]), numpy_out, squeeze)




# --------------------------------------------------------------------------- batching
def pad_batch(ids, device=None):
    """One batch of token ids as tensors: ``(x, mask, lengths)``.

    ``ids``: a list of B non-empty token-id lists (ragged), or a (B, T) int array/tensor
    right-padded with ``-1``. Returns ``x`` (B, T) long with padding replaced by 0, ``mask``
    (B, T) bool (True at real tokens) and ``lengths`` (B,) long, on ``device``.
    """
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(ids).long()
        if x.ndim != 2:
            raise ValueError(f"ids must be (B, T) or a list of token-id lists, got shape {tuple(x.shape)}.")
        x = x.to(device) if device is not None else x
        mask = x >= 0
    else:
        lengths = [len(r) for r in ids]
        x = torch.full((len(ids), max(lengths)), -1, dtype=torch.long)
        for r, row in enumerate(ids):
            x[r, :lengths[r]] = torch.as_tensor(row, dtype=torch.long)
        x = x.to(device) if device is not None else x
        mask = x >= 0
    return x.clamp_min(0), mask, mask.sum(1)


def batches(lengths, batch_size: int = 32, max_tokens: int = 8192) -> list:
    """Index batches, longest first, each of at most ``batch_size`` rows and ``max_tokens``
    padded tokens (a row longer than ``max_tokens`` gets a batch of its own)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    out, cur = [], []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * width > max_tokens):
            out.append(cur)
            cur = []
        cur.append(int(i))
    if cur:
        out.append(cur)
    return out


def _bar(total, desc, progress):
    if not config.progress(progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="seq", leave=False)


def hidden(model, ids, positions="last", batch_size: int = 32, max_tokens: int = 8192,
           progress: bool = False) -> np.ndarray:
    """Hidden states f(s) of token-id sequences: the one batching loop of the library.

    The sequences are run through ``model.hidden_states`` in length-sorted batches of at most
    ``batch_size`` rows and ``max_tokens`` padded tokens (right padding: each row's real
    tokens keep positions 0..len-1, so padding never changes a state), in inference mode.

    Parameters
    ----------
    model : a :class:`lmdownstream.lm.SoftmaxLM`.
    ids : list of n non-empty token-id lists (e.g. from ``model.encode``).
    positions : ``"last"`` (each sequence's last token), ``"all"`` (every position), or a list
        of n int sequences, the positions wanted in each sequence (may be empty).
    batch_size, max_tokens : batch limits. progress : show a tqdm bar (sequences).

    Returns
    -------
    float32 numpy array: (n, d) for ``"last"``; otherwise one row per (sequence, position),
    ordered by sequence, then position as given.
    """
    batch_size, max_tokens = check_int(batch_size, "batch_size"), check_int(max_tokens, "max_tokens")
    lengths = [len(x) for x in ids]
    if positions == "last":
        want = [[n - 1] for n in lengths]
    elif positions == "all":
        want = [range(n) for n in lengths]
    else:
        want = [np.asarray(p, dtype=np.int64).reshape(-1) for p in positions]
        if len(want) != len(ids) or any(len(p) and (p.min() < 0 or p.max() >= n) for p, n in zip(want, lengths)):
            raise ValueError("positions must give, for each sequence, positions in 0..len-1.")
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in want])]).astype(np.int64)
    out = np.empty((int(offsets[-1]), model.d), dtype=np.float32)
    bar = _bar(len(ids), f"hidden states {getattr(model, 'name', '')}", progress)
    try:
        with torch.inference_mode():
            for batch in batches(lengths, batch_size, max_tokens):
                h = model.hidden_states([ids[i] for i in batch], positions="last" if positions == "last" else "all")
                if positions == "last":
                    out[batch] = h.float().cpu().numpy()
                else:
                    r = torch.as_tensor(np.repeat(np.arange(len(batch)), [len(want[i]) for i in batch]))
                    p = torch.as_tensor(np.concatenate([np.asarray(want[i], dtype=np.int64) for i in batch]))
                    rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in batch])
                    out[rows] = h[r.to(h.device), p.to(h.device)].float().cpu().numpy()
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return out


# --------------------------------------------------------------------------- words
WordSubset = namedtuple("WordSubset", ["ids", "tokens", "words", "dropped"])
WordSubset.__doc__ = """Words resolved to single tokens: ``ids`` (k,) int64 token ids (no
duplicates), ``tokens`` their strings, ``words`` the word each came from, ``dropped`` the
words that have no single-token form."""


def resolve_words(lm_or_tokenizer, words, strict: bool = False) -> WordSubset:
    """The words as single tokens of the tokenizer, each with and without a leading space.

    For every word ``w`` the forms ``w`` and ``" " + w`` are encoded (no special tokens);
    each form that is exactly one token is kept (so a word gives 0, 1 or 2 tokens, duplicates
    removed), as the paper does for GPT-2.

    Parameters
    ----------
    lm_or_tokenizer : a model with a ``tokenizer`` (e.g. :class:`lmdownstream.hf.HFLM`) or a tokenizer.
    words : sequence of str.
    strict : raise a ValueError if any word has no single-token form (default: drop it,
        report it in ``dropped`` and warn).

    Returns
    -------
    WordSubset (ids, tokens, words, dropped).
    """
    tok = getattr(lm_or_tokenizer, "tokenizer", lm_or_tokenizer)
    if isinstance(words, str) or not hasattr(words, "__iter__"):
        raise ValueError(f"words must be a list of strings, got {words!r}; wrap a single word: [word].")
    words = list(words)
    if not words:
        raise ValueError("words is empty; pass at least one word.")
    ids, tokens, origin, dropped = [], [], [], []
    for w in words:
        if not isinstance(w, str) or not w.strip():
            raise ValueError(f"every word must be a non-empty string, got {w!r}.")
        w = w.strip()
        found = False
        for form in (w, " " + w):
            enc = tok(form, add_special_tokens=False)["input_ids"]
            if len(enc) == 1:
                found = True
                if enc[0] not in ids:
                    ids.append(int(enc[0]))
                    tokens.append(form)
                    origin.append(w)
        if not found:
            dropped.append(w)
    if dropped:
        msg = (f"{len(dropped)} word(s) have no single-token form in this tokenizer (with or without "
               f"a leading space): {dropped}")
        if strict or not ids:
            raise ValueError(msg + "; choose other words (or strict=False to drop them).")
        warnings.warn(msg + "; they are dropped.", UserWarning, stacklevel=2)
    return WordSubset(np.asarray(ids, dtype=np.int64), tokens, origin, dropped)


def _word_ids(model, words):
    """(ids (k,) int64, tokens) of the subset: word ids as given, or words resolved by the tokenizer."""
    w = [words] if isinstance(words, str) else list(words)
    if w and all(isinstance(x, (int, np.integer)) for x in w):
        ids = np.asarray(w, dtype=np.int64)
        if ids.min() < 0 or ids.max() >= model.V:
            raise ValueError(f"word ids must lie in 0..{model.V - 1}.")
        tok = getattr(model, "tokenizer", None)
        return ids, [tok.decode([int(i)]) if tok is not None else str(int(i)) for i in ids]
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(f"{type(model).__name__} has no tokenizer; pass words as word ids (ints in 0..V-1).")
    sub = resolve_words(model, w)
    return sub.ids, sub.tokens


# --------------------------------------------------------------------------- extraction
def state_fingerprint(module, extra: str = "") -> str:
    """sha256 (16 hex digits) of every tensor of ``module.state_dict()`` (names, shapes, values)
    and ``extra``: the cache key of an in-memory model (TableLM, TinyLM)."""
    h = hashlib.sha256(f"{type(module).__name__}|{extra}".encode())
    for k, v in module.state_dict().items():
        h.update(f"{k}|{tuple(v.shape)}|{v.dtype}".encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _derived(model, F, kinds, word_ids, chunk_size, block=256):
    """The kinds computed from features F (n, d), in blocks of ``block`` rows (memory O(block * chunk_size))."""
    n = F.shape[0]
    sizes = {"f": model.d, "Phi_p": model.d, "subset": len(word_ids) if word_ids is not None else 0, "p_f": model.V}
    out = {k: (F if k == "f" else np.empty((n, sizes[k]), dtype=np.float32)) for k in kinds}
    Phi, bias = model.Phi.detach(), None if model.bias is None else model.bias.detach()
    with torch.inference_mode():
        for a in range(0, n, block):
            f = torch.as_tensor(F[a:a + block]).to(Phi.device)
            if "Phi_p" in kinds:
                out["Phi_p"][a:a + block] = conditional_mean(f, Phi, bias, chunk_size=chunk_size).cpu().numpy()
            if "subset" in kinds:
                out["subset"][a:a + block] = subset_logits(f, Phi, word_ids, bias).cpu().numpy()
            if "p_f" in kinds:
                out["p_f"][a:a + block] = next_word_probs(f, Phi, bias).float().cpu().numpy()
    return out


def _cache_path(model, ids, settings):
    key = model.fingerprint() if hasattr(model, "fingerprint") else None
    if key is None:
        return None
    h = hashlib.sha256(json.dumps([_EXTRACT_VERSION, type(model).__name__, key, settings]).encode())
    for seq in ids:
        h.update(np.asarray(seq, dtype=np.int64).tobytes())
        h.update(b"|")
    return config.cache_dir() / "features" / f"{h.hexdigest()[:32]}.npz"


def extract(model, inputs, kinds=None, prompt=None, words=None, batch_size: int = 32, cache: bool = True,
            progress: bool = True, also_without_prompt: bool = False, max_length=None, max_tokens: int = 8192,
            chunk_size: int = 4096) -> dict:
    r"""Features of any softmax LM for many inputs: f(s), :math:`\Phi p_{f(s)}`, subset logits, p_f.

    The inputs are encoded by ``model.encode`` (texts for a Hugging Face model, with ``prompt``
    appended and truncated from the *left* keeping the prompt; token-id sequences for
    ``TinyLM``; context ids for ``TableLM``), sorted by length and run through
    :func:`hidden` (right padding; f(s) is read at each sequence's last real token).

    Parameters
    ----------
    model : a :class:`lmdownstream.lm.SoftmaxLM`.
    inputs : n texts (HFLM), token-id sequences (TinyLM) or context ids (TableLM).
    kinds : any of ``"f"`` (n, d) the feature f(s); ``"Phi_p"`` (n, d) the conditional mean
        :math:`\Phi p_{f(s)}` (streamed over ``chunk_size`` vocabulary columns, in blocks of
        256 rows: never an n x V matrix); ``"subset"`` (n, k) logits :math:`f(s)^\top\Phi_S (+ b_S)`
        of the word subset S (needs ``words``); ``"p_f"`` (n, V) next-word distributions (small
        n only). Default ``("f", "Phi_p")``, plus ``"subset"`` when ``words`` is given.
    prompt : str or None, e.g. ``" This movie is"`` (text models only).
    words : the subset S: word ids, or words (resolved with :func:`resolve_words`).
    batch_size, max_tokens : rows and padded tokens per batch at most.
    cache : reuse and store results in ``config.cache_dir()/features``, keyed by
        ``model.fingerprint()`` (a Hugging Face model's weight files or hub revision), the
        encoded token ids and every setting.
    progress : show a tqdm progress bar.
    also_without_prompt : with a prompt, also return every kind *without* it, under the key
        ``kind + "_noprompt"``, read from the same forward pass at the text's last token (exact:
        a causal LM's state there does not see the prompt); texts whose tokens change when the
        prompt is appended, or that are truncated, get a forward pass of their own.
    max_length : tokens kept per input (default: the model's window).
    chunk_size : vocabulary columns per softmax chunk.

    Returns
    -------
    dict with one float32 numpy array per kind (and per ``kind + "_noprompt"``), plus
    ``"subset_ids"`` (k,) and ``"subset_tokens"`` (k,) str when ``"subset"`` is asked for.
    """
    if kinds is None:
        kinds = ("f", "Phi_p") + (("subset",) if words is not None else ())
    kinds = tuple(dict.fromkeys((kinds,) if isinstance(kinds, str) else kinds))
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}.")
    batch_size, chunk_size = check_int(batch_size, "batch_size"), check_int(chunk_size, "chunk_size")
    word_ids = word_tokens = None
    if "subset" in kinds:
        if words is None:
            raise ValueError("kinds includes 'subset' but words is None; pass words=[...] "
                             "(e.g. tasks.WORDS['sentiment']).")
        word_ids, word_tokens = _word_ids(model, words)
    both = bool(also_without_prompt) and prompt is not None
    ids, n_trunc = model.encode(inputs, prompt=prompt, max_length=max_length)
    want = [[len(x) - 1] for x in ids]
    redo = []
    if both:
        plain, _ = model.encode(inputs, max_length=max_length)
        for i, (p, q) in enumerate(zip(ids, plain)):
            if len(q) < len(p) and p[:len(q)] == q:
                want[i].insert(0, len(q) - 1)
            else:
                redo.append(i)
    path = None
    if cache:
        settings = [sorted(kinds), both, None if word_ids is None else word_ids.tolist(), chunk_size]
        path = _cache_path(model, ids + ([plain[i] for i in redo] if both else []), settings)
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            except Exception:  # a corrupt entry: recompute
                pass
    if n_trunc:
        warnings.warn(f"{n_trunc} of {len(ids)} inputs were longer than the context window "
                      f"({max_length or model.max_length} tokens) and were truncated from the left "
                      "(a prompt is kept).", UserWarning, stacklevel=2)
    run = ids + ([plain[i] for i in redo] if both else [])
    H = hidden(model, run, want + [[len(plain[i]) - 1] for i in redo] if both else "last",
               batch_size, max_tokens, progress)
    if both:
        ends = np.cumsum([len(w) for w in want]) - 1
        F, G = H[ends], H[ends - 1]
        G[redo] = H[len(H) - len(redo):]
    else:
        F = H
    out = _derived(model, F, kinds, word_ids, chunk_size)
    if both:
        out.update({k + "_noprompt": v for k, v in _derived(model, G, kinds, word_ids, chunk_size).items()})
    if "subset" in kinds:
        out["subset_ids"] = np.asarray(word_ids, dtype=np.int64)
        out["subset_tokens"] = np.asarray(word_tokens, dtype=str)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **out)
        os.replace(tmp, path)
    return out


def contexts(model, inputs, n_contexts=None, skip_first: int = 0, max_tokens=None, seed=0, batch_size: int = 32,
             progress: bool = False, return_info: bool = False):
    r"""Context features :math:`f(s)` at *every* position of many inputs (or a sample of them).

    Each input is encoded by ``model.encode`` (for a Hugging Face model: its special prefix such
    as BOS, no suffix) and **cut to its first** ``max_tokens`` **tokens**. Position t of an input
    is the context s = (its tokens 0..t), so one forward pass gives a context per token. The first
    ``skip_first`` positions of every input are dropped. With ``n_contexts``, that many of the
    remaining (input, position) pairs are sampled uniformly without replacement
    (``np.sort(np.random.default_rng(seed).choice(total, n_contexts, replace=False))`` over the
    pairs in (input, position) order), and each input is run only up to its last sampled position
    (exact: a causal LM's state at t does not see later tokens). Batching is :func:`hidden`'s.

    Nothing is cut silently: with ``return_info=False`` a ``UserWarning`` says how many inputs
    were longer than ``max_tokens``; with ``return_info=True`` the count is returned instead.

    Parameters
    ----------
    model : a :class:`lmdownstream.lm.SoftmaxLM`.
    inputs : texts (HFLM) or token-id sequences, e.g. ``corpus.ids[:, :-1]`` (-1 = padding).
    n_contexts : None (all positions) or an int >= 1.
    skip_first : int >= 0, positions dropped at the start of each input.
    max_tokens : int in [skip_first + 1, model.max_length], tokens kept per input (default: the window).
    seed : seed of the sample. batch_size : sequences per forward pass. progress : tqdm bar.
    return_info : also return ``info``: ``position`` (n,) token position of each row,
        ``n_truncated``, ``n_available`` (contexts before sampling), ``n_texts``.

    Returns
    -------
    ``(F, groups)``: F (n, d) float32 rows ordered by (input, position), groups (n,) int64 the
    input of each row (for splits that keep an input on one side); or ``(F, groups, info)``.
    """
    if not all(hasattr(model, a) for a in ("encode", "hidden_states", "d", "max_length")):
        raise ValueError(f"model must follow lmdownstream.lm.SoftmaxLM (TableLM, TinyLM, HFLM), "
                         f"got {type(model).__name__}.")
    skip_first = check_int(skip_first, "skip_first", low=0)
    max_tokens = model.max_length if max_tokens is None else check_int(max_tokens, "max_tokens", low=skip_first + 1)
    if max_tokens > model.max_length:
        raise ValueError(f"max_tokens={max_tokens} exceeds the context window of {model.name} "
                         f"({model.max_length} tokens); pass max_tokens <= {model.max_length}.")
    if n_contexts is not None:
        n_contexts = check_int(n_contexts, "n_contexts")
    ids, _ = model.encode(inputs, max_length=math.inf)
    n_truncated = sum(len(x) > max_tokens for x in ids)
    ids = [x[:max_tokens] for x in ids]
    avail = np.array([max(len(x) - skip_first, 0) for x in ids])
    total = int(avail.sum())
    if total == 0:
        raise ValueError(f"no context is left: every input has at most skip_first={skip_first} tokens; "
                         "pass longer inputs or lower skip_first.")
    starts = np.concatenate([[0], np.cumsum(avail)])
    if n_contexts is None:
        chosen = np.arange(total)
    elif n_contexts > total:
        per = total / len(ids)
        raise ValueError(
            f"n_contexts={n_contexts} but only {total} contexts are available from {len(ids)} inputs "
            f"({per:.1f} per input with max_tokens={max_tokens}, skip_first={skip_first}); pass about "
            f"{math.ceil(n_contexts / per)} inputs of this kind, raise max_tokens, or lower n_contexts.")
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=n_contexts, replace=False))
    group = np.searchsorted(starts, chosen, side="right") - 1
    position = chosen - starts[group] + skip_first
    used, first = np.unique(group, return_index=True)
    bounds = np.append(first, len(group))
    want = [position[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    run = [ids[i][:int(p[-1]) + 1] for i, p in zip(used, want)]
    F = hidden(model, run, want, batch_size, 8192, progress)
    if not np.all(np.isfinite(F)):
        raise ValueError(f"{model.name} produced NaN or inf hidden states; check the model's dtype (try float32).")
    groups = group.astype(np.int64)
    if return_info:
        info = dict(position=position.astype(np.int64), n_truncated=int(n_truncated), n_available=total,
                    n_texts=len(ids))
        return F, groups, info
    if n_truncated:
        warnings.warn(f"{n_truncated} of {len(ids)} inputs were longer than max_tokens={max_tokens} tokens and "
                      f"were cut to their first {max_tokens} tokens.", UserWarning, stacklevel=2)
    return F, groups
