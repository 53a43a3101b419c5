#!/usr/bin/env bash
# 125M-neuron network: two epochs, SIGTERM mid-epoch 1, resume; then a short resume-identity pair; then the 50M epoch
cd /tmp/run125
OPTS="--dataset synthetic --n-features 65536 --epsilon 1 --batch-size 128 --activation allrelu --alpha 0.6 --dropout 0.1 --weight-init he_uniform_sparse --output-init zero --lr-fan-in-cap 5 --regrow-init zero --threads 2 --no-progress"
L=/tmp/scale125
date -u +"%FT%TZ start" > $L/when.txt
# 1. the 125M run, SIGTERM after 1200 s (mid-epoch 1), then resume to the end
/usr/bin/time -v python run_experiment.py $OPTS --hidden 5000000x25 --epochs 2 --resume auto --out $L/run > $L/part1.log 2> $L/part1.time &
TP=$!
sleep 1200
PY=$(pgrep -P $TP -f run_experiment.py | head -1)
date -u +"%FT%TZ SIGTERM to $PY" >> $L/when.txt
kill -TERM $PY
wait $TP; echo "part1 exit $?" >> $L/when.txt
grep "Exit status" $L/part1.time >> $L/when.txt
date -u +"%FT%TZ resume" >> $L/when.txt
/usr/bin/time -v python run_experiment.py $OPTS --hidden 5000000x25 --epochs 2 --resume auto --out $L/run > $L/part2.log 2> $L/part2.time
echo "part2 exit $?" >> $L/when.txt
date -u +"%FT%TZ done 125M" >> $L/when.txt
