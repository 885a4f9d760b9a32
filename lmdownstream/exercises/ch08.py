"""Checkers for chapter 8 (result D: the Quad objective)."""
from __future__ import annotations

import numpy as np

from ._core import ExerciseFailed, as_float_array, call, compare, exercise, passed, random_distributions


def _case(rng):
    """A full-rank Phi (d, V) with d < V and next-word distributions p_star (n, V), with n, d, V distinct."""
    d = int(rng.integers(2, 7))
    n = d + int(rng.integers(1, 10))
    V = max(n, d + 3) + int(rng.integers(1, 30))
    Phi = rng.normal(size=(d, V))
    return Phi, random_distributions(rng, n, V)


def _reference_quad_minimiser(Phi, p_star):
    # Quad's excess is ½‖Φᵀ(θ − θ*)‖²: θ* is the least-squares solution of Φᵀθ ≈ p*.
    return np.linalg.lstsq(Phi.T, p_star.T, rcond=None)[0].T


def _shape_hint(got, n, d, what, how):
    if got.shape == (d, n):
        raise ExerciseFailed(f"{what} has shape {got.shape}, the transpose of the expected ({n}, {d}): "
                             f"return one row of features per context ({how}).")


@exercise("ex-ch08-minimiser", reference=_reference_quad_minimiser, wrong=[
    lambda Phi, p_star: p_star @ Phi.T,                                           # Φp*, no inverse
    lambda Phi, p_star: p_star @ Phi.T @ (Phi @ Phi.T),                           # multiplied by ΦΦᵀ
    lambda Phi, p_star: np.linalg.solve(Phi @ Phi.T, 2 * Phi @ p_star.T).T,       # factor 2
    lambda Phi, p_star: np.linalg.solve(Phi @ Phi.T, Phi @ p_star.T),             # forgot the transpose
])
def check_quad_minimiser(quad_minimiser, n_cases: int = 5, seed: int = 0) -> None:
    """Check ``quad_minimiser(Phi, p_star) -> (n, d)``: ``θ*_s = (ΦΦᵀ)⁻¹ Φ p*(·|s)`` for every context (row of p_star)."""
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        Phi, p_star = _case(rng)
        (d, V), n = Phi.shape, p_star.shape[0]
        what = "quad_minimiser(Phi, p_star)"
        try:
            got = call(quad_minimiser, Phi.copy(), p_star.copy(), what="quad_minimiser")
        except ExerciseFailed as exc:
            if "LinAlgError" in str(exc):
                raise ExerciseFailed(f"{exc}. Here Φ has full rank d = {d}, so the d x d matrix ΦΦᵀ is invertible; "
                                     f"ΦᵀΦ ({V} x {V}, rank {d}) is not: solve with Phi @ Phi.T.") from None
            raise
        got = as_float_array(got, what)
        _shape_hint(got, n, d, what, "transpose the solution of the d x d system")
        want = _reference_quad_minimiser(Phi, p_star)
        gram = Phi @ Phi.T
        rhs = p_star @ Phi.T
        compare(got, want, what, rtol=1e-7, atol=1e-9, hints=[
            (lambda g, w: np.allclose(g, rhs, rtol=1e-6),
             "that is Φp*, the right-hand side. The minimiser solves (ΦΦᵀ)θ = Φp*: "
             "np.linalg.solve(Phi @ Phi.T, Phi @ p_star.T).T."),
            (lambda g, w: np.allclose(g, rhs @ gram, rtol=1e-6),
             "you multiplied Φp* by ΦΦᵀ; the minimiser solves the system with ΦΦᵀ (applies its inverse)."),
            (lambda g, w: np.allclose(g, 2 * w, rtol=1e-6) or np.allclose(g, w / 2, rtol=1e-6),
             "it is off by a factor 2: the gradient of ½‖Φᵀθ‖² is ΦΦᵀθ (the ½ cancels the 2), so the "
             "first-order condition is ΦΦᵀθ = Φp*."),
        ])
    return passed("ex-ch08-minimiser", n_cases)


def _reference_gd(Phi, p_star, lr, steps):
    # θ_k = (I − (I − lr G)^k) G⁻¹ Φp*, evaluated in the eigenbasis of G = ΦΦᵀ (no loop).
    g, Q = np.linalg.eigh(Phi @ Phi.T)
    gain = (1 - (1 - lr * g) ** steps) / g
    return (p_star @ Phi.T) @ Q @ np.diag(gain) @ Q.T


def _gd_loop(Phi, p_star, lr, steps, sign=1.0, with_target=True):
    G, B = Phi @ Phi.T, p_star @ Phi.T
    th = np.zeros_like(B)
    for _ in range(steps):
        th = th - sign * lr * (th @ G - (B if with_target else 0.0))
    return th


@exercise("ex-ch08-gd", reference=_reference_gd, wrong=[
    lambda Phi, p_star, lr, steps: _gd_loop(Phi, p_star, lr, steps + 1),                 # one step too many
    lambda Phi, p_star, lr, steps: _gd_loop(Phi, p_star, lr, steps, sign=-1.0),          # ascends the loss
    lambda Phi, p_star, lr, steps: _reference_quad_minimiser(Phi, p_star),               # returned θ*
    lambda Phi, p_star, lr, steps: _gd_loop(Phi, p_star, lr, steps, with_target=False),  # dropped Φp*
])
def check_gd_quad_features(gd_quad_features, n_cases: int = 5, seed: int = 0) -> None:
    """Check ``gd_quad_features(Phi, p_star, lr, steps) -> (n, d)``: ``steps`` steps of
    θ ← θ − lr (ΦΦᵀθ − Φp*) from θ = 0, for all contexts at once."""
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        Phi, p_star = _case(rng)
        (d, V), n = Phi.shape, p_star.shape[0]
        lam_max = float(np.linalg.eigvalsh(Phi @ Phi.T).max())
        lr = float(rng.uniform(0.2, 1.5)) / lam_max
        steps = int(rng.integers(2, 40))
        what = f"gd_quad_features(Phi, p_star, lr, steps={steps})"
        with np.errstate(over="ignore", invalid="ignore"):
            got = as_float_array(call(gd_quad_features, Phi.copy(), p_star.copy(), lr, steps,
                                      what="gd_quad_features"), what)
        _shape_hint(got, n, d, what, "keep θ as an (n, d) array, whose rows are the contexts")
        want = _reference_gd(Phi, p_star, lr, steps)
        if got.shape == want.shape and not np.all(np.isfinite(got)):
            raise ExerciseFailed(f"{what} contains NaN or inf: the iterates diverged. With lr < 2/λ_max(ΦΦᵀ) "
                                 "the update θ − lr (ΦΦᵀθ − Φp*) converges; check its sign and the matrix you use.")
        scale = max(1.0, float(np.abs(want).max()))
        compare(got, want, what, rtol=1e-7, atol=1e-9 * scale, hints=[
            (lambda g, w: np.allclose(g, _reference_gd(Phi, p_star, lr, steps + 1), rtol=1e-6),
             "it is the iterate after steps + 1 steps: start from θ = 0 and apply the update exactly `steps` times."),
            (lambda g, w: np.allclose(g, _reference_gd(Phi, p_star, lr, steps - 1), rtol=1e-6),
             "it is the iterate after steps - 1 steps: start from θ = 0 and apply the update exactly `steps` times."),
            (lambda g, w: np.allclose(g, _gd_loop(Phi, p_star, lr, steps, sign=-1.0), rtol=1e-6),
             "the update climbs the loss: subtract lr times the gradient ΦΦᵀθ − Φp*."),
            (lambda g, w: np.allclose(g, _reference_quad_minimiser(Phi, p_star), rtol=1e-6),
             "that is the minimiser θ* (the limit of infinitely many steps); return the iterate after `steps` steps."),
            (lambda g, w: np.allclose(g, 0.0),
             "the iterates never leave θ = 0: the gradient is ΦΦᵀθ − Φp*, and at θ = 0 it is −Φp*, not 0."),
        ])
    return passed("ex-ch08-gd", n_cases)


def _reference_quad_gram(F, Phi, targets):
    # -f·φ_w + ½ fᵀ(ΦΦᵀ)f per row, averaged; only d x d and (n, d) arrays, never the (n, V) logits.
    G = Phi @ Phi.T
    return float(np.mean(0.5 * np.einsum("nd,de,ne->n", F, G, F) - np.einsum("nd,dn->n", F, Phi[:, targets])))


@exercise("ex-ch08-gram", reference=_reference_quad_gram, wrong=[
    lambda F, Phi, t: float(np.mean(np.einsum("nd,de,ne->n", F, Phi @ Phi.T, F) - np.einsum("nd,dn->n", F, Phi[:, t]))),  # no ½
    lambda F, Phi, t: float(np.mean(0.5 * np.einsum("nd,de,ne->n", F, Phi @ Phi.T, F) + np.einsum("nd,dn->n", F, Phi[:, t]))),  # sign
    lambda F, Phi, t: float(np.sum(0.5 * np.einsum("nd,de,ne->n", F, Phi @ Phi.T, F) - np.einsum("nd,dn->n", F, Phi[:, t]))),  # sum
    lambda F, Phi, t: float(np.mean(0.5 * (F ** 2).sum(1) - np.einsum("nd,dn->n", F, Phi[:, t]))),  # dropped Φ
])
def check_quad_loss_gram(quad_loss_gram, n_cases: int = 5, seed: int = 0) -> None:
    """Check ``quad_loss_gram(F, Phi, targets) -> float``: the mean sample Quad loss
    ``mean_i [-f_iᵀφ_{w_i} + ½ f_iᵀ(ΦΦᵀ)f_i]`` for features F (n, d), embeddings Phi (d, V) and word ids (n,)."""
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        d = int(rng.integers(2, 9))
        V = d + int(rng.integers(3, 60))
        n = int(rng.integers(3, 40))
        F, Phi = rng.normal(size=(n, d)), rng.normal(size=(d, V))
        targets = rng.integers(0, V, n)
        got = call(quad_loss_gram, F.copy(), Phi.copy(), targets.copy(), what="quad_loss_gram")
        got = as_float_array(got, "quad_loss_gram(F, Phi, targets)")
        if got.size != 1:
            raise ExerciseFailed(f"quad_loss_gram returned an array of shape {got.shape}; return one number, the mean over rows.")
        want = _reference_quad_gram(F, Phi, targets)
        quad = 0.5 * np.einsum("nd,de,ne->n", F, Phi @ Phi.T, F)
        lin = np.einsum("nd,dn->n", F, Phi[:, targets])
        compare(got.reshape(()), np.asarray(want), "quad_loss_gram(F, Phi, targets)", rtol=1e-8, atol=1e-10, hints=[
            (lambda g, w: np.isclose(g, np.mean(2 * quad - lin)), "the quadratic term is missing its ½: ½ fᵀ(ΦΦᵀ)f."),
            (lambda g, w: np.isclose(g, np.mean(quad + lin)), "the linear term has the wrong sign: the loss rewards "
                                                              "f·φ_w, so it enters with a minus."),
            (lambda g, w: np.isclose(g, n * w), "that is the sum over rows; return the mean."),
            (lambda g, w: np.isclose(g, np.mean(0.5 * (F ** 2).sum(1) - lin)),
             "‖Φᵀf‖² is fᵀ(ΦΦᵀ)f, not ‖f‖²: keep the Gram matrix Phi @ Phi.T."),
        ])
    return passed("ex-ch08-gram", n_cases)
