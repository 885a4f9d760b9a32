"""Result C's experiments (lmdownstream.experiments.result_c): small sizes, checked independently.

The solvers and fits they call (theory.task_fit with Phi, fits.fit_log_partition, fits.r2,
synthetic.gaussian_embeddings) are tested in test_theory, test_fits and test_synthetic.
"""
import numpy as np
import pytest

from lmdownstream import features, lm, synthetic, theory
from lmdownstream.experiments import result_c

SIZES = dict(n_contexts=80, vocab_size=24, d=3, n_eps=4)
EPS = np.geomspace(0.05, 1e-3, 4)


@pytest.fixture(scope="module")
def df():
    return result_c.run(sizes=SIZES, eps=EPS, B=3.0, pretrain_steps=50, seed=1)


def test_gaussian_check_degrades_with_the_radius_and_matches_a_direct_computation():
    g = result_c.gaussian_check(d=4, vocab_sizes=(50, 5000), radii=[0.2, 5.0], n_directions=8)
    err = g.set_index(["V", "radius"]).err_mean
    assert err[(50, 0.2)] < 0.05 < err[(50, 5.0)] and err[(5000, 0.2)] < err[(50, 0.2)]
    assert (g.err_max >= g.err_mean).all() and (g.bias[g.radius == 5.0] < 0).all()  # Jensen
    # one row by hand: log V + theta mu + theta Sigma theta / 2 against the exact log Z
    Phi, mu, Sigma = synthetic.gaussian_embeddings(4, 50, seed=0)
    u = np.random.default_rng(1).normal(size=(8, 4))
    theta = 5.0 * u / np.linalg.norm(u, axis=1, keepdims=True)
    exact = np.log(np.exp(theta @ Phi).sum(1))
    pred = np.log(50) + theta @ mu + 0.5 * np.einsum("ni,ij,nj->n", theta, Sigma, theta)
    assert err[(50, 5.0)] == pytest.approx(np.abs(exact - pred).mean(), rel=1e-10)
    assert g.attrs["d"] == 4


def test_run_bounds_hold_and_quadratic_fit_is_good(df):
    assert set(df.phi) == {"gaussian", "learned"} and len(df) >= 6
    assert (df.loss_phip <= df.bound + 1e-9).all()  # result B
    assert (df.loss_afb <= df.bound_fit + 1e-9).all()  # result C with the fit's error
    assert (df.loss_f <= df.loss_afb_free + 1e-6).all()  # an affine image never helps
    assert (df.loss_afb_free <= df.loss_afb + 1e-6).all()  # lifting the budget never hurts
    assert (df.loss_f <= df.bound_fit + 1e-9).all()
    inv = df[df.cond_A < 1e6]
    assert (abs(inv.loss_f - inv.loss_afb_free) < 1e-5).all()  # A invertible: same classifiers
    assert np.allclose(df.bound, df.tau + np.sqrt(2 * 3.0**2 * df.eps))
    assert np.allclose(df.bound_fit, df.bound + df.delta) and (df.delta >= 0).all()
    assert df.r2.notna().all() and (df.grad_err >= 0).all() and (df.affine_err >= 0).all()
    assert df.probe_f.between(0.5, 1).all() and df.probe_phip.between(0.5, 1).all()
    assert df[df.phi == "gaussian"].r2.min() > 0.95
    for kind in ("gaussian", "learned"):
        true, fitted = map(np.array, df.attrs["log_Z_heldout"][kind])
        assert true.shape == fitted.shape == (20,)
        assert 1 - np.sum((true - fitted) ** 2) / np.sum((true - true.mean()) ** 2) == pytest.approx(
            df[df.phi == kind].r2.iloc[-1], abs=1e-12)


def test_run_tau_is_the_natural_classifier_on_phi_p_star(df):
    """tau on a Gaussian Phi, recomputed from the language and Phi the run used."""
    lang = synthetic.ContextLanguage.random(n_contexts=80, vocab_size=24, seed=1, label_strength=0.5)
    Phi, _, _ = synthetic.gaussian_embeddings(3, 24, seed=1)
    tau = theory.task_tau(lang.p_next, lang.labels, B=3.0, weights=lang.p_context, Phi=Phi)
    assert df[df.phi == "gaussian"].tau.iloc[0] == pytest.approx(tau, abs=1e-7)
    # the eps are excess cross-entropies w.r.t. Phi, reached from above on the decreasing grid
    g = df[df.phi == "gaussian"]
    assert np.all(np.diff(g.eps) < 0) and np.all(g.eps <= EPS[: len(g)] * (1 + 1e-6))
    model = lm.TableLM(80, Phi=Phi, device="cpu")
    assert model.excess_xent(lang.p_next, lang.p_context, relative_to="Phi") > g.eps.max()
    assert features.log_partition(np.zeros((1, 3)), Phi)[0] == pytest.approx(np.log(24))


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(d=24), "smaller than vocab_size"),
        (dict(eps=[1e-3, 1e-2]), "decreasing"),
        (dict(phi_kinds=("random",)), "phi_kinds"),
        (dict(n_contexts=12), "quadratic"),
        (dict(heldout=1.5), "heldout"),
        (dict(B=-1.0), "B"),
    ],
)
def test_run_rejects_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        result_c.run(sizes=SIZES, probe=False, **kw)
