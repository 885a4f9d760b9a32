r"""Small causal transformer language models trained from scratch with cross-entropy or Quad.

The model is a softmax LM in the paper's view: a transformer body (a ``transformers``
:class:`~transformers.GPT2Config`: learned positions, pre-norm blocks, a final layer norm) maps a
context s to :math:`f(s) \in \mathbb{R}^d` (optionally followed by one extra :math:`d\times d` affine
layer, as in the paper's official Quad code), and word embeddings :math:`\Phi \in \mathbb{R}^{d\times V}`
give the logits :math:`\Phi^\top f(s)`. :math:`\Phi` is *tied* (the input embeddings), *untied*
(its own parameter) or *fixed* (a given matrix, never trained).

* :class:`TinyLM` -- the model; :meth:`TinyLM.hidden` gives f at every position,
  :meth:`TinyLM.features` f (and :math:`\Phi p_f`) at the last token of each sequence.
* :class:`Corpus`, :func:`hmm_corpus`, :func:`train_tokenizer`, :func:`text_corpus` -- training
  data: sentences sampled from an :class:`~lmdownstream.synthetic.HMMLanguage` (exact
  :math:`p^*`), or real text cut into blocks by a byte-level BPE trained here (or any Hugging Face
  tokenizer, e.g. SmolLM2's).
* :func:`train_lm` -- AdamW with warm-up and cosine decay, on ``"xent"``
  (:math:`-\log p_{f(s)}(w)`) or ``"quad"`` (:math:`-f(s)^\top\phi_w + \tfrac12\|\Phi^\top f(s)\|^2`);
  deterministic for a seed (the batch of step t depends only on (seed, t)), checkpointed in
  :func:`lmdownstream.config.cache_dir` and resumable; a finished run is loaded, not retrained.
* :func:`evaluate` -- held-out cross-entropy (for every model through
  :math:`\mathrm{softmax}(\Phi^\top f)`) and Quad loss; :func:`exact_excess` -- on an HMM corpus,
  the exact :math:`\varepsilon` (mean KL from :math:`p^*`), the Quad excess
  :math:`\tfrac12\|\Phi^\top(f-\theta^*)\|^2` with :math:`\theta^* = (\Phi\Phi^\top)^{-1}\Phi p^*`, and
  the relative distance to that optimum.

The Quad loss never forms the (tokens x V) logits: :math:`\|\Phi^\top f\|^2 = f^\top(\Phi\Phi^\top)f`
with the :math:`d\times d` Gram matrix, so its output layer costs :math:`O(d^2)` per token instead
of :math:`O(dV)`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import config
from ._checks import as_array
from .hf import _check_texts  # the same validation (and messages) as feature extraction

__all__ = ["LOSSES", "TinyLM", "Corpus", "hmm_corpus", "train_tokenizer", "text_corpus", "train_lm",
           "TrainResult", "batch_loss", "evaluate", "exact_excess", "load_run", "contexts"]

LOSSES = ("xent", "quad")
_PAD = -1  # target id of padding (never predicted, never counted)
_VERSION = 1  # bump when training changes, to invalidate old checkpoints


def _check_int(x, name, low=1):
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x < low:
        raise ValueError(f"{name} must be an int >= {low}, got {x!r}.")
    return int(x)


def _check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
    return loss


@contextlib.contextmanager
def _seeded(seed):
    """Run the block with torch's global RNG seeded, then restore the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


# --------------------------------------------------------------------------- the model
class TinyLM(nn.Module):
    r"""A small causal transformer softmax LM: :math:`p_{f(s)} = \mathrm{softmax}(\Phi^\top f(s))`.

    Parameters
    ----------
    vocab_size : int >= 2, V (input and output vocabulary, special tokens included).
    d : int, width (embedding and feature dimension); must be divisible by ``n_heads``.
    n_layers, n_heads : transformer depth and heads.
    max_length : int, the context window (positions) in tokens.
    Phi : ``"tied"`` (:math:`\Phi` is the transposed input embedding), ``"untied"`` (its own
        parameter) or a (d, V) array/tensor (``"fixed"``: a buffer that is never trained).
    affine : bool, add a trainable :math:`d\times d` affine layer after the final layer norm
        (initialised to the identity), so :math:`f(s) = W h(s) + c`.
    seed : int, seeds the initialisation (the caller's RNG state is left untouched).

    Attributes
    ----------
    phi_mode : ``"tied"``, ``"untied"`` or ``"fixed"``. body : the ``transformers`` GPT2Model.
    """

    def __init__(self, vocab_size: int, d: int = 128, n_layers: int = 2, n_heads: int = 4, max_length: int = 64,
                 Phi="tied", affine: bool = False, seed: int = 0):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        V = _check_int(vocab_size, "vocab_size", low=2)
        d = _check_int(d, "d")
        n_heads = _check_int(n_heads, "n_heads")
        if d % n_heads:
            raise ValueError(f"d={d} is not divisible by n_heads={n_heads}; pick d a multiple of n_heads.")
        self.cfg = GPT2Config(vocab_size=V, n_positions=_check_int(max_length, "max_length", low=2), n_embd=d,
                              n_layer=_check_int(n_layers, "n_layers"), n_head=n_heads, resid_pdrop=0.0,
                              embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
        self.vocab_size, self.d, self.max_length = V, d, self.cfg.n_positions
        with _seeded(seed):
            self.body = GPT2Model(self.cfg)
            self.affine = None
            if affine:
                self.affine = nn.Linear(d, d)
                nn.init.eye_(self.affine.weight)
                nn.init.zeros_(self.affine.bias)
            if isinstance(Phi, str):
                if Phi not in ("tied", "untied"):
                    raise ValueError(f"Phi must be 'tied', 'untied' or a (d, V) matrix, got {Phi!r}.")
                self.phi_mode = Phi
                if Phi == "untied":
                    self.Phi_param = nn.Parameter(torch.randn(d, V) * self.cfg.initializer_range)
            else:
                P = torch.as_tensor(as_array(Phi, "Phi", ndim=2), dtype=torch.float32)
                if P.shape != (d, V):
                    raise ValueError(f"a fixed Phi must have shape (d, V) = ({d}, {V}), got {tuple(P.shape)}.")
                self.phi_mode = "fixed"
                self.register_buffer("Phi_fixed", P.clone())

    @property
    def Phi(self) -> torch.Tensor:
        """The output word embeddings, (d, V) tensor."""
        if self.phi_mode == "tied":
            return self.body.wte.weight.T
        if self.phi_mode == "untied":
            return self.Phi_param
        return self.Phi_fixed

    def hidden(self, ids, attention_mask=None) -> torch.Tensor:
        """f at every position: ids (B, T) long, T <= max_length -> (B, T, d) float32 (after the final
        norm and the affine layer). Position t sees tokens 0..t only (causal)."""
        if ids.shape[-1] > self.max_length:
            raise ValueError(f"sequences have {ids.shape[-1]} tokens but the model's window is {self.max_length}; "
                             "cut them (TinyLM.features keeps the last max_length tokens).")
        h = self.body(input_ids=ids, attention_mask=attention_mask).last_hidden_state
        return self.affine(h) if self.affine is not None else h

    def forward(self, ids, attention_mask=None) -> torch.Tensor:
        """Logits :math:`\\Phi^\\top f` at every position, (B, T, V)."""
        return self.hidden(ids, attention_mask) @ self.Phi

    def features(self, sequences, kinds=("f",), batch_size: int = 256, progress: bool = False) -> dict:
        r"""Features at the last token of each sequence: ``"f"`` (n, d) and/or ``"Phi_p"`` (n, d)
        (:math:`\Phi\,\mathrm{softmax}(\Phi^\top f)`), float32 numpy.

        ``sequences`` is an (n, T) int array or a list of n non-empty int lists (ragged is fine).
        Sequences longer than the window keep their *last* ``max_length`` tokens (the count is
        returned as ``out["n_truncated"]``).
        """
        from .features import conditional_mean

        seqs = _as_sequences(sequences, self.vocab_size)
        bad = [k for k in kinds if k not in ("f", "Phi_p")]
        if bad or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of ('f', 'Phi_p'), got {kinds!r}.")
        n_trunc = sum(len(s) > self.max_length for s in seqs)
        seqs = [s[-self.max_length:] for s in seqs]
        dev = next(self.parameters()).device
        out = {k: np.empty((len(seqs), self.d), dtype=np.float32) for k in kinds}
        order = np.argsort([-len(s) for s in seqs], kind="stable")
        was = self.training
        self.eval()
        bar = _bar(len(seqs), "features", progress)
        try:
            with torch.inference_mode():
                for a in range(0, len(seqs), batch_size):
                    idx = order[a:a + batch_size]
                    L = len(seqs[idx[0]])
                    ids = torch.zeros(len(idx), L, dtype=torch.long)
                    mask = torch.zeros(len(idx), L, dtype=torch.long)
                    for r, i in enumerate(idx):
                        ids[r, :len(seqs[i])] = torch.as_tensor(seqs[i])
                        mask[r, :len(seqs[i])] = 1
                    ids, mask = ids.to(dev), mask.to(dev)
                    h = self.hidden(ids, None if bool(mask.all()) else mask)
                    f = h[torch.arange(len(idx), device=dev), mask.sum(1) - 1]
                    if "f" in kinds:
                        out["f"][idx] = f.float().cpu().numpy()
                    if "Phi_p" in kinds:
                        out["Phi_p"][idx] = conditional_mean(f.float(), self.Phi.float()).cpu().numpy()
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            self.train(was)
            if bar is not None:
                bar.close()
        out["n_truncated"] = int(n_trunc)
        return out


def _as_sequences(sequences, V):
    if isinstance(sequences, np.ndarray) or torch.is_tensor(sequences):
        arr = np.asarray(sequences)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"sequences must be a non-empty (n, T) int array, got shape {arr.shape}.")
        seqs = [list(map(int, row)) for row in arr]
    else:
        seqs = [list(map(int, s)) for s in sequences]
        if not seqs:
            raise ValueError("sequences is empty; pass at least one sequence of token ids.")
    for i, s in enumerate(seqs):
        if not s:
            raise ValueError(f"sequence {i} is empty; every sequence needs at least one token.")
        if min(s) < 0 or max(s) >= V:
            raise ValueError(f"sequence {i} has a token id outside 0..{V - 1}; is it from the model's tokenizer?")
    return seqs


def _bar(total, desc, progress):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


# --------------------------------------------------------------------------- corpora
@dataclass
class Corpus:
    """Training sequences: ``ids`` (n, T+1) int64, each row a sequence whose tokens 1..T are
    predicted from the tokens before them; ``-1`` marks padding (never predicted).

    Attributes: ``ids``, ``vocab_size``, ``name``, ``bos_id`` (the id at position 0 of HMM
    sequences, or None), ``hmm`` (the :class:`~lmdownstream.synthetic.HMMLanguage` it was sampled
    from, or None), ``tokenizer`` (for text corpora, or None).
    """

    ids: np.ndarray
    vocab_size: int
    name: str = "corpus"
    bos_id: int | None = None
    hmm: object = None
    tokenizer: object = None

    def __post_init__(self):
        ids = np.asarray(self.ids)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] < 2:
            raise ValueError(f"ids must be an (n, T+1) int array with n >= 1 and T >= 1, got shape {ids.shape}.")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}.")
        if ids.min() < _PAD or ids.max() >= self.vocab_size:
            raise ValueError(f"ids must lie in 0..{self.vocab_size - 1} (or -1 for padding).")
        if np.any(ids[:, 0] == _PAD):
            raise ValueError("a sequence starts with padding; every row needs a real first token.")
        self.ids = ids.astype(np.int64)

    def __len__(self):
        return self.ids.shape[0]

    @property
    def n_tokens(self) -> int:
        """Number of predicted tokens (targets that are not padding)."""
        return int((self.ids[:, 1:] != _PAD).sum())

    def split(self, test_fraction: float = 0.1, seed: int = 0):
        """(train, test) Corpus objects from a seeded random split of the rows."""
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
        n = len(self)
        n_test = int(round(n * test_fraction))
        if n_test < 1 or n_test >= n:
            raise ValueError(f"{n} sequences cannot be split with test_fraction={test_fraction}; pass more data.")
        perm = np.random.default_rng(seed).permutation(n)
        part = lambda rows, tag: Corpus(self.ids[np.sort(rows)], self.vocab_size, f"{self.name}/{tag}",  # noqa: E731
                                         self.bos_id, self.hmm, self.tokenizer)
        return part(perm[n_test:], "train"), part(perm[:n_test], "test")

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.vocab_size}|{self.ids.shape}".encode())
        h.update(np.ascontiguousarray(self.ids).tobytes())
        return h.hexdigest()[:16]


def hmm_corpus(hmm, n: int, length: int, seed: int = 0) -> Corpus:
    """n sentences of ``length`` words sampled from an :class:`~lmdownstream.synthetic.HMMLanguage`,
    each preceded by a BOS token with id ``hmm.vocab_size`` (so ``vocab_size = V + 1``): ids (n, length+1).

    The model then predicts every word, the first one from BOS alone; BOS itself is never a target
    and :math:`p^*(\\text{BOS}|s) = 0`.
    """
    w = hmm.sample(_check_int(n, "n"), _check_int(length, "length"), seed=seed)
    V = hmm.vocab_size
    ids = np.concatenate([np.full((w.shape[0], 1), V, dtype=np.int64), w], axis=1)
    return Corpus(ids, V + 1, name=f"hmm(S={hmm.n_states}, V={V}, L={length}, seed={seed})", bos_id=V, hmm=hmm)


def train_tokenizer(texts, vocab_size: int = 2000, min_frequency: int = 2):
    """A byte-level BPE tokenizer trained on ``texts`` with the ``tokenizers`` library, wrapped as a
    ``transformers.PreTrainedTokenizerFast`` with ``<|endoftext|>`` as EOS (id 0). Deterministic.
    Byte-level, so no text is ever out of vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = _check_texts(texts)
    _check_int(vocab_size, "vocab_size", low=257 + 1)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def text_corpus(texts, tokenizer, block: int = 64, name: str = "text") -> Corpus:
    """Real text as training blocks: every text is tokenized, followed by the EOS token, all are
    concatenated and cut into consecutive blocks of ``block + 1`` tokens that overlap by one token
    (so every token but the very first is predicted exactly once). The last block is padded with
    -1; nothing is dropped. ``tokenizer``: from :func:`train_tokenizer`, or any Hugging Face tokenizer
    with an EOS token (e.g. ``load_lm("smollm2").tokenizer``)."""
    texts = _check_texts(texts)
    block = _check_int(block, "block", low=1)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token before building a corpus.")
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    stream = np.fromiter((t for ids in enc for t in (*ids, eos)), dtype=np.int64)
    n_blocks = max(1, math.ceil((stream.shape[0] - 1) / block))
    ids = np.full((n_blocks, block + 1), _PAD, dtype=np.int64)
    for b in range(n_blocks):
        chunk = stream[b * block: b * block + block + 1]
        ids[b, :chunk.shape[0]] = chunk
    return Corpus(ids, len(tokenizer), name=name, tokenizer=tokenizer)


# --------------------------------------------------------------------------- losses
def batch_loss(model: TinyLM, ids, loss: str = "xent", reduction: str = "mean") -> torch.Tensor:
    r"""Mean per-token loss of ``model`` on a batch ids (B, T+1) (``-1`` = padding).

    ``"xent"``: :math:`-\log\mathrm{softmax}(\Phi^\top f)_w`. ``"quad"``:
    :math:`-f^\top\phi_w + \tfrac12 f^\top(\Phi\Phi^\top)f`, the sample form of
    :func:`lmdownstream.losses.quad_loss`, computed without the (tokens x V) logits.
    ``reduction="sum"`` returns the sum and ``"none"`` the per-token values of the real targets.
    """
    _check_loss(loss)
    ids = torch.as_tensor(ids, dtype=torch.long, device=next(model.parameters()).device)
    inp, tgt = ids[:, :-1], ids[:, 1:]
    mask = tgt != _PAD
    attn = (inp != _PAD).long()
    inp = inp.clamp_min(0)
    h = model.hidden(inp, None if bool(attn.all()) else attn)
    f, w = h[mask], tgt[mask]
    Phi = model.Phi
    if loss == "xent":
        per = F.cross_entropy(f @ Phi, w, reduction="none")
    else:
        G = Phi @ Phi.T
        per = 0.5 * ((f @ G) * f).sum(1) - (f * Phi.T[w]).sum(1)
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.mean()


# --------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What :func:`train_lm` returns: the trained ``model`` (eval mode), the ``history`` of
    (step, training loss) pairs (mean over the steps since the previous entry), ``settings``
    (all hyper-parameters), the checkpoint ``path``, ``seconds`` spent training in this call and
    whether the run was ``loaded`` from a finished checkpoint."""

    model: TinyLM
    history: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    path: object = None
    seconds: float = 0.0
    loaded: bool = False


def _lr_at(step, steps, lr, warmup):
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _run_key(corpus, settings, Phi):
    h = hashlib.sha256()
    h.update(json.dumps([_VERSION, corpus.fingerprint(), settings], sort_keys=True).encode())
    if Phi is not None:
        h.update(np.ascontiguousarray(np.asarray(Phi, dtype=np.float32)).tobytes())
    return h.hexdigest()[:20]


def train_lm(corpus: Corpus, loss: str = "xent", Phi="tied", affine: bool = False, d: int = 128,
             n_layers: int = 2, n_heads: int = 4, steps: int = 1000, batch_size: int = 32, lr: float = 3e-3,
             warmup: int | None = None, weight_decay: float = 0.0, grad_clip: float = 1.0, seed: int = 0,
             checkpoint_every: int | None = None, cache: bool = True, resume: bool = True, progress: bool = True,
             device=None, threads: int | None = None, log_every: int | None = None) -> TrainResult:
    r"""Train a :class:`TinyLM` from scratch on ``corpus`` with ``loss`` = ``"xent"`` or ``"quad"``.

    AdamW (``weight_decay`` on matrices only) with linear warm-up over ``warmup`` steps (default 5%)
    and cosine decay to zero at ``steps``; gradient-norm clipping at ``grad_clip``. Step t trains on
    ``batch_size`` rows drawn with ``np.random.default_rng([seed, t])``, so a run depends only on its
    arguments (bit-identical on the same machine and thread count) and a resumed run continues
    exactly where it stopped.

    Checkpoints: with ``cache=True`` the state (model, optimizer, step, history) is saved every
    ``checkpoint_every`` steps (default: a quarter of the run) under
    ``cache_dir()/train/<key>/`` where the key hashes the corpus, every setting and a fixed
    :math:`\Phi`. A finished run with the same key is loaded instead of retrained; an unfinished one
    is resumed when ``resume=True``.

    Parameters
    ----------
    corpus : :class:`Corpus` (from :func:`hmm_corpus` or :func:`text_corpus`).
    loss : ``"xent"`` or ``"quad"``. Phi, affine, d, n_layers, n_heads : see :class:`TinyLM`
        (``max_length`` is the corpus's sequence length).
    steps, batch_size, lr, warmup, weight_decay, grad_clip, seed : optimisation settings.
    device : torch device (default :func:`lmdownstream.config.device`). threads : torch threads
        during training (restored afterwards; default: unchanged).
    progress : show a progress bar with the running loss. log_every : history resolution in steps
        (default ``steps // 50``).

    Returns
    -------
    :class:`TrainResult`.
    """
    if not isinstance(corpus, Corpus):
        raise ValueError("corpus must be a Corpus (from hmm_corpus or text_corpus).")
    _check_loss(loss)
    steps = _check_int(steps, "steps")
    batch_size = _check_int(batch_size, "batch_size")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    warmup = max(1, steps // 20) if warmup is None else _check_int(warmup, "warmup", low=0) or 1
    log_every = max(1, steps // 50) if log_every is None else _check_int(log_every, "log_every")
    checkpoint_every = max(1, steps // 4) if checkpoint_every is None else _check_int(checkpoint_every, "checkpoint_every")
    T = corpus.ids.shape[1] - 1
    fixed = None if isinstance(Phi, str) else np.asarray(as_array(Phi, "Phi", ndim=2), dtype=np.float32)
    settings = dict(loss=loss, Phi=Phi if isinstance(Phi, str) else "fixed", affine=bool(affine), d=int(d),
                    n_layers=int(n_layers), n_heads=int(n_heads), max_length=T, steps=steps, batch_size=batch_size,
                    lr=float(lr), warmup=warmup, weight_decay=float(weight_decay), grad_clip=float(grad_clip),
                    seed=int(seed), vocab_size=int(corpus.vocab_size), corpus=corpus.name, n_sequences=len(corpus))
    dev = torch.device(device) if device is not None else config.device()
    model = TinyLM(corpus.vocab_size, d=d, n_layers=n_layers, n_heads=n_heads, max_length=T,
                   Phi=Phi if fixed is None else fixed, affine=affine, seed=seed).to(dev)
    decay = [p for n_, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n_, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(weight_decay)},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    path = config.cache_dir() / "train" / _run_key(corpus, settings, fixed) if cache else None
    start, history = 0, []
    if path is not None and resume and (path / "state.pt").exists():
        state = torch.load(path / "state.pt", map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), list(state["history"])
        if start >= steps:
            model.eval()
            return TrainResult(model, history, settings, path, 0.0, True)

    data = torch.as_tensor(corpus.ids)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(_check_int(threads, "threads"))
    bar = _bar(steps, f"train {loss}/{settings['Phi']}", progress)
    if bar is not None:
        bar.update(start)
    t0, run_sum, run_n = time.perf_counter(), 0.0, 0
    model.train()
    try:
        for step in range(start, steps):
            rows = np.random.default_rng([int(seed), step]).integers(0, len(corpus), batch_size)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, lr, warmup)
            value = batch_loss(model, data[rows].to(dev), loss)
            if not torch.isfinite(value):
                raise FloatingPointError(f"the {loss} loss became {value.item()} at step {step}; lower lr "
                                         f"(now {lr}) or grad_clip.")
            opt.zero_grad(set_to_none=True)
            value.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            run_sum, run_n = run_sum + float(value.detach()), run_n + 1
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history.append((step + 1, run_sum / run_n))
                run_sum, run_n = 0.0, 0
                if bar is not None:
                    bar.set_postfix(loss=f"{history[-1][1]:.4f}")
            if bar is not None:
                bar.update(1)
            if path is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                _save(path, model, opt, step + 1, history, settings)
    finally:
        torch.set_num_threads(before)
        if bar is not None:
            bar.close()
    model.eval()
    return TrainResult(model, history, settings, path, time.perf_counter() - t0, False)


def _save(path, model, opt, step, history, settings):
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "state.pt.tmp"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "history": history,
                "settings": settings}, tmp)
    tmp.replace(path / "state.pt")  # atomic: a killed run never leaves a half-written checkpoint
    (path / "settings.json").write_text(json.dumps(settings, indent=1))


def load_run(path, device=None) -> TrainResult:
    """Load a checkpoint folder written by :func:`train_lm` (finished or not) as a :class:`TrainResult`."""
    from pathlib import Path

    path = Path(path)
    if not (path / "state.pt").exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train_lm(..., cache=True) writes one there.")
    dev = torch.device(device) if device is not None else config.device()
    state = torch.load(path / "state.pt", map_location=dev, weights_only=False)
    s = state["settings"]
    Phi = state["model"]["Phi_fixed"].cpu().numpy() if s["Phi"] == "fixed" else s["Phi"]
    model = TinyLM(s["vocab_size"], d=s["d"], n_layers=s["n_layers"], n_heads=s["n_heads"], max_length=s["max_length"],
                   Phi=Phi, affine=s["affine"]).to(dev)
    model.load_state_dict(state["model"])
    model.eval()
    return TrainResult(model, list(state["history"]), s, path, 0.0, True)


# --------------------------------------------------------------------------- evaluation
def contexts(model: TinyLM, corpus: Corpus, n_contexts: int | None = None, seed: int = 0, batch_size: int = 256):
    """Features f(s) of many contexts: every non-padding position of every sequence of ``corpus``
    is a context (the sequence up to that token). Returns ``(F, groups)``: F (n, d) float32 and
    the sequence index of each row (for splits that keep a sequence on one side). With
    ``n_contexts``, a seeded uniform sample of that many positions without replacement."""
    ids = corpus.ids[:, :-1]
    valid = ids != _PAD
    total = int(valid.sum())
    if n_contexts is not None:
        n_contexts = _check_int(n_contexts, "n_contexts")
        if n_contexts > total:
            raise ValueError(f"the corpus has {total} contexts, fewer than n_contexts={n_contexts}; pass a larger corpus.")
    dev = next(model.parameters()).device
    F_all = np.empty((total, model.d), dtype=np.float32)
    groups = np.repeat(np.arange(ids.shape[0]), valid.sum(1))
    at = 0
    with torch.inference_mode():
        for a in range(0, ids.shape[0], batch_size):
            x = torch.as_tensor(ids[a:a + batch_size])
            m = x != _PAD
            h = model.hidden(x.clamp_min(0).to(dev), None if bool(m.all()) else m.long().to(dev))
            rows = h[m.to(dev)].float().cpu().numpy()
            F_all[at:at + rows.shape[0]] = rows
            at += rows.shape[0]
    if n_contexts is None:
        return F_all, groups
    pick = np.sort(np.random.default_rng(seed).choice(total, n_contexts, replace=False))
    return F_all[pick], groups[pick]


def evaluate(model: TinyLM, corpus: Corpus, batch_size: int = 256, temperature: float = 1.0) -> dict:
    r"""Held-out per-token losses: ``xent`` (nats, through :math:`\mathrm{softmax}(\Phi^\top f / T)` with
    T = ``temperature``, for models trained with either loss), ``quad`` and ``n_tokens``."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
    sums, n = {"xent": 0.0, "quad": 0.0}, 0
    with torch.inference_mode():
        for a in range(0, len(corpus), batch_size):
            ids = torch.as_tensor(corpus.ids[a:a + batch_size])
            f, w = _targets(model, ids)
            Phi = model.Phi
            sums["xent"] += float(F.cross_entropy(f @ Phi / temperature, w, reduction="sum"))
            sums["quad"] += float((0.5 * ((f @ (Phi @ Phi.T)) * f).sum(1) - (f * Phi.T[w]).sum(1)).sum())
            n += int(w.shape[0])
    return {"xent": sums["xent"] / n, "quad": sums["quad"] / n, "n_tokens": n}


def _targets(model, ids):
    dev = next(model.parameters()).device
    ids = ids.to(dev)
    inp, tgt = ids[:, :-1], ids[:, 1:]
    mask = tgt != _PAD
    attn = (inp != _PAD).long()
    h = model.hidden(inp.clamp_min(0), None if bool(attn.all()) else attn)
    return h[mask], tgt[mask]


def exact_excess(model: TinyLM, corpus: Corpus, batch_size: int = 256) -> dict:
    r"""Exact excess losses on an HMM corpus (from :func:`hmm_corpus`), averaged over every predicted position.

    With :math:`p^*(\cdot|s)` from the HMM's forward algorithm (BOS gets probability 0):

    * ``eps``: :math:`\varepsilon = \mathbb{E}_s\,\mathrm{KL}(p^*(\cdot|s)\,\|\,p_{f(s)})`, the excess
      cross-entropy of :math:`\mathrm{softmax}(\Phi^\top f)`;
    * ``entropy``: :math:`\mathbb{E}_s H(p^*(\cdot|s))` (:math:`\ell^*_{xent}`);
    * ``quad_excess``: :math:`\mathbb{E}_s \tfrac12\|\Phi^\top(f(s) - \theta^*_s)\|^2` with
      :math:`\theta^*_s = (\Phi\Phi^\top)^{-1}\Phi p^*(\cdot|s)` the Quad optimum for the model's
      :math:`\Phi` (excess Quad loss over the best features for this :math:`\Phi`);
    * ``quad_rel``: :math:`\sqrt{\sum_s\|\Phi^\top(f-\theta^*)\|^2 / \sum_s\|\Phi^\top\theta^*\|^2}`,
      the relative distance to that optimum in logit space (0 at the optimum);
    * ``n``: number of positions.
    """
    from .lm import quad_optimal_f

    hmm = corpus.hmm
    if hmm is None or corpus.bos_id is None:
        raise ValueError("exact_excess needs a corpus from hmm_corpus (it knows its HMM and BOS).")
    ids = corpus.ids
    if np.any(ids == _PAD):
        raise ValueError("an HMM corpus has no padding; pass the corpus returned by hmm_corpus.")
    n, T1 = ids.shape
    V = hmm.vocab_size
    Phi = model.Phi.detach().double().cpu()
    Phi_np = Phi.numpy()
    tot = {"eps": 0.0, "entropy": 0.0, "quad_excess": 0.0, "num": 0.0, "den": 0.0}
    with torch.inference_mode():
        H = np.concatenate([model.hidden(torch.as_tensor(ids[a:a + batch_size, :-1]).to(
            next(model.parameters()).device)).double().cpu().numpy() for a in range(0, n, batch_size)])
    for t in range(T1 - 1):  # position t predicts word t+1 from BOS + words 1..t
        P = np.zeros((n, V + 1))
        P[:, :V] = hmm.next_word_dist(ids[:, 1:t + 1])
        f = torch.as_tensor(H[:, t])
        logp = torch.log_softmax(f @ Phi, dim=1).numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0)
        tot["eps"] += float((plogp.sum(1) - (P * logp).sum(1)).sum())
        tot["entropy"] -= float(plogp.sum())
        theta = quad_optimal_f(Phi_np, P)
        diff = (H[:, t] - theta) @ Phi_np
        opt = theta @ Phi_np
        tot["quad_excess"] += 0.5 * float((diff ** 2).sum())
        tot["num"] += float((diff ** 2).sum())
        tot["den"] += float((opt ** 2).sum())
    m = n * (T1 - 1)
    return {"eps": tot["eps"] / m, "entropy": tot["entropy"] / m, "quad_excess": tot["quad_excess"] / m,
            "quad_rel": math.sqrt(tot["num"] / tot["den"]), "n": m}
