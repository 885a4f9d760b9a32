"""Tests of lmdownstream.synthetic: exactness against brute force and hand computation,
sampling against p*, planted structure, determinism, numerical stability and input checks."""
import itertools
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import chisquare

from lmdownstream.synthetic import ContextLanguage, HMMLanguage


def small_hmm(seed=0, S=3, V=4):
    """An HMM built from raw arrays (not .random), with labels."""
    rng = np.random.default_rng(seed)
    return HMMLanguage(rng.dirichlet(np.ones(S)), rng.dirichlet(np.ones(S), size=S),
                       rng.dirichlet(np.ones(V), size=S), state_labels=np.arange(S) % 2)


def brute_next_word(hmm, prefix):
    """p*(.|prefix) = P(prefix, w) / P(prefix), summing over every hidden path of length L + 1."""
    S, V, L = hmm.n_states, hmm.vocab_size, len(prefix)
    pi, A, E = hmm.initial, hmm.transition, hmm.emission
    joint = np.zeros(V)
    for w in range(V):
        words = list(prefix) + [w]
        for z in itertools.product(range(S), repeat=L + 1):
            p = pi[z[0]] * E[z[0], words[0]]
            for t in range(1, L + 1):
                p *= A[z[t - 1], z[t]] * E[z[t], words[t]]
            joint[w] += p
    return joint / joint.sum()


def brute_next_state(hmm, prefix):
    """P(z_{L+1} | prefix) by enumeration of paths z_1..z_{L+1}."""
    S, L = hmm.n_states, len(prefix)
    post = np.zeros(S)
    for z in itertools.product(range(S), repeat=L + 1):
        p = hmm.initial[z[0]]
        for t in range(L):
            p *= hmm.emission[z[t], prefix[t]] * hmm.transition[z[t], z[t + 1]]
        post[z[L]] += p
    return post / post.sum()


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("make", [small_hmm, lambda: HMMLanguage.random(3, 4, seed=5)])
def test_hmm_matches_brute_force(make):
    hmm = make()
    rng = np.random.default_rng(1)
    for L in range(0, 5):
        prefixes = rng.integers(0, 4, size=(6, L))
        P = hmm.next_word_dist(prefixes)
        Z = hmm.next_state_posterior(prefixes)
        Y = hmm.label_posterior(prefixes)
        for i, pre in enumerate(prefixes):
            np.testing.assert_allclose(P[i], brute_next_word(hmm, pre), rtol=1e-10, atol=1e-13)
            z = brute_next_state(hmm, pre)
            np.testing.assert_allclose(Z[i], z, rtol=1e-10, atol=1e-13)
            y = np.bincount(hmm.state_labels, weights=z, minlength=hmm.n_labels)
            np.testing.assert_allclose(Y[i], y, rtol=1e-10, atol=1e-13)


def test_hmm_empty_prefix_uses_initial_distribution():
    hmm = small_hmm()
    P = hmm.next_word_dist(np.zeros((3, 0), dtype=int))
    np.testing.assert_allclose(P, np.tile(hmm.initial @ hmm.emission, (3, 1)), rtol=1e-12)


def test_rows_are_distributions():
    lang = ContextLanguage.random(50, 30, seed=0, n_classes=3)
    np.testing.assert_allclose(lang.p_next.sum(1), 1, atol=1e-6)
    assert abs(lang.p_context.sum() - 1) < 1e-6 and np.all(lang.p_next > 0)
    hmm = HMMLanguage.random(6, 30, seed=0, n_labels=3)
    for M in (hmm.initial[None], hmm.transition, hmm.emission):
        np.testing.assert_allclose(M.sum(1), 1, atol=1e-6)
    for L in (0, 1, 7):
        X = hmm.sample(20, max(L, 1), seed=L)[:, :L]
        np.testing.assert_allclose(hmm.next_word_dist(X).sum(1), 1, atol=1e-6)
        np.testing.assert_allclose(hmm.label_posterior(X).sum(1), 1, atol=1e-6)


def test_context_optimal_xent_is_hand_entropy():
    lang = ContextLanguage([0.25, 0.75], [[0.5, 0.5, 0, 0], [0.25] * 4], labels=[0, 1])
    ln2 = np.log(2)
    assert lang.optimal_xent() == pytest.approx(0.25 * ln2 + 0.75 * 2 * ln2, rel=1e-12)
    assert lang.optimal_xent(contexts=[0, 0, 1]) == pytest.approx((ln2 + ln2 + 2 * ln2) / 3, rel=1e-12)
    assert lang.optimal_xent(contexts=[0, 1], weights=[3, 1]) == pytest.approx(0.75 * ln2 + 0.25 * 2 * ln2)
    np.testing.assert_array_equal(lang.next_word_dist([1, 0]), lang.next_word_dist([[1, 3, 2], [0, 0, 1]]))


def test_hmm_optimal_xent_is_mean_entropy():
    hmm = small_hmm()
    X = np.array([[0, 1], [3, 3], [2, 0]])
    H = [-(p * np.log(p)).sum() for p in (brute_next_word(hmm, x) for x in X)]
    assert hmm.optimal_xent(X) == pytest.approx(np.mean(H), rel=1e-10)
    one = HMMLanguage([1.0], [[1.0]], [[0.5, 0.25, 0.25]])  # one state: i.i.d. words
    assert one.optimal_xent(np.zeros((2, 5), dtype=int)) == pytest.approx(1.5 * np.log(2))


def test_long_prefixes_do_not_underflow():
    hmm = HMMLanguage.random(8, 30, seed=2)
    X = hmm.sample(5, 500, seed=0)
    # the unscaled forward variable underflows to exactly 0 ...
    alpha = hmm.initial.copy()
    for w in X[0]:
        alpha = (alpha * hmm.emission[:, w]) @ hmm.transition
    assert alpha.sum() == 0.0
    # ... the scaled one matches an independent log-space forward algorithm
    logA, logE = np.log(hmm.transition), np.log(hmm.emission)
    P = hmm.next_word_dist(X)
    for i, x in enumerate(X):
        la = np.log(hmm.initial)
        for w in x:
            la = logsumexp((la + logE[:, w])[:, None] + logA, axis=0)
        ref = np.exp(logsumexp(la[:, None] + logE, axis=0) - logsumexp(la))
        np.testing.assert_allclose(P[i], ref, rtol=1e-9)
    assert hmm.optimal_xent(X) == pytest.approx(-np.mean(np.sum(P * np.log(P), 1)), rel=1e-12)


# ----------------------------------------------------------------------------- sampling
def test_context_sampling_matches_p_star():
    lang = ContextLanguage.random(4, 6, seed=3, words_per_class=1)
    X = lang.sample(40_000, 3, seed=0)
    assert X.shape == (40_000, 3) and X.dtype == np.int64
    # thresholds 1e-4: over 200 seeds these p-values were checked to be uniform on [0, 1]
    counts = np.bincount(X[:, 0], minlength=4)
    assert chisquare(counts, counts.sum() * lang.p_context).pvalue > 1e-4
    for s in range(4):
        words = X[X[:, 0] == s, 1:].ravel()
        obs = np.bincount(words, minlength=6)
        assert chisquare(obs, obs.sum() * lang.p_next[s]).pvalue > 1e-4
    s = lang.sample_contexts(20_000, seed=1)
    assert chisquare(np.bincount(s, minlength=4), 20_000 * lang.p_context).pvalue > 1e-4


def test_hmm_sampling_matches_next_word_dist():
    hmm = small_hmm(seed=4)
    X, Z = hmm.sample(60_000, 3, seed=0, return_states=True)
    assert chisquare(np.bincount(Z[:, 0], minlength=3), 60_000 * hmm.initial).pvalue > 1e-3
    for L in (0, 1, 2):
        prefixes, idx = np.unique(X[:, :L], axis=0, return_inverse=True)
        P = hmm.next_word_dist(prefixes)
        for j in np.argsort(-np.bincount(idx.ravel()))[:4]:  # the 4 commonest prefixes
            obs = np.bincount(X[idx.ravel() == j, L], minlength=4)
            assert chisquare(obs, obs.sum() * P[j]).pvalue > 1e-3


# ----------------------------------------------------------------------------- planted structure
def test_context_natural_task_has_planted_structure():
    lang = ContextLanguage.random(400, 100, seed=0)
    s, y, w = lang.natural_task()
    np.testing.assert_array_equal(s, np.arange(400))
    assert np.bincount(y).tolist() == [200, 200] and w.sum() == pytest.approx(1)
    P = lang.next_word_dist(s)
    mass = P[:, lang.indicative_words].sum(-1)  # (n, K): mass on each class's indicative words
    assert np.dot(w, mass.argmax(1) == y) > 0.9
    # tau at B = 5 (upper bound: indicative-word classifier with the best bias) is small, not zero
    margin = 5 * (mass[:, 1] - mass[:, 0]) * (2 * y - 1)
    tau5 = min(np.dot(w, np.logaddexp(0, -(margin + b * (2 * y - 1)))) for b in np.linspace(-3, 3, 61))
    assert 0.01 < tau5 < 0.25
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    assert cross_val_score(LogisticRegression(C=100, max_iter=2000), P, y, cv=3).mean() > 0.85


def test_label_strength_knob():
    acc = []
    for m in (0.0, 0.2, 0.8):
        lang = ContextLanguage.random(1000, 60, seed=1, n_classes=4, label_strength=m)
        mass = lang.p_next[:, lang.indicative_words].sum(-1)
        acc.append(np.mean(mass.argmax(1) == lang.labels))
    assert abs(acc[0] - 0.25) < 0.06 and acc[0] < acc[1] < acc[2] and acc[2] > 0.95


def test_hmm_natural_task_has_planted_structure():
    hmm = HMMLanguage.random(16, 200, seed=0, stickiness=0.95)
    same = hmm.state_labels[:, None] == hmm.state_labels[None, :]
    np.testing.assert_allclose((hmm.transition * same).sum(1), 0.95)
    X, y = hmm.natural_task(3000, 5, seed=1)
    assert X.shape == (3000, 5) and y.shape == (3000,) and set(np.unique(y)) == {0, 1}
    assert np.mean(hmm.label_posterior(X).argmax(1) == y) > 0.8
    from sklearn.linear_model import LogisticRegression
    P = hmm.next_word_dist(X)
    assert LogisticRegression(C=100, max_iter=2000).fit(P[:2000], y[:2000]).score(P[2000:], y[2000:]) > 0.8


# ----------------------------------------------------------------------------- determinism, import
def test_same_seed_same_output():
    a, b = ContextLanguage.random(30, 20, seed=7), ContextLanguage.random(30, 20, seed=7)
    np.testing.assert_array_equal(a.p_next, b.p_next)
    np.testing.assert_array_equal(a.sample(50, 4, seed=1), b.sample(50, 4, seed=1))
    assert not np.array_equal(a.p_next, ContextLanguage.random(30, 20, seed=8).p_next)
    h, g = HMMLanguage.random(5, 20, seed=7), HMMLanguage.random(5, 20, seed=7)
    np.testing.assert_array_equal(h.emission, g.emission)
    np.testing.assert_array_equal(h.sample(50, 6, seed=1), g.sample(50, 6, seed=1))
    assert not np.array_equal(h.sample(50, 6, seed=1), h.sample(50, 6, seed=2))
    for u, v in zip(h.natural_task(40, 3, seed=2), g.natural_task(40, 3, seed=2)):
        np.testing.assert_array_equal(u, v)


def test_import_pulls_in_no_model_library():
    # synthetic uses losses.entropy (torch), but never scikit-learn or transformers
    code = ("import sys; import lmdownstream.synthetic; "
            "print(any(m in sys.modules for m in ('sklearn', 'transformers')))")
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert heavy == ["False"]


# ----------------------------------------------------------------------------- bad input
LANG = ContextLanguage([0.5, 0.5], [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
HMM = small_hmm()
BAD = {
    "p_next rows != p_context": (lambda: ContextLanguage([1.0], [[0.5, 0.5], [0.5, 0.5]]), "one weight per context"),
    "non-finite p_next": (lambda: ContextLanguage([0.5, 0.5], [[np.nan, 1.0], [0.5, 0.5]]), "non-finite"),
    "p_next row not a distribution": (lambda: ContextLanguage([0.5, 0.5], [[0.2, 0.2], [0.5, 0.5]]), "sum to 1"),
    "negative probability": (lambda: ContextLanguage([1.5, -0.5], [[1.0], [1.0]]), "negative"),
    "empty p_next": (lambda: ContextLanguage(np.ones(0), np.ones((0, 3))), "empty"),
    "labels wrong length": (lambda: ContextLanguage([0.5, 0.5], np.eye(2), labels=[0, 1, 1]), "one label per context"),
    "labels one class": (lambda: ContextLanguage([0.5, 0.5], np.eye(2), labels=[1, 1]), "only one class"),
    "labels not integer": (lambda: ContextLanguage([0.5, 0.5], np.eye(2), labels=[0.5, 1]), "integer"),
    "context id unknown": (lambda: LANG.next_word_dist([0, 2]), "unknown context"),
    "context id negative": (lambda: LANG.next_word_dist([-1]), "unknown context"),
    "no contexts": (lambda: LANG.next_word_dist([]), "empty"),
    "weights wrong length": (lambda: LANG.optimal_xent([0, 1], weights=[1.0]), "one weight per context"),
    "natural_task without labels": (lambda: LANG.natural_task(), "no labels"),
    "n <= 0": (lambda: LANG.sample(0), "n must be an int >= 1"),
    "length <= 0": (lambda: LANG.sample(5, length=0), "length must be an int >= 1"),
    "n not an int": (lambda: LANG.sample(2.5), "must be an int"),
    "fewer contexts than classes": (lambda: ContextLanguage.random(1, 5), "n_contexts >= n_classes"),
    "label_strength > 1": (lambda: ContextLanguage.random(4, 5, label_strength=1.5), "in \\[0, 1\\]"),
    "too many indicative words": (lambda: ContextLanguage.random(4, 5, words_per_class=3), "lower words_per_class"),
    "alpha <= 0": (lambda: ContextLanguage.random(4, 5, alpha=0), "alpha"),
    "transition not square": (lambda: HMMLanguage([0.5, 0.5], np.ones((2, 3)) / 3, np.eye(2)), "square"),
    "emission rows != states": (lambda: HMMLanguage([0.5, 0.5], np.eye(2), np.eye(3)), "one emission row per state"),
    "transition row not a distribution": (lambda: HMMLanguage([0.5, 0.5], [[0.5, 0.6], [0, 1]], np.eye(2)), "sum to 1"),
    "non-finite emission": (lambda: HMMLanguage([1.0], [[1.0]], [[np.inf, 0.0]]), "non-finite"),
    "state_labels wrong length": (lambda: HMMLanguage([0.5, 0.5], np.eye(2), np.eye(2), [0, 1, 0]), "one label per state"),
    "word id unknown": (lambda: HMM.next_word_dist([[0, 4]]), "unknown word"),
    "prefixes 1-D": (lambda: HMM.next_word_dist([0, 1, 2]), "x\\[None, :\\]"),
    "float word ids": (lambda: HMM.next_word_dist([[0.5, 1.0]]), "integer word ids"),
    "no prefixes": (lambda: HMM.next_word_dist(np.zeros((0, 3), dtype=int)), "empty"),
    "zero-probability prefix": (lambda: HMMLanguage([1.0], [[1.0]], [[1.0, 0.0]]).next_word_dist([[1]]),
                                "probability 0"),
    "label_posterior without labels": (lambda: HMMLanguage([1.0], [[1.0]], [[1.0]]).label_posterior([[0]]),
                                       "no state_labels"),
    "HMM sample length 0": (lambda: HMM.sample(3, 0), "length must be an int >= 1"),
    "natural_task negative length": (lambda: HMM.natural_task(3, -1), "length must be an int >= 0"),
    "stickiness > 1": (lambda: HMMLanguage.random(4, 5, stickiness=2), "stickiness"),
    "fewer states than labels": (lambda: HMMLanguage.random(2, 5, n_labels=3), "n_states >= n_labels"),
    "one label": (lambda: HMMLanguage.random(4, 5, n_labels=1), "n_labels must be an int >= 2"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_value_error_naming_the_fix(case):
    call, match = BAD[case]
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- generators
def test_gaussian_embeddings_have_the_stated_moments():
    from lmdownstream.synthetic import gaussian_embeddings

    Phi, mu, Sigma = gaussian_embeddings(4, 200_000, seed=0, mean_norm=2.0, spectrum=(0.5, 2.0))
    assert Phi.shape == (4, 200_000) and np.linalg.norm(mu) == pytest.approx(2.0, abs=1e-12)
    np.testing.assert_allclose(np.linalg.eigvalsh(Sigma), np.linspace(0.5, 2.0, 4), atol=1e-12)
    np.testing.assert_allclose(Phi.mean(1), mu, atol=0.02)  # sd of the mean: sqrt(2 / 2e5) = 0.003
    np.testing.assert_allclose(np.cov(Phi), Sigma, atol=0.03)
    np.testing.assert_array_equal(gaussian_embeddings(3, 10, seed=1)[0], gaussian_embeddings(3, 10, seed=1)[0])
    with pytest.raises(ValueError, match="spectrum"):
        gaussian_embeddings(3, 10, spectrum=(2.0, 1.0))
    with pytest.raises(ValueError, match="mean_norm"):
        gaussian_embeddings(3, 10, mean_norm=-1.0)


def test_topic_language_has_a_near_rank_k_second_moment():
    from lmdownstream.synthetic import topic_language

    lang = topic_language(n_contexts=300, vocab_size=40, n_topics=4, noise=0.02, seed=1)
    assert lang.p_next.shape == (300, 40) and lang.labels is None
    P, w = lang.p_next, lang.p_context
    ev = np.sort(np.linalg.eigvalsh((P * w[:, None]).T @ P))[::-1]
    assert ev[3] > 20 * ev[4]  # the gap after the K-th eigenvalue
    # without noise, p* is a mixture of K topics: rank K exactly
    clean = topic_language(n_contexts=50, vocab_size=40, n_topics=4, noise=0.0, seed=1)
    assert np.linalg.matrix_rank(clean.p_next, tol=1e-10) == 4
    with pytest.raises(ValueError, match="noise"):
        topic_language(noise=1.0)
    with pytest.raises(ValueError, match="n_topics"):
        topic_language(vocab_size=5, n_topics=5)


def test_word_direction_and_planted_phi():
    from lmdownstream.synthetic import planted_phi

    lang = ContextLanguage.random(40, 32, n_classes=4, seed=2)
    W = lang.indicative_words
    u = lang.word_direction([1, 3], [0, 2])
    assert set(np.flatnonzero(u > 0)) == set(W[[1, 3]].ravel()) and set(np.flatnonzero(u < 0)) == set(W[[0, 2]].ravel())
    assert np.all(u[np.setdiff1d(np.arange(32), W.ravel())] == 0)
    Phi = planted_phi(u, 5, seed=[2, 5], zero_on=W)
    ref = np.random.default_rng([2, 5]).normal(size=(5, 32))
    np.testing.assert_array_equal(Phi[0], u)
    assert np.all(Phi[1:, W.ravel()] == 0)
    keep = np.setdiff1d(np.arange(32), W.ravel())
    np.testing.assert_array_equal(Phi[1:, keep], ref[1:, keep])
    # u lies in the row span: Phi^T e_1 = u
    np.testing.assert_array_equal(Phi.T @ np.eye(5)[0], u)
    with pytest.raises(ValueError, match="both"):
        lang.word_direction([1], [1])
    with pytest.raises(ValueError, match="indicative"):
        LANG.word_direction([0], [1])
