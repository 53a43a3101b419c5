#!/usr/bin/env bash
# Exact resume at 125 M neurons: one epoch of 256 samples (2 batches), uninterrupted (A)
# and with a SIGTERM during batch 1 then --resume auto (B); final checkpoints compared.
cd /tmp/run125
OPTS="--dataset synthetic --n-features 65536 --n-train 256 --n-test 256 --hidden 5000000x25 --epsilon 1 --batch-size 128 --activation allrelu --alpha 0.6 --dropout 0.1 --weight-init he_uniform_sparse --output-init zero --lr-fan-in-cap 5 --regrow-init zero --threads 2 --epochs 1 --no-progress --resume auto"
L=/tmp/ident125
date -u +"%FT%TZ A start" > $L/when.txt
/usr/bin/time -v python run_experiment.py $OPTS --out $L/A > $L/A.log 2> $L/A.time
echo "A exit $?" >> $L/when.txt
date -u +"%FT%TZ B start" >> $L/when.txt
python run_experiment.py $OPTS --out $L/B > $L/B1.log 2>&1 &
PY=$!
until grep -q " model 65536" $L/B1.log 2>/dev/null; do sleep 2; done
sleep 15
date -u +"%FT%TZ SIGTERM" >> $L/when.txt
kill -TERM $PY
wait $PY; echo "B part 1 exit $?" >> $L/when.txt
python run_experiment.py $OPTS --out $L/B > $L/B2.log 2>&1
echo "B part 2 exit $?" >> $L/when.txt
date -u +"%FT%TZ compare" >> $L/when.txt
python /work/main/bench/compare_checkpoints.py $(ls $L/A/checkpoints/*.h5 | tail -1) $(ls $L/B/checkpoints/*.h5 | tail -1) > $L/compare.txt 2>&1
echo "compare exit $?" >> $L/when.txt
date -u +"%FT%TZ done" >> $L/when.txt
