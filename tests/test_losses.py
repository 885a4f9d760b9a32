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
