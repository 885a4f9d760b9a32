"""Benchmark: exact p*(.|prefix) of an HMM language for many prefixes.

100,000 prefixes of length 20, 32 hidden states, 1,000 words, float64 throughout.
``HMMLanguage.next_word_dist`` runs the scaled forward algorithm vectorised over prefixes (in
cache-sized blocks of 2,048 inside the library). The bench calls it on chunks of 10,000 prefixes
so that memory stays at one (10,000 x 1,000) float64 block (80 MB), not the full 800 MB output.

The obvious alternative, a Python loop over prefixes running the same forward algorithm one
prefix at a time with numpy vectors, is timed on a subsample of 1,000 prefixes and extrapolated
linearly to 100,000 (its cost is linear in n).

BLAS threads matter: the forward step is a small (2,048 x 32) x (32 x 32) product, and a
multi-threaded OpenBLAS on an oversubscribed machine can spend far longer synchronising threads
than computing. The vectorised time is reported with the default BLAS threads and with BLAS
limited to one thread (``config.threads(1)``); best of 2 runs each. The machine's
load average is printed, since other processes change the first number a lot.

Run: ``python bench/synthetic.py``
"""
import contextlib
import os
import time

import numpy as np

from lmdownstream import config
from lmdownstream.synthetic import HMMLanguage

N, LENGTH, STATES, VOCAB, CHUNK, SUBSAMPLE = 100_000, 20, 32, 1_000, 10_000, 1_000


def loop_forward(hmm, prefix):
    """Per-prefix scaled forward algorithm: the obvious implementation."""
    pi = hmm.initial.copy()
    for w in prefix:
        pi = pi * hmm.emission[:, w]
        pi = (pi / pi.sum()) @ hmm.transition
    return pi @ hmm.emission


def time_vectorised(hmm, X, repeats=2):
    best, worst_row = float("inf"), 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, N, CHUNK):
            P = hmm.next_word_dist(X[i:i + CHUNK])
            worst_row = max(worst_row, float(np.abs(P.sum(1) - 1).max()))
        best = min(best, time.perf_counter() - t0)
    return best, worst_row


def main():
    hmm = HMMLanguage.random(STATES, VOCAB, seed=0)
    X = hmm.sample(N, LENGTH, seed=1)
    print(f"HMM: {STATES} states, {VOCAB} words; {N:,} prefixes of length {LENGTH}; float64; "
          f"numpy {np.__version__}, {os.cpu_count()} CPU cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    hmm.next_word_dist(X[:100])  # warm-up

    settings = [("default BLAS threads", contextlib.nullcontext()),
                ("BLAS limited to 1 thread", config.threads(1, torch_threads=False))]
    times = {}
    for name, ctx in settings:
        with ctx:
            t, worst_row = time_vectorised(hmm, X)
        times[name] = t
        print(f"vectorised next_word_dist, {name}: {t:.2f} s ({N / t:,.0f} prefixes/s); "
              f"max |row sum - 1| {worst_row:.1e}")

    sub = X[:SUBSAMPLE]
    t0 = time.perf_counter()
    P_loop = np.stack([loop_forward(hmm, x) for x in sub])
    t_loop = (time.perf_counter() - t0) * N / SUBSAMPLE
    err = float(np.abs(P_loop - hmm.next_word_dist(sub)).max())
    print(f"per-prefix Python loop: {t_loop:.1f} s for {N:,} (timed on {SUBSAMPLE:,}, extrapolated); "
          f"max |difference| from vectorised {err:.1e}")
    for name, t in times.items():
        print(f"ratio loop / vectorised ({name}): {t_loop / t:.0f}x")

    t0 = time.perf_counter()
    xent = hmm.optimal_xent(X[:CHUNK])
    print(f"optimal_xent (mean entropy of p*) on {CHUNK:,} prefixes: {xent:.4f} nats in "
          f"{time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
