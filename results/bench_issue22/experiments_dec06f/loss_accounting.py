"""Where a two-thread batch loses against half the one-thread batch: for each
kernel call (and the time outside the calls) of a timeline file written by
``bench/bench_timeline.py --threads 1,2 --json F``, its us a batch on two
threads minus half its us on one; grouped by what they are, with what a
speed-up of 1.8x would allow in all.

    python loss_accounting.py timeline_zen4.jsonl
"""
import json
import sys

GROUPS = (  # (name, test on (kernel, n_in, n_out, the output layer's n_out))
    ("hidden layers' products (rows split)",
     lambda k, i, o, last: k in ("forward", "backward_update", "weight_grad") and o != last),
    ("output layer (forward and fused backward)",
     lambda k, i, o, last: k in ("forward", "backward_update") and o == last),
    ("update passes (apply_update)", lambda k, i, o, last: k == "apply_update"),
    ("batch gather", lambda k, i, o, last: k == "gather_columns"),
)

runs = [json.loads(line) for line in open(sys.argv[1])]
for shape in dict.fromkeys(r["shape"] for r in runs):
    one = next(r for r in runs if r["shape"] == shape and r["threads"] == 1)
    two = next(r for r in runs if r["shape"] == shape and r["threads"] == 2)
    key = lambda c: (c["kernel"], c["n_in"], c["n_out"])  # noqa: E731
    t1 = {key(c): c["us_per_batch"] for c in one["calls"]}
    t2 = {key(c): c["us_per_batch"] for c in two["calls"]}
    n_out_last = min(o for (k, i, o) in t1 if k == "forward")  # the output layer's width
    lost = {name: 0.0 for name, _ in GROUPS}
    for (k, i, o), us1 in t1.items():
        d = t2.get((k, i, o), 0.0) - us1 / 2
        for name, test in GROUPS:
            if test(k, i, o, n_out_last):
                lost[name] += d
                break
        else:
            raise SystemExit(f"unassigned call {k} {i}x{o}")
    out1 = one["batch_us"] - one["kernel_us"]
    out2 = two["batch_us"] - two["kernel_us"]
    lost["Python and the rest outside the calls"] = out2 - out1 / 2
    total = two["batch_us"] - one["batch_us"] / 2
    allowed = one["batch_us"] / 1.8 - one["batch_us"] / 2
    print(f"{shape}: 1 thread {one['batch_us']:.1f} us a batch, 2 threads "
          f"{two['batch_us']:.1f} ({one['batch_us'] / two['batch_us']:.2f}x); two threads lose "
          f"{total:.1f} us against half of one thread's batch, 1.8x allows {allowed:.1f}")
    for name, us in lost.items():
        print(f"  {name:55s} {us:7.1f}")
