"""Test-wide settings and shared fixtures: never reach the network, draw no windows.

Shared helpers live here (no test module imports another): ``make_tiny_gpt2`` (a tiny random
GPT-2 and tokenizer saved to a folder), ``tiny_gpt2_folder`` (one such folder per session),
``tmp_cache`` (an empty ``LMDOWNSTREAM_CACHE``) and ``small_training``.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # book tooling (editions) lives outside the package

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


#: Text on which the tiny tokenizer is trained (and that tests feed to it).
TINY_CORPUS = [
    "the movie was great and the acting was wonderful",
    "a terrible boring film with a sad ending",
    "stocks fell as the market reacted to the news",
    "the team won the match in the final minute",
    "this article is about technology and science",
    "i loved it :) but my friend hated it :(",
    "the government announced a new policy on business",
] * 20


def _make_tiny_gpt2(folder, n_positions=64, tie=True, seed=0):
    """Save a tiny random GPT-2 and a byte-level BPE tokenizer trained on TINY_CORPUS to ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TINY_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=n_positions, n_embd=32, n_layer=2,
                     n_head=2, tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def make_tiny_gpt2():
    """The function ``make_tiny_gpt2(folder, n_positions=64, tie=True, seed=0) -> str(folder)``."""
    return _make_tiny_gpt2


@pytest.fixture(scope="session")
def tiny_gpt2_folder(tmp_path_factory):
    """One tiny random GPT-2 (tied embeddings) saved for the whole session."""
    return _make_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    """An empty ``LMDOWNSTREAM_CACHE`` for one test."""
    monkeypatch.setenv("LMDOWNSTREAM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def built_book():
    """Build the whole book once per session (jupyter-book, warnings as errors); return the HTML folder."""
    jb = Path(sys.executable).with_name("jupyter-book")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # figures need the inline backend
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--builder", "html", "-W", "--keep-going"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, "jupyter-book build -W failed:\n" + log[-6000:]
    return ROOT / "_build" / "html"


@pytest.fixture
def small_training(tmp_path, monkeypatch):
    """For tests that train models: an empty LMDOWNSTREAM_CACHE and one torch thread (restored afterwards)."""
    from lmdownstream import config

    monkeypatch.setenv("LMDOWNSTREAM_CACHE", str(tmp_path / "cache"))
    with config.threads(1, blas=False):
        yield tmp_path / "cache"
