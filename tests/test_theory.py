"""theory: excess_xent, task_fit/task_loss/task_tau, gamma and the bounds, against independent
computations (scipy.stats.entropy, scikit-learn, SLSQP, random classifiers, KKT conditions)."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax
from scipy.stats import entropy

from lmdownstream import theory


def _dists(n=20, V=6, seed=0, alpha=1.0):
    return np.random.default_rng(seed).dirichlet(np.full(V, alpha), size=n)


# --------------------------------------------------------------------------- excess_xent
def test_excess_xent_is_difference_of_cross_entropies_and_weighted_kl():
    p_star, p = _dists(seed=0), _dists(seed=1)
    w = np.random.default_rng(2).random(20)
    wn = w / w.sum()
    xent_p = -np.dot(wn, (p_star * np.log(p)).sum(1))
    xent_star = -np.dot(wn, (p_star * np.log(p_star)).sum(1))
    eps = theory.excess_xent(p_star, p, w)
    assert eps == pytest.approx(xent_p - xent_star, abs=1e-13)
    assert eps == pytest.approx(np.dot(wn, entropy(p_star, p, axis=1)), abs=1e-13)
    assert theory.excess_xent(p_star, p_star) == 0.0
    # uniform weights by default; weights are normalised
    assert theory.excess_xent(p_star, p) == pytest.approx(np.mean(entropy(p_star, p, axis=1)), abs=1e-13)
    assert theory.excess_xent(p_star, p, 7 * w) == pytest.approx(eps, abs=1e-15)


def test_excess_xent_zeros():
    p_star = np.array([[0.5, 0.5, 0.0]])
    p = np.array([[0.25, 0.5, 0.25]])
    assert theory.excess_xent(p_star, p) == pytest.approx(0.5 * np.log(2), abs=1e-15)
    assert theory.excess_xent(p, p_star) == np.inf


def test_excess_xent_bad_inputs():
    p_star, p = _dists(), _dists(seed=1)
    with pytest.raises(ValueError, match="shape"):
        theory.excess_xent(p_star, p[:-1])
    with pytest.raises(ValueError, match="sum to 1"):
        theory.excess_xent(2 * p_star, p)
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        theory.excess_xent(p_star, bad)
    with pytest.raises(ValueError, match="empty"):
        theory.excess_xent(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="weights"):
        theory.excess_xent(p_star, p, np.ones(3))


# --------------------------------------------------------------------------- task_fit / task_loss
def _binary_data(n=120, D=4, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D))
    y = (X @ rng.normal(size=D) + noise * rng.normal(size=n) > 0).astype(int)
    return X, y


def _multi_data(n=150, D=3, K=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D))
    y = np.argmax(X @ rng.normal(size=(D, K)) + rng.gumbel(size=(n, K)), axis=1)
    return X, y


def _binary_loss(X, y, w, v, b):
    s = 2 * y - 1
    return float(np.dot(w, np.logaddexp(0, -s * (X @ v + b))))


def _multi_loss(X, y, w, W, b):
    return float(-np.dot(w, log_softmax(X @ W + b, axis=1)[np.arange(len(y)), y]))


@pytest.mark.parametrize("B", [0.2, 1.0])
def test_task_loss_beats_random_feasible_classifiers(B):
    rng = np.random.default_rng(5)
    X, y = _binary_data()
    w = np.full(len(y), 1 / len(y))
    best = theory.task_loss(X, y, B=B)
    for _ in range(200):
        v, b = rng.uniform(-B, B, size=X.shape[1]), rng.normal(scale=2)
        assert best <= _binary_loss(X, y, w, v, b) + 1e-12
    Xm, ym = _multi_data()
    wm = np.full(len(ym), 1 / len(ym))
    best = theory.task_loss(Xm, ym, B=B)
    for _ in range(200):
        W, b = rng.uniform(-B, B, size=(3, 3)), rng.normal(scale=2, size=3)
        assert best <= _multi_loss(Xm, ym, wm, W, b) + 1e-12


def test_unconstrained_matches_sklearn_with_sample_weight():
    from sklearn.linear_model import LogisticRegression

    X, y = _binary_data(seed=1)
    w = np.random.default_rng(3).random(len(y)) + 0.1
    wn = w / w.sum()
    fit = theory.task_fit(X, y, weights=w, tol=1e-10)
    sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(X, y, sample_weight=w)
    sk_loss = _binary_loss(X, y, wn, sk.coef_[0], sk.intercept_[0])
    assert fit.converged
    assert fit.loss <= sk_loss + 1e-10
    assert fit.loss == pytest.approx(sk_loss, abs=1e-8)
    np.testing.assert_allclose(fit.coef, sk.coef_[0], atol=1e-4)

    Xm, ym = _multi_data(seed=2)
    wm = np.random.default_rng(4).random(len(ym)) + 0.1
    fit = theory.task_fit(Xm, ym, weights=wm, tol=1e-10)
    sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(Xm, ym, sample_weight=wm)
    sk_loss = _multi_loss(Xm, ym, wm / wm.sum(), sk.coef_.T, sk.intercept_)
    assert fit.loss <= sk_loss + 1e-10
    assert fit.loss == pytest.approx(sk_loss, abs=1e-8)
    assert fit.coef.shape == (3, 3) and fit.intercept.shape == (3,)


def test_box_constrained_matches_slsqp():
    X, y = _binary_data(seed=2, noise=0.3)
    w = np.full(len(y), 1 / len(y))
    B = 0.5
    fit = theory.task_fit(X, y, B=B)
    assert np.max(np.abs(fit.coef)) <= B + 1e-12
    assert np.any(np.isclose(np.abs(fit.coef), B))  # the box is active
    D = X.shape[1]
    ref = minimize(lambda z: _binary_loss(X, y, w, z[:D], z[D]), np.zeros(D + 1), method="SLSQP",
                   bounds=[(-B, B)] * D + [(None, None)], options={"ftol": 1e-14, "maxiter": 1000})
    assert fit.loss <= ref.fun + 1e-10
    assert fit.loss == pytest.approx(ref.fun, abs=1e-7)

    Xm, ym = _multi_data(seed=3)
    wm = np.full(len(ym), 1 / len(ym))
    fit = theory.task_fit(Xm, ym, B=0.3)
    ref = minimize(lambda z: _multi_loss(Xm, ym, wm, z[:9].reshape(3, 3), z[9:]), np.zeros(12),
                   method="SLSQP", bounds=[(-0.3, 0.3)] * 9 + [(None, None)] * 3,
                   options={"ftol": 1e-14, "maxiter": 1000})
    assert fit.loss <= ref.fun + 1e-10
    assert fit.loss == pytest.approx(ref.fun, abs=1e-7)


def test_monotone_in_B_and_unconstrained_is_lowest():
    X, y = _multi_data(seed=4)
    losses = [theory.task_loss(X, y, B=B) for B in (0.01, 0.1, 0.3, 1.0, 3.0, 10.0)]
    assert all(b <= a + 1e-10 for a, b in zip(losses, losses[1:]))
    assert theory.task_loss(X, y) <= losses[-1] + 1e-10
    assert losses[0] > losses[-1] + 0.05  # the bound matters


def test_kkt_conditions_binary_box():
    X, y = _binary_data(seed=6, noise=0.2)
    w = np.random.default_rng(0).random(len(y))
    w /= w.sum()
    B = 0.4
    fit = theory.task_fit(X, y, B=B, weights=w, tol=1e-10)
    s = 2 * y - 1
    m = s * (X @ fit.coef + fit.intercept)
    r = -w * s / (1 + np.exp(m))  # d loss / d score, written independently
    g_v, g_b = X.T @ r, r.sum()
    assert abs(g_b) < 1e-8  # free intercept: stationary
    inside = np.abs(fit.coef) < B - 1e-9
    assert np.all(np.abs(g_v[inside]) < 1e-8)
    assert np.all(g_v[np.isclose(fit.coef, B)] <= 1e-8)  # at +B the loss would decrease going up
    assert np.all(g_v[np.isclose(fit.coef, -B)] >= -1e-8)


def test_label_coding_and_weights_as_duplicates():
    X, y = _binary_data(n=60, seed=7)
    base = theory.task_fit(X, y, B=1.0)
    relabel = theory.task_fit(X, np.where(y == 1, "pos", "neg"), B=1.0)
    assert relabel.loss == pytest.approx(base.loss, abs=1e-10)
    np.testing.assert_allclose(relabel.coef, base.coef, atol=1e-6)  # "pos" > "neg": same sign
    assert list(relabel.classes) == ["neg", "pos"]
    # integer weights = duplicated rows
    k = np.arange(len(y)) % 3 + 1
    dup = theory.task_loss(np.repeat(X, k, axis=0), np.repeat(y, k), B=1.0)
    assert theory.task_loss(X, y, B=1.0, weights=k) == pytest.approx(dup, abs=1e-9)
    Xm, ym = _multi_data(n=90, seed=8)
    assert theory.task_loss(Xm, 10 * ym + 10, B=1.0) == pytest.approx(theory.task_loss(Xm, ym, B=1.0), abs=1e-10)


def test_non_convergence_warns():
    X, y = _binary_data(seed=9)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        fit = theory.task_fit(X, y, max_iter=1)
    assert not fit.converged


def test_task_tau_is_task_loss_on_p_star():
    p_star = _dists(n=40, V=5, seed=10)
    y = (p_star[:, 0] > 0.2).astype(int)
    w = np.random.default_rng(1).random(40)
    assert theory.task_tau(p_star, y, B=2.0, weights=w) == pytest.approx(
        theory.task_loss(p_star, y, B=2.0, weights=w), abs=1e-12)
    with pytest.raises(ValueError, match="sum to 1"):
        theory.task_tau(p_star * 1.1, y)


def test_task_loss_bad_inputs():
    X, y = _binary_data(n=30)
    with pytest.raises(ValueError, match="labels"):
        theory.task_loss(X, y[:-1])  # shape mismatch
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        theory.task_loss(bad, y)
    with pytest.raises(ValueError, match="one class"):
        theory.task_loss(X, np.zeros(30, dtype=int))
    for B in (0.0, -1.0):
        with pytest.raises(ValueError, match="B"):
            theory.task_loss(X, y, B=B)
    with pytest.raises(ValueError, match="empty"):
        theory.task_loss(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(ValueError, match="two weighted classes"):
        theory.task_loss(X, y, weights=(y == 1).astype(float))


# --------------------------------------------------------------------------- gamma and bounds
def test_gamma():
    p_task = np.array([0.5, 0.5, 0.0])
    p_lm = np.array([0.2, 0.3, 0.5])
    assert theory.gamma(p_task, p_lm) == pytest.approx(0.4)  # min(0.2/0.5, 0.3/0.5)
    assert theory.gamma(p_lm, p_lm) == 1.0
    # brute force: the largest g on a fine grid with p_lm >= g p_task
    grid = np.linspace(1e-4, 1, 10_000)
    ok = grid[[np.all(p_lm >= g * p_task - 1e-15) for g in grid]]
    assert theory.gamma(p_task, p_lm) == pytest.approx(ok.max(), abs=1e-4)
    with pytest.raises(ValueError, match="no"):
        theory.gamma(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="same contexts"):
        theory.gamma(p_task, np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="sum to 1"):
        theory.gamma(np.array([0.5, 0.6]), np.array([0.5, 0.5]))


def test_bounds():
    assert theory.xent_bound(0.1, 0.02, 2.0, 0.5) == pytest.approx(0.1 + np.sqrt(2 * 4 * 0.02 / 0.5))
    eps = np.array([0.0, 1e-4, 1e-2])
    np.testing.assert_allclose(theory.xent_bound(0.3, eps, 1.0), 0.3 + np.sqrt(2 * eps))
    assert isinstance(theory.xent_bound(0.3, 0.01, 1.0), float)
    assert theory.quad_bound(0.1, 0.02, 3.0, 0.25) == pytest.approx(0.1 + 3.0 * np.sqrt(2 * 0.02 / 0.25))
    np.testing.assert_allclose(theory.quad_bound(0.0, eps, 2.0), 2.0 * np.sqrt(2 * eps))
    with pytest.raises(ValueError, match="B"):
        theory.xent_bound(0.1, 0.01, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        theory.xent_bound(0.1, 0.01, 1.0, gamma=1.5)
    with pytest.raises(ValueError, match="eps"):
        theory.xent_bound(0.1, -0.01, 1.0)
    with pytest.raises(ValueError, match="v_norm2"):
        theory.quad_bound(0.1, 0.01, -1.0)

