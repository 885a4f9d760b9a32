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
    assert fit.coef_.shape == sk.coef_.shape and fit.intercept_.shape == sk.intercept_.shape
    np.testing.assert_allclose(fit.coef_, sk.coef_, atol=1e-4)

    Xm, ym = _multi_data(seed=2)
    wm = np.random.default_rng(4).random(len(ym)) + 0.1
    fit = theory.task_fit(Xm, ym, weights=wm, tol=1e-10)
    sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(Xm, ym, sample_weight=wm)
    sk_loss = _multi_loss(Xm, ym, wm / wm.sum(), sk.coef_.T, sk.intercept_)
    assert fit.loss <= sk_loss + 1e-10
    assert fit.loss == pytest.approx(sk_loss, abs=1e-8)
    assert fit.coef.shape == (3, 3) and fit.intercept.shape == (3,)
    np.testing.assert_allclose(fit.coef_, sk.coef_ - sk.coef_.mean(0) + fit.coef_.mean(0), atol=1e-3)  # up to a shift
    assert fit.coef_.shape == sk.coef_.shape and fit.lam_ is None and fit.v_ is None


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



# --------------------------------------------------------------------------- task_fit with Phi: v in the row span
def _phi_problem(n=80, d=4, V=12, seed=0):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(V), size=n)
    Phi = rng.normal(size=(d, V))
    y = (P @ rng.normal(size=V) * 5 + rng.normal(size=n) > 0).astype(int)
    return P, Phi, y, rng.random(n)


def _slsqp_phi(X, y, w, Phi, B):
    """Independent reference: scipy SLSQP with the 2V linear constraints |phi_w^T lam| <= B."""
    d, V = Phi.shape
    s, wn = 2 * y - 1, w / w.sum()
    A = np.hstack([Phi.T, np.zeros((V, 1))])
    res = minimize(lambda z: np.dot(wn, np.logaddexp(0, -s * (X @ z[:d] + z[d]))), np.zeros(d + 1),
                   method="SLSQP", options={"ftol": 1e-15, "maxiter": 2000},
                   constraints=[{"type": "ineq", "fun": lambda z: B - A @ z},
                                {"type": "ineq", "fun": lambda z: B + A @ z}])
    return res.fun, res.x


@pytest.mark.parametrize("B", [0.3, 2.0])
def test_phi_fit_matches_slsqp_and_is_feasible(B):
    P, Phi, y, w = _phi_problem()
    X = P @ Phi.T
    fit = theory.task_fit(X, y, B=B, Phi=Phi, weights=w)
    ref, z = _slsqp_phi(X, y, w, Phi, B)
    assert fit.converged and fit.loss <= ref + 1e-8 and fit.loss == pytest.approx(ref, abs=1e-8)
    assert fit.coef_.shape == (1, 4) and fit.intercept_.shape == (1,)
    np.testing.assert_allclose(fit.lam_, fit.coef_[0])
    np.testing.assert_allclose(fit.v_, Phi.T @ fit.lam_)
    assert np.abs(fit.v_).max() <= B and np.abs(fit.v_).max() > 0.999 * B  # feasible, constraint active
    np.testing.assert_allclose(fit.lam_, z[:4], atol=1e-3)
    # no feasible classifier does better (random points of the polytope, scaled to its boundary)
    rng = np.random.default_rng(2)
    s, wn = 2 * y - 1, w / w.sum()
    for _ in range(100):
        lam = rng.normal(size=4)
        lam *= B * rng.uniform(0, 1) / np.abs(Phi.T @ lam).max()
        b = rng.normal()
        assert fit.loss <= np.dot(wn, np.logaddexp(0, -s * (X @ lam + b))) + 1e-12


def test_phi_fit_with_identity_is_the_box_fit_and_an_inactive_constraint_is_the_free_fit():
    P, _, y, w = _phi_problem(V=6, seed=3)
    box = theory.task_fit(P, y, B=2.0, weights=w, tol=1e-10)
    ident = theory.task_fit(P, y, B=2.0, Phi=np.eye(6), weights=w)
    assert ident.loss == pytest.approx(box.loss, abs=1e-8)
    np.testing.assert_allclose(ident.v_, box.coef, atol=1e-3)
    P, Phi, y, w = _phi_problem(seed=4)
    X = P @ Phi.T
    free = theory.task_fit(X, y, weights=w, tol=1e-10)
    loose = theory.task_fit(X, y, B=1e6, Phi=Phi, weights=w)
    assert loose.loss == pytest.approx(free.loss, abs=1e-8)
    # B=None with Phi: no constraint at all, lam_ and v_ still reported
    none = theory.task_fit(X, y, Phi=Phi, weights=w, tol=1e-10)
    assert none.loss == pytest.approx(free.loss, abs=1e-12) and none.v_.shape == (12,)


def test_task_tau_with_phi_is_the_phi_fit_on_phi_p_star():
    P, Phi, y, w = _phi_problem(seed=5)
    tau_phi = theory.task_tau(P, y, B=1.0, weights=w, Phi=Phi)
    assert tau_phi == pytest.approx(_slsqp_phi(P @ Phi.T, y, w, Phi, 1.0)[0], abs=1e-8)
    assert tau_phi >= theory.task_tau(P, y, B=1.0, weights=w) - 1e-8  # the row span is a subset of R^V
    with pytest.raises(ValueError, match="columns"):
        theory.task_tau(P, y, B=1.0, Phi=Phi[:, :-1])


def test_phi_fit_bad_inputs():
    P, Phi, y, _ = _phi_problem()
    X = P @ Phi.T
    with pytest.raises(ValueError, match="Phi has 12 rows"):
        theory.task_fit(X, y, B=1.0, Phi=Phi.T)
    with pytest.raises(ValueError, match="two classes"):
        theory.task_fit(X, np.arange(len(y)) % 3, B=1.0, Phi=Phi)
    with pytest.raises(ValueError, match="B"):
        theory.task_fit(X, y, B=0.0, Phi=Phi)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        fit = theory.task_fit(X, y, B=1.0, Phi=Phi, max_iter=2)
    assert not fit.converged and np.abs(fit.v_).max() < 1.0  # still strictly feasible


# --------------------------------------------------------------------------- omega and bisect
def test_omega_is_the_weighted_second_moment():
    P = _dists(n=30, V=5, seed=11)
    w = np.random.default_rng(1).random(30)
    Om, lam, U = theory.omega(P, w)
    ref = sum(wi * np.outer(p, p) for wi, p in zip(w / w.sum(), P))
    np.testing.assert_allclose(Om, ref, atol=1e-14)
    assert np.all(np.diff(lam) <= 1e-15)
    np.testing.assert_allclose(Om @ U, U * lam, atol=1e-12)
    np.testing.assert_allclose(theory.omega(P)[0], P.T @ P / 30, atol=1e-14)
    with pytest.raises(ValueError, match="negative"):
        theory.omega(P, -w)


def test_bisect_increasing_decreasing_and_below():
    t = theory.bisect(lambda x: x * x, 0.25)
    assert t == pytest.approx(0.5, rel=1e-9)
    t = theory.bisect(lambda x: (1 - x) ** 2, 0.25, rtol=1e-12)  # decreasing
    assert t == pytest.approx(0.5, rel=1e-9)
    f = lambda x: (1 - x) ** 2  # noqa: E731
    t = theory.bisect(f, 0.25, rtol=1e-3, below=True, f_hi=0.0)
    assert f(t) <= 0.25 and f(t) >= 0.999 * 0.25
    t = theory.bisect(lambda x: x ** 3, 1e-6, lo=0.0, hi=2.0)
    assert t ** 3 == pytest.approx(1e-6, rel=1e-9)
    with pytest.raises(ValueError, match="outside"):
        theory.bisect(lambda x: x, 2.0)
