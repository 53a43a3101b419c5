# Best us a batch of 3 of 4 epochs of bench_epoch.make_trainer(SHAPE, THREADS, FRACTION) from the checkout $TREE.
import sys, json
import os; T=os.environ.get("TREE","."); sys.path.insert(0, T+"/bench"); sys.path.insert(0, T)
import bench_epoch
shape, threads, frac = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
tr = bench_epoch.make_trainer(shape, threads, frac)
res=[]
for e in range(4):
    bench_epoch.fresh_epoch(tr)
    _, _, s = tr.train_epoch()
    res.append(round(s / tr.n_batches * 1e6, 1))
print(min(res[1:]), res)
