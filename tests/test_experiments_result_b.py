"""Result B's experiment: the constrained classifier, the planted setting, and the bound on every model."""
import numpy as np
import pytest

from lmdownstream import theory
from lmdownstream.experiments import result_b as rb


@pytest.fixture(scope="module")
def small():
    return rb.planted_setup(n_contexts=60, vocab_size=32, d=4, seed=3)


def test_phi_task_fit_with_identity_phi_is_the_box_classifier():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(6), size=80)
    y = (P[:, 0] + 0.3 * rng.normal(size=80) > 1 / 6).astype(int)
    w = rng.dirichlet(np.ones(80))
    fit = rb.phi_task_fit(P, y, np.eye(6), B=2.0, weights=w)
    assert fit.converged and fit.v_inf <= 2.0 * (1 + 1e-9)
    assert abs(fit.loss - theory.task_loss(P, y, B=2.0, weights=w)) < 1e-6


def test_phi_task_fit_inactive_constraint_is_the_free_classifier(small):
    P, Phi, y = small["p_star"], small["Phi"], small["labels"][rb.TASKS[1]]
    X = P @ Phi.T
    fit = rb.phi_task_fit(X, y, Phi, B=1e6)
    assert abs(fit.loss - theory.task_loss(X, y)) < 1e-6


def test_planted_setup_rowspan(small):
    Phi, u = small["Phi"], small["u"]
    # the natural direction is a row of Phi; the contrast direction is not in the row span
    lam = np.linalg.lstsq(Phi.T, u[rb.TASKS[0]], rcond=None)[0]
    assert np.allclose(Phi.T @ lam, u[rb.TASKS[0]])
    lam = np.linalg.lstsq(Phi.T, u[rb.TASKS[1]], rcond=None)[0]
    assert np.linalg.norm(Phi.T @ lam - u[rb.TASKS[1]]) > 1.0
    for task in rb.TASKS:
        assert set(np.unique(small["labels"][task])) == {0, 1}
    # tau_Phi >= tau_V (a smaller class of classifiers), far above it for the contrast task
    B = 4.0
    for task in rb.TASKS:
        y = small["labels"][task]
        t_phi = rb.phi_tau(small["p_star"], y, Phi, B, weights=small["p_L"])
        t_v = theory.task_tau(small["p_star"], y, B=B, weights=small["p_L"])
        assert t_phi >= t_v - 1e-6
    y = small["labels"][rb.TASKS[1]]
    assert rb.phi_tau(small["p_star"], y, Phi, B, weights=small["p_L"]) > 0.5


def test_run_bound_holds_for_every_model_and_feature():
    eps = np.logspace(-3, -1.5, 3)
    rows = rb.run(n_contexts=60, vocab_size=32, d=4, B=4.0, eps_values=eps, seed=3)
    assert len(rows) == len(eps) * len(rb.TASKS) * len(rb.FEATURES)
    for r in rows:
        assert r["loss"] <= r["bound"] + 1e-9, r
        assert r["gamma"] == 1.0
    got = np.array(sorted({r["eps"] for r in rows}))
    assert np.allclose(got, eps, rtol=1e-6)
    nat = [r for r in rows if r["task"] == rb.TASKS[0] and r["feature"] == "Phi p_f"]
    # at the optimum Phi p_f = Phi p*: the loss on Phi p_f tends to tau_Phi exactly, from above
    assert abs(nat[0]["loss_at_opt"] - nat[0]["tau"]) < 1e-6
    assert all(r["loss"] >= r["tau"] - 1e-7 for r in nat)
    # p_f's class (all v in R^V with the box) contains Phi p_f's class (v in the row span)
    by = {(r["eps"], r["task"], r["feature"]): r["loss"] for r in rows}
    for (e, task, feat), loss in by.items():
        if feat == "p_f":
            assert loss <= by[(e, task, "Phi p_f")] + 1e-6


def test_run_with_task_shift_uses_gamma():
    s = rb.planted_setup(n_contexts=60, vocab_size=32, d=4, seed=3)
    p_T = s["p_L"] ** 2 / np.sum(s["p_L"] ** 2)
    rows = rb.run(n_contexts=60, vocab_size=32, d=4, eps_values=[1e-2], seed=3, task_weights=p_T)
    g = theory.gamma(p_T, s["p_L"])
    assert g < 1 and all(abs(r["gamma"] - g) < 1e-12 and r["loss"] <= r["bound"] for r in rows)


def test_bad_input_is_rejected(small):
    P, Phi = small["p_star"], small["Phi"]
    X = P @ Phi.T
    y = small["labels"][rb.TASKS[0]]
    with pytest.raises(ValueError, match="binary"):
        rb.phi_task_fit(X, np.arange(len(y)) % 3, Phi, B=1.0)
    with pytest.raises(ValueError, match="B"):
        rb.phi_task_fit(X, y, Phi, B=0.0)
    with pytest.raises(ValueError, match="rows"):
        rb.phi_task_fit(X, y, Phi.T, B=1.0)
    with pytest.raises(ValueError, match="start"):
        rb.phi_task_fit(X, y, Phi, B=1.0, start=np.zeros(3))
    with pytest.raises(ValueError, match="V"):
        rb.phi_tau(P[:, :10] / P[:, :10].sum(1, keepdims=True), y, Phi, B=1.0)
    with pytest.raises(ValueError, match="d"):
        rb.planted_setup(n_contexts=60, vocab_size=32, d=16)
    with pytest.raises(ValueError, match="eps_values"):
        rb.run(n_contexts=60, vocab_size=32, d=4, eps_values=[-1e-3])
    with pytest.raises(ValueError, match="uniform LM"):
        rb.run(n_contexts=60, vocab_size=32, d=4, eps_values=[1e-3, 50.0])
    with pytest.raises(ValueError, match="task_weights"):
        rb.run(n_contexts=60, vocab_size=32, d=4, eps_values=[1e-3], task_weights=np.ones(5) / 5)
