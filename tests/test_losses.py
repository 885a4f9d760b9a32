"""losses.xent_loss and losses.quad_loss against hand-worked values, autograd and closed forms."""
import math

import numpy as np
import pytest
import torch

from lmdownstream.losses import quad_loss, xent_loss


def _problem(n=6, d=3, V=7, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(n, d))
    Phi = rng.normal(size=(d, V))
    P = rng.dirichlet(np.ones(V), size=n)
    return theta, Phi, P


def test_hand_worked_case():
    # d = 2, V = 3, one context
    theta = np.array([[1.0, -0.5]])
    Phi = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    p = np.array([[0.5, 0.25, 0.25]])
    logits = [1.0, -0.5, 1.5]  # theta . phi_w
    lin = 0.5 * 1.0 + 0.25 * (-0.5) + 0.25 * 1.5
    log_z = math.log(math.exp(1.0) + math.exp(-0.5) + math.exp(1.5))
    assert float(xent_loss(theta, Phi, p)) == pytest.approx(-lin + log_z, abs=1e-14)
    assert float(quad_loss(theta, Phi, p)) == pytest.approx(-lin + 0.5 * sum(z * z for z in logits), abs=1e-14)
    # sample form: word 2
    assert float(xent_loss(theta, Phi, [2])) == pytest.approx(-1.5 + log_z, abs=1e-14)
    assert float(quad_loss(theta, Phi, [2])) == pytest.approx(-1.5 + 0.5 * sum(z * z for z in logits), abs=1e-14)


def test_returns_0dim_tensor_and_accepts_numpy_and_torch():
    theta, Phi, P = _problem()
    out = xent_loss(theta, Phi, P)
    assert isinstance(out, torch.Tensor) and out.ndim == 0 and out.dtype == torch.float64
    same = xent_loss(torch.tensor(theta), torch.tensor(Phi), torch.tensor(P))
    assert float(out) == pytest.approx(float(same), abs=1e-14)
    # a single (d,) feature vector is one row
    assert float(quad_loss(theta[0], Phi, P[0])) == pytest.approx(float(quad_loss(theta[:1], Phi, P[:1])), abs=1e-14)


@pytest.mark.parametrize("loss", [xent_loss, quad_loss])
def test_sample_form_equals_population_form_with_one_hot(loss):
    theta, Phi, _ = _problem()
    ids = np.array([0, 3, 6, 3, 1, 2])
    onehot = np.eye(Phi.shape[1])[ids]
    assert float(loss(theta, Phi, ids)) == pytest.approx(float(loss(theta, Phi, onehot)), abs=1e-13)
    # and the population loss is the expectation of the sample loss over w ~ p*
    _, _, P = _problem()
    V = Phi.shape[1]
    per_word = np.array([[float(loss(theta[i:i + 1], Phi, [w])) for w in range(V)] for i in range(len(ids))])
    assert float(loss(theta, Phi, P)) == pytest.approx(float(np.mean((per_word * P).sum(1))), abs=1e-12)


def test_xent_gradient_is_moment_mismatch():
    theta, Phi, P = _problem()
    n = theta.shape[0]
    t = torch.tensor(theta, requires_grad=True)
    xent_loss(t, Phi, P).backward()
    p_theta = torch.softmax(torch.tensor(theta @ Phi), 1).numpy()
    expected = (p_theta @ Phi.T - P @ Phi.T) / n
    np.testing.assert_allclose(t.grad.numpy(), expected, atol=1e-14)


def test_quad_gradient_closed_form():
    theta, Phi, P = _problem()
    n = theta.shape[0]
    t = torch.tensor(theta, requires_grad=True)
    quad_loss(t, Phi, P).backward()
    expected = (theta @ Phi @ Phi.T - P @ Phi.T) / n
    np.testing.assert_allclose(t.grad.numpy(), expected, atol=1e-13)


@pytest.mark.parametrize("loss", [xent_loss, quad_loss])
def test_gradcheck_theta_and_phi(loss):
    theta, Phi, P = _problem(n=3, d=2, V=4)
    t = torch.tensor(theta, requires_grad=True)
    F = torch.tensor(Phi, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b, torch.tensor(P)), (t, F))


def test_quad_minimiser_closed_form():
    theta, Phi, P = _problem(n=5, d=3, V=8)
    star = np.linalg.solve(Phi @ Phi.T, Phi @ P.T).T  # (Phi Phi^T)^{-1} Phi p*
    t = torch.tensor(star, requires_grad=True)
    quad_loss(t, Phi, P).backward()
    assert float(t.grad.abs().max()) < 1e-13  # zero gradient
    # gradient descent from elsewhere converges to it
    x = torch.tensor(theta, requires_grad=True)
    lr = 1.0 / np.linalg.eigvalsh(Phi @ Phi.T).max() * x.shape[0]
    for _ in range(3000):
        x.grad = None
        quad_loss(x, Phi, P).backward()
        with torch.no_grad():
            x -= lr * x.grad
    np.testing.assert_allclose(x.detach().numpy(), star, atol=1e-8)


def test_weights_and_bias():
    theta, Phi, P = _problem()
    w = np.arange(1.0, 7.0)
    per = np.array([float(xent_loss(theta[i:i + 1], Phi, P[i:i + 1])) for i in range(6)])
    assert float(xent_loss(theta, Phi, P, weights=w)) == pytest.approx(np.dot(w, per) / w.sum(), abs=1e-13)
    # a bias equals an extra embedding row with a constant-1 feature
    b = np.linspace(-1, 1, Phi.shape[1])
    theta1 = np.hstack([theta, np.ones((6, 1))])
    Phi1 = np.vstack([Phi, b])
    assert float(xent_loss(theta, Phi, P, bias=b)) == pytest.approx(float(xent_loss(theta1, Phi1, P)), abs=1e-13)


def test_extreme_logits_are_stable():
    theta, Phi, P = _problem()
    big = xent_loss(1000 * theta, Phi, P)
    assert torch.isfinite(big)
    logits = 1000 * theta @ Phi
    m = logits.max(1, keepdims=True)
    ref = np.mean(m[:, 0] + np.log(np.exp(logits - m).sum(1)) - (logits * P).sum(1))
    assert float(big) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("loss", [xent_loss, quad_loss])
def test_bad_inputs(loss):
    theta, Phi, P = _problem()
    with pytest.raises(ValueError, match="Phi"):
        loss(theta, Phi.T, P)  # (V, d) instead of (d, V)
    with pytest.raises(ValueError, match="out of range"):
        loss(theta, Phi, np.array([0, 1, 2, 3, 4, 7]))
    with pytest.raises(ValueError, match="shape"):
        loss(theta, Phi, P[:, :-1])
    with pytest.raises(ValueError, match="distributions"):
        loss(theta, Phi, 2 * P)
    bad = theta.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        loss(bad, Phi, P)


# --------------------------------------------------------------------------- reductions, padding, batch dims
@pytest.mark.parametrize("loss", [xent_loss, quad_loss])
def test_reductions_and_padding_match_a_loop(loss):
    theta, Phi, _ = _problem(n=7)
    ids = np.array([0, -1, 6, 3, -1, 2, 5])
    per = np.array([0.0 if w < 0 else float(loss(theta[i], Phi, w)) for i, w in enumerate(ids)])
    none = loss(theta, Phi, ids, reduction="none")
    assert none.shape == (7,)
    np.testing.assert_allclose(none.numpy(), per, atol=1e-13)
    keep = ids >= 0
    assert float(loss(theta, Phi, ids)) == pytest.approx(per[keep].mean(), abs=1e-13)
    assert float(loss(theta, Phi, ids, reduction="sum")) == pytest.approx(per.sum(), abs=1e-12)
    w = np.arange(1.0, 8.0)
    assert float(loss(theta, Phi, ids, weights=w)) == pytest.approx((w * per)[keep].sum() / w[keep].sum(), abs=1e-13)
    assert float(loss(theta, Phi, ids, weights=w, reduction="sum")) == pytest.approx((w * per).sum(), abs=1e-12)
    with pytest.raises(ValueError, match="reduction='none'"):
        loss(theta, Phi, ids, weights=w, reduction="none")
    with pytest.raises(ValueError, match="reduction"):
        loss(theta, Phi, ids, reduction="avg")


def test_xent_sample_form_is_torch_cross_entropy_with_ignore_index():
    theta, Phi, _ = _problem(n=9)
    ids = torch.tensor([0, 1, -1, 3, 4, 5, -1, 2, 6])
    logits = torch.tensor(theta @ Phi)
    b = torch.linspace(-1, 1, Phi.shape[1], dtype=torch.float64)
    for red in ("mean", "sum", "none"):
        want = torch.nn.functional.cross_entropy(logits + b, ids, ignore_index=-1, reduction=red)
        torch.testing.assert_close(xent_loss(theta, Phi, ids, bias=b, reduction=red), want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("loss", [xent_loss, quad_loss])
def test_leading_batch_dimensions_are_flattened(loss):
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(2, 5, 3))
    Phi = rng.normal(size=(3, 7))
    ids = rng.integers(-1, 7, size=(2, 5))
    none = loss(theta, Phi, ids, reduction="none")
    assert none.shape == (2, 5)
    np.testing.assert_allclose(none.numpy().ravel(), loss(theta.reshape(10, 3), Phi, ids.ravel(), reduction="none").numpy())
    assert float(loss(theta, Phi, ids)) == pytest.approx(float(loss(theta.reshape(10, 3), Phi, ids.ravel())), abs=1e-14)
    P = rng.dirichlet(np.ones(7), size=(2, 5))
    assert float(loss(theta, Phi, P)) == pytest.approx(float(loss(theta.reshape(10, 3), Phi, P.reshape(10, 7))), abs=1e-14)


@pytest.mark.parametrize("form", ["ids", "dists"])
def test_quad_gram_path_equals_logits_form_with_the_same_gradients(form):
    theta, Phi, P = _problem(n=6, d=3, V=9)
    target = np.array([0, 8, 3, -1, 4, 4]) if form == "ids" else P
    t1, F1 = torch.tensor(theta, requires_grad=True), torch.tensor(Phi, requires_grad=True)
    t2, F2 = torch.tensor(theta, requires_grad=True), torch.tensor(Phi, requires_grad=True)
    # independent reference: the (n, V) logits form, 1/2 ||Phi^T theta||^2 - theta^T Phi p*
    L = t1 @ F1
    tgt = torch.as_tensor(target)
    if form == "ids":
        keep = tgt >= 0
        lin = L.gather(1, tgt.clamp_min(0)[:, None])[:, 0]
        ref = ((0.5 * (L * L).sum(1) - lin) * keep).sum() / keep.sum()
    else:
        ref = (0.5 * (L * L).sum(1) - (L * tgt).sum(1)).mean()
    got = quad_loss(t2, F2, target)
    assert got.item() == pytest.approx(ref.item(), abs=1e-13)
    ref.backward()
    got.backward()
    torch.testing.assert_close(t2.grad, t1.grad, rtol=0, atol=1e-13)
    torch.testing.assert_close(F2.grad, F1.grad, rtol=0, atol=1e-13)
    # a precomputed Gram matrix gives the same value and the same theta-gradient
    t3 = torch.tensor(theta, requires_grad=True)
    G = torch.tensor(Phi @ Phi.T)
    q = quad_loss(t3, Phi, target, gram=G)
    assert q.item() == pytest.approx(ref.item(), abs=1e-13)
    q.backward()
    torch.testing.assert_close(t3.grad, t1.grad, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="gram"):
        quad_loss(theta, Phi, target, gram=G[:2])


# --------------------------------------------------------------------------- optima
def test_quad_optimum_closed_form_and_rank_deficient_min_norm():
    from lmdownstream.losses import quad_optimum

    _, Phi, P = _problem(n=5, d=3, V=8)
    want = np.linalg.solve(Phi @ Phi.T, Phi @ P.T).T
    got = quad_optimum(Phi, P)
    assert isinstance(got, np.ndarray) and got.shape == (5, 3)
    np.testing.assert_allclose(got, want, atol=1e-12)
    t = quad_optimum(torch.tensor(Phi), torch.tensor(P))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), want, atol=1e-12)
    # rank-deficient Phi (row 3 = row 1 + row 2): the minimum-norm minimiser, as numpy's lstsq
    Phi_def = np.vstack([Phi[:2], Phi[0] + Phi[1]])
    got = quad_optimum(Phi_def, P)
    np.testing.assert_allclose(got, (np.linalg.pinv(Phi_def.T) @ P.T).T, atol=1e-10)
    g = torch.tensor(got, requires_grad=True)
    quad_loss(g, Phi_def, P).backward()
    assert float(g.grad.abs().max()) < 1e-12


def test_xent_optimum_matches_moments_and_beats_perturbations():
    from lmdownstream.losses import xent_optimum

    _, Phi, P = _problem(n=6, d=3, V=10)
    theta = xent_optimum(Phi, P)
    p_theta = torch.softmax(torch.tensor(theta @ Phi), 1).numpy()
    np.testing.assert_allclose(p_theta @ Phi.T, P @ Phi.T, atol=1e-12)  # Phi p_theta* = Phi p*
    best = float(xent_loss(theta, Phi, P))
    rng = np.random.default_rng(1)
    for _ in range(5):
        assert float(xent_loss(theta + 1e-3 * rng.normal(size=theta.shape), Phi, P)) > best
    t = xent_optimum(torch.tensor(Phi), torch.tensor(P))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), theta, atol=1e-12)
    # p* with support on one word: no finite minimiser
    # p* on a vertex of the hull of Phi's columns (the word extreme along e_1): no finite minimiser
    with pytest.warns(RuntimeWarning, match="did not converge"):
        xent_optimum(Phi, np.eye(10)[[np.argmax(Phi[0])]], max_iter=20)


# --------------------------------------------------------------------------- KL and entropy
def test_kl_and_entropy_against_hand_and_scipy():
    from scipy.stats import entropy as sp_entropy

    from lmdownstream.losses import entropy, kl

    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    q = np.array([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(entropy(p), [math.log(2), sp_entropy(p[1])], atol=1e-15)
    np.testing.assert_allclose(kl(p, q), [math.log(2), 0.0], atol=1e-15)  # 0 log 0 = 0
    assert isinstance(kl(p, q), np.ndarray)
    tk = kl(torch.tensor(p), torch.tensor(q))
    assert isinstance(tk, torch.Tensor)
    np.testing.assert_allclose(tk.numpy(), kl(p, q), atol=1e-15)
    np.testing.assert_allclose(entropy(torch.tensor(p)).numpy(), entropy(p), atol=1e-15)
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(6), size=4), rng.dirichlet(np.ones(6), size=4)
    np.testing.assert_allclose(kl(a, b), [sp_entropy(x, y) for x, y in zip(a, b)], rtol=1e-12)
    assert float(kl(a[0], b[0])) == pytest.approx(sp_entropy(a[0], b[0]), rel=1e-12)  # one (V,) row
    # q = 0 where p > 0: infinite
    assert kl(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == np.inf
    assert float(kl(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))) == math.inf
    with pytest.raises(ValueError, match="distributions|sum to 1"):
        kl(2 * a, b)
    with pytest.raises(ValueError, match="distributions"):
        entropy(torch.tensor(2 * a))
    with pytest.raises(ValueError, match="shape"):
        kl(a, b[:3])
