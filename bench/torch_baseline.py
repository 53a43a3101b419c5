"""PyTorch (CPU) baseline: train the same sparse MLP as ``sparse_mlp`` and time it.

This is a *benchmark-only* tool. PyTorch is not a dependency of the project
(``pip install torch==2.13.0`` to use this file); the module imports without
it and only imports torch inside functions.

Three ways to hold each weight matrix ``W(l)`` (n_in x n_out):

* ``mask``  - a dense weight matrix multiplied by a fixed 0/1 mask in the
  forward pass (how sparse training is usually simulated today). The mask is
  re-applied after each update so weights outside the topology stay zero.
* ``csr``   - only the nnz values are stored and trained. The weight is kept
  transposed (``W^T``, n_out x n_in) as a ``torch.sparse_csr_tensor`` and the
  activations are kept as (features x batch), so the forward pass is one
  CSR x dense product. Two implementations (``csr_impl``):

  - ``"custom"`` (default, the fastest we found in torch 2.13.0): a small
    ``torch.autograd.Function``; forward ``W^T @ h`` (CSR @ dense, MKL),
    backward ``dh = W @ dz`` with a second CSR holding the same values in
    the transposed order, and the value gradient as the SDDMM
    ``torch.sparse.sampled_addmm(pattern(W^T), dz, h^T)``.
  - ``"native"``: a leaf sparse CSR tensor with ``requires_grad=True`` and
    ``torch.sparse.mm`` (plain autograd; the gradient is a CSR tensor with
    the same pattern); 10-50% slower than "custom" on the paper's shapes.
    Not used: ``W @ h`` (the ``@`` operator) on a leaf CSR gives a *dense*
    gradient, and a CSR rebuilt each step from leaf values
    (``torch.sparse_csr_tensor(crow, col, values)``) or a COO tensor with
    ``torch.sparse.mm`` are 2-10x slower per layer.

* ``dense`` - plain dense weights, no mask (for an epsilon-sweep crossover).

Training semantics follow ``docs/semantics.md`` ("Training step"): softmax +
cross-entropy averaged over the batch, inverted dropout on hidden
activations, and momentum SGD implemented by hand as the reference code does
it: ``v = mu*v - lr*g; w = w + v - wd*w`` (weight decay *not* scaled by lr;
``torch.optim.SGD`` differs), for weights and biases.

CLI::

    python bench/torch_baseline.py --sizes 28,1000,1000,1000,2 --epsilon 10 \\
        --n-samples 105000 --batch-size 128 --threads 1 --mode csr --epochs 1 \\
        [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time
import warnings

import numpy as np

MODES = ("mask", "csr", "dense")
CSR_IMPLS = ("custom", "native")
ACTIVATIONS = ("relu", "tanh", "sigmoid")
INITS = ("xavier", "he_uniform", "normal")
TORCH_HINT = "PyTorch is a bench-only dependency: pip install torch==2.13.0"


# --------------------------------------------------------------------------- topology
def _distinct_positions(rng: np.random.Generator, n_total: int, k: int) -> np.ndarray:
    """``k`` distinct integers drawn uniformly from ``[0, n_total)``, sorted, in O(k).

    Draws with replacement, de-duplicates, repeats until there are at least
    ``k``, then keeps a uniformly random ``k``-subset (by symmetry the result
    is a uniform ``k``-subset). Only called with ``k <= n_total / 2``, so each
    round at least halves what is missing.
    """
    pos = np.empty(0, dtype=np.int64)
    while pos.size < k:
        need = k - pos.size
        draw = rng.integers(0, n_total, size=need + need // 8 + 16, dtype=np.int64)
        pos = np.unique(np.concatenate([pos, draw]))
    if pos.size > k:
        pos = np.sort(rng.choice(pos, size=k, replace=False))
    return pos


def er_probability(n_in: int, n_out: int, epsilon: float) -> float:
    """Erdos-Renyi connection probability ``eps*(n_in+n_out)/(n_in*n_out)``, capped at 1."""
    return min(1.0, float(epsilon) * (n_in + n_out) / (n_in * n_out))


def make_er_topology(sizes: list[int], epsilon: float, seed: int
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Erdos-Renyi topology of every layer, as ``(rows, cols)`` int64 arrays.

    ``rows`` are input indices and ``cols`` output indices, sorted row-major
    (i.e. in CSR order of the n_in x n_out matrix), without duplicates. Each
    connection exists with probability ``p = eps*(n_in+n_out)/(n_in*n_out)``
    (capped at 1): the layer draws ``K ~ Binomial(n_in*n_out, p)`` and then
    ``K`` distinct positions, in O(K) time and memory (never an
    n_in x n_out array; when ``K > n_in*n_out/2`` the complement is sampled,
    which is still O(K)).
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"need at least two positive layer sizes, got {sizes}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    rng = np.random.default_rng(seed)
    topo = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        n_total = n_in * n_out
        p = er_probability(n_in, n_out, epsilon)
        k = int(rng.binomial(n_total, p)) if p < 1.0 else n_total
        k = max(k, 1)  # an empty layer would disconnect the network
        if k == n_total:
            pos = np.arange(n_total, dtype=np.int64)
        elif 2 * k <= n_total:
            pos = _distinct_positions(rng, n_total, k)
        else:  # dense-ish layer: drop n_total-k positions (O(n_total) = O(k) here)
            drop = _distinct_positions(rng, n_total, n_total - k)
            keep = np.ones(n_total, dtype=bool)
            keep[drop] = False
            pos = np.flatnonzero(keep).astype(np.int64)
        rows, cols = np.divmod(pos, n_out)
        topo.append((rows.astype(np.int64), cols.astype(np.int64)))
    return topo


# --------------------------------------------------------------------------- torch helpers
def _import_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError(TORCH_HINT) from e
    return torch


def momentum_sgd_step_(params, grads, velocities, lr: float, momentum: float,
                       weight_decay: float) -> None:
    """In place, per tensor: ``v = mu*v - lr*g`` then ``w = w + v - wd*w``.

    The reference code's update (weight decay not scaled by lr). ``params``,
    ``grads`` and ``velocities`` are matching sequences of dense tensors.
    """
    torch = _import_torch()
    with torch.no_grad():
        for w, g, v in zip(params, grads, velocities, strict=True):
            v.mul_(momentum).add_(g, alpha=-lr)
            w.mul_(1.0 - weight_decay).add_(v)   # == w + v - wd*w


@functools.lru_cache(maxsize=1)
def _sparse_linear_fn():
    """The custom autograd Function of ``csr_impl="custom"`` (built lazily: needs torch)."""
    torch = _import_torch()

    class SparseLinearT(torch.autograd.Function):
        """``z^T = W^T @ h^T`` with ``W^T`` an (n_out x n_in) CSR whose values are trainable."""

        @staticmethod
        def forward(ctx, values, hT, lay):
            wT = torch.sparse_csr_tensor(lay["crowT"], lay["colT"], values, lay["shapeT"])
            ctx.save_for_backward(values, hT)
            ctx.lay = lay
            return torch.sparse.mm(wT, hT)

        @staticmethod
        def backward(ctx, gT):
            values, hT = ctx.saved_tensors
            lay = ctx.lay
            gT = gT.contiguous()
            d_values = d_hT = None
            if ctx.needs_input_grad[0]:
                # SDDMM: dW^T[o, i] = sum_b g^T[o, b] * h^T[i, b], only on the pattern
                d_values = torch.sparse.sampled_addmm(
                    lay["patternT"], gT, hT.t(), beta=0.0, alpha=1.0).values()
            if ctx.needs_input_grad[1]:
                n_out, n_in = lay["shapeT"]
                w = torch.sparse_csr_tensor(lay["crow"], lay["col"], values[lay["perm"]],
                                            (n_in, n_out))
                d_hT = torch.sparse.mm(w, gT)
            return d_values, d_hT, None

    return SparseLinearT


def _init_values(torch, n, n_in, n_out, init, gen):
    if init == "xavier":
        a = math.sqrt(6.0 / (n_in + n_out))
        return (torch.rand(n, generator=gen) * 2.0 - 1.0) * a
    if init == "he_uniform":
        a = math.sqrt(6.0 / n_in)
        return (torch.rand(n, generator=gen) * 2.0 - 1.0) * a
    return torch.randn(n, generator=gen) / 10.0


def _csr_layout(torch, rows, cols, n_in, n_out):
    """Index arrays for W^T (CSR, n_out x n_in) and W (CSR, n_in x n_out) sharing values.

    ``values`` are stored in W^T order; ``values[perm]`` is the W order.
    Returns (layout dict, orderT) where orderT maps W^T order -> topology order.
    """
    nnz = rows.size
    orderT = np.lexsort((rows, cols))           # sort by output, then input
    crowT = np.zeros(n_out + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=n_out), out=crowT[1:])
    colT = rows[orderT]
    order = np.lexsort((cols, rows))            # topology order is already row-major
    crow = np.zeros(n_in + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_in), out=crow[1:])
    col = cols[order]
    inv = np.empty(nnz, dtype=np.int64)
    inv[orderT] = np.arange(nnz, dtype=np.int64)
    perm = inv[order]
    t = torch.from_numpy
    lay = {"crowT": t(crowT), "colT": t(np.ascontiguousarray(colT)),
           "crow": t(crow), "col": t(np.ascontiguousarray(col)), "perm": t(perm),
           "shapeT": (int(n_out), int(n_in))}
    lay["patternT"] = torch.sparse_csr_tensor(lay["crowT"], lay["colT"],
                                              torch.zeros(nnz), lay["shapeT"])
    return lay, orderT


def _system_busy_seconds() -> float | None:
    """CPU seconds all processes of this machine have used so far (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _set_threads(torch, threads: int) -> None:
    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # can only be set once per process, before any inter-op work


# --------------------------------------------------------------------------- training
def time_torch_epochs(sizes, epsilon, n_samples, batch_size=128, threads=1, mode="mask",
                      epochs=1, dropout=0.3, lr=0.01, momentum=0.9, weight_decay=2e-4,
                      activation="relu", seed=0, warmup_batches=5, csr_impl="custom",
                      init="xavier", return_weights=False) -> dict:
    """Train the sparse MLP with PyTorch on the CPU on synthetic data and time each epoch.

    Returns ``{"mode", "threads", "sec_per_epoch": [...], "nnz", "n_batches", ...}``;
    with ``return_weights`` also ``"weights"`` (dense numpy n_in x n_out arrays; only
    for small shapes) and ``"topology"``.
    """
    torch = _import_torch()
    sizes = [int(s) for s in sizes]
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if csr_impl not in CSR_IMPLS:
        raise ValueError(f"csr_impl must be one of {CSR_IMPLS}, got {csr_impl!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    n_batches = int(n_samples) // int(batch_size)
    if n_batches < 1:
        raise ValueError(f"n_samples={n_samples} < batch_size={batch_size}")
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")

    F = torch.nn.functional
    prev_threads = torch.get_num_threads()
    _set_threads(torch, threads)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        try:
            return _train(torch, F, sizes, epsilon, n_samples, batch_size, threads, mode,
                          epochs, dropout, lr, momentum, weight_decay, activation, seed,
                          warmup_batches, csr_impl, init, return_weights, n_batches)
        finally:
            torch.set_num_threads(prev_threads)


def _train(torch, F, sizes, epsilon, n_samples, batch_size, threads, mode, epochs, dropout,
           lr, momentum, weight_decay, activation, seed, warmup_batches, csr_impl, init,
           return_weights, n_batches) -> dict:
    torch.manual_seed(seed)                      # dropout masks
    gen = torch.Generator().manual_seed(seed)    # data, init, shuffling
    act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]
    n_layers = len(sizes) - 1
    topo = make_er_topology(sizes, epsilon, seed) if mode != "dense" else None

    # ---- synthetic data (csr mode keeps it transposed: features x samples)
    X = torch.randn(int(n_samples), sizes[0], generator=gen, dtype=torch.float32)
    Y = torch.randint(0, sizes[-1], (int(n_samples),), generator=gen, dtype=torch.int64)
    if mode == "csr":
        X = X.t().contiguous()

    # ---- parameters
    weights, biases, masks, lays = [], [], [], []
    for li, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        biases.append(torch.zeros(n_out, requires_grad=True))
        if mode == "dense":
            w = _init_values(torch, n_in * n_out, n_in, n_out, init, gen)
            weights.append(w.reshape(n_in, n_out).requires_grad_())
            continue
        rows, cols = topo[li]
        vals = _init_values(torch, rows.size, n_in, n_out, init, gen)
        if mode == "mask":
            m = torch.zeros(n_in, n_out)
            r, c = torch.from_numpy(rows), torch.from_numpy(cols)
            m[r, c] = 1.0
            w = torch.zeros(n_in, n_out)
            w[r, c] = vals
            masks.append(m)
            weights.append(w.requires_grad_())
        else:
            lay, orderT = _csr_layout(torch, rows, cols, n_in, n_out)
            vT = vals[torch.from_numpy(orderT)].contiguous()
            lays.append(lay)
            if csr_impl == "custom":
                weights.append(vT.requires_grad_())
            else:
                weights.append(torch.sparse_csr_tensor(
                    lay["crowT"].clone(), lay["colT"].clone(), vT,
                    lay["shapeT"]).requires_grad_())
    if mode == "csr" and csr_impl == "native":
        w_values = [w.values() for w in weights]   # aliases of the CSR values
    else:
        w_values = weights
    params = list(w_values) + biases
    velocities = [torch.zeros_like(p) for p in params]
    if mode == "mask":
        nnz_layers = [int(r.size) for r, _ in topo]
    else:
        nnz_layers = [int(v.numel()) for v in w_values]
    spl = _sparse_linear_fn() if (mode == "csr" and csr_impl == "custom") else None

    def forward_loss(xb, yb):
        h = xb
        for li in range(n_layers):
            if mode == "csr":
                if spl is not None:
                    z = spl.apply(weights[li], h, lays[li])
                else:
                    z = torch.sparse.mm(weights[li], h)
                z = z + biases[li].unsqueeze(1)
            elif mode == "mask":
                z = torch.addmm(biases[li], h, weights[li] * masks[li])
            else:
                z = torch.addmm(biases[li], h, weights[li])
            if li < n_layers - 1:
                h = act(z)
                if dropout > 0.0:
                    h = F.dropout(h, p=dropout, training=True)
            else:
                h = z
        logits = h.t() if mode == "csr" else h
        return F.cross_entropy(logits, yb)           # softmax + CE, mean over batch

    checked = [False]

    def step(idx):
        if mode == "csr":
            xb = X.index_select(1, idx)
        else:
            xb = X.index_select(0, idx)
        yb = Y.index_select(0, idx)
        loss = forward_loss(xb, yb)
        loss.backward()
        if mode == "csr" and csr_impl == "native":
            gs = []
            for w in weights:
                g = w.grad
                if not checked[0]:   # the gradient must have the weight's own pattern
                    assert g.layout == torch.sparse_csr and torch.equal(
                        g.col_indices(), w.col_indices()) and torch.equal(
                        g.crow_indices(), w.crow_indices()), "CSR grad pattern differs"
                gs.append(g.values())
            checked[0] = True
            gs += [b.grad for b in biases]
        else:
            gs = [p.grad for p in weights] + [b.grad for b in biases]
        momentum_sgd_step_(params, gs, velocities, lr, momentum, weight_decay)
        if mode == "mask":
            with torch.no_grad():
                for w, m in zip(weights, masks, strict=True):
                    w.mul_(m)            # keep pruned weights exactly zero
        for p in weights + biases:
            p.grad = None
        return loss

    # ---- warm-up (untimed; these steps do train the model)
    for b in range(min(int(warmup_batches), n_batches)):
        step(torch.arange(b * batch_size, (b + 1) * batch_size))

    sec_per_epoch, cpu_per_epoch, others_per_epoch = [], [], []
    last_loss = float("nan")
    for _ in range(int(epochs)):
        perm = torch.randperm(int(n_samples), generator=gen)
        batches = [perm[b * batch_size:(b + 1) * batch_size] for b in range(n_batches)]
        s0 = _system_busy_seconds()
        c0 = time.process_time()
        t0 = time.perf_counter()
        for idx in batches:
            loss = step(idx)
        t1 = time.perf_counter()
        c1 = time.process_time()
        s1 = _system_busy_seconds()
        last_loss = float(loss.detach())
        sec_per_epoch.append(t1 - t0)
        cpu_per_epoch.append(c1 - c0)
        # CPU time other processes used meanwhile (a busy machine ruins the timing)
        others_per_epoch.append(None if s0 is None else max(0.0, (s1 - s0) - (c1 - c0)))

    out = {
        "mode": mode, "threads": int(threads), "sec_per_epoch": sec_per_epoch,
        "nnz": int(sum(nnz_layers)), "n_batches": n_batches,
        "nnz_per_layer": nnz_layers, "cpu_sec_per_epoch": cpu_per_epoch,
        "other_processes_cpu_sec_per_epoch": others_per_epoch,
        "csr_impl": csr_impl if mode == "csr" else None,
        "sizes": sizes, "epsilon": float(epsilon), "n_samples": int(n_samples),
        "batch_size": int(batch_size), "epochs": int(epochs), "dropout": float(dropout),
        "lr": float(lr), "momentum": float(momentum), "weight_decay": float(weight_decay),
        "activation": activation, "init": init, "seed": int(seed),
        "warmup_batches": int(warmup_batches), "last_batch_loss": last_loss,
        "torch_version": torch.__version__,
    }
    if return_weights:
        dense = []
        with torch.no_grad():
            for li, w in enumerate(weights):
                if mode == "csr":
                    n_out, n_in = lays[li]["shapeT"]
                    v = w if csr_impl == "custom" else w.values()
                    wt = torch.sparse_csr_tensor(lays[li]["crowT"], lays[li]["colT"],
                                                 v.detach(), (n_out, n_in))
                    dense.append(wt.to_dense().t().numpy().copy())
                else:
                    dense.append(w.detach().numpy().copy())
        out["weights"] = dense
        out["topology"] = topo
    return out


# --------------------------------------------------------------------------- CLI
def _parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", required=True, help="layer sizes, e.g. 28,1000,1000,1000,2")
    ap.add_argument("--epsilon", type=float, required=True)
    ap.add_argument("--n-samples", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", choices=MODES, default="mask")
    ap.add_argument("--csr-impl", choices=CSR_IMPLS, default="custom")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=2e-4)
    ap.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    ap.add_argument("--init", choices=INITS, default="xavier")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup-batches", type=int, default=5)
    ap.add_argument("--json", help="write the result dict to this file")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print(TORCH_HINT, file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    res = time_torch_epochs(
        sizes, args.epsilon, args.n_samples, batch_size=args.batch_size, threads=args.threads,
        mode=args.mode, epochs=args.epochs, dropout=args.dropout, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, activation=args.activation,
        seed=args.seed, warmup_batches=args.warmup_batches, csr_impl=args.csr_impl,
        init=args.init)
    res["cpu_count"] = os.cpu_count()
    res["machine"] = platform.processor() or platform.machine()
    if hasattr(os, "getloadavg"):
        res["loadavg_after"] = list(os.getloadavg())
    label = args.mode + (f"/{args.csr_impl}" if args.mode == "csr" else "")
    for e, s in enumerate(res["sec_per_epoch"]):
        other = res["other_processes_cpu_sec_per_epoch"][e]
        busy = "" if other is None else f", other processes used {other:.1f} CPU s meanwhile"
        print(f"{args.sizes} eps={args.epsilon:g} {label} threads={args.threads} "
              f"epoch {e + 1}: {s:.3f} s/epoch ({res['n_batches']} batches of "
              f"{args.batch_size}, nnz={res['nnz']}{busy})")
    print(f"best: {min(res['sec_per_epoch']):.3f} s/epoch")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
