"""features (streamed softmax quantities) and lm (TableLM, optimal_f) against dense formulas,
autograd, scipy and the identities of results B and D."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from lmdownstream import features, theory
from lmdownstream.lm import TableLM, optimal_f, quad_optimal_f
from lmdownstream.losses import quad_loss, xent_loss


def _tp(n=9, d=4, V=50, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return scale * rng.normal(size=(n, d)), rng.normal(size=(d, V)), rng.normal(size=V)


# --------------------------------------------------------------------------- features
@pytest.mark.parametrize("chunk", [1, 7, 13, 50, 64, 4096])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conditional_mean_matches_dense(chunk, with_bias):
    theta, Phi, b = _tp()
    bias = b if with_bias else None
    logits = theta @ Phi + (b if with_bias else 0)
    dense = softmax(logits, axis=1) @ Phi.T
    out = features.conditional_mean(theta, Phi, bias=bias, chunk_size=chunk)
    assert isinstance(out, np.ndarray) and out.shape == (9, 4)
    np.testing.assert_allclose(out, dense, atol=1e-10, rtol=0)
    np.testing.assert_allclose(features.log_partition(theta, Phi, bias=bias, chunk_size=chunk),
                               logsumexp(logits, axis=1), atol=1e-10, rtol=0)
    words = [3, 49, 0, 3]
    np.testing.assert_allclose(features.next_word_probs(theta, Phi, bias=bias, words=words, chunk_size=chunk),
                               softmax(logits, axis=1)[:, words], atol=1e-12, rtol=0)


def test_extreme_logits_stable():
    theta, Phi, _ = _tp(scale=1.0)
    theta = theta / np.abs(theta @ Phi).max() * 1000  # logits up to +-1000
    logits = theta @ Phi
    assert np.abs(logits).max() == pytest.approx(1000)
    dense = softmax(logits, axis=1) @ Phi.T
    for chunk in (1, 16, 4096):
        out = features.conditional_mean(theta, Phi, chunk_size=chunk)
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out, dense, atol=1e-10, rtol=0)
        np.testing.assert_allclose(features.log_partition(theta, Phi, chunk_size=chunk),
                                   logsumexp(logits, axis=1), rtol=1e-13)


def test_torch_in_torch_out_and_gradient_flows():
    theta, Phi, b = _tp(n=5, d=3, V=11)
    t = torch.tensor(theta, requires_grad=True)
    F = torch.tensor(Phi, requires_grad=True)
    out = features.conditional_mean(t, F, bias=torch.tensor(b), chunk_size=4)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    out.pow(2).sum().backward()
    t2 = torch.tensor(theta, requires_grad=True)
    F2 = torch.tensor(Phi, requires_grad=True)
    (torch.softmax(t2 @ F2 + torch.tensor(b), 1) @ F2.T).pow(2).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), t2.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(F.grad.numpy(), F2.grad.numpy(), atol=1e-12)
    # log Z has gradient Phi p_theta (result C's starting point)
    t3 = torch.tensor(theta, requires_grad=True)
    features.log_partition(t3, Phi, chunk_size=3).sum().backward()
    np.testing.assert_allclose(t3.grad.numpy(), features.conditional_mean(theta, Phi), atol=1e-12)
    # float32 torch in, float32 out
    out32 = features.conditional_mean(torch.tensor(theta, dtype=torch.float32), torch.tensor(Phi, dtype=torch.float32))
    assert out32.dtype == torch.float32


def test_next_word_probs_and_subset_logits():
    theta, Phi, b = _tp()
    full = features.next_word_probs(theta, Phi, bias=b)
    np.testing.assert_allclose(full, softmax(theta @ Phi + b, axis=1), atol=1e-14)
    np.testing.assert_allclose(full.sum(1), 1.0, atol=1e-14)
    S = [5, 2, 5, 40]
    np.testing.assert_allclose(features.subset_logits(theta, Phi, S), theta @ Phi[:, S], atol=1e-14)
    np.testing.assert_allclose(features.subset_logits(theta, Phi, S, bias=b), theta @ Phi[:, S] + b[S], atol=1e-14)
    one = features.subset_logits(theta[0], Phi, S)
    assert one.shape == (4,)


def test_features_bad_inputs():
    theta, Phi, b = _tp()
    for words in ([0, 50], [-1], []):
        with pytest.raises(ValueError, match="word ids"):
            features.subset_logits(theta, Phi, words)
    with pytest.raises(ValueError, match="word ids"):
        features.next_word_probs(theta, Phi, words=[51])
    with pytest.raises(ValueError, match="Phi"):
        features.conditional_mean(theta, Phi.T)
    with pytest.raises(ValueError, match="chunk_size"):
        features.conditional_mean(theta, Phi, chunk_size=0)
    with pytest.raises(ValueError, match="bias"):
        features.conditional_mean(theta, Phi, bias=b[:-1])
    bad = theta.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        features.conditional_mean(bad, Phi)


def test_imports_stay_light():
    # losses/theory never pull sklearn or transformers; lm/features import transformers lazily
    code = ("import sys, lmdownstream.losses, lmdownstream.theory, lmdownstream.lm, lmdownstream.features; "
            "bad = [m for m in ('sklearn', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- optimal_f
def _language(n=60, V=30, d=5, seed=0, alpha=0.5):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(V, alpha), size=n)
    w = rng.dirichlet(np.ones(n))
    Phi = rng.normal(size=(d, V))
    return P, w, Phi


def test_optimal_f_matches_moments_and_scipy():
    P, _, Phi = _language()
    star = optimal_f(Phi, P)
    p_star_theta = softmax(star @ Phi, axis=1)
    np.testing.assert_allclose(p_star_theta @ Phi.T, P @ Phi.T, atol=1e-8)  # Phi p_theta* = Phi p*
    for i in (0, 17):
        obj = lambda th: logsumexp(th @ Phi) - th @ Phi @ P[i]  # noqa: E731
        jac = lambda th: Phi @ softmax(th @ Phi) - Phi @ P[i]  # noqa: E731
        ref = minimize(obj, np.zeros(Phi.shape[0]), jac=jac, method="BFGS", options={"gtol": 1e-12})
        assert obj(star[i]) <= ref.fun + 1e-12
        np.testing.assert_allclose(star[i], ref.x, atol=1e-5)


def test_optimal_f_warns_when_no_minimiser():
    Phi = np.array([[0.0, 1.0, 2.0]])
    P = np.array([[1.0, 0.0, 0.0]])  # Phi p* = 0 is a vertex of the hull: theta* = -inf
    with pytest.warns(RuntimeWarning, match="convex hull"):
        optimal_f(Phi, P, max_iter=20)


def test_quad_optimal_f():
    P, _, Phi = _language()
    np.testing.assert_allclose(quad_optimal_f(Phi, P), np.linalg.solve(Phi @ Phi.T, Phi @ P.T).T, atol=1e-10)


# --------------------------------------------------------------------------- TableLM
def test_tablelm_basic_views():
    P, w, Phi = _language()
    lm = TableLM(60, Phi=Phi)
    assert lm.features().shape == (60, 5) and np.all(lm.features() == 0)
    np.testing.assert_allclose(lm.probs(), np.full((60, 30), 1 / 30))
    np.testing.assert_array_equal(lm.embeddings(), Phi)
    assert tuple(lm(torch.tensor([0, 3])).shape) == (2, 30)
    rnd = TableLM(10, d=3, vocab_size=7, seed=4)
    np.testing.assert_array_equal(rnd.embeddings(), TableLM(10, d=3, vocab_size=7, seed=4).embeddings())
    assert not any(p is rnd.Phi for p in rnd.parameters())  # fixed Phi is a buffer
    learned = TableLM(10, d=3, vocab_size=7, learn_Phi=True)
    assert any(p is learned.Phi for p in learned.parameters())


def _excess_vs_phi(lm, P, w, Phi):
    """Excess relative to Phi via result B's identity: sum_s w_s KL(p_theta*_s || p_f(s))."""
    p_opt = softmax(optimal_f(Phi, P) @ Phi, axis=1)
    return theory.excess_xent(p_opt, lm.probs(), w)


@pytest.mark.parametrize("target", [1e-1, 1e-2, 1e-3, 1e-4])
def test_fit_reaches_target_relative_to_phi(target):
    P, w, Phi = _language()
    lm = TableLM(60, Phi=Phi).fit(P, w, target_eps=target, relative_to="Phi")
    assert 0.999 * target <= lm.eps_ <= target
    assert lm.n_steps_ > 0 and len(lm.history_) == lm.n_steps_ + 1
    assert _excess_vs_phi(lm, P, w, Phi) == pytest.approx(lm.eps_, rel=1e-6)
    assert lm.excess_xent(P, w, relative_to="Phi") == pytest.approx(lm.eps_, rel=1e-9)
    # relative to p_star it is the same plus the floor of this Phi
    floor = theory.excess_xent(P, softmax(optimal_f(Phi, P) @ Phi, axis=1), w)
    assert lm.excess_xent(P, w) == pytest.approx(floor + lm.eps_, rel=1e-9)
    assert theory.excess_xent(P, lm.probs(), w) == pytest.approx(floor + lm.eps_, rel=1e-9)


def test_fit_relative_to_p_star_realisable_and_learned_phi():
    rng = np.random.default_rng(1)
    n, V, d = 80, 30, 4
    Phi = rng.normal(size=(d, V))
    P = softmax(rng.normal(size=(n, d)) @ Phi, axis=1)  # realisable: log p* in the row span
    w = rng.dirichlet(np.ones(n))
    lm = TableLM(n, Phi=Phi).fit(P, w, target_eps=1e-3)
    assert 0.999e-3 <= lm.eps_ <= 1e-3
    assert theory.excess_xent(P, lm.probs(), w) == pytest.approx(lm.eps_, rel=1e-8)
    learned = TableLM(n, d=d, vocab_size=V, learn_Phi=True, seed=2).fit(P, w, target_eps=1e-2)
    assert 0.999e-2 <= learned.eps_ <= 1e-2
    assert theory.excess_xent(P, learned.probs(), w) == pytest.approx(learned.eps_, rel=1e-8)
    assert not np.allclose(learned.embeddings(), TableLM(n, d=d, vocab_size=V, seed=2).embeddings())


def test_fit_quad_excess_is_result_d_identity():
    P, w, Phi = _language()
    lm = TableLM(60, Phi=Phi).fit(P, w, loss="quad", target_eps=1e-4, relative_to="Phi")
    assert 0.999e-4 <= lm.eps_ <= 1e-4
    star = quad_optimal_f(Phi, P)
    direct = 0.5 * np.dot(w, (((lm.features() - star) @ Phi) ** 2).sum(1))  # 1/2 ||Phi^T (f - theta*)||^2
    assert direct == pytest.approx(lm.eps_, rel=1e-8)
    # and it is a difference of Quad losses
    diff = float(quad_loss(lm.features(), Phi, P, weights=w) - quad_loss(star, Phi, P, weights=w))
    assert diff == pytest.approx(lm.eps_, rel=1e-6)
    assert lm.excess_quad(P, w, relative_to="p_star") == pytest.approx(
        0.5 * np.dot(w, ((lm.features() @ Phi - P) ** 2).sum(1)), rel=1e-9)


def test_fit_xent_excess_is_difference_of_losses():
    P, w, Phi = _language(seed=3)
    lm = TableLM(60, Phi=Phi).fit(P, w, target_eps=1e-2, relative_to="Phi")
    diff = float(xent_loss(lm.features(), Phi, P, weights=w) - xent_loss(optimal_f(Phi, P), Phi, P, weights=w))
    assert diff == pytest.approx(lm.eps_, rel=1e-8)


def test_fit_errors_and_warnings():
    P, w, Phi = _language()
    with pytest.raises(ValueError, match="smallest excess"):
        TableLM(60, Phi=Phi).fit(P, w, target_eps=1e-4, relative_to="p_star")  # below this Phi's floor
    with pytest.raises(ValueError, match="fixed Phi"):
        TableLM(60, d=3, vocab_size=30, learn_Phi=True).fit(P, w, target_eps=1e-2, relative_to="Phi")
    with pytest.raises(ValueError, match="shape"):
        TableLM(60, Phi=Phi).fit(P[:-1], target_eps=1e-2)
    with pytest.raises(ValueError, match="loss"):
        TableLM(60, Phi=Phi).fit(P, loss="hinge")
    with pytest.raises(ValueError, match="target_eps"):
        TableLM(60, Phi=Phi).fit(P, target_eps=0.0)
    with pytest.warns(RuntimeWarning, match="raise max_steps"):
        lm = TableLM(60, Phi=Phi).fit(P, w, target_eps=1e-6, relative_to="Phi", max_steps=5)
    assert lm.n_steps_ == 5 and lm.eps_ > 1e-6
    # no target: trains max_steps steps and reports the excess
    lm = TableLM(60, Phi=Phi).fit(P, w, relative_to="Phi", max_steps=30)
    assert lm.n_steps_ == 30 and lm.eps_ == pytest.approx(lm.excess_xent(P, w, "Phi"), rel=1e-9)


@pytest.mark.parametrize("loss", ["xent", "quad"])
def test_at_eps_is_exact_and_deterministic(loss):
    P, w, Phi = _language()
    for eps in (1e-1, 1e-3, 1e-5) if loss == "xent" else (1e-3, 1e-5):
        lm = TableLM(60, Phi=Phi).at_eps(eps, P, w, loss=loss)
        assert lm.eps_ == pytest.approx(eps, rel=1e-8)
        measured = lm.excess_xent(P, w, "Phi") if loss == "xent" else lm.excess_quad(P, w, "Phi")
        assert measured == pytest.approx(eps, rel=1e-7)
        again = TableLM(60, Phi=Phi).at_eps(eps, P, w, loss=loss)
        np.testing.assert_allclose(again.features(), lm.features(), rtol=1e-12, atol=1e-15)
    floor = TableLM(60, Phi=Phi).excess_xent(P, w) - TableLM(60, Phi=Phi).excess_xent(P, w, "Phi")
    lm = TableLM(60, Phi=Phi).at_eps(floor + 1e-3, P, w, relative_to="p_star")
    assert theory.excess_xent(P, lm.probs(), w) == pytest.approx(floor + 1e-3, rel=1e-7)
    with pytest.raises(ValueError, match="smallest excess"):
        TableLM(60, Phi=Phi).at_eps(floor / 2, P, w, relative_to="p_star")
    with pytest.raises(ValueError, match="already has excess"):
        TableLM(60, Phi=Phi).at_eps(1e-3, P, w).at_eps(1e-2, P, w)


def test_at_eps_from_a_start_point():
    P, w, Phi = _language()
    start = np.random.default_rng(0).normal(size=(60, 5))
    lm = TableLM(60, Phi=Phi).at_eps(1e-2, P, w, start=start)
    assert lm.excess_xent(P, w, "Phi") == pytest.approx(1e-2, rel=1e-7)
    star = optimal_f(Phi, P)
    # on the segment start -> theta*
    np.testing.assert_allclose(lm.features(), start + lm.t_ * (star - start), atol=1e-6)


# --------------------------------------------------------------------------- the protocol, on all three models
TEXTS = ["the movie was great", "a terrible boring film with a sad ending and more words here",
         "stocks fell", "i loved it :)"]


@pytest.fixture(scope="module")
def models(tiny_gpt2_folder):
    """(model, inputs, brute) for a TableLM, a TinyLM and an HFLM; brute(model, one_input) is the
    hidden state at every position of that input, from one plain forward pass."""
    from lmdownstream import hf, train

    table = TableLM(5, d=3, V=7, device="cpu")
    with torch.no_grad():
        table.f.copy_(torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    tiny = train.TinyLM(20, d=8, n_layers=1, n_heads=2, max_length=12, Phi="untied", seed=0).eval()
    hflm = hf.load_lm(tiny_gpt2_folder, device="cpu")
    hflm.bias = torch.randn(hflm.V, generator=torch.Generator().manual_seed(2))  # the softmax view with a bias
    return [
        (table, [0, 3, 4, 1, 3], lambda m, c: m.f[c][None]),
        (tiny, [[1, 2, 3], [4, 5, 6, 7, 8], [9], [3, 3, 3, 3, 3, 3, 3]],
         lambda m, s: m.hidden(torch.tensor([s]))[0]),
        (hflm, TEXTS, lambda m, t: m.model(torch.tensor(m.encode([t])[0]), output_hidden_states=True)
         .hidden_states[-1][0]),
    ]


def test_every_model_follows_the_protocol(models):
    from lmdownstream.lm import SoftmaxLM

    for model, inputs, _ in models:
        assert isinstance(model, SoftmaxLM), type(model).__name__
        assert tuple(model.Phi.shape) == (model.d, model.V) and model.max_length >= 1
        assert model.bias is None or tuple(model.bias.shape) == (model.V,)
        assert isinstance(model.fingerprint(), str)
        ids, n_trunc = model.encode(inputs)
        assert len(ids) == len(inputs) and n_trunc == 0
    assert models[0][0].vocab_size == 7 and models[1][0].vocab_size == models[1][0].V == 20


def test_extract_agrees_with_one_forward_pass_per_input(models):
    for model, inputs, brute in models:
        out = features.extract(model, inputs, kinds=("f", "Phi_p", "subset", "p_f"), words=[0, 2, 5],
                               batch_size=2, max_tokens=16, cache=False, progress=False)
        with torch.inference_mode():
            f = torch.stack([brute(model, x)[-1] for x in inputs]).double()
        Phi = model.Phi.detach().double()
        logits = f @ Phi + (0 if model.bias is None else model.bias.double())
        p = torch.softmax(logits, 1)
        name = type(model).__name__
        np.testing.assert_allclose(out["f"], f.numpy(), atol=1e-5, err_msg=name)
        np.testing.assert_allclose(out["p_f"], p.numpy(), atol=1e-5, err_msg=name)
        np.testing.assert_allclose(out["Phi_p"], (p @ Phi.T).numpy(), atol=1e-5, err_msg=name)
        np.testing.assert_allclose(out["subset"], logits[:, [0, 2, 5]].numpy(), atol=1e-4, err_msg=name)


def test_contexts_agree_with_brute_force(models):
    for model, inputs, brute in models[1:]:
        with torch.inference_mode():
            rows = [brute(model, x).double().numpy() for x in inputs]
        F, groups, info = features.contexts(model, inputs, skip_first=1, batch_size=2, return_info=True)
        ref = np.concatenate([r[1:] for r in rows])
        np.testing.assert_allclose(F, ref, atol=1e-5)
        np.testing.assert_array_equal(groups, np.repeat(np.arange(len(inputs)), [len(r) - 1 for r in rows]))
        np.testing.assert_array_equal(info["position"], np.concatenate([np.arange(1, len(r)) for r in rows]))
        S, g, sinfo = features.contexts(model, inputs, n_contexts=5, skip_first=1, seed=3, return_info=True)
        np.testing.assert_allclose(S, np.stack([rows[a][b] for a, b in zip(g, sinfo["position"])]), atol=1e-5)
        with pytest.raises(ValueError, match="available"):
            features.contexts(model, inputs, n_contexts=len(ref) + 1, skip_first=1)
        with pytest.raises(ValueError, match="window"):
            features.contexts(model, inputs, max_tokens=model.max_length + 1)
    with pytest.raises(ValueError, match="SoftmaxLM"):
        features.contexts(object(), TEXTS)


def test_extract_cache_follows_in_memory_weights(models, tmp_cache):
    model, inputs, _ = models[1]
    first = features.extract(model, inputs, kinds=("f",), progress=False)["f"]
    assert np.array_equal(features.extract(model, inputs, kinds=("f",), progress=False)["f"], first)
    saved = model.body.ln_f.weight.detach().clone()
    try:
        with torch.no_grad():
            model.body.ln_f.weight.mul_(2.0)
        np.testing.assert_allclose(features.extract(model, inputs, kinds=("f",), progress=False)["f"],
                                   2 * first - model.body.ln_f.bias.detach().numpy(), atol=1e-5)
    finally:
        with torch.no_grad():
            model.body.ln_f.weight.copy_(saved)
    assert len(list((tmp_cache / "features").glob("*.npz"))) == 2


def test_batches_respect_both_budgets():
    lengths = [5, 1, 9, 3, 9, 2]
    out = features.batches(lengths, batch_size=2, max_tokens=12)
    assert sorted(i for b in out for i in b) == list(range(6))
    assert all(len(b) <= 2 and len(b) * max(lengths[i] for i in b) <= 12 or len(b) == 1 for b in out)
    assert [lengths[b[0]] for b in out] == sorted((lengths[b[0]] for b in out), reverse=True)
