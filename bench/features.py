"""Benchmark of lmdownstream.features.extract (on an lmdownstream.hf.HFLM) against the obvious alternatives.

    python bench/features.py [--quick] [--model smollm2] [--n 256]

Prints
1. texts per second of ``extract`` (f and Phi p_f, with a prompt) against a naive loop that runs
   the Hugging Face model on one text at a time and computes Phi p_f from the full softmax, on the
   same texts; the features must agree to 1e-4 (target: at least 2x);
2. peak extra memory of the Phi p_f stage for 1,000 and 10,000 feature rows, each in a fresh
   process, against the n x V matrix a naive softmax would build (target: no growth with n
   beyond the (n, d) outputs);
3. the bfloat16 path against float32: throughput ratio (target 2x where the processor has bf16
   matrix units, tensor cores on a GPU) and probe accuracy on its features (target: within 0.5
   points);
4. the float32 path's achieved model FLOP rate against this machine's measured float32 matmul
   rate (target: at least 70%).

Timings on a shared machine vary with its load: the script prints the torch thread count and
the load average next to the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmdownstream import features, hf, probes, tasks  # noqa: E402

PROMPT = " The sentiment is"


def naive(lm, texts, prompt):
    """One text at a time through the full model; Phi p_f from the full softmax."""
    F, M = [], []
    with torch.inference_mode():
        for t in texts:
            enc = lm.tokenizer(t + prompt, return_tensors="pt").to(lm.device)
            out = lm.model(**enc, output_hidden_states=True)
            f = out.hidden_states[-1][0, -1].float()
            p = torch.softmax(out.logits[0, -1].float(), -1)
            F.append(f.cpu().numpy())
            M.append((lm.Phi @ p).cpu().numpy())
    return np.stack(F), np.stack(M)


def body_params(lm):
    """Parameters that cost FLOPs per token (everything but the input embedding lookup)."""
    emb = lm.model.get_input_embeddings().weight
    return sum(p.numel() for p in lm.base.parameters() if p.data_ptr() != emb.data_ptr())


def matmul_rate(n=2048, reps=8):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def memory_child(n):
    """Run in a fresh process: peak extra RSS of the Phi p_f stage on n random feature rows."""
    lm = hf.load_lm("smollm2", device="cpu")
    rng = np.random.default_rng(0)
    F = (rng.standard_normal((n, lm.d)) * 2).astype(np.float32)

    def phi_p(F):  # as features.extract does it: blocks of 256 rows, softmax streamed over V
        with torch.inference_mode():
            return np.concatenate([features.conditional_mean(torch.as_tensor(F[a:a + 256]), lm.Phi, lm.bias,
                                                             chunk_size=4096).numpy() for a in range(0, len(F), 256)])

    phi_p(F[:8])  # warm up (allocator, BLAS buffers)
    import threading

    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    before, peak, done = rss(), [0], threading.Event()

    def sample():  # resident memory sampled every 2 ms while the stage runs
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    out = phi_p(F)
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    after = max(peak[0], rss())
    print(json.dumps(dict(n=n, extra=after - before, outputs=out.nbytes, naive=n * lm.V * 4,
                          seconds=seconds)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer texts (a smoke run)")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=None, help="texts for the throughput comparison (default 256; quick 48)")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    n = args.n or (48 if args.quick else 256)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, "
          f"model {args.model}, {n} tweets, prompt {PROMPT!r}")
    lm = hf.load_lm(args.model, device="cpu")
    ds = tasks.load_dataset("tweet-sentiment", "all", n=n, seed=0)
    texts = list(ds["text"])
    n_tokens = sum(len(x) for x in hf.tokenize(lm, texts, PROMPT)[0])

    # 1. extract vs a naive loop -------------------------------------------------------------
    naive(lm, texts[:2], PROMPT)  # warm up
    t = time.perf_counter()
    F0, M0 = naive(lm, texts, PROMPT)
    t_naive = time.perf_counter() - t
    t = time.perf_counter()
    out = features.extract(lm, texts, kinds=("f", "Phi_p"), prompt=PROMPT, cache=False, progress=False)
    t_fast = time.perf_counter() - t
    err = max(np.abs(out["f"] - F0).max(), np.abs(out["Phi_p"] - M0).max())
    print(f"\n[1] throughput, {n} texts ({n_tokens} tokens), float32")
    print(f"    naive one-text loop (full model + full softmax): {n / t_naive:8.2f} texts/s")
    print(f"    extract (length-bucketed batches, streamed Φp_f): {n / t_fast:8.2f} texts/s")
    print(f"    speed-up {t_naive / t_fast:.2f}x (target >= 2x); max |difference| of f and Φp_f {err:.1e} "
          f"({'ok' if err < 1e-4 else 'ABOVE 1e-4'})")

    # 2. memory of the Phi p_f stage ---------------------------------------------------------
    print("\n[2] peak extra memory of the Φp_f stage (fresh process each; random features)")
    for m in (1_000, 10_000):
        res = subprocess.run([sys.executable, __file__, "--memory-child", str(m)], capture_output=True, text=True)
        line = [x for x in res.stdout.splitlines() if x.startswith("{")]
        if not line:
            print(f"    n={m}: failed: {res.stderr[-500:]}")
            continue
        r = json.loads(line[-1])
        print(f"    n={m:6d}: extra {r['extra'] / 2**20:7.1f} MiB (outputs {r['outputs'] / 2**20:5.1f} MiB; "
              f"a naive n x V softmax {r['naive'] / 2**20:8.1f} MiB), {r['seconds']:.1f} s")

    # 3. bfloat16 vs float32 -----------------------------------------------------------------
    n_probe = 120 if args.quick else 400
    lm16 = hf.load_lm(args.model, device="cpu", dtype=torch.bfloat16)
    features.extract(lm16, texts[:4], kinds=("f",), prompt=PROMPT, cache=False, progress=False)  # warm up
    t = time.perf_counter()
    features.extract(lm16, texts, kinds=("f", "Phi_p"), prompt=PROMPT, cache=False, progress=False)
    t_bf16 = time.perf_counter() - t
    print(f"\n[3] bfloat16 weights: {n / t_bf16:.2f} texts/s, {t_fast / t_bf16:.2f}x float32 (target >= 2x "
          "with bf16 matrix units)")
    tr = tasks.load_dataset("tweet-sentiment", "train", n=n_probe, seed=0)
    te = tasks.load_dataset("tweet-sentiment", "test", n=n_probe, seed=0)
    accs = {}
    for label, model in (("float32", lm), ("bfloat16", lm16)):
        X = features.extract(model, list(tr["text"]) + list(te["text"]), kinds=("f",), prompt=PROMPT, cache=True,
                       progress=False)["f"]
        probe = probes.probe_cv(X[:n_probe], np.asarray(tr["label"]), Cs=np.logspace(-6, 3, 10))
        accs[label] = probe.score(X[n_probe:], np.asarray(te["label"]))
    print(f"    probe accuracy on f(s), {n_probe} train / {n_probe} test tweets: float32 {accs['float32']:.1%}, "
          f"bfloat16 {accs['bfloat16']:.1%} (difference {100 * abs(accs['float32'] - accs['bfloat16']):.1f} "
          "points; target <= 0.5)")

    # 4. achieved FLOP rate ------------------------------------------------------------------
    flops = 2 * body_params(lm) * n_tokens + 4 * lm.d * lm.V * n  # forward pass + two Φ products per text
    rate = matmul_rate()
    print(f"\n[4] float32 model FLOPs {flops / t_fast / 1e9:.1f} GFLOP/s achieved by extract; measured "
          f"2048x2048 matmul {rate / 1e9:.1f} GFLOP/s: {flops / t_fast / rate:.0%} (target >= 70%)")
    print(f"    load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
