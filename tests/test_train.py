"""Small LMs trained from scratch (lmdownstream.train): model, corpora, losses, training, evaluation.

Each piece is checked against an independent computation: the loss against
``lmdownstream.losses`` and ``torch.nn.functional``, ragged features against one-at-a-time
forward passes, the exact excess against ``theory.excess_xent`` and ``lm.quad_optimal_f`` per
position, resumption against an uninterrupted run.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from lmdownstream import losses, lm, synthetic, theory, train  # noqa: E402

TEXTS = ["the movie was great and the acting was wonderful", "a terrible boring film with a sad ending",
         "stocks fell as the market reacted to the news", "the team won the match in the final minute"] * 10


pytestmark = pytest.mark.usefixtures("small_training")  # empty cache, one torch thread (conftest)


@pytest.fixture(scope="module")
def hmm():
    return synthetic.HMMLanguage.random(4, 12, seed=3)


def tiny(V=13, Phi="tied", affine=False, seed=0, d=16, max_length=12):
    return train.TinyLM(V, d=d, n_layers=1, n_heads=2, max_length=max_length, Phi=Phi, affine=affine, seed=seed)


# --------------------------------------------------------------------------- model
def test_phi_modes():
    m = tiny()
    assert m.Phi.data_ptr() == m.body.wte.weight.data_ptr() and m.Phi.shape == (16, 13)
    u = tiny(Phi="untied")
    assert u.Phi.shape == (16, 13) and u.Phi.data_ptr() != u.body.wte.weight.data_ptr()
    P = np.random.default_rng(0).standard_normal((16, 13))
    f = tiny(Phi=P, affine=True)
    assert f.phi_mode == "fixed" and not any(p is f.Phi for p in f.parameters())
    np.testing.assert_allclose(f.Phi.numpy(), P, rtol=1e-6)
    ids = torch.randint(0, 13, (3, 5))
    h_body = f.body(input_ids=ids).last_hidden_state
    torch.testing.assert_close(f.hidden(ids), h_body)  # the affine layer starts at the identity
    # same seed, same weights; the caller's RNG is untouched
    torch.manual_seed(123)
    a = torch.rand(1)
    torch.manual_seed(123)
    tiny(seed=5)
    assert torch.equal(torch.rand(1), a)
    assert all(torch.equal(p, q) for p, q in zip(tiny(seed=5).parameters(), tiny(seed=5).parameters()))


def test_causal_and_logits():
    m = tiny()
    ids = torch.randint(0, 13, (2, 8))
    h = m.hidden(ids)
    ids2 = ids.clone()
    ids2[:, 5:] = (ids2[:, 5:] + 1) % 13
    torch.testing.assert_close(m.hidden(ids2)[:, :5], h[:, :5])
    assert not torch.allclose(m.hidden(ids2)[:, 5:], h[:, 5:])
    torch.testing.assert_close(m(ids), h @ m.Phi)


def test_features_ragged_match_one_at_a_time():
    m = tiny(max_length=6)
    seqs = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11, 12], [0, 1]]
    out = m.features(seqs, kinds=("f", "Phi_p"), batch_size=3)
    assert out["n_truncated"] == 1
    with torch.no_grad():
        for i, s in enumerate(seqs):
            f = m.hidden(torch.as_tensor([s[-6:]]))[0, -1]
            np.testing.assert_allclose(out["f"][i], f.numpy(), atol=1e-5)
            p = torch.softmax(m.Phi.T @ f, 0)
            np.testing.assert_allclose(out["Phi_p"][i], (m.Phi @ p).numpy(), atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        train.TinyLM(10, d=10, n_heads=3)
    with pytest.raises(ValueError, match="shape"):
        tiny(Phi=np.zeros((16, 12)))
    with pytest.raises(ValueError, match="tied"):
        tiny(Phi="learned")
    m = tiny()
    with pytest.raises(ValueError, match="outside"):
        m.features([[1, 13]])
    with pytest.raises(ValueError, match="empty"):
        m.features([[1], []])
    with pytest.raises(ValueError, match="kinds"):
        m.features([[1]], kinds=("p",))
    with pytest.raises(ValueError, match="window"):
        m.hidden(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="padding"):
        train.Corpus(np.array([[-1, 2], [1, 2]]), 5)
    with pytest.raises(ValueError, match="lie in"):
        train.Corpus(np.array([[0, 5]]), 5)
    with pytest.raises(ValueError, match="loss"):
        train.batch_loss(m, np.zeros((1, 3), dtype=int), "mse")
    with pytest.raises(ValueError, match="list of strings"):
        train.train_tokenizer("one text")
    with pytest.raises(ValueError, match="whitespace"):
        train.train_tokenizer(["a", "  "])
    c = train.Corpus(np.zeros((4, 3), dtype=int), 5)
    with pytest.raises(ValueError, match="lr"):
        train.train_lm(c, lr=-1.0, d=16, n_heads=2, progress=False)
    with pytest.raises(ValueError, match="Corpus"):
        train.train_lm(np.zeros((4, 3), dtype=int), progress=False)
    with pytest.raises(ValueError, match="hmm_corpus"):
        train.exact_excess(m, c)


# --------------------------------------------------------------------------- corpora
def test_hmm_corpus(hmm):
    c = train.hmm_corpus(hmm, 7, 5, seed=1)
    assert c.ids.shape == (7, 6) and c.vocab_size == hmm.vocab_size + 1
    assert np.all(c.ids[:, 0] == hmm.vocab_size) and c.ids[:, 1:].max() < hmm.vocab_size
    np.testing.assert_array_equal(c.ids[:, 1:], hmm.sample(7, 5, seed=1))
    a, b = c.split(0.3, seed=0)
    assert len(a) + len(b) == 7 and sorted(map(tuple, np.vstack([a.ids, b.ids]))) == sorted(map(tuple, c.ids))


def test_tokenizer_and_text_corpus():
    tok = train.train_tokenizer(TEXTS, vocab_size=300)
    for t in TEXTS[:4] + ["unseen wörds ☺"]:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids).strip() == t
    c = train.text_corpus(TEXTS, tok, block=7)
    enc = tok(TEXTS, add_special_tokens=False)["input_ids"]
    stream = [t for ids in enc for t in ids + [tok.eos_token_id]]
    # consecutive blocks overlap by one token and together hold the whole stream, padded at the end
    rebuilt = list(c.ids[0]) + [t for row in c.ids[1:] for t in row[1:]]
    assert rebuilt[:len(stream)] == stream and all(t == -1 for t in rebuilt[len(stream):])
    assert c.n_tokens == len(stream) - 1
    assert train.train_tokenizer(TEXTS, vocab_size=300).get_vocab() == tok.get_vocab()  # deterministic


# --------------------------------------------------------------------------- losses
@pytest.mark.parametrize("Phi", ["tied", "fixed"])
def test_batch_loss_matches_reference(Phi):
    P = np.random.default_rng(1).standard_normal((16, 13)) if Phi == "fixed" else "tied"
    m = tiny(Phi=P)
    ids = torch.randint(0, 13, (3, 6))
    ids[1, 4:] = -1  # padding
    inp, tgt = ids[:, :-1].clamp_min(0), ids[:, 1:]
    mask = tgt != -1
    attn = (ids[:, :-1] != -1).long()
    h = m.hidden(inp, attn)[mask]
    ref_x = torch.nn.functional.cross_entropy(h @ m.Phi, tgt[mask])
    ref_q = losses.quad_loss(h, m.Phi, tgt[mask])
    torch.testing.assert_close(train.batch_loss(m, ids, "xent"), ref_x)
    torch.testing.assert_close(train.batch_loss(m, ids, "quad"), ref_q.float())
    # gradients agree too (autograd through both forms)
    g1 = torch.autograd.grad(train.batch_loss(m, ids, "quad"), m.body.h[0].mlp.c_fc.weight)[0]
    h = m.hidden(inp, attn)[mask]
    g2 = torch.autograd.grad(losses.quad_loss(h, m.Phi, tgt[mask]), m.body.h[0].mlp.c_fc.weight)[0]
    torch.testing.assert_close(g1, g2.float(), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- training
def _train(c, **kw):
    base = dict(d=16, n_layers=1, n_heads=2, steps=12, batch_size=8, lr=3e-3, progress=False, checkpoint_every=4)
    return train.train_lm(c, **{**base, **kw})


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_deterministic_cached_and_resumable(hmm, monkeypatch):
    c = train.hmm_corpus(hmm, 40, 6, seed=0)
    a = _train(c, cache=False)
    b = _train(c, cache=False)
    assert _same(a.model, b.model) and a.history == b.history
    assert not _same(a.model, _train(c, cache=False, seed=1).model)
    first = _train(c)
    again = _train(c)
    assert not first.loaded and again.loaded and _same(first.model, again.model) and _same(a.model, again.model)
    reloaded = train.load_run(first.path)
    assert _same(reloaded.model, a.model)
    # a run killed after step 9 resumes from its step-8 checkpoint and ends where the straight run ends
    calls = {"n": 0}
    real = train.batch_loss

    def dies(*args, **kw):
        calls["n"] += 1
        if calls["n"] > 9:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(train, "batch_loss", dies)
    with pytest.raises(KeyboardInterrupt):
        _train(c, seed=2)
    monkeypatch.setattr(train, "batch_loss", real)
    resumed = _train(c, seed=2)
    assert not resumed.loaded and resumed.history[0][0] <= 8
    assert _same(resumed.model, _train(c, seed=2, cache=False).model)


def test_fixed_phi_never_moves(hmm):
    c = train.hmm_corpus(hmm, 40, 6, seed=0)
    P = np.random.default_rng(0).standard_normal((16, c.vocab_size)).astype(np.float32)
    r = _train(c, loss="quad", Phi=P, affine=True, cache=False)
    np.testing.assert_array_equal(r.model.Phi.numpy(), P)
    assert r.settings["Phi"] == "fixed" and r.model.affine is not None


def test_exact_excess_matches_brute_force(hmm):
    c = train.hmm_corpus(hmm, 30, 5, seed=4)
    m = tiny(V=c.vocab_size)
    out = train.exact_excess(m, c, batch_size=7)
    Phi = m.Phi.detach().double().numpy()
    eps, ent, qx, num, den = [], [], [], 0.0, 0.0
    with torch.no_grad():
        for i in range(len(c)):
            h = m.hidden(torch.as_tensor(c.ids[i:i + 1, :-1]))[0].double().numpy()
            for t in range(5):
                p = np.zeros(c.vocab_size)
                p[:-1] = hmm.next_word_dist(c.ids[i:i + 1, 1:t + 1])[0]
                q = np.exp(h[t] @ Phi - np.log(np.exp(h[t] @ Phi).sum()))
                eps.append(theory.excess_xent(p, q))
                ent.append(-np.sum(p[p > 0] * np.log(p[p > 0])))
                th = lm.quad_optimal_f(Phi, p[None])[0]
                diff = Phi.T @ (h[t] - th)
                qx.append(0.5 * diff @ diff)
                num, den = num + diff @ diff, den + (Phi.T @ th) @ (Phi.T @ th)
    assert out["n"] == 150
    np.testing.assert_allclose(out["eps"], np.mean(eps), rtol=1e-5)
    np.testing.assert_allclose(out["entropy"], np.mean(ent), rtol=1e-9)
    np.testing.assert_allclose(out["quad_excess"], np.mean(qx), rtol=1e-5)
    np.testing.assert_allclose(out["quad_rel"], np.sqrt(num / den), rtol=1e-5)
    ev = train.evaluate(m, c)
    ref = torch.nn.functional.cross_entropy(m(torch.as_tensor(c.ids[:, :-1])).reshape(-1, c.vocab_size),
                                            torch.as_tensor(c.ids[:, 1:]).reshape(-1))
    np.testing.assert_allclose(ev["xent"], float(ref.detach()), rtol=1e-5)
    np.testing.assert_allclose(ev["quad"], float(train.batch_loss(m, c.ids, "quad").detach()), rtol=1e-5)
    logits = m(torch.as_tensor(c.ids[:, :-1])).reshape(-1, c.vocab_size).detach()
    hot = torch.nn.functional.cross_entropy(logits / 2.5, torch.as_tensor(c.ids[:, 1:]).reshape(-1))
    np.testing.assert_allclose(train.evaluate(m, c, batch_size=4, temperature=2.5)["xent"], float(hot), rtol=1e-5)
    # cross-entropy on the sample = entropy + eps, up to sampling noise (exact in expectation)
    assert abs(ev["xent"] - (out["entropy"] + out["eps"])) < 0.5


def test_training_approaches_the_optimum(hmm):
    """Quad training moves f toward (Phi Phi^T)^-1 Phi p*; xent training lowers the exact eps."""
    c = train.hmm_corpus(hmm, 400, 8, seed=0)
    val = train.hmm_corpus(hmm, 100, 8, seed=1)
    kw = dict(d=16, n_layers=1, n_heads=2, batch_size=32, lr=1e-2, progress=False, cache=False)
    q0, q = (train.exact_excess(train.train_lm(c, "quad", steps=s, **kw).model, val) for s in (1, 150))
    x0, x = (train.exact_excess(train.train_lm(c, "xent", steps=s, **kw).model, val) for s in (1, 150))
    assert q["quad_rel"] < 0.5 * q0["quad_rel"] and q["quad_rel"] < 0.5
    assert x["eps"] < 0.3 * x0["eps"]


def test_contexts_are_hidden_states_at_every_position(hmm):
    c = train.Corpus(np.array([[1, 2, 3, 4], [5, 6, -1, -1], [7, 8, 9, -1]]), 13)
    m = tiny()
    F, g = train.contexts(m, c, batch_size=2)
    assert F.shape == (3 + 2 + 3, 16) and list(g) == [0, 0, 0, 1, 1, 2, 2, 2]
    with torch.no_grad():
        ref = [m.hidden(torch.as_tensor([row[:k + 1]]))[0, -1].numpy()
               for row in ([1, 2, 3], [5, 6], [7, 8, 9]) for k in range(len(row))]
    np.testing.assert_allclose(F, np.stack(ref), atol=1e-5)
    Fs, gs = train.contexts(m, c, n_contexts=4, seed=1)
    assert Fs.shape == (4, 16) and all(any(np.allclose(r, q, atol=1e-6) for q in F) for r in Fs)
    with pytest.raises(ValueError, match="only 8 contexts are available"):
        train.contexts(m, c, n_contexts=9)
