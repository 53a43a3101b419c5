"""How much of a small network's training step is the Python around its
kernel calls: the kernel calls one ``train_step`` makes (every public
function of the four kernel modules, recorded with their arguments), replayed
with the same arguments in a plain loop, against ``train_step`` itself.  The
difference is the model's and the layers' Python (decisions, lookups,
wrappers); the replay is the kernel calls themselves (argument checks, entry
and their work).  One thread, batch 32, best of five rounds of 2000 steps,
the two alternating over ``ROUNDS``.  The replay updates the weights as the
step does; nothing is compared, only timed.

    python results/bench_issue22/experiments_dec06g/replay_step.py [ROUNDS]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_nets import best_us, small_step  # noqa: E402

from sparse_mlp import _activation, _activation_serial, _spmm, _spmm_serial  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
MODULES = (_spmm_serial, _activation_serial, _spmm, _activation)


def recorded_calls(step) -> list:
    """The kernel calls ``step()`` makes, as (function, args, kwargs)."""
    calls, saved = [], {}
    for mod in MODULES:
        for name in dir(mod):
            f = getattr(mod, name)
            if callable(f) and not name.startswith("_") and not isinstance(f, type):
                def rec(*a, _f=f, **k):
                    calls.append((_f, a, k))
                    return _f(*a, **k)
                saved[(mod, name)] = f
                setattr(mod, name, rec)
    try:
        step()
    finally:
        for (mod, name), f in saved.items():
            setattr(mod, name, f)
    return calls


for name, key in (("8-neuron layers", "tiny"), ("Madelon", "madelon")):
    step = small_step(key)
    calls = recorded_calls(step)

    def replay(calls=calls):
        for f, a, k in calls:
            f(*a, **k)

    for r in range(ROUNDS):
        a, b = (step, replay) if r % 2 == 0 else (replay, step)
        ta, tb = best_us(a, 2000), best_us(b, 2000)
        t_step, t_replay = (ta, tb) if r % 2 == 0 else (tb, ta)
        print(json.dumps({"network": name, "round": r + 1, "kernel_calls": len(calls),
                          "kernels": sorted({f.__name__ for f, _, _ in calls}),
                          "train_step_us": round(t_step, 1),
                          "replayed_calls_us": round(t_replay, 1),
                          "python_us": round(t_step - t_replay, 1)}), flush=True)
