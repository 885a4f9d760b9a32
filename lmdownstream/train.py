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
from torch import nn

from . import config, features, losses
from ._checks import as_array, check_choice, check_fraction, check_int, check_positive
from .hf import check_texts

__all__ = ["LOSSES", "TinyLM", "Corpus", "hmm_corpus", "train_tokenizer", "text_corpus", "train_lm",
           "TrainResult", "batch_loss", "evaluate", "exact_excess", "load_run", "contexts"]

LOSSES = ("xent", "quad")
_PAD = losses.PAD  # target id of padding (never predicted, never counted)
_VERSION = 1  # bump when training changes, to invalidate old checkpoints


@contextlib.contextmanager
def _seeded(seed):
    """Run the block with torch's global RNG seeded, then restore the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


# --------------------------------------------------------------------------- the model
class TinyLM(nn.Module):
    r"""A small causal transformer softmax LM: :math:`p_{f(s)} = \mathrm{softmax}(\Phi^\top f(s))`.

    A :class:`lmdownstream.lm.SoftmaxLM` whose inputs are token-id sequences, so
    :func:`lmdownstream.features.extract` and :func:`~lmdownstream.features.contexts` work on it.

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
    V (alias ``vocab_size``), d, max_length; ``bias`` is None.
    phi_mode : ``"tied"``, ``"untied"`` or ``"fixed"``. body : the ``transformers`` GPT2Model.
    """

    name = "TinyLM"
    bias = None

    def __init__(self, vocab_size: int, d: int = 128, n_layers: int = 2, n_heads: int = 4, max_length: int = 64,
                 Phi="tied", affine: bool = False, seed: int = 0):
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        V = check_int(vocab_size, "vocab_size", low=2)
        d = check_int(d, "d")
        n_heads = check_int(n_heads, "n_heads")
        if d % n_heads:
            raise ValueError(f"d={d} is not divisible by n_heads={n_heads}; pick d a multiple of n_heads.")
        self.cfg = GPT2Config(vocab_size=V, n_positions=check_int(max_length, "max_length", low=2), n_embd=d,
                              n_layer=check_int(n_layers, "n_layers"), n_head=n_heads, resid_pdrop=0.0,
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
                self.phi_mode = check_choice(Phi, "Phi ('tied', 'untied' or a (d, V) matrix)", ("tied", "untied"))
                if Phi == "untied":
                    self.Phi_param = nn.Parameter(torch.randn(d, V) * self.cfg.initializer_range)
            else:
                P = torch.as_tensor(as_array(Phi, "Phi", ndim=2), dtype=torch.float32)
                if P.shape != (d, V):
                    raise ValueError(f"a fixed Phi must have shape (d, V) = ({d}, {V}), got {tuple(P.shape)}.")
                self.phi_mode = "fixed"
                self.register_buffer("Phi_fixed", P.clone())

    @property
    def V(self) -> int:
        return self.vocab_size

    @property
    def device(self) -> torch.device:
        return self.body.wte.weight.device

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
                             "cut them (TinyLM.encode keeps the last max_length tokens).")
        h = self.body(input_ids=ids, attention_mask=attention_mask).last_hidden_state
        return self.affine(h) if self.affine is not None else h

    def forward(self, ids, attention_mask=None) -> torch.Tensor:
        """Logits :math:`\\Phi^\\top f` at every position, (B, T, V)."""
        return self.hidden(ids, attention_mask) @ self.Phi

    # ----------------------------------------------------------------- the protocol
    def encode(self, inputs, prompt=None, max_length=None):
        """Token-id sequences, checked: an (n, T) int array (trailing ``-1`` = padding, dropped) or a
        list of n non-empty int lists (ragged is fine). Sequences longer than ``max_length``
        (default the window; ``math.inf``: no limit) keep their *last* tokens. Returns
        ``(seqs, n_truncated)``."""
        if prompt is not None:
            raise ValueError("a TinyLM takes token ids, not text; append the prompt's ids yourself (prompt=None).")
        if isinstance(inputs, np.ndarray) or torch.is_tensor(inputs):
            arr = np.asarray(inputs)
            if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
                raise ValueError(f"sequences must be a non-empty (n, T) int array, got shape {arr.shape}.")
            seqs = [[int(t) for t in row if t != _PAD] for row in arr]
        else:
            seqs = [list(map(int, s)) for s in inputs]
            if not seqs:
                raise ValueError("sequences is empty; pass at least one sequence of token ids.")
        for i, s in enumerate(seqs):
            if not s:
                raise ValueError(f"sequence {i} is empty; every sequence needs at least one token.")
            if min(s) < 0 or max(s) >= self.V:
                raise ValueError(f"sequence {i} has a token id outside 0..{self.V - 1}; is it from the model's "
                                 "tokenizer?")
        limit = self.max_length if max_length is None else max_length
        n_trunc = sum(len(s) > limit for s in seqs)
        return [s[len(s) - limit:] if len(s) > limit else s for s in seqs], n_trunc

    def hidden_states(self, ids, positions="last") -> torch.Tensor:
        """f of one batch: ``ids`` a list of B token-id lists or a (B, T) tensor right-padded with -1;
        (B, d) at each row's last token for ``"last"``, (B, T, d) for ``"all"``. Differentiable."""
        check_choice(positions, "positions", ("last", "all"))
        x, mask, lengths = features.pad_batch(ids, self.device)
        h = self.hidden(x, None if bool(mask.all()) else mask.long())
        return h if positions == "all" else h[torch.arange(len(lengths), device=h.device), lengths - 1]

    def fingerprint(self) -> str:
        """Hash of every weight and the architecture (the cache key of ``features.extract``)."""
        return features.state_fingerprint(self, json.dumps([self.cfg.to_json_string(), self.phi_mode]))

    def features(self, sequences, kinds=("f",), batch_size: int = 256, progress: bool = False) -> dict:
        r"""Features at the last token of each sequence, float32 numpy: ``"f"`` (n, d), ``"Phi_p"``
        (n, d) (:math:`\Phi\,\mathrm{softmax}(\Phi^\top f)`), ... -- :func:`lmdownstream.features.extract`
        without the cache. Sequences longer than the window keep their *last* ``max_length``
        tokens (the count is returned as ``out["n_truncated"]``)."""
        seqs, n_trunc = self.encode(sequences)
        out = features.extract(self, seqs, kinds=kinds, batch_size=batch_size, cache=False, progress=progress)
        return dict(out, n_truncated=int(n_trunc))


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
        check_fraction(test_fraction, "test_fraction", open_low=True, open_high=True)
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
    w = hmm.sample(check_int(n, "n"), check_int(length, "length"), seed=seed)
    V = hmm.vocab_size
    ids = np.concatenate([np.full((w.shape[0], 1), V, dtype=np.int64), w], axis=1)
    return Corpus(ids, V + 1, name=f"hmm(S={hmm.n_states}, V={V}, L={length}, seed={seed})", bos_id=V, hmm=hmm)


def train_tokenizer(texts, vocab_size: int = 2000, min_frequency: int = 2):
    """A byte-level BPE tokenizer trained on ``texts`` with the ``tokenizers`` library, wrapped as a
    ``transformers.PreTrainedTokenizerFast`` with ``<|endoftext|>`` as EOS (id 0). Deterministic.
    Byte-level, so no text is ever out of vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = check_texts(texts)
    check_int(vocab_size, "vocab_size", low=257 + 1)
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
    texts = check_texts(texts)
    block = check_int(block, "block", low=1)
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
    r"""Mean per-token loss of ``model`` on a batch ids (B, T+1) (``-1`` = padding, ignored).

    ``"xent"``: :func:`lmdownstream.losses.xent_loss`, :math:`-\log\mathrm{softmax}(\Phi^\top f)_w`;
    ``"quad"``: :func:`lmdownstream.losses.quad_loss`, :math:`-f^\top\phi_w + \tfrac12 f^\top(\Phi\Phi^\top)f`,
    through the Gram matrix, never the (tokens x V) logits. ``reduction="sum"`` returns the sum
    and ``"none"`` the per-token values of the real targets (1-D).
    """
    check_choice(loss, "loss", LOSSES)
    ids = torch.as_tensor(ids, dtype=torch.long, device=model.device)
    tgt = ids[:, 1:]
    h = model.hidden_states(ids[:, :-1], positions="all")
    per = (losses.xent_loss if loss == "xent" else losses.quad_loss)(h, model.Phi, tgt, reduction=reduction)
    return per[tgt != _PAD] if reduction == "none" else per


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
    check_choice(loss, "loss", LOSSES)
    steps = check_int(steps, "steps")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    warmup = max(1, steps // 20) if warmup is None else check_int(warmup, "warmup", low=0) or 1
    log_every = max(1, steps // 50) if log_every is None else check_int(log_every, "log_every")
    checkpoint_every = max(1, steps // 4) if checkpoint_every is None else check_int(checkpoint_every, "checkpoint_every")
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
    limit = contextlib.nullcontext() if threads is None else config.threads(check_int(threads, "threads"), blas=False)
    bar = None
    if config.progress(progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=f"train {loss}/{settings['Phi']}", leave=False)
    t0, run_sum, run_n = time.perf_counter(), 0.0, 0
    model.train()
    with limit:
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
    ``n_contexts``, a seeded uniform sample of that many positions without replacement.
    :func:`lmdownstream.features.contexts` on ``corpus.ids[:, :-1]``."""
    return features.contexts(model, corpus.ids[:, :-1], n_contexts=n_contexts, seed=seed, batch_size=batch_size)


def evaluate(model: TinyLM, corpus: Corpus, batch_size: int = 256, temperature: float = 1.0) -> dict:
    r"""Held-out per-token losses: ``xent`` (nats, through :math:`\mathrm{softmax}(\Phi^\top f / T)` with
    T = ``temperature``, for models trained with either loss), ``quad`` and ``n_tokens``
    (:func:`lmdownstream.losses.xent_loss` and ``quad_loss``, padding ignored)."""
    temperature = check_positive(temperature, "temperature")
    sums, n = {"xent": 0.0, "quad": 0.0}, 0
    with torch.inference_mode():
        Phi = model.Phi
        G = Phi @ Phi.T
        for a in range(0, len(corpus), batch_size):
            ids = torch.as_tensor(corpus.ids[a:a + batch_size], device=model.device)
            h, tgt = model.hidden_states(ids[:, :-1], positions="all"), ids[:, 1:]
            sums["xent"] += float(losses.xent_loss(h / temperature, Phi, tgt, reduction="sum"))
            sums["quad"] += float(losses.quad_loss(h, Phi, tgt, reduction="sum", gram=G))
            n += int((tgt != _PAD).sum())
    return {"xent": sums["xent"] / n, "quad": sums["quad"] / n, "n_tokens": n}


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
    H = features.hidden(model, ids[:, :-1].tolist(), "all", batch_size=batch_size, max_tokens=batch_size * T1)
    H = H.reshape(n, T1 - 1, model.d).astype(np.float64)
    for t in range(T1 - 1):  # position t predicts word t+1 from BOS + words 1..t
        P = np.zeros((n, V + 1))
        P[:, :V] = hmm.next_word_dist(ids[:, 1:t + 1])
        entropy = float(losses.entropy(P).sum())
        xent = float(losses.xent_loss(torch.as_tensor(H[:, t]), Phi, torch.as_tensor(P), reduction="sum"))
        tot["eps"] += xent - entropy
        tot["entropy"] += entropy
        theta = losses.quad_optimum(Phi_np, P)
        diff = (H[:, t] - theta) @ Phi_np
        opt = theta @ Phi_np
        tot["quad_excess"] += 0.5 * float((diff ** 2).sum())
        tot["num"] += float((diff ** 2).sum())
        tot["den"] += float((opt ** 2).sum())
    m = n * (T1 - 1)
    return {"eps": tot["eps"] / m, "entropy": tot["entropy"] / m, "quad_excess": tot["quad_excess"] / m,
            "quad_rel": math.sqrt(tot["num"] / tot["den"]), "n": m}
