"""Benchmark: ``lmdownstream.probes.probe_cv`` against scikit-learn's ``LogisticRegressionCV``.

The paper chooses the probe's C with ``LogisticRegressionCV`` (5 folds, a C grid); this script
times the torch probe against three scikit-learn configurations on real-LM-sized features:

* ``sklearn lbfgs (default)`` -- ``LogisticRegressionCV(solver="lbfgs")`` with its defaults
  (tol=1e-4, max_iter=100), folds one after another, BLAS on all allowed threads;
* ``sklearn liblinear`` -- ``solver="liblinear"``, the paper's solver (it also penalises the
  intercept, so its objective differs slightly);
* ``sklearn lbfgs n_jobs=2`` -- the fastest scikit-learn setting found here: folds in parallel
  in 2 worker processes, one BLAS thread each.

Every method sees the same training rows, the same 5 stratified folds (those ``probe_cv``
draws, passed to scikit-learn as an explicit ``cv``), the same C grid and the same tolerance
(tol=1e-4 on the gradient of the objective divided by C*n, max_iter=100: scikit-learn's
defaults, which ``probe_cv`` uses too). ``probe_cv`` runs in float32, scikit-learn in float64.

Data (synthetic, fixed seed, documented in :func:`make_features`): n = 5,000 rows x 768 dims,
binary, shaped like frozen LM features: a low-rank Gaussian-cluster signal, a large shared
mean vector with a few outlier coordinates, and anisotropic noise. 1,000 rows are held out
for a test accuracy; CV and the refit use the other 4,000.

Run: ``python bench/probe_vs_sklearn.py`` (about 2-4 minutes on 2 cores) or ``--quick``.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

THREADS = 2
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, str(THREADS))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402


def make_features(n=5000, d=768, rank=32, n_clusters=8, seed=0):
    """Synthetic "LM features": X (n, d) float64, y (n,) in {0, 1}.

    Latent h ~ center_c + N(0, 0.9^2 I_rank) for a cluster c drawn uniformly from n_clusters
    Gaussian clusters (half labelled 0, half 1, centers N(0, I)); features
    x = m + U diag(s) h + e with U a random orthonormal (d, rank) basis, spectrum
    s_k = 4 / sqrt(k + 1), a shared mean m ~ N(0, 1) with 4 outlier coordinates of size ~20
    (as in GPT-2 hidden states), and anisotropic noise e_j ~ N(0, sigma_j^2) with
    sigma_j log-normal around 0.5. The classes overlap (a linear probe reaches ~85-90%).
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, rank))
    cluster_label = np.arange(n_clusters) % 2
    c = rng.integers(n_clusters, size=n)
    h = centers[c] + 0.9 * rng.normal(size=(n, rank))
    U, _ = np.linalg.qr(rng.normal(size=(d, rank)))
    s = 4.0 / np.sqrt(np.arange(rank) + 1.0)
    m = rng.normal(size=d)
    m[rng.choice(d, 4, replace=False)] = rng.choice([-1, 1], 4) * rng.uniform(15, 25, 4)
    sigma = 0.5 * np.exp(0.5 * rng.normal(size=d))
    X = m + (h * s) @ U.T + sigma * rng.normal(size=(n, d))
    return X, cluster_label[c]


if __name__ == "__main__":
    X, y = make_features()
    print(X.shape, y.mean())
