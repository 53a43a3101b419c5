#!/usr/bin/env bash
# 125 M-neuron network (65536-5Mx25-2, eps 1), two whole epochs on Table 4's data,
# through --reproduce table4; SIGTERM mid-epoch 1, then the same command continues it
cd /work/run125
CMD="python run_experiment.py --reproduce table4 --rows 65536-5Mx25-2 --epochs 2 --threads 2 --weight-init kaiming_uniform_sparse --output-init zero --lr-fan-in-cap 5 --dropout 0.1 --regrow-init zero --train-eval 1024 --out /work/runs/table4_125M"
L=/work/runs/log125
echo "$CMD" > $L/command.txt
date -u +"%FT%TZ start (commit $(git rev-parse --short HEAD))" > $L/when.txt
/usr/bin/time -v $CMD > $L/part1.log 2> $L/part1.time &
TP=$!
sleep 1500
PY=$(pgrep -P $TP | head -1)
date -u +"%FT%TZ SIGTERM to $PY (the table4 parent; it forwards it to the run)" >> $L/when.txt
kill -TERM $PY
wait $TP; echo "part1 exit $?" >> $L/when.txt
date -u +"%FT%TZ continue: the same command" >> $L/when.txt
/usr/bin/time -v $CMD > $L/part2.log 2> $L/part2.time
echo "part2 exit $?" >> $L/when.txt
date -u +"%FT%TZ done" >> $L/when.txt
