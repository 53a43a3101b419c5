"""Where the time between the output layer's forward product and its backward
pass goes, and before the first forward product: Python-side stamps
(time.perf_counter_ns, CLOCK_MONOTONIC) set against the timeline's.  python
python_between_calls.py SHAPE THREADS FRACTION"""
import sys, time, numpy as np
sys.path.insert(0, "bench")
import bench_epoch, bench_timeline
from sparse_mlp import kernels, model as M
shape = sys.argv[1]; t = int(sys.argv[2])
tr = bench_epoch.make_trainer(shape, t, float(sys.argv[3]))
m = tr.model
marks = []
orig_od = M.SparseMLP.output_delta
orig_bp = M.SparseMLP._backprop
orig_ft = M.SparseMLP.forward_train
def od(self, *a, **k):
    marks.append(("od0", time.perf_counter_ns())); r = orig_od(self, *a, **k); marks.append(("od1", time.perf_counter_ns())); return r
def bp(self, *a, **k):
    marks.append(("bp0", time.perf_counter_ns())); return orig_bp(self, *a, **k)
def ft(self, *a, **k):
    marks.append(("ft0", time.perf_counter_ns())); r = orig_ft(self, *a, **k); marks.append(("ft1", time.perf_counter_ns())); return r
M.SparseMLP.output_delta = od; M.SparseMLP._backprop = bp; M.SparseMLP.forward_train = ft
bench_epoch.fresh_epoch(tr); tr.train_epoch()
marks.clear()
rec, s = bench_timeline.record_epoch(tr)
nb = tr.n_batches
kinds = list(kernels.spmm.TIMELINE_KINDS)
mk = {}
for name, v in marks: mk.setdefault(name, []).append(v)
mk = {k: np.array(v) for k, v in mk.items()}
per = rec["kind"].size // nb
tc = rec["t_call"].reshape(nb, per); td = rec["t_done"].reshape(nb, per)
# index of output backward = first backward_update in batch
kb = [i for i in range(per) if kinds[rec["kind"][i]] == "backward_update"][0]
kf = kb - 1  # output forward
kf0 = [i for i in range(per) if kinds[rec["kind"][i]] == "forward"][0]
def med(x): return float(np.median(x)) / 1e3
print(shape, t, "us:")
print(" gather end -> forward_train start", med(mk["ft0"] - td[:, kf0 - 1]))
print(" forward_train start -> first forward t_call", med(tc[:, kf0] - mk["ft0"]))
print(" out forward t_done -> forward_train end", med(mk["ft1"] - td[:, kf]))
print(" forward_train end -> output_delta start", med(mk["od0"] - mk["ft1"]))
print(" output_delta (loss)", med(mk["od1"] - mk["od0"]))
print(" output_delta end -> _backprop start", med(mk["bp0"] - mk["od1"]))
print(" _backprop start -> out backward t_call", med(tc[:, kb] - mk["bp0"]))
