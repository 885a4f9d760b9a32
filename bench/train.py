"""Benchmark: one training step of a small transformer LM with cross-entropy, with Quad through the
d x d Gram matrix (lmdownstream.train.batch_loss), and with Quad through the V logits (the obvious way:
``0.5 * (logits ** 2).sum() - logits[target]``; ``losses.quad_loss`` uses the Gram matrix instead).

    .venv/bin/python bench/train.py            # V = 2,000 and V = 50,257 (GPT-2's vocabulary)
    .venv/bin/python bench/train.py --quick    # V = 2,000 only, fewer steps

Prints seconds per step (median over the timed steps) and ratios, and checks that both Quad forms give
the same loss and gradient. Threads: torch's default (printed).
"""
import argparse
import statistics
import time

import torch

from lmdownstream import train


def quad_via_logits(model, ids):
    """The Quad loss through the (tokens x V) logits: the obvious implementation."""
    inp, tgt = ids[:, :-1], ids[:, 1:]
    f = model.hidden_states(inp, positions="all").reshape(-1, model.d)
    w = tgt.reshape(-1)
    logits = f @ model.Phi
    return (0.5 * (logits * logits).sum(1) - logits.gather(1, w[:, None])[:, 0]).mean()


def step_time(model, ids, fn, steps, warmup=2):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = fn(model, ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    vocab = (2_000,) if args.quick else (2_000, 50_257)
    steps = 5 if args.quick else 10
    d, layers, batch, block = 128, 2, 32, 64
    print(f"TinyLM d={d}, {layers} layers, batch {batch} x {block} tokens; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median seconds per training step over {steps} steps")
    print(f"{'V':>7} {'xent':>9} {'quad (Gram)':>12} {'quad (logits)':>14} {'logits/Gram':>12} {'xent/Gram':>10}")
    for V in vocab:
        torch.manual_seed(0)
        ids = torch.randint(0, V, (batch, block + 1))
        model = train.TinyLM(V, d=d, n_layers=layers, n_heads=4, max_length=block, seed=0)
        # the two Quad forms agree (value and gradient) before anything is timed
        a = train.batch_loss(model, ids, "quad")
        ga = torch.autograd.grad(a, model.body.wte.weight)[0]
        b = quad_via_logits(model, ids)
        gb = torch.autograd.grad(b, model.body.wte.weight)[0]
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a.item(), b.item())
        rel = float((ga - gb).norm() / gb.norm())  # float32 sums over V differ in rounding only
        assert rel < 1e-3, f"the two Quad forms disagree: relative gradient difference {rel:.1e}"
        t_x = step_time(model, ids, lambda m, x: train.batch_loss(m, x, "xent"), steps)
        t_g = step_time(model, ids, lambda m, x: train.batch_loss(m, x, "quad"), steps)
        t_l = step_time(model, ids, quad_via_logits, steps)
        print(f"{V:7d} {t_x:9.4f} {t_g:12.4f} {t_l:14.4f} {t_l / t_g:11.2f}x {t_x / t_g:9.2f}x")


if __name__ == "__main__":
    main()
