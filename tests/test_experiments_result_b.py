"""Result B's experiment: the planted setting, and the bound on every model and feature."""
import numpy as np
import pytest

from lmdownstream import features, lm, theory
from lmdownstream.experiments import result_b as rb

SIZES = dict(n_contexts=60, vocab_size=32, d=4, n_eps=3)
EPS = np.logspace(-3, -1.5, 3)


@pytest.fixture(scope="module")
def small():
    return rb.planted_setup(n_contexts=60, vocab_size=32, d=4, seed=3)


@pytest.fixture(scope="module")
def df():
    return rb.run(sizes=SIZES, eps=EPS, B=4.0, seed=3)


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
        t_phi = theory.task_tau(small["p_star"], y, B=B, Phi=Phi, weights=small["p_L"])
        t_v = theory.task_tau(small["p_star"], y, B=B, weights=small["p_L"])
        assert t_phi >= t_v - 1e-6
    y = small["labels"][rb.TASKS[1]]
    assert theory.task_tau(small["p_star"], y, B=B, Phi=Phi, weights=small["p_L"]) > 0.5


def test_run_bound_holds_for_every_model_and_feature(df):
    assert len(df) == len(EPS) * len(rb.TASKS) * len(rb.FEATURES)
    assert (df.loss <= df.bound + 1e-9).all()
    assert df.attrs["gamma"] == 1.0 and df.attrs["B"] == 4.0 and df.attrs["seed"] == 3
    assert np.allclose(np.sort(df.eps.unique()), EPS, rtol=1e-6)
    # the bound is tau_Phi + sqrt(2 B^2 eps / gamma), recomputed
    assert np.allclose(df.bound, df.tau + np.sqrt(2 * 4.0**2 * df.eps))
    nat = df[(df.task == rb.TASKS[0]) & (df.feature == "Phi p_f")]
    # at the optimum Phi p_f = Phi p*: the loss on Phi p_f tends to tau_Phi exactly, from above
    assert abs(nat.loss_at_opt.iloc[0] - nat.tau.iloc[0]) < 1e-6
    assert (nat.loss >= nat.tau - 1e-7).all()
    # ... at the sqrt(eps) rate (the bound's slope) on this segment of models
    assert 0.3 < np.polyfit(np.log(nat.eps), np.log(nat.loss - nat.tau), 1)[0] < 0.8
    # p_f's class (all v in R^V with the box) contains Phi p_f's class (v in the row span)
    wide = df.pivot_table(index=["eps", "task"], columns="feature", values="loss")
    assert (wide["p_f"] <= wide["Phi p_f"] + 1e-6).all()


def test_run_losses_match_an_independent_model(df, small):
    """Rebuild the LM at the largest eps and recompute both losses directly."""
    P, p_L, Phi = small["p_star"], small["p_L"], small["Phi"]
    model = lm.TableLM(P.shape[0], Phi=Phi, device="cpu")
    model.at_eps(float(EPS[-1]), P, p_L, relative_to="Phi", start=np.zeros((P.shape[0], 4)))
    p_f = features.next_word_probs(model.features(), Phi)
    y = small["labels"][rb.TASKS[0]]
    rows = df[(df.task == rb.TASKS[0]) & np.isclose(df.eps, EPS[-1], rtol=1e-6)].set_index("feature")
    assert rows.loss["p_f"] == pytest.approx(theory.task_loss(p_f, y, B=4.0, weights=p_L), abs=1e-6)
    # the feasible lambda = 4 e_1 (v = 4 u_A, ||v||_inf = B) with its best bias can only do worse
    lam = np.linalg.lstsq(Phi.T, small["u"][rb.TASKS[0]], rcond=None)[0] * 4.0
    assert np.abs(Phi.T @ lam).max() == pytest.approx(4.0)
    margin = (2 * y - 1)[:, None] * ((p_f @ Phi.T @ lam)[:, None] + np.linspace(-5, 5, 2001))
    worse = (p_L @ np.logaddexp(0.0, -margin)).min()
    assert rows.loss["p_f"] <= rows.loss["Phi p_f"] + 1e-6 <= worse + 2e-6


def test_run_with_task_shift_uses_gamma(small):
    p_T = small["p_L"] ** 2 / np.sum(small["p_L"] ** 2)
    df = rb.run(sizes=SIZES, eps=[1e-2], seed=3, task_weights=p_T)
    g = theory.gamma(p_T, small["p_L"])
    assert g < 1 and abs(df.attrs["gamma"] - g) < 1e-12 and (df.loss <= df.bound).all()
    assert np.allclose(df.bound, df.tau + np.sqrt(2 * 4.0**2 * df.eps / g))


@pytest.mark.slow
def test_run_default_sizes_are_the_chapter_sizes():
    from lmdownstream import config

    df = rb.run()
    sizes = config.sizes("ch05")
    assert df.attrs["n_contexts"] == sizes["n_contexts"] and df.attrs["V"] == sizes["vocab_size"]
    assert len(df) == sizes["n_eps"] * 4 and (df.loss <= df.bound).all()


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="d"):
        rb.planted_setup(n_contexts=60, vocab_size=32, d=16)
    with pytest.raises(ValueError, match="eps"):
        rb.run(sizes=SIZES, eps=[-1e-3])
    with pytest.raises(ValueError, match="uniform LM"):
        rb.run(sizes=SIZES, eps=[1e-3, 50.0])
    with pytest.raises(ValueError, match="task_weights"):
        rb.run(sizes=SIZES, eps=[1e-3], task_weights=np.ones(5) / 5)
