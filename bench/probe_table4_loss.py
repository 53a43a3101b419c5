"""Does the training loss move on Table 4's data?  A probe over inits and learning rates.

    python bench/probe_table4_loss.py                        # 65536-50k-50k-2, eps 10
    python bench/probe_table4_loss.py --width 500000 --steps 54 \
        --configs he_uniform:0.01,he_uniform_sparse:0.0001
    python bench/probe_table4_loss.py --steps 216 --zero-output \
        --configs he_uniform_sparse:0.01:100     # init:lr:lr-fan-in-cap

Table 4's problem (make_classification, 65536 features of which 2 are
informative, 7000 training samples) trained with Table 4's settings (All-ReLU
alpha 0.6, dropout 0.4, momentum 0.9, weight decay 2e-4, batch 128) for
``--steps`` mini-batches per configuration ``init:lr[:cap]`` (cap: the
step size cap of ``--lr-fan-in-cap``); prints the mean
training loss (with dropout) over six consecutive blocks of steps, then the
loss without dropout on 1024 training samples before and after.  Narrower
than Table 4 so that many configurations fit in a few minutes; the output
layer is still dense (50k inputs per class at the default width), which is
what makes the step size matter.  ``--zero-output`` starts the output layer
at zero (``--output-init zero``); ``--freeze-hidden`` trains the output layer
alone; ``--dropout`` replaces Table 4's 0.4; ``--zeta`` does a SET step on
every hidden layer after each epoch's worth of steps (as training does) and
``--regrow-zero`` makes it regrow at 0 (``--regrow-init zero``).  Nothing
is written; it is a diagnostic, not a benchmark.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparse_mlp.datasets import load_dataset  # noqa: E402
from sparse_mlp.evolution import set_step  # noqa: E402
from sparse_mlp.model import SparseMLP  # noqa: E402

N_TRAIN, BATCH = 7000, 128


def _output_only(scale, last: int):
    """A model's lr_scale with every layer but ``last`` frozen."""
    return lambda li: scale(li) if li == last else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=50000, help="hidden width (default 50000)")
    ap.add_argument("--layers", type=int, default=2, help="hidden layers (default 2)")
    ap.add_argument("--epsilon", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=108, help="mini-batches per configuration")
    ap.add_argument("--configs", default="he_uniform:0.01,he_uniform_sparse:0.01,"
                    "xavier_sparse:0.01,normal:0.01,he_uniform_sparse:0.0001",
                    help="comma-separated init:lr pairs")
    ap.add_argument("--zero-output", action="store_true", help="output layer starts at zero")
    ap.add_argument("--lr-fan-in-cap", type=float, default=None,
                    help="step size lr * min(1, CAP / mean fan-in) (a config may add :CAP)")
    ap.add_argument("--freeze-hidden", action="store_true",
                    help="train the output layer only (step 0 elsewhere)")
    ap.add_argument("--dropout", type=float, default=0.4, help="Table 4's: 0.4")
    ap.add_argument("--zeta", type=float, default=0.0,
                    help="SET step with this zeta on the hidden layers after every epoch "
                         "(54 steps), as training does (default 0: none)")
    ap.add_argument("--regrow-zero", action="store_true",
                    help="SET regrows at 0 instead of from the initialiser (--regrow-init zero)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    configs = []
    for item in args.configs.split(","):
        init, lr, *base = item.split(":")
        configs.append((init, float(lr), float(base[0]) if base else args.lr_fan_in_cap))

    t = time.perf_counter()
    data = load_dataset("synthetic", seed=0)  # Table 4's problem, standardised
    assert data.X_train.shape == (N_TRAIN, 65536)
    XT = np.ascontiguousarray(data.X_train.T)  # feature-major, as the trainer keeps it
    y = data.y_train.astype(np.int32)
    del data
    Xe, ye = np.ascontiguousarray(XT[:, :1024].T), y[:1024]  # loss without dropout
    print(f"data: {time.perf_counter() - t:.1f} s", flush=True)

    sizes = [65536] + [args.width] * args.layers + [2]
    n_batches = N_TRAIN // BATCH
    for init, lr, base in configs:
        model = SparseMLP(sizes, epsilon=args.epsilon, activation="allrelu", alpha=0.6,
                          init=init, dropout=args.dropout, rng=np.random.default_rng(1),
                          n_threads=args.threads, activation_memory="lean")
        if args.zero_output:
            model.layers[-1].data[:] = 0
            model.layers[-1].init = "zero"
        if base:
            model.lr_fan_in_cap = base
        if args.freeze_hidden:  # step 0 for every layer but the output
            model.lr_scale = _output_only(model.lr_scale, model.n_layers - 1)
        clean0 = model.evaluate(Xe, ye)[0]
        order = np.random.default_rng(2).permutation(N_TRAIN)
        evo_rng = np.random.default_rng(3)
        losses = []
        t = time.perf_counter()
        for s in range(args.steps):
            start = (s % n_batches) * BATCH
            idx = np.sort(order[start:start + BATCH])
            loss, _ = model.train_step(np.ascontiguousarray(XT[:, idx]), y[idx], lr, 0.9, 2e-4,
                                       model.dropout_keys(0, s))
            losses.append(loss / BATCH)
            if args.zeta and (s + 1) % n_batches == 0:
                for layer in model.layers[:-1]:
                    set_step(layer, args.zeta, evo_rng, n_threads=args.threads,
                             regrow_init="zero" if args.regrow_zero else "init")
        L = np.array(losses)
        k = max(1, args.steps // 6)
        blocks = " ".join(f"{L[i:i + k].mean():.4f}" for i in range(0, args.steps, k))
        print(f"{init:18s} lr {lr:<7g} cap {base or '-'} loss by blocks of {k} steps: {blocks} "
              f"({(time.perf_counter() - t) / args.steps:.2f} s/step); without dropout, "
              f"1024 training samples: {clean0:.4f} -> {model.evaluate(Xe, ye)[0]:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
